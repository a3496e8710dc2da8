"""A throwaway PostgreSQL server for tests.

    with start_postgres(tmp_path / "pg") as url:
        engine = create_async_engine(url)   # postgresql+asyncpg://moorage:...@127.0.0.1:PORT/moorage

``initdb`` runs into ``workdir/data``; the server listens on 127.0.0.1 only,
on a free port, with its unix socket in ``workdir/sock``.  A superuser
``moorage`` with a random password owns a database ``moorage``.  ``stop()``
kills the server (bounded) and removes ``workdir`` (set
MOORAGE_KEEP_SERVICE_DIRS=1 to keep it).  Cold start (initdb + start +
createdb) is about 1.5-2 s on the 2-core dev box.

Notes:

* PostgreSQL refuses to run as root.  As root, initdb/postgres run as the
  ``postgres`` system user (created as a system user if absent) via
  ``Popen(user=..., group=...)`` - no su/runuser process in between, so the
  pid we hold is the postmaster's.  When not root they run as the current user.
* pytest's ``tmp_path_factory`` base (/tmp/pytest-of-root) is mode 0700
  and owned by root, so the ``postgres`` user cannot reach a workdir under
  it.  In that case (or when the socket path would be too long for a unix
  socket) the cluster lives in a private ``mkdtemp`` dir owned by
  ``postgres`` instead; it is removed on stop as well.
* Test-only speed settings: ``fsync=off``, ``synchronous_commit=off``,
  ``full_page_writes=off``, ``wal_level=minimal``, ``jit=off``,
  ``initdb --no-sync``.  Never use these for real data.
* Auth: ``trust`` on the unix socket, ``scram-sha-256`` on TCP (so the URL's
  password is really checked).
* The server is shut down with SIGQUIT ("immediate" mode; fine for a
  throwaway cluster), SIGKILL after 5 s.
"""

from __future__ import annotations

import atexit
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from ._procs import (
    ServiceStartError,
    clean_env,
    die_with_parent,
    free_port,
    keep_dirs,
    port_is_free,
    stop_process,
    tail,
    wait_until,
)

DB_NAME = "moorage"
DB_USER = "moorage"
PG_MAJOR = "15"
_SOCKET_NAME_LEN = len("/.s.PGSQL.65535.lock")
_MAX_SOCKET_PATH = 100


def pg_bindir() -> Path | None:
    """Directory holding initdb/postgres/pg_isready/psql, or None."""
    candidates = []
    if os.environ.get("MOORAGE_PG_BINDIR"):
        candidates.append(Path(os.environ["MOORAGE_PG_BINDIR"]))
    candidates.append(Path(f"/usr/lib/postgresql/{PG_MAJOR}/bin"))
    candidates += sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)
    initdb = shutil.which("initdb")
    if initdb:
        candidates.append(Path(initdb).parent)
    for c in candidates:
        if all((c / b).is_file() for b in ("initdb", "postgres", "pg_isready", "psql")):
            return c
    return None


def missing_binaries() -> list[str]:
    return [] if pg_bindir() is not None else [f"postgresql-{PG_MAJOR} (initdb, postgres, pg_isready, psql)"]


def _service_user() -> tuple[int, int, str] | None:
    """(uid, gid, name) to run postgres as, or None to run as ourselves."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "moorage-pg"):
        try:
            pw = pwd.getpwnam(name)
            return pw.pw_uid, pw.pw_gid, name
        except KeyError:
            continue
    subprocess.run(
        ["useradd", "--system", "--user-group", "--no-create-home", "--shell", "/usr/sbin/nologin", "moorage-pg"],
        check=True,
        capture_output=True,
        timeout=30,
    )
    pw = pwd.getpwnam("moorage-pg")
    return pw.pw_uid, pw.pw_gid, "moorage-pg"


@dataclass
class PostgresServer:
    workdir: Path
    timeout: float = 60.0
    password: str = field(default_factory=lambda: secrets.token_hex(16))
    timings: dict[str, float] = field(default_factory=dict)
    #: ``postgresql.conf`` settings appended after the speed settings (later lines win): the
    #: fault tests set ``synchronous_commit = on``, since with it off a commit is acknowledged
    #: before its WAL is written and ``pg_ctl stop -m immediate`` loses it -- by design.
    extra_conf: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.workdir = Path(self.workdir).resolve()
        self.port = 0
        self.root: Path | None = None  # where data/ sock/ log live
        self._private_root: Path | None = None
        self._proc: subprocess.Popen | None = None
        self._user: tuple[int, int, str] | None = None
        self._url: str | None = None
        self._stopped = False
        self._atexit_registered = False
        self._bindir = pg_bindir()

    @property
    def url(self) -> str:
        if self._url is None:
            raise RuntimeError("server not started")
        return self._url

    def __enter__(self) -> str:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ helpers
    def _bin(self, name: str) -> str:
        assert self._bindir is not None
        return str(self._bindir / name)

    def _as_service_user(self) -> dict:
        if self._user is None:
            return {}
        uid, gid, _ = self._user
        return {"user": uid, "group": gid, "extra_groups": []}

    def _accessible(self, path: Path) -> bool:
        """Can the service user create files in `path`?"""
        if self._user is None:
            return os.access(path, os.W_OK | os.X_OK)
        cp = subprocess.run(
            ["test", "-w", str(path), "-a", "-x", str(path)],
            timeout=10,
            **self._as_service_user(),
        )
        return cp.returncode == 0

    def _diag(self) -> str:
        if self.root is None:
            return ""
        return "\n".join(tail(p) for p in (self.root / "initdb.log", self.root / "postgres.log"))

    def _run(self, *args: str, timeout: float = 60, as_service: bool = False, env: dict | None = None) -> str:
        try:
            cp = subprocess.run(
                list(args),
                capture_output=True,
                text=True,
                timeout=timeout,
                stdin=subprocess.DEVNULL,
                env=clean_env(env),
                cwd=str(self.root),
                **(self._as_service_user() if as_service else {}),
            )
        except subprocess.TimeoutExpired as e:
            raise ServiceStartError(f"{args[0]} timed out after {timeout}s\n{self._diag()}") from e
        if cp.returncode != 0:
            raise ServiceStartError(f"{' '.join(args)} failed ({cp.returncode}):\n{cp.stdout}\n{cp.stderr}\n{self._diag()}")
        return cp.stdout

    # ---------------------------------------------------------------- lifecycle
    def start(self) -> str:
        if self._url is not None:
            return self._url
        if self._bindir is None:
            raise ServiceStartError("PostgreSQL binaries missing (run .ci/install-services.sh)")
        if not self._atexit_registered:
            atexit.register(self.stop)
            self._atexit_registered = True
        t0 = time.monotonic()
        try:
            self._prepare_dirs()
            self._initdb()
            self._start_server()
            self._create_db()
        except BaseException:
            self.stop()
            raise
        self._url = f"postgresql+asyncpg://{DB_USER}:{self.password}@127.0.0.1:{self.port}/{DB_NAME}"
        self.timings["total"] = time.monotonic() - t0
        return self._url

    def stop(self) -> None:
        """Kill the server (bounded) and remove the workdir.  Idempotent."""
        if self._stopped:
            return
        self._stopped = True
        # SIGQUIT = immediate shutdown: backends exit at once, no checkpoint.
        stop_process(self._proc, signal.SIGQUIT, grace=5)
        self._proc = None
        if not keep_dirs():
            shutil.rmtree(self.workdir, ignore_errors=True)
            if self._private_root is not None:
                shutil.rmtree(self._private_root, ignore_errors=True)
        if self._atexit_registered:
            atexit.unregister(self.stop)
            self._atexit_registered = False

    # ------------------------------------------------------------------- faults
    def pg_ctl_stop(self, mode: str = "immediate") -> None:
        """``pg_ctl stop -m MODE``: with ``immediate`` every backend is killed without a checkpoint
        (a crash, as a client sees it: connections reset, new ones refused).  The cluster's files
        stay; :meth:`restart` starts it again on the same port (crash recovery on start)."""
        assert self.root is not None and self._proc is not None
        self._run(
            self._bin("pg_ctl"), "stop", "-D", str(self.root / "data"), "-m", mode, "-w", "-t", "30", timeout=60, as_service=True
        )
        self._proc.wait(timeout=30)

    def restart(self) -> None:
        """Start the cluster stopped by :meth:`pg_ctl_stop` again, on the port it had (so the URL
        every client holds is good again); returns once it accepts connections."""
        assert self.root is not None and self.port
        logf = open(self.root / "postgres.log", "ab")
        try:
            self._proc = subprocess.Popen(
                [self._bin("postgres"), "-D", str(self.root / "data"), "-p", str(self.port)],
                stdin=subprocess.DEVNULL,
                stdout=logf,
                stderr=subprocess.STDOUT,
                env=clean_env(),
                cwd=str(self.root),
                preexec_fn=die_with_parent,
                **self._as_service_user(),
            )
        finally:
            logf.close()

        def ready() -> bool:
            cp = subprocess.run(
                [self._bin("pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(self.port), "-t", "2"],
                timeout=10,
                env=clean_env(),
                stdin=subprocess.DEVNULL,
            )
            return cp.returncode == 0

        wait_until(ready, timeout=self.timeout, what="postgres restart", interval=0.05, alive=[self._proc], on_fail=self._diag)

    # ------------------------------------------------------------------- phases
    def _prepare_dirs(self) -> None:
        self._user = _service_user()
        self.workdir.mkdir(parents=True, exist_ok=True)
        if any(self.workdir.iterdir()):
            raise ServiceStartError(f"workdir {self.workdir} is not empty")
        root = self.workdir
        if self._user is not None:
            os.chown(root, self._user[0], self._user[1])
        if len(str(root / "sock")) + _SOCKET_NAME_LEN > _MAX_SOCKET_PATH or not self._accessible(root):
            root = Path(tempfile.mkdtemp(prefix="moorage-pg-"))
            self._private_root = root
            if self._user is not None:
                os.chown(root, self._user[0], self._user[1])
            (self.workdir / "WHERE").write_text(f"postgres cluster lives in {root}\n")
        self.root = root
        for sub in ("sock",):
            (root / sub).mkdir(mode=0o700)
            if self._user is not None:
                os.chown(root / sub, self._user[0], self._user[1])

    def _initdb(self) -> None:
        t = time.monotonic()
        assert self.root is not None
        pwfile = self.root / "pwfile"
        pwfile.write_text(self.password + "\n")
        pwfile.chmod(0o600)
        if self._user is not None:
            os.chown(pwfile, self._user[0], self._user[1])
        log = self.root / "initdb.log"
        try:
            out = self._run(
                self._bin("initdb"),
                "-D",
                str(self.root / "data"),
                "--username",
                DB_USER,
                "--pwfile",
                str(pwfile),
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
                "--no-instructions",
                timeout=120,
                as_service=True,
            )
            log.write_text(out)
        finally:
            pwfile.unlink(missing_ok=True)
        with open(self.root / "data" / "postgresql.conf", "a") as f:
            f.write(
                "\n# --- throwaway test cluster (tests/support/postgres.py) ---\n"
                "listen_addresses = '127.0.0.1'\n"
                f"unix_socket_directories = '{self.root / 'sock'}'\n"
                "fsync = off\n"
                "synchronous_commit = off\n"
                "full_page_writes = off\n"
                "wal_level = minimal\n"
                "max_wal_senders = 0\n"
                "jit = off\n"
                "max_connections = 200\n"
                "shared_buffers = 128MB\n"
                "logging_collector = off\n"
                "log_min_messages = warning\n"
                "log_min_error_statement = error\n"
            )
            for key, value in self.extra_conf.items():
                f.write(f"{key} = {value}\n")
        self.timings["initdb"] = time.monotonic() - t

    def _start_server(self) -> None:
        t = time.monotonic()
        assert self.root is not None
        for attempt in range(3):
            port = free_port()
            if not port_is_free(port):
                continue
            self.port = port
            logf = open(self.root / "postgres.log", "ab")
            try:
                self._proc = subprocess.Popen(
                    [self._bin("postgres"), "-D", str(self.root / "data"), "-p", str(port)],
                    stdin=subprocess.DEVNULL,
                    stdout=logf,
                    stderr=subprocess.STDOUT,
                    env=clean_env(),
                    cwd=str(self.root),
                    preexec_fn=die_with_parent,
                    **self._as_service_user(),
                )
            finally:
                logf.close()

            def ready() -> bool:
                cp = subprocess.run(
                    [self._bin("pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(port), "-t", "2"],
                    timeout=10,
                    env=clean_env(),
                    stdin=subprocess.DEVNULL,
                )
                return cp.returncode == 0

            try:
                wait_until(ready, timeout=self.timeout, what="postgres", interval=0.05, alive=[self._proc], on_fail=self._diag)
                break
            except ServiceStartError:
                stop_process(self._proc, signal.SIGKILL)
                self._proc = None
                if attempt < 2 and "could not bind" in self._diag():
                    continue  # port grabbed between our check and the bind
                raise
        else:  # pragma: no cover
            raise ServiceStartError("could not find a free port for postgres")
        self.timings["start"] = time.monotonic() - t

    def _create_db(self) -> None:
        t = time.monotonic()
        self._run(
            self._bin("psql"),
            "-X",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "-h",
            "127.0.0.1",
            "-p",
            str(self.port),
            "-U",
            DB_USER,
            "-d",
            "postgres",
            "-c",
            f"CREATE DATABASE {DB_NAME}",
            timeout=30,
            env={"PGPASSWORD": self.password, "PGCONNECT_TIMEOUT": "5"},
        )
        self.timings["createdb"] = time.monotonic() - t


def create_database(admin_url: str, name: str) -> str:
    """Create database ``name`` on the server of ``admin_url``; return its URL.

    ``admin_url`` is a URL as returned by :func:`start_postgres` (its user is
    a superuser); the returned URL differs only in the database name.  Safe
    to call from sync code whether or not an event loop is running (it uses
    asyncpg on a private loop in a worker thread), bounded by 30 s.
    """
    import asyncio
    import concurrent.futures

    from sqlalchemy.engine import make_url

    if not name.replace("_", "").isalnum() or name[0].isdigit() or len(name) > 63:
        raise ValueError(f"unsafe database name {name!r}")
    url = make_url(admin_url)

    async def create() -> None:
        import asyncpg

        conn = await asyncpg.connect(
            host=url.host,
            port=url.port,
            user=url.username,
            password=url.password,
            database=url.database or "postgres",
            timeout=10,
        )
        try:
            await conn.execute(f'CREATE DATABASE "{name}"', timeout=20)
        finally:
            await conn.close(timeout=5)

    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        pool.submit(asyncio.run, create()).result(timeout=30)
    return url.set(database=name).render_as_string(hide_password=False)


@contextmanager
def start_postgres(workdir: Path | str, **kwargs) -> Iterator[str]:
    """Start a throwaway PostgreSQL in ``workdir``; yield its asyncpg SQLAlchemy URL."""
    server = PostgresServer(Path(workdir), **kwargs)
    try:
        yield server.start()
    finally:
        server.stop()
