"""The image's HEALTHCHECK command (``python3 -m moorage.compat.healthcheck``) follows the
configured address and TLS, reading the same registry:2 config.yml the server reads."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.registry_proc import REPO_ROOT, free_port, terminate_group
from tests.support.tls import self_signed


def _env(config: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MOORAGE_", "REGISTRY_"))}
    env.update(PYTHONPATH=str(REPO_ROOT), MOORAGE_CONFIG=str(config))
    return env


def _healthcheck(config: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "moorage.compat.healthcheck"],
        capture_output=True,
        text=True,
        env=_env(config),
        timeout=60,
        cwd=config.parent,
    )


@pytest.mark.parametrize("tls", [False, True], ids=["http", "https"])
def test_healthcheck_follows_config(tmp_path: Path, tls: bool) -> None:
    port = free_port()
    cfg = tmp_path / "config.yml"
    text = f"version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {tmp_path / 'data'}\nhttp:\n  addr: 127.0.0.1:{port}\n"
    if tls:
        crt, key = self_signed(tmp_path)
        text += f"  tls:\n    certificate: {crt}\n    key: {key}\n"
    cfg.write_text(text)
    unhealthy = _healthcheck(cfg)  # nothing listens yet
    assert unhealthy.returncode == 1 and "unhealthy" in unhealthy.stderr
    proc = subprocess.Popen(
        [sys.executable, "-m", "moorage.cli", "serve"],
        env=_env(cfg),
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        while (cp := _healthcheck(cfg)).returncode != 0:
            assert proc.poll() is None, "server exited"
            assert time.monotonic() < deadline, cp.stderr
            time.sleep(0.3)
    finally:
        terminate_group(proc)
    assert proc.returncode == 0  # SIGTERM: clean exit
