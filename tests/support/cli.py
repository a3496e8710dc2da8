"""One way to run the ``moorage`` command line from a test: the working tree's code (not an installed
copy), the caller's environment plus what the test adds, bounded by a timeout.

``run_moorage("gc", "--data", d, "--json")`` returns the ``CompletedProcess`` (text); ``check=True``
turns a non-zero exit into an AssertionError carrying both streams.  ``start_moorage_cli`` is the
same for a process the test steers while it runs (a paused collector, a migration race): its own
process group, so :func:`stop_group` ends it and whatever it started.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

from tests.support.registry_proc import REPO_ROOT

__all__ = ["cli_env", "moorage_argv", "run_moorage", "start_moorage_cli", "wait_for_line", "stop_group"]


def cli_env(extra: Mapping[str, str] | None = None, *, clean: bool = False) -> dict[str, str]:
    """The caller's environment (without any ``MOORAGE_*`` or ``REGISTRY_*`` -- registry:2 overrides
    Moorage reads -- when ``clean``), the working tree first on PYTHONPATH, then ``extra``."""
    env = {k: v for k, v in os.environ.items() if not (clean and k.startswith(("MOORAGE_", "REGISTRY_")))}
    pp = env.get("PYTHONPATH")
    env["PYTHONPATH"] = f"{REPO_ROOT}{os.pathsep}{pp}" if pp else str(REPO_ROOT)
    env.update(extra or {})
    return env


def moorage_argv(*args: str | os.PathLike[str]) -> list[str]:
    return [sys.executable, "-m", "moorage.cli", *(str(a) for a in args)]


def run_moorage(
    *args: str | os.PathLike[str],
    env: Mapping[str, str] | None = None,
    clean_env: bool = False,
    timeout: float = 120,
    check: bool = False,
    cwd: Path | str = REPO_ROOT,
    input: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """``moorage ARGS`` to completion; ``env`` is added to the caller's (see :func:`cli_env`)."""
    cp = subprocess.run(
        moorage_argv(*args),
        env=cli_env(env, clean=clean_env),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        input=input,
        **({"stdin": subprocess.DEVNULL} if input is None else {}),
    )
    if check and cp.returncode != 0:
        raise AssertionError(f"moorage {' '.join(map(str, args))} exited {cp.returncode}\n{cp.stdout}\n{cp.stderr}")
    return cp


def start_moorage_cli(
    *args: str | os.PathLike[str], env: Mapping[str, str] | None = None, clean_env: bool = False, cwd: Path | str = REPO_ROOT
) -> subprocess.Popen[str]:
    """``moorage ARGS`` in the background, pipes on all three streams, in a process group of its own."""
    return subprocess.Popen(
        moorage_argv(*args),
        env=cli_env(env, clean=clean_env),
        cwd=cwd,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def wait_for_line(proc: subprocess.Popen[str], marker: str, timeout: float = 90) -> str:
    """The first stderr line containing ``marker`` (e.g. a collector's pause hook saying "pausing");
    an AssertionError with what was printed if the process ends or ``timeout`` passes first."""
    deadline = time.monotonic() + timeout
    seen: list[str] = []
    while time.monotonic() < deadline:
        line = proc.stderr.readline()  # type: ignore[union-attr]
        if not line:
            break
        seen.append(line)
        if marker in line:
            return line
    stop_group(proc)
    raise AssertionError(f"no {marker!r} line (exit {proc.poll()}): {''.join(seen)[-2000:]}")


def stop_group(proc: subprocess.Popen[str], sig: int = signal.SIGKILL) -> None:
    """Signal the process's group (started by :func:`start_moorage_cli`) and reap it."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)
    proc.wait(timeout=10)
