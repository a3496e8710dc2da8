"""What a new user meets in the first hour with ``moorage serve``: plain HTTP on a network address
says which client lines to add, a start that cannot listen leaves nothing behind, ``moorage
healthcheck`` takes ``--config/--data`` like every command, the start-up log names the cache
upstreams."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from tests.support.cli import run_moorage
from tests.support.registry_proc import start_moorage

pytestmark = [pytest.mark.protocol, pytest.mark.one_backend]


def test_plain_http_on_a_network_address_prints_the_client_lines(tmp_path: Path) -> None:
    # (doubled braces: start_moorage formats env values with {port})
    upstreams = '[{{"name": "hub", "url": "https://registry-1.docker.io", "namespace": "hub"}}]'
    srv = start_moorage(tmp_path, env={"MOORAGE_PROXY__UPSTREAMS": upstreams}, extra_args=["--addr", "0.0.0.0:{port}"])
    try:
        log = srv.log(200)
    finally:
        srv.stop()
    name = f"{socket.gethostname()}:{srv.port}"
    assert "server gave HTTP response to HTTPS client" in log, log
    assert f'location = "{name}"' in log and "insecure = true" in log, log
    assert f'{{ "insecure-registries": ["{name}"] }}' in log, log
    assert "cache upstreams: hub=https://registry-1.docker.io as /hub" in log, log


def test_loopback_without_tls_prints_no_client_lines(tmp_path: Path) -> None:
    srv = start_moorage(tmp_path)
    try:
        log = srv.log(200)
    finally:
        srv.stop()
    assert "insecure-registries" not in log and "cache upstreams" not in log, log


def test_a_start_that_cannot_listen_creates_nothing(tmp_path: Path) -> None:
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    try:
        data = tmp_path / "new-data"
        cp = run_moorage("serve", "--addr", f"127.0.0.1:{taken.getsockname()[1]}", "--data", str(data), timeout=60)
    finally:
        taken.close()
    assert cp.returncode != 0 and "address already in use" in cp.stderr, cp.stderr
    assert not data.exists()  # no data directory, no database


def test_healthcheck_takes_config_and_data(tmp_path: Path) -> None:
    srv = start_moorage(tmp_path)
    try:
        ok = run_moorage("healthcheck", "--data", str(srv.data_dir), "--addr", srv.host, "--ready", timeout=60)
        assert ok.returncode == 0, ok.stderr
    finally:
        srv.stop()
    down = run_moorage("healthcheck", "--data", str(srv.data_dir), "--addr", srv.host, timeout=60)
    assert down.returncode == 1
