"""PostgreSQL metadata: ``moorage migrate``, the start-up schema check, concurrent migrations."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests.support.postgres import create_database
from tests.support.registry_proc import REPO_ROOT, RegistryStartError, free_port, start_moorage

pytestmark = pytest.mark.services


def _env(url: str, tmp: Path, **more: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MOORAGE_")}
    env.update(MOORAGE_DATABASE__URL=url.replace("postgresql+asyncpg://", "postgresql://"), MOORAGE_DATA=str(tmp / "data"))
    env.update(more)
    return env


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "moorage.cli", *args], env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=120
    )


def test_serve_refuses_unmigrated_schema_then_migrate(postgres_url: str, tmp_path: Path) -> None:
    url = create_database(postgres_url, f"schema_{uuid.uuid4().hex[:8]}")
    env = _env(url, tmp_path)
    # auto_migrate defaults to off for PostgreSQL: serve must refuse, saying what to do
    cp = _cli(env, "serve", "--addr", f"127.0.0.1:{free_port()}")
    assert cp.returncode != 0
    assert "moorage migrate" in cp.stderr and "Traceback" not in cp.stderr, cp.stderr[-2000:]

    first = _cli(env, "migrate")
    assert first.returncode == 0, first.stderr[-2000:]
    assert "empty ->" in first.stdout
    again = _cli(env, "migrate")
    assert again.returncode == 0 and "->" in again.stdout

    srv = start_moorage(tmp_path / "srv", env={k: v for k, v in env.items() if k.startswith("MOORAGE_DATABASE")})
    try:
        import requests

        assert requests.get(srv.url + "/v2/", timeout=10).status_code in (200, 401)
    finally:
        srv.stop()


def test_schema_newer_than_code_is_refused(postgres_url: str, tmp_path: Path) -> None:
    url = create_database(postgres_url, f"newer_{uuid.uuid4().hex[:8]}")
    env = _env(url, tmp_path)
    assert _cli(env, "migrate").returncode == 0
    import asyncio

    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine

    async def bump() -> None:
        engine = create_async_engine(url)
        async with engine.begin() as conn:
            await conn.execute(text("UPDATE alembic_version SET version_num = '9999'"))
        await engine.dispose()

    asyncio.run(bump())
    cp = _cli(env, "serve", "--addr", f"127.0.0.1:{free_port()}")
    assert cp.returncode != 0 and "newer Moorage" in cp.stderr, cp.stderr[-2000:]


def test_concurrent_migrations_and_auto_migrate(postgres_url: str, tmp_path: Path) -> None:
    """Several replicas starting at once with auto_migrate on do not trip over each other."""
    url = create_database(postgres_url, f"race_{uuid.uuid4().hex[:8]}")
    env = _env(url, tmp_path)
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "moorage.cli", "migrate"],
            env=env,
            cwd=REPO_ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], [o[1][-1500:] for o in outs]
    assert sum("empty ->" in o[0] for o in outs) == 1


def test_start_fails_cleanly_without_database(tmp_path: Path) -> None:
    env = _env("postgresql://nobody:x@127.0.0.1:1/none", tmp_path, MOORAGE_DATABASE__AUTO_MIGRATE="true")
    with pytest.raises(RegistryStartError):
        start_moorage(tmp_path / "srv", env={k: v for k, v in env.items() if k.startswith("MOORAGE_DATABASE")}, start_timeout=20)
