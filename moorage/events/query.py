"""Parsing of audit-query values shared by ``GET /api/v1/audit`` and ``moorage audit``."""

from __future__ import annotations

import time
from datetime import UTC, datetime

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_time(text: str, *, now: float | None = None) -> float:
    """``1732970000`` (epoch seconds), ``2026-11-30T12:00:00Z`` (ISO 8601; no zone = UTC) or a
    duration back from now: ``90s``, ``15m``, ``24h``, ``7d``, ``2w``.  ValueError otherwise."""
    text = text.strip()
    now = time.time() if now is None else now
    if not text or len(text) > 64:
        raise ValueError("empty or overlong time")
    unit = _UNITS.get(text[-1:].lower())
    if unit and text[:-1].replace(".", "", 1).isdigit():
        return now - float(text[:-1]) * unit
    if text.replace(".", "", 1).isdigit():
        return float(text)
    try:
        ts = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise ValueError(f"invalid time {text[:64]!r} (epoch seconds, ISO 8601, or e.g. 24h, 7d)") from None
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=UTC)
    return ts.timestamp()


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
