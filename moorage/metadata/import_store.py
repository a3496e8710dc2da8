"""SQL of the start-up import of a registry:2 tree (:mod:`moorage.compat.auto_import`).

One row per tree (its absolute path): a start that finds the row ``done`` imports nothing, and
every worker process reads the leader's progress from it (what ``/readyz`` and the UI show).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from sqlalchemy import select

from .db import Database
from .tables import distribution_imports

#: Bound of the stored detail text (a summary or one error line).
DETAIL_LIMIT = 2000


@dataclass(slots=True)
class ImportRow:
    source: str
    state: str  # running | done | failed
    done: int
    total: int
    started_at: float
    updated_at: float
    finished_at: float | None
    detail: str | None


async def load(db: Database, source: str) -> ImportRow | None:
    async with db.read(snapshot=False) as conn:
        r = (await conn.execute(select(distribution_imports).where(distribution_imports.c.source == source))).first()
    if r is None:
        return None
    return ImportRow(
        r.source, r.state, int(r.done), int(r.total), float(r.started_at), float(r.updated_at), r.finished_at, r.detail
    )


async def save(db: Database, row: ImportRow) -> None:
    row.updated_at = time.time()
    values = {
        "state": row.state,
        "done": row.done,
        "total": row.total,
        "started_at": row.started_at,
        "updated_at": row.updated_at,
        "finished_at": row.finished_at,
        "detail": (row.detail or "")[:DETAIL_LIMIT] or None,
    }
    async with db.write() as conn:
        await conn.execute(
            db.insert(distribution_imports)
            .values(source=row.source, **values)
            .on_conflict_do_update(index_elements=["source"], set_=values)
        )
