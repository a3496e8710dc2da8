"""tests.support.daemon.Daemon: a SIGKILLed pytest leaves no server behind.

The inner pytest (a subprocess) starts a Moorage server the normal way (``start_moorage``, from
the main thread: PR_SET_PDEATHSIG + watchdog), another one from a worker thread (as
tests/test_replicas.py does: only the watchdog can help there), and a plain Daemon whose
process forks a grandchild into its group (as podman and nginx do).  It writes their pids and
ports to a file and sleeps.  We SIGKILL that pytest -- no teardown, no atexit -- and every one of
those processes must be gone within seconds.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import urllib.request
from pathlib import Path

from tests.support.daemon import Daemon, group_members
from tests.support.registry_proc import REPO_ROOT

INNER = """
import json, os, sys, threading, time
from pathlib import Path
from tests.support.daemon import Daemon
from tests.support.registry_proc import start_moorage

def test_start_servers_then_hang(tmp_path):
    out = Path(os.environ["DAEMON_TEST_OUT"])
    main = start_moorage(tmp_path / "main")
    box = {}
    t = threading.Thread(target=lambda: box.setdefault("srv", start_moorage(tmp_path / "thread")))
    t.start(); t.join()
    shell = Daemon("forker", ["sh", "-c", "sleep 600 & echo $! > %s/grandchild.tmp && mv %s/grandchild.tmp %s/grandchild; wait"
                                     % (tmp_path, tmp_path, tmp_path)],
                   tmp_path / "forker.log", ready=lambda: (tmp_path / "grandchild").exists()).start()
    info = {"pytest": os.getpid(),
            "servers": [[main.proc.pid, main.port], [box["srv"].proc.pid, box["srv"].port]],
            "forker": shell.pid, "grandchild": int((tmp_path / "grandchild").read_text())}
    out.write_text(json.dumps(info))
    time.sleep(600)
"""


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"  # a zombie is dead, just not reaped


def _answers(port: int) -> bool:
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/", timeout=1)
        return True
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False


def test_sigkilled_pytest_leaves_no_server_running(tmp_path: Path) -> None:
    test_file = tmp_path / "test_inner_daemons.py"
    test_file.write_text(textwrap.dedent(INNER))
    out = tmp_path / "pids.json"
    env = {**os.environ, "DAEMON_TEST_OUT": str(out), "PYTHONPATH": str(REPO_ROOT)}
    inner = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-c",
            os.devnull,
            "--rootdir",
            str(tmp_path),
            "-o",
            "timeout=0",
            str(test_file),
            "--basetemp",
            str(tmp_path / "inner-tmp"),
        ],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    info = None
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and inner.poll() is None and not out.exists():
            time.sleep(0.1)
        assert out.exists(), f"inner pytest did not start its servers (exit {inner.poll()}):\n" + (
            inner.stdout.read().decode(errors="replace")[-3000:] if inner.poll() is not None else ""
        )  # type: ignore[union-attr]
        time.sleep(0.2)
        info = json.loads(out.read_text())
        servers = info["servers"]
        assert info["pytest"] == inner.pid
        assert all(_alive(pid) and _answers(port) for pid, port in servers), servers
        assert _alive(info["forker"]) and _alive(info["grandchild"])

        os.kill(inner.pid, signal.SIGKILL)  # no fixture teardown, no atexit: only the kernel acts
        inner.wait(timeout=10)

        pids = [pid for pid, _ in servers] + [info["forker"], info["grandchild"]]
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and (any(_alive(p) for p in pids) or any(_answers(port) for _, port in servers)):
            time.sleep(0.1)
        left = [p for p in pids if _alive(p)]
        assert not left, f"still running after the test process was SIGKILLed: {left}"
        assert not any(_answers(port) for _, port in servers)
        assert not any(group_members(pid) for pid, _ in servers)
    finally:
        if inner.poll() is None:
            os.killpg(inner.pid, signal.SIGKILL)
            inner.wait(timeout=10)
        if info:  # never leave anything behind, even when the assertion above failed
            for pid in [p for p, _ in info["servers"]] + [info["forker"]]:
                if group_members(pid):
                    os.killpg(pid, signal.SIGKILL)


def test_daemon_started_from_a_worker_thread_outlives_the_thread(tmp_path: Path) -> None:
    """PR_SET_PDEATHSIG fires when the forking *thread* exits; a Daemon must not use it there."""
    box: dict[str, Daemon] = {}
    t = threading.Thread(target=lambda: box.setdefault("d", Daemon("sleeper", ["sleep", "300"], tmp_path / "s.log").start()))
    t.start()
    t.join()
    d = box["d"]
    try:
        time.sleep(0.5)
        assert d.running, "the daemon died with the thread that started it"
    finally:
        assert d.stop() == -signal.SIGTERM
    assert not d.running and not group_members(d.pid or 0)
    assert d.watchdog is None  # retired on stop: no watchdog process left over


def test_daemon_start_failure_reports_the_log(tmp_path: Path) -> None:
    d = Daemon("failing", ["sh", "-c", "echo boom-on-stderr >&2; exit 3"], tmp_path / "f.log", ready=lambda: False)
    try:
        d.start()
    except RuntimeError as e:
        assert "exited with code 3" in str(e) and "boom-on-stderr" in str(e)
    else:
        raise AssertionError("start() of a daemon that exits must raise")
    assert d.watchdog is None
