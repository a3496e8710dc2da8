"""One helper for every long-running process the tests start (moorage, Distribution, nginx, podman).

A :class:`Daemon` is a command line run in its own process group with its output in a log file:

* **readiness**: ``start()`` polls a ``ready()`` predicate (bounded), failing early -- with the
  log tail -- if the process exits;
* **stop**: ``stop()`` signals the whole process group (SIGTERM or the daemon's own stop signal),
  waits, then SIGKILLs the group and waits for stragglers;
* **dies with its parent**: a SIGKILLed pytest runs no fixture teardown and no atexit hook, so
  two mechanisms make sure nothing outlives it:

  1. ``PR_SET_PDEATHSIG`` (SIGKILL) in the child -- but only when started from the main thread:
     the kernel delivers it when the *thread* that forked the child exits, so a daemon started
     from a ThreadPoolExecutor worker would die with the worker (tests/test_replicas.py starts
     its replicas that way);
  2. a watchdog process per daemon holding the read end of a pipe whose write end only this
     pytest process has: when pytest dies, for any reason, the kernel closes the write end, the
     watchdog reads EOF and kills the daemon's process group (SIGTERM, then SIGKILL).  That also
     covers the daemon's own children (e.g. podman's), which PDEATHSIG does not.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

__all__ = ["Daemon", "DaemonStartError", "group_members", "tail"]

_PR_SET_PDEATHSIG = 1
try:
    _libc: ctypes.CDLL | None = ctypes.CDLL(None, use_errno=True)
except OSError:  # pragma: no cover - non-glibc platforms
    _libc = None

# Runs as `python -I -S -c WATCHDOG <read fd> <pgid>`: blocks on the pipe; EOF = the test process
# is gone -> kill the group; a byte = the daemon was stopped normally -> just exit.
_WATCHDOG = r"""
import os, signal, sys, time
fd, pgid = int(sys.argv[1]), int(sys.argv[2])
signal.signal(signal.SIGINT, signal.SIG_IGN)
try:
    data = os.read(fd, 1)
except OSError:
    data = b""
if data:
    sys.exit(0)
for sig, wait in ((signal.SIGTERM, 3.0), (signal.SIGKILL, 0)):
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        break
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            sys.exit(0)
        time.sleep(0.05)
"""


class DaemonStartError(RuntimeError):
    """A daemon exited or did not become ready in time."""


def tail(path: Path | None, n: int = 40) -> str:
    if path is None:
        return "(no log)"
    try:
        lines = Path(path).read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join(lines[-n:])


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) PIDs whose process group is ``pgid`` (from /proc/*/stat)."""
    out = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[-1].split()  # pid (comm) state ppid pgrp ...; comm may hold ")"
        if len(fields) > 2 and fields[2] == str(pgid) and fields[0] != "Z":  # a zombie only waits to be reaped
            out.append(int(d.name))
    return out


def _pdeathsig() -> None:
    """preexec_fn: SIGKILL this child when the thread that forked it (the main thread) dies."""
    if _libc is not None:
        _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


class Daemon:
    """A process in its own group, with readiness, log, group stop and parent-death cleanup."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        log_path: Path,
        *,
        env: Mapping[str, str] | None = None,
        cwd: Path | str | None = None,
        ready: Callable[[], bool] | None = None,
        start_timeout: float = 30.0,
        stop_signal: int = signal.SIGTERM,
        stop_timeout: float = 10.0,
        port: int | None = None,
        popen_kwargs: Mapping[str, object] | None = None,
    ) -> None:
        self.name = name
        self.argv = [str(a) for a in argv]
        self.log_path = Path(log_path)
        self.env = dict(env) if env is not None else None
        self.cwd = cwd
        self.ready = ready
        self.start_timeout = start_timeout
        self.stop_signal = stop_signal
        self.stop_timeout = stop_timeout
        self.port = port
        self.popen_kwargs = dict(popen_kwargs or {})
        self.proc: subprocess.Popen[bytes] | None = None
        self.watchdog: subprocess.Popen[bytes] | None = None
        self._wfd: int | None = None

    # -- lifecycle ---------------------------------------------------------------------------
    def spawn(self) -> Daemon:
        """Start the process (and its watchdog) without waiting for readiness."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        main = threading.current_thread() is threading.main_thread()
        kwargs = dict(self.popen_kwargs)
        if main and "preexec_fn" not in kwargs:
            kwargs["preexec_fn"] = _pdeathsig
        with open(self.log_path, "ab") as log:
            log.write(f"\n--- start {' '.join(self.argv)}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=str(self.cwd) if self.cwd else None,
                env=self.env,
                start_new_session=True,
                **kwargs,
            )
        self._start_watchdog(self.proc.pid)
        return self

    def start(self) -> Daemon:
        """Spawn, then wait (bounded) until ``ready()``; on failure stop it and raise with the log."""
        self.spawn()
        assert self.proc is not None
        deadline = time.monotonic() + self.start_timeout
        delay = 0.05
        while True:
            if self.proc.poll() is not None:
                code = self.proc.returncode
                self.stop()
                raise DaemonStartError(f"{self.name} exited with code {code} before it was ready\n{self.log()}")
            try:
                if self.ready is None or self.ready():
                    return self
            except Exception:  # noqa: BLE001 - a probe that raises means "not yet"
                pass
            if time.monotonic() >= deadline:
                self.stop()
                raise DaemonStartError(f"{self.name} not ready after {self.start_timeout:.0f}s\n{self.log()}")
            time.sleep(delay)
            delay = min(delay * 1.5, 0.5)

    def stop(self) -> int | None:
        """Signal the group, wait, SIGKILL the group, wait for stragglers; returns the exit code.

        Only signals the group while it provably has members (a group id is not reused while any
        member lives), so an exited daemon never leads to signalling an unrelated process.
        """
        proc = self.proc
        if proc is None:
            return None
        pgid = proc.pid
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, self.stop_signal)
            try:
                proc.wait(timeout=self.stop_timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pgid, signal.SIGKILL)
                proc.wait(timeout=10)
        deadline = time.monotonic() + self.stop_timeout
        while group_members(pgid):
            if time.monotonic() > deadline:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pgid, signal.SIGKILL)
                break
            time.sleep(0.1)
        self._stop_watchdog()
        return proc.returncode

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def log(self, n: int = 60) -> str:
        return f"--- {self.log_path} (last {n} lines) ---\n{tail(self.log_path, n)}"

    # -- parent-death watchdog -----------------------------------------------------------------
    def _start_watchdog(self, pgid: int) -> None:
        self._stop_watchdog()
        rfd, wfd = os.pipe()  # both non-inheritable: no other child of pytest gets the write end
        try:
            self.watchdog = subprocess.Popen(
                [sys.executable, "-I", "-S", "-c", _WATCHDOG, str(rfd), str(pgid)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                pass_fds=(rfd,),
                start_new_session=True,
                env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
            )
        finally:
            os.close(rfd)
        self._wfd = wfd

    def _stop_watchdog(self) -> None:
        if self._wfd is not None:
            with contextlib.suppress(OSError):
                os.write(self._wfd, b"q")
            with contextlib.suppress(OSError):
                os.close(self._wfd)
            self._wfd = None
        if self.watchdog is not None:
            try:
                self.watchdog.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.watchdog.kill()
                self.watchdog.wait(timeout=5)
            self.watchdog = None

    def __enter__(self) -> Daemon:
        if self.proc is None:
            self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
