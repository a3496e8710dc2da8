"""Small process helpers shared by the throwaway-service launchers.

Everything here is bounded: no helper waits without a deadline.
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterable
from pathlib import Path

_PR_SET_PDEATHSIG = 1

try:
    _libc = ctypes.CDLL(None, use_errno=True)
except OSError:  # pragma: no cover - non-glibc platforms
    _libc = None


def die_with_parent() -> None:
    """preexec_fn: have the kernel SIGKILL the child if the test process dies.

    This is what keeps daemons from outliving a pytest that was killed with
    SIGKILL (where no fixture teardown or atexit hook runs).  It is set after
    the uid change done by Popen(user=...), so it survives the exec.
    """
    if _libc is not None:
        _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago (the caller must still verify)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
        return True


def clean_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for system tools.

    The `ceph` CLI is a /usr/bin/python3 script; a PYTHONPATH/PYTHONHOME from a
    virtualenv or pyenv must not leak into it.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env.setdefault("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
    env["LC_ALL"] = "C.UTF-8"
    env.pop("LANG", None)
    if extra:
        env.update(extra)
    return env


def wait_until(
    predicate: Callable[[], bool],
    timeout: float,
    what: str,
    interval: float = 0.05,
    alive: Iterable[subprocess.Popen] = (),
    on_fail: Callable[[], str] | None = None,
) -> None:
    """Poll `predicate` until it is true, a watched process dies, or timeout."""
    deadline = time.monotonic() + timeout
    procs = list(alive)
    while True:
        if predicate():
            return
        for p in procs:
            if p.poll() is not None:
                detail = on_fail() if on_fail else ""
                raise ServiceStartError(
                    f"{what}: process {p.args[0] if isinstance(p.args, list) else p.args} "
                    f"exited with code {p.returncode}\n{detail}"
                )
        if time.monotonic() >= deadline:
            detail = on_fail() if on_fail else ""
            raise ServiceStartError(f"{what}: not ready after {timeout:.0f}s\n{detail}")
        time.sleep(interval)


def stop_process(proc: subprocess.Popen | None, sig: int = signal.SIGTERM, grace: float = 3.0) -> None:
    """Send `sig`, wait up to `grace` seconds, then SIGKILL and reap."""
    if proc is None or proc.poll() is not None:
        return
    try:
        proc.send_signal(sig)
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:  # pragma: no cover - unkillable (D state)
            pass
    except ProcessLookupError:
        pass


def tail(path: Path, lines: int = 40) -> str:
    try:
        data = path.read_text(errors="replace").splitlines()
    except OSError:
        return f"(no {path.name})"
    return f"--- {path} (last {min(lines, len(data))} lines) ---\n" + "\n".join(data[-lines:])


class ServiceStartError(RuntimeError):
    """A throwaway service did not come up."""


def keep_dirs() -> bool:
    """MOORAGE_KEEP_SERVICE_DIRS=1 keeps work dirs (logs) after stop, for debugging."""
    return os.environ.get("MOORAGE_KEEP_SERVICE_DIRS", "") not in ("", "0", "false", "no")
