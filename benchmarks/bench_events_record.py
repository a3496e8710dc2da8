"""What the event listener adds to a push, in process: one ``EventsStore.record`` (the audit
entry alone, and with two outbox rows) on SQLite, 300 times each.

    python3 benchmarks/bench_events_record.py
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from moorage.metadata.db import Database  # noqa: E402
from moorage.metadata.events_store import EventsStore  # noqa: E402


async def main() -> None:
    db = Database(f"sqlite+aiosqlite:///{tempfile.mkdtemp()}/m.db")
    await db.migrate()
    store = EventsStore(db)
    entry = {
        "action": "push",
        "actor": "bob",
        "repository": "team/app",
        "target": "sha256:x",
        "client_ip": "127.0.0.1",
        "detail": {"tag": "v1"},
    }
    outbox = {
        "endpoint": "ci",
        "repository": "team/app",
        "event_id": "e",
        "action": "push",
        "content_type": "x",
        "body": b"x" * 700,
        "status": "pending",
        "attempts": 0,
        "next_attempt_at": 0.0,
        "created_at": 0.0,
    }
    for label, rows in (("audit entry only", []), ("audit entry + 2 outbox rows", [outbox, outbox])):
        ts = []
        for _ in range(300):
            t = time.perf_counter()
            await store.record(rows, [{**entry, "time": time.time()}])
            ts.append(time.perf_counter() - t)
        ts.sort()
        print(f"{label:<28} median {statistics.median(ts) * 1000:6.2f} ms   p90 {ts[270] * 1000:6.2f} ms")
    await db.close()


if __name__ == "__main__":
    asyncio.run(main())
