"""What every place that shows findings says about the vulnerability database behind them.

Why: "0 findings" from a scanner with no advisories loaded reads as "no known vulnerabilities"
-- a false reassurance.  So the CLI (``moorage vulns``), the API (``vulndb`` beside the
findings) and the UI say whether a database is loaded and how old it is, from one function.
"""

from __future__ import annotations

import json
import time
from typing import Any, TypedDict

#: An import older than this is called out (OSV exports change daily).
STALE_AFTER = 7 * 86400.0


class VulnDBStatus(TypedDict):
    loaded: bool
    advisories: int
    #: When ``moorage vulndb import`` last ran (epoch seconds), from where, or None.
    imported_at: float | None
    source: str | None
    #: The newest ``modified`` date among the loaded advisories (how current the export was).
    newest_advisory: str | None
    stale: bool
    #: One sentence for people (CLI, UI).
    note: str


async def vulndb_status(store: Any) -> VulnDBStatus:
    """The status from ``store`` (:class:`moorage.insight.store.InsightStore`)."""
    n, newest, last_raw = await store.vulndb_state()
    try:
        last = json.loads(last_raw) if last_raw else None
    except ValueError:
        last = None
    at = float(last["at"]) if isinstance(last, dict) and isinstance(last.get("at"), (int, float)) else None
    source = str(last.get("source")) if isinstance(last, dict) and last.get("source") else None
    stale = bool(n) and (at is None or time.time() - at > STALE_AFTER)
    return {
        "loaded": n > 0,
        "advisories": n,
        "imported_at": at,
        "source": source,
        "newest_advisory": newest,
        "stale": stale,
        "note": _note(n, at, source, newest, stale),
    }


def _ago(seconds: float) -> str:
    if seconds < 3600:
        return f"{max(0, int(seconds // 60))} min ago"
    if seconds < 2 * 86400:
        return f"{int(seconds // 3600)} h ago"
    return f"{int(seconds // 86400)} days ago"


def _note(n: int, at: float | None, source: str | None, newest: str | None, stale: bool) -> str:
    if n == 0:
        return (
            "no vulnerability database is loaded: findings cannot be known, whatever the count says; "
            "load an OSV export with `moorage vulndb import FILE` (see docs/insight.md)"
        )
    parts = [f"vulnerability database: {n} advisories"]
    if at is not None:
        when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(at))
        parts.append(f"imported {when} ({_ago(time.time() - at)})" + (f" from {source}" if source else ""))
    if newest:
        parts.append(f"newest advisory modified {newest[:10]}")
    text = ", ".join(parts)
    if stale:
        text += f"; older than {int(STALE_AFTER // 86400)} days: refresh it with `moorage vulndb import`"
    return text
