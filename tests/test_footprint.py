"""Fast start, small footprint (issue 9): what each process imports, asserted as module boundaries.

Time and memory are figures (benchmarks/bench_startup.py), not asserts; what a process loads is
exact.  The embedded default (filesystem + SQLite, ``auth.mode: none``) must not carry the S3
client, the PostgreSQL driver, the migration machinery, JWT/cryptography or the template engine;
each of them still loads when a setting or a request needs it (asserted too, so these tests fail
if the probe itself stops seeing modules).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from tests.support.http import Client
from tests.support.registry_proc import REPO_ROOT, RegistryProcess

#: Never in a server or command on the embedded default.
REMOTE_BACKENDS = ("aiobotocore", "botocore", "asyncpg", "sqlalchemy.dialects.postgresql")
MIGRATIONS = ("alembic", "mako", "pygments")
#: Loaded when a feature that is on by default is first used (here: not before).
ON_FIRST_USE = ("jinja2", "aiohttp_jinja2")
#: Only with authentication on.
AUTH_ONLY = ("jwt", "cryptography")
#: SQLAlchemy's ORM (~5 MiB resident): Moorage uses Core only; the asyncio extension imports it.
ORM = ("sqlalchemy.orm",)

# `moorage` with a SIGUSR1 handler that writes sys.modules to <dir>/modules-<pid>.json
# (test-only: the server has no such route).
_PROBE = """
import json, os, signal, sys
def _dump(*_):
    path = os.path.join(os.environ["FOOTPRINT_DIR"], f"modules-{os.getpid()}.json")
    with open(path + ".tmp", "w") as f:
        json.dump(sorted(sys.modules), f)
    os.replace(path + ".tmp", path)
signal.signal(signal.SIGUSR1, _dump)
if os.environ.get("FOOTPRINT_AT_EXIT"):
    import atexit
    atexit.register(_dump)
from moorage.cli import main
sys.argv[0] = "moorage"
main()
"""


def _env(tmp: Path, **more: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MOORAGE_")}
    pp = env.get("PYTHONPATH")
    env.update(PYTHONPATH=f"{REPO_ROOT}{os.pathsep}{pp}" if pp else str(REPO_ROOT), FOOTPRINT_DIR=str(tmp))
    env.update(more)
    return env


def _loaded(names: tuple[str, ...], modules: set[str]) -> list[str]:
    return sorted(m for m in modules if any(m == n or m.startswith(n + ".") for n in names))


def _snapshot(tmp: Path, pid: int) -> set[str]:
    path = tmp / f"modules-{pid}.json"
    path.unlink(missing_ok=True)
    os.kill(pid, signal.SIGUSR1)
    deadline = time.monotonic() + 20
    while not path.exists():
        assert time.monotonic() < deadline, f"process {pid} wrote no module list"
        time.sleep(0.05)
    return set(json.loads(path.read_text()))


def _children(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(entry))
    return out


def _probe(tmp: Path) -> str:
    path = tmp / "probe.py"
    path.write_text(_PROBE)
    return str(path)


def _serve(tmp: Path, *args: str, **env: str) -> RegistryProcess:
    data = tmp / "data"
    return RegistryProcess(
        argv=[sys.executable, _probe(tmp), "serve", "--addr", "127.0.0.1:{port}", "--data", str(data), *args],
        workdir=tmp,
        kind="moorage",
        env=_env(tmp, **env),
        cwd=REPO_ROOT,
        start_timeout=60,
        data_dir=data,
    ).start()


def _cli(tmp: Path, *args: str, **env: str) -> tuple[subprocess.CompletedProcess[str], set[str]]:
    """Run a command to its end; the modules it had loaded at exit."""
    cp = subprocess.run(
        [sys.executable, _probe(tmp), *args],
        env=_env(tmp, FOOTPRINT_AT_EXIT="1", **env),
        cwd=tmp,
        capture_output=True,
        text=True,
        timeout=120,
    )
    dumps = list(tmp.glob("modules-*.json"))
    assert len(dumps) == 1, (cp.returncode, cp.stderr[-2000:])
    modules = set(json.loads(dumps[0].read_text()))
    dumps[0].unlink()
    return cp, modules


def test_embedded_server_loads_no_remote_backend_migration_or_auth_code(tmp_path: Path) -> None:
    # A fresh data dir: the schema is created at start (in a child process), yet the server
    # never imports Alembic.
    proc = _serve(tmp_path, "--workers", "1")
    try:
        assert proc.proc is not None
        started = _snapshot(tmp_path, proc.proc.pid)
        assert "aiohttp" in started and "sqlalchemy" in started and "moorage.composition" in started  # the probe sees
        assert (
            _loaded(REMOTE_BACKENDS + MIGRATIONS + ON_FIRST_USE + AUTH_ONLY + ORM + ("yaml", "pydantic_settings"), started) == []
        )

        client = Client(proc.url)
        digest, _ = client.push_image("footprint/app", "v1", [os.urandom(4096)])
        r = client.req("GET", "/v2/footprint/app/manifests/v1", headers={"Accept": "application/vnd.oci.image.manifest.v1+json"})
        assert r.status_code == 200 and r.headers["Docker-Content-Digest"] == digest
        for layer in json.loads(r.content)["layers"]:
            assert client.req("GET", f"/v2/footprint/app/blobs/{layer['digest']}").status_code == 200
        used = _snapshot(tmp_path, proc.proc.pid)
        assert _loaded(REMOTE_BACKENDS + MIGRATIONS + AUTH_ONLY + ORM, used) == []

        # The UI's template engine loads with the first page, and the page works.
        page = requests.get(f"{proc.url}/", timeout=30)
        assert page.status_code == 200 and "footprint/app" in page.text, page.text[:500]
        assert "jinja2" in _snapshot(tmp_path, proc.proc.pid)
    finally:
        proc.stop()
    # The child process did migrate: the file is at the code's head.
    from moorage.metadata.schema_version import script_head, sqlite_revision

    assert sqlite_revision(str(tmp_path / "data" / "moorage.db")) == script_head()


def test_master_of_several_workers_imports_neither_the_app_nor_sqlalchemy(tmp_path: Path) -> None:
    proc = _serve(tmp_path, "--workers", "2")
    try:
        assert proc.proc is not None
        master = _snapshot(tmp_path, proc.proc.pid)
        assert "moorage.server" in master and "moorage.config" in master
        assert (
            _loaded(
                ("aiohttp", "sqlalchemy", "moorage.api.app", "moorage.components", "moorage.composition") + MIGRATIONS, master
            )
            == []
        )
        deadline = time.monotonic() + 30
        while len(workers := _children(proc.proc.pid)) < 2:
            assert time.monotonic() < deadline, "workers did not start"
            time.sleep(0.1)
        for pid in workers:
            modules = _snapshot(tmp_path, pid)
            assert "moorage.composition" in modules
            assert _loaded(REMOTE_BACKENDS + MIGRATIONS + AUTH_ONLY, modules) == []
    finally:
        proc.stop()


def test_help_and_user_list_load_only_what_they_use(tmp_path: Path) -> None:
    data = tmp_path / "data"
    cp, modules = _cli(tmp_path, "migrate", "--data", str(data))
    assert cp.returncode == 0 and "-> " in cp.stdout, cp.stderr
    assert "alembic" in modules  # a migration that runs does load Alembic

    # The listings on a current SQLite database: the standard library's sqlite3, no SQLAlchemy
    # (~0.3 s of imports), no asyncio, no bcrypt (moorage/metadata/sqlite_reads.py); settings
    # without pydantic-settings (moorage/config_env.py).
    for listing in (("user", "list"), ("token", "list"), ("namespace", "list")):
        cp, modules = _cli(tmp_path, *listing, "--data", str(data))
        assert cp.returncode == 0, cp.stderr
        assert "moorage.metadata.sqlite_reads" in modules and "moorage.config" in modules  # the probe sees
        assert (
            _loaded(
                REMOTE_BACKENDS
                + MIGRATIONS
                + ON_FIRST_USE
                + AUTH_ONLY
                + ("aiohttp", "yaml", "sqlalchemy", "aiosqlite", "asyncio", "bcrypt", "pydantic_settings")
                + ("moorage.metadata.auth_store",),
                modules,
            )
            == []
        ), listing

    # A command that writes still goes through the store (and SQLAlchemy): the boundary is real.
    cp, modules = _cli(tmp_path, "namespace", "add", "footprint", "--data", str(data))
    assert cp.returncode == 0, cp.stderr
    assert "moorage.metadata.auth_store" in modules and "sqlalchemy" in modules

    cp, modules = _cli(tmp_path, "migrate", "--data", str(data))  # already current: one query
    assert cp.returncode == 0 and cp.stdout.strip().endswith("-> " + cp.stdout.strip().rsplit("-> ", 1)[1])
    assert _loaded(MIGRATIONS, modules) == []

    cp, modules = _cli(tmp_path, "--help")
    assert cp.returncode == 0 and "serve" in cp.stdout
    assert _loaded(("pydantic", "sqlalchemy", "aiohttp", "asyncio", "yaml"), modules) == []


def test_s3_and_postgres_settings_do_load_their_drivers(tmp_path: Path) -> None:
    """The other side of the boundary: the same probe sees botocore and asyncpg when the settings
    name them (building the app connects to nothing)."""
    code = (
        "import sys\n"
        "from moorage.config_load import load_settings\n"
        "from moorage.composition import build_app\n"
        f"s = load_settings(None, data={str(tmp_path / 'data')!r})\n"
        "build_app(s)\n"
        "print('LOADED', sorted(m for m in sys.modules if m.split('.')[0] in ('botocore', 'aiobotocore', 'asyncpg')))\n"
    )
    env = _env(
        tmp_path,
        MOORAGE_STORAGE__DRIVER="s3",
        MOORAGE_STORAGE__S3__BUCKET="footprint",
        MOORAGE_STORAGE__S3__ENDPOINT_URL="http://127.0.0.1:9",
        MOORAGE_STORAGE__S3__ACCESS_KEY="k",
        MOORAGE_STORAGE__S3__SECRET_KEY="s",
        MOORAGE_DATABASE__URL="postgresql://u:p@127.0.0.1:9/footprint",
    )
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    line = out.stdout.strip().splitlines()[-1]
    assert "'botocore'" in line and "'aiobotocore'" in line and "'asyncpg'" in line, line


def test_script_head_is_alembics_head() -> None:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    from moorage.metadata.schema_version import MIGRATIONS as DIR
    from moorage.metadata.schema_version import script_head

    cfg = Config()
    cfg.set_main_option("script_location", str(DIR))
    assert script_head() == ScriptDirectory.from_config(cfg).get_current_head() is not None


@pytest.mark.parametrize(
    "files, head",
    [
        (
            {"a.py": 'revision = "1"\ndown_revision = None\n', "b.py": 'revision: str = "2"\ndown_revision: str | None = "1"\n'},
            "2",
        ),
        (
            {
                "a.py": 'revision = "1"\ndown_revision = None\n',
                "b.py": 'revision = "2"\ndown_revision = "1"\n',
                "c.py": 'revision = "3"\ndown_revision = "1"\n',
            },
            None,
        ),  # two heads: Alembic decides
        ({"a.py": 'revision = "1"\ndown_revision = None\n', "m.py": 'revision = "2"\ndown_revision = ("1", "x")\n'}, None),
        ({"a.py": 'revision = "1"\ndown_revision = None\n', "b.py": 'revision = REV\ndown_revision = "1"\n'}, None),
        ({"a.py": 'revision = "1"\ndown_revision = None\n', "b.py": 'revision = "2"\ndown_revision = "0"\n'}, None),
    ],
)
def test_script_head_reads_only_a_simple_chain(tmp_path: Path, files: dict[str, str], head: str | None) -> None:
    from moorage.metadata import schema_version

    (tmp_path / "versions").mkdir()
    for name, text in files.items():
        (tmp_path / "versions" / name).write_text(text)
    original = schema_version.MIGRATIONS
    schema_version.script_head.cache_clear()
    try:
        schema_version.MIGRATIONS = tmp_path
        assert schema_version.script_head() == head
    finally:
        schema_version.MIGRATIONS = original
        schema_version.script_head.cache_clear()


def _stamp(db: Path, revision: str) -> None:
    conn = sqlite3.connect(db)
    try:
        conn.execute("UPDATE alembic_version SET version_num = ?", (revision,))
        conn.commit()
    finally:
        conn.close()


def test_schema_checks_still_refuse_old_and_unknown_revisions(tmp_path: Path) -> None:
    from moorage.metadata.db import Database, SchemaOutOfDate
    from moorage.metadata.schema_version import script_head, sqlite_revision

    db_path = tmp_path / "moorage.db"
    db = Database(f"sqlite+aiosqlite:///{db_path}", pool_size=1)

    async def run() -> None:
        try:
            assert await db.migrate() == (None, script_head())
            assert await db.migrate() == (script_head(), script_head())
            await db.check_schema()
            _stamp(db_path, "0001")
            with pytest.raises(SchemaOutOfDate, match="run `moorage migrate`"):
                await db.check_schema()
            _stamp(db_path, "9999")
            with pytest.raises(SchemaOutOfDate, match="newer Moorage"):
                await db.check_schema()
        finally:
            await db.close()

    asyncio.run(run())
    assert sqlite_revision(str(db_path)) == "9999"
    assert sqlite_revision(str(tmp_path / "none.db")) is None and not (tmp_path / "none.db").exists()


def test_serve_on_a_database_from_a_newer_moorage_fails_in_one_line(tmp_path: Path) -> None:
    """The migration runs in a child process; its failure still reaches the user as one line."""
    data = tmp_path / "data"
    cp, _ = _cli(tmp_path, "migrate", "--data", str(data))
    assert cp.returncode == 0, cp.stderr
    _stamp(data / "moorage.db", "9999")
    cp = subprocess.run(
        [sys.executable, "-m", "moorage.cli", "serve", "--addr", "127.0.0.1:1", "--data", str(data)],
        env=_env(tmp_path),
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert cp.returncode != 0
    lines = [ln for ln in cp.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in cp.stderr and "9999" in lines[0], cp.stderr[-2000:]


@pytest.mark.parametrize(
    "command",
    [
        ("migrate",),
        ("user", "list"),
        ("token", "list"),
        ("namespace", "list"),
        ("gc", "--dry-run"),
        ("quota", "list"),
        ("retention", "list"),
        ("audit",),
        ("scrub",),
    ],
    ids=lambda c: " ".join(c),
)
def test_every_command_on_a_database_from_a_newer_moorage_fails_in_one_line(tmp_path: Path, command: tuple[str, ...]) -> None:
    """Commands that migrate on the embedded default (auto_migrate) used to hand an unknown
    revision to Alembic, whose traceback reached the user; the fast listings must refuse too."""
    data = tmp_path / "data"
    cp, _ = _cli(tmp_path, "migrate", "--data", str(data))
    assert cp.returncode == 0, cp.stderr
    _stamp(data / "moorage.db", "9999_from_the_future")
    cp = subprocess.run(
        [sys.executable, "-m", "moorage.cli", *command, "--data", str(data)],
        env=_env(tmp_path),
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    lines = [ln for ln in (cp.stderr + cp.stdout).splitlines() if ln.strip()]
    assert cp.returncode == 1, (cp.returncode, cp.stderr[-2000:])
    assert len(lines) == 1 and "Traceback" not in cp.stderr, cp.stderr[-2000:]
    assert "9999_from_the_future" in lines[0] and "newer Moorage" in lines[0], lines
    from moorage.metadata.schema_version import sqlite_revision

    assert sqlite_revision(str(data / "moorage.db")) == "9999_from_the_future"  # left alone
