"""Start and stop a registry server process on 127.0.0.1 for client tests.

Generic over the command line: :class:`RegistryProcess` takes an argv with a
``{port}`` placeholder (substituted with a free port), starts it, waits (bounded)
until ``GET http://127.0.0.1:PORT/v2/`` answers with any HTTP status (200, or
401 for a registry with auth), and stops it with SIGTERM then SIGKILL.

Two ready-made launchers:

* :func:`start_distribution` -- Debian's ``docker-registry`` (CNCF
  Distribution 2.8.2) with filesystem storage, ``delete: enabled: true`` and,
  optionally, htpasswd basic auth.
* :func:`start_moorage` -- ``python -m moorage.cli serve --addr 127.0.0.1:PORT
  --data DIR`` (the fixed CLI contract of Moorage).

Quirks:

* The free port is found by binding port 0 and closing it, so another process
  can grab it in between; ``start()`` retries with a new port (up to
  ``port_retries`` times) when the process dies early and its log mentions
  "address already in use".
* Distribution logs "No HTTP secret provided" unless ``http.secret`` is set; we
  set a fixed one.
* Distribution's htpasswd auth accepts only bcrypt entries. It works over plain
  HTTP (no TLS needed) in 2.8.2.
* All output of the server goes to ``DIR/<kind>.log``; on a failed start the
  tail of that log is put into the exception message.
* The process runs as a :class:`tests.support.daemon.Daemon`: own process group,
  group stop, and killed by its watchdog if pytest itself is killed.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.daemon import Daemon, group_members

__all__ = [
    "RegistryProcess",
    "RegistryStartError",
    "free_port",
    "wait_for_v2",
    "start_distribution",
    "start_moorage",
    "write_htpasswd",
    "DISTRIBUTION_BIN",
    "terminate_group",
    "REPO_ROOT",
]

DISTRIBUTION_BIN = os.environ.get("MOORAGE_DISTRIBUTION_BIN", "/usr/bin/docker-registry")
REPO_ROOT = Path(__file__).resolve().parents[2]


class RegistryStartError(RuntimeError):
    pass


def free_port(host: str = "127.0.0.1") -> int:
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _probe(url: str, timeout: float) -> int | None:
    """HTTP status of GET url, or None if nothing answered."""
    req = urllib.request.Request(url, method="GET")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status
    except urllib.error.HTTPError as e:
        return e.code
    except (TimeoutError, urllib.error.URLError, ConnectionError, OSError):
        return None


def wait_for_v2(url: str, timeout: float = 20.0, proc: subprocess.Popen | None = None) -> int:
    """Poll ``url`` + ``/v2/`` until it answers; returns the HTTP status.

    Bounded by ``timeout`` seconds; stops early if ``proc`` exits.
    """
    deadline = time.monotonic() + timeout
    delay = 0.05
    while True:
        status = _probe(url.rstrip("/") + "/v2/", timeout=2.0)
        if status is not None:
            return status
        if proc is not None and proc.poll() is not None:
            raise RegistryStartError(f"process exited with {proc.returncode} before {url}/v2/ answered")
        if time.monotonic() >= deadline:
            raise RegistryStartError(f"{url}/v2/ did not answer within {timeout:.0f}s")
        time.sleep(delay)
        delay = min(delay * 1.5, 0.5)


def plain_log(text: str) -> str:
    """A ``moorage serve`` log as the lines a person reads: its JSON records (stderr is not a
    terminal here, so ``log_format: auto`` writes JSON) back to their message and traceback;
    access objects and anything else (Distribution's log, text format) as they are."""
    out = []
    for line in text.splitlines():
        if line.startswith('{"ts":') and '"level":' in line:
            try:
                entry = json.loads(line)
            except ValueError:
                entry = None
            if isinstance(entry, dict) and "message" in entry and "level" in entry:
                out.append(str(entry["message"]))
                if entry.get("exc"):
                    out.append(str(entry["exc"]))
                continue
        out.append(line)
    return "\n".join(out)


def read_log(path: Path) -> str:
    """The whole server log at ``path``, through :func:`plain_log`."""
    return plain_log(path.read_text(errors="replace"))


def _tail(path: Path, n: int = 40) -> str:
    try:
        lines = read_log(path).splitlines()
    except OSError:
        return "(no log)"
    return "\n".join(lines[-n:])


_group_members = group_members


def terminate_group(proc: subprocess.Popen, timeout: float = 10.0) -> int | None:
    """Stop a child started with ``start_new_session=True`` and everything in
    its process group: SIGTERM, wait up to ``timeout``, then SIGKILL.

    Only signals the group while it provably still has members (a process
    group id cannot be reused while any member lives), so an exited server
    never leads to signalling an unrelated process.
    """
    pgid = proc.pid
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, signal.SIGKILL)
            proc.wait(timeout=10)
    # stragglers (e.g. forked workers) that outlived the leader
    deadline = time.monotonic() + timeout
    while _group_members(pgid):
        if time.monotonic() > deadline:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, signal.SIGKILL)
            break
        time.sleep(0.1)
    return proc.returncode


class RegistryAddress:
    """How tests address a registry on ``127.0.0.1:port`` (a process or the in-process app)."""

    port: int
    username: str | None
    password: str | None

    @property
    def host(self) -> str:
        """``127.0.0.1:PORT`` -- what goes in image references."""
        return f"127.0.0.1:{self.port}"

    @property
    def localhost(self) -> str:
        """``localhost:PORT`` (the name docker users type)."""
        return f"localhost:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    @property
    def auth(self) -> tuple[str, str] | None:
        if self.username is None:
            return None
        return (self.username, self.password or "")


@dataclass
class RegistryProcess(RegistryAddress):
    """A registry server running as a child process.

    ``argv`` and ``env`` values may contain ``{port}``, ``{host}`` and
    ``{addr}`` placeholders; they are formatted at every start attempt.
    ``prepare(port)`` (optional) is called before each attempt, e.g. to write
    a config file that embeds the port.
    """

    argv: Sequence[str]
    workdir: Path
    kind: str = "registry"
    env: Mapping[str, str] | None = None
    cwd: Path | None = None
    prepare: object = None  # Callable[[int], None]
    start_timeout: float = 30.0
    stop_timeout: float = 10.0
    port_retries: int = 3
    username: str | None = None
    password: str | None = None
    data_dir: Path | None = None

    port: int = 0
    proc: subprocess.Popen | None = field(default=None, repr=False)
    log_path: Path | None = None
    _daemon: Daemon | None = field(default=None, repr=False)

    def log(self, n: int = 60) -> str:
        return _tail(self.log_path, n) if self.log_path else ""

    # -- lifecycle -------------------------------------------------------
    def start(self) -> RegistryProcess:
        self.workdir = Path(self.workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.workdir / f"{self.kind}.log"
        last_err: Exception | None = None
        for _ in range(max(1, self.port_retries)):
            self.port = free_port()
            fmt = {"port": self.port, "host": "127.0.0.1", "addr": f"127.0.0.1:{self.port}"}
            if callable(self.prepare):
                self.prepare(self.port)
            argv = [str(a).format(**fmt) for a in self.argv]
            env = dict(os.environ)
            for k, v in (self.env or {}).items():
                if v is None:
                    env.pop(k, None)
                else:
                    env[k] = str(v).format(**fmt)
            if self._daemon is not None:
                self._daemon.stop()  # a previous run (e.g. SIGKILLed by a test): retire its watchdog
            self._daemon = Daemon(
                self.kind, argv, self.log_path, env=env, cwd=self.cwd or self.workdir, stop_timeout=self.stop_timeout
            ).spawn()
            self.proc = self._daemon.proc
            try:
                wait_for_v2(self.url, timeout=self.start_timeout, proc=self.proc)
                return self
            except RegistryStartError as e:
                last_err = e
                self.stop()
                if "address already in use" not in _tail(self.log_path, 10).lower():
                    break
        raise RegistryStartError(f"{self.kind} failed to start: {last_err}\n--- log tail:\n{self.log()}")

    def stop(self) -> int | None:
        """SIGTERM the process group, wait, then SIGKILL. Returns the exit code."""
        if self.proc is None:
            return None
        if self._daemon is not None and self._daemon.proc is self.proc:
            return self._daemon.stop()
        return terminate_group(self.proc, self.stop_timeout)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def __enter__(self) -> RegistryProcess:
        if self.proc is None:
            self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


# --------------------------------------------------------------------------
# CNCF Distribution (Debian docker-registry)


def write_htpasswd(path: str | os.PathLike, users: Mapping[str, str]) -> Path:
    """Write an htpasswd file with bcrypt hashes (needs the ``bcrypt`` module,
    a Moorage dependency). Distribution accepts only bcrypt entries."""
    import bcrypt

    path = Path(path)
    lines = [f"{u}:{bcrypt.hashpw(p.encode(), bcrypt.gensalt(rounds=5)).decode()}" for u, p in users.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def _distribution_config(data_dir: Path, port: int, htpasswd: Path | None) -> str:
    cfg = f"""version: 0.1
log:
  level: info
  accesslog:
    disabled: false
storage:
  filesystem:
    rootdirectory: {data_dir}
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: 127.0.0.1:{port}
  secret: moorage-test-secret
  headers:
    X-Content-Type-Options: [nosniff]
"""
    if htpasswd is not None:
        cfg += f"""auth:
  htpasswd:
    realm: moorage-test
    path: {htpasswd}
"""
    return cfg


def start_distribution(
    tmpdir: str | os.PathLike,
    *,
    users: Mapping[str, str] | None = None,
    binary: str = DISTRIBUTION_BIN,
    start_timeout: float = 30.0,
) -> RegistryProcess:
    """Start ``docker-registry serve config.yml`` with storage under ``tmpdir``.

    ``users`` (``{name: password}``) turns on htpasswd basic auth; the first
    user becomes ``.username``/``.password`` of the returned object.
    """
    tmpdir = Path(tmpdir)
    tmpdir.mkdir(parents=True, exist_ok=True)
    if not Path(binary).exists():
        raise RegistryStartError(f"{binary} not found (apt-get install docker-registry)")
    data_dir = tmpdir / "data"
    data_dir.mkdir(exist_ok=True)
    htpasswd = write_htpasswd(tmpdir / "htpasswd", users) if users else None
    config = tmpdir / "config.yml"

    def prepare(port: int) -> None:
        config.write_text(_distribution_config(data_dir, port, htpasswd))

    user, password = next(iter(users.items())) if users else (None, None)
    rp = RegistryProcess(
        argv=[binary, "serve", str(config)],
        workdir=tmpdir,
        kind="distribution",
        prepare=prepare,
        start_timeout=start_timeout,
        username=user,
        password=password,
        data_dir=data_dir,
        # Distribution reads REGISTRY_* env vars as config overrides; make
        # sure none leak in from the caller's environment.
        env={k: None for k in os.environ if k.startswith("REGISTRY_")},
    )
    return rp.start()


# --------------------------------------------------------------------------
# Moorage


def start_moorage(
    tmpdir: str | os.PathLike,
    env: Mapping[str, str] | None = None,
    extra_args: Sequence[str] = (),
    *,
    python: str = sys.executable,
    start_timeout: float = 30.0,
    username: str | None = None,
    password: str | None = None,
    tree: Path = REPO_ROOT,
) -> RegistryProcess:
    """Start ``python -m moorage.cli serve --addr 127.0.0.1:PORT --data DIR``.

    ``DIR`` is ``tmpdir/data``; the process runs from ``tree`` (the repo root unless a
    benchmark compares another checkout) with it first on PYTHONPATH, so that tree's working
    copy (not an installed one) is used.
    ``env`` values may use ``{port}``/``{addr}`` placeholders. Pass
    ``username``/``password`` if ``env``/``extra_args`` turn auth on, so
    tests can read them from the returned object.
    """
    tmpdir = Path(tmpdir)
    tmpdir.mkdir(parents=True, exist_ok=True)
    data_dir = tmpdir / "data"
    data_dir.mkdir(exist_ok=True)
    pp = os.environ.get("PYTHONPATH")
    full_env = {"PYTHONPATH": f"{tree}{os.pathsep}{pp}" if pp else str(tree), "PYTHONUNBUFFERED": "1"}
    full_env.update(env or {})
    rp = RegistryProcess(
        argv=[python, "-m", "moorage.cli", "serve", "--addr", "127.0.0.1:{port}", "--data", str(data_dir), *extra_args],
        workdir=tmpdir,
        kind="moorage",
        env=full_env,
        cwd=tree,
        start_timeout=start_timeout,
        username=username,
        password=password,
        data_dir=data_dir,
    )
    return rp.start()
