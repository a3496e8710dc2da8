"""Asserting WHY a real client failed, not just that it did.

``returncode != 0`` also holds when the registry crashed, the port was wrong or the client
timed out; a negative test must check the reason the client prints (the registry's error code
or message as the client reports it).
"""

from __future__ import annotations

import subprocess

__all__ = ["assert_refused"]

#: Failures that never count as "the registry refused": the test would pass against a dead server.
NOT_A_REFUSAL = (
    "connection refused",
    "no such host",
    "i/o timeout",
    "context deadline exceeded",
    "500 internal server error",
    "status 500",
    "502 bad gateway",
)


def assert_refused(cp: subprocess.CompletedProcess[str], *reasons: str) -> str:
    """``cp`` failed and its output names one of ``reasons`` (case-insensitive); returns the output."""
    out = (cp.stdout or "") + (cp.stderr or "")
    low = out.lower()
    assert cp.returncode != 0, f"expected a refusal ({' / '.join(reasons)}), the command succeeded:\n{out[-2000:]}"
    assert not any(bad in low for bad in NOT_A_REFUSAL), f"failed, but not because the registry refused:\n{out[-2000:]}"
    assert any(r.lower() in low for r in reasons), f"failed without naming {' / '.join(reasons)}:\n{out[-2000:]}"
    return out
