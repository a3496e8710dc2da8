"""``moorage serve``'s log: readable text when standard error is a terminal, one JSON object per
line when it is not (a collector's pipe), and either one when asked (``--log-format``,
``MOORAGE_LOG_FORMAT``) whatever standard error is."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import time
from pathlib import Path

import pytest
import requests

from tests.support.cli import cli_env, moorage_argv
from tests.support.registry_proc import REPO_ROOT, free_port

pytestmark = [pytest.mark.protocol, pytest.mark.one_backend]


def _serve_log(tmp_path: Path, *, terminal: bool, args: tuple[str, ...] = (), env: dict[str, str] | None = None) -> list[str]:
    """Start ``moorage serve`` with standard error a pty (``terminal``) or a pipe, make one
    request, stop it, and return the non-empty lines it wrote to standard error."""
    port = free_port()
    argv = moorage_argv("serve", "--addr", f"127.0.0.1:{port}", "--data", tmp_path / "data", *args)
    primary = secondary = -1
    if terminal:
        primary, secondary = pty.openpty()
        proc = subprocess.Popen(argv, env=cli_env(env, clean=True), cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=secondary)
        os.close(secondary)
    else:
        proc = subprocess.Popen(
            argv, env=cli_env(env, clean=True), cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, "server exited"
            try:
                assert requests.get(f"http://127.0.0.1:{port}/v2/", timeout=5).status_code == 200
                break
            except requests.ConnectionError:
                assert time.monotonic() < deadline, "server did not answer"
                time.sleep(0.2)
        time.sleep(0.3)  # the access line is written after the response
    finally:
        proc.terminate()
    if terminal:
        out = b""
        while True:
            try:
                chunk = os.read(primary, 65536)
            except OSError:  # EIO: the server closed its end
                break
            if not chunk:
                break
            out += chunk
        os.close(primary)
        proc.wait(30)
        text = out.decode(errors="replace")
    else:
        text = proc.communicate(timeout=30)[1].decode(errors="replace")
    return [line.rstrip("\r") for line in text.splitlines() if line.strip()]


def _assert_text(lines: list[str]) -> None:
    assert lines and not any(line.startswith("{") for line in lines), lines
    assert any(" INFO " in line and "listening on http://127.0.0.1:" in line for line in lines), lines
    assert any(" GET /v2/ 200 2 B " in line and line.endswith(" ms 127.0.0.1") for line in lines), lines


def _assert_json(lines: list[str]) -> None:
    entries = [json.loads(line) for line in lines]  # every line an object
    assert all(isinstance(e, dict) and isinstance(e["ts"], float) for e in entries), lines
    assert any(e.get("level") == "info" and "listening on http://127.0.0.1:" in e["message"] for e in entries), lines
    access = [e for e in entries if e.get("method") == "GET" and e.get("path") == "/v2/"]
    assert access and access[0]["status"] == 200 and "level" not in access[0], lines


def test_a_terminal_gets_text(tmp_path: Path) -> None:
    _assert_text(_serve_log(tmp_path, terminal=True))


def test_a_pipe_gets_json(tmp_path: Path) -> None:
    _assert_json(_serve_log(tmp_path, terminal=False))


def test_text_when_asked_on_a_pipe(tmp_path: Path) -> None:
    _assert_text(_serve_log(tmp_path, terminal=False, args=("--log-format", "text")))


def test_json_when_asked_on_a_terminal(tmp_path: Path) -> None:
    _assert_json(_serve_log(tmp_path, terminal=True, env={"MOORAGE_LOG_FORMAT": "json"}))


def test_an_unknown_format_is_refused(tmp_path: Path) -> None:
    cp = subprocess.run(
        moorage_argv("serve", "--addr", f"127.0.0.1:{free_port()}", "--data", tmp_path / "data"),
        env=cli_env({"MOORAGE_LOG_FORMAT": "xml"}, clean=True),
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert cp.returncode != 0 and "log_format" in cp.stderr and "Traceback" not in cp.stderr, cp.stderr
    assert not (tmp_path / "data").exists()
