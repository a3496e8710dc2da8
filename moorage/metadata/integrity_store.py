"""SQL of ``moorage scrub``: which blobs to visit, its resumable progress, and the quarantine.

A quarantined blob has ``blobs.quarantined_at`` set: every read of the registry
(``blob_size_in_repository``, ``blob_size``) and the reference check of a manifest PUT then
treat it as unknown.  A verified re-push lifts it (``MetadataStore.link_blob(repaired=True)``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from sqlalchemy import func, select, update

from .db import Database
from .policy_store import repositories_in
from .tables import blobs, quarantined_blobs, repositories, repository_blobs, scrub_progress


@dataclass(slots=True)
class ScrubProgress:
    scope: str
    last_digest: str | None
    started_at: float
    checked: int
    checked_bytes: int
    corrupt: int
    finished_at: float | None


@dataclass(slots=True)
class Quarantined:
    digest: str
    size: int
    actual: str | None
    actual_size: int | None
    detected_at: float


def scope_key(repository: str | None, namespace: str | None) -> str:
    """The progress row of a scope: "" (every blob), ``repo:NAME`` or ``ns:NAME``."""
    if repository:
        return f"repo:{repository}"
    if namespace:
        return f"ns:{namespace.strip('/')}"
    return ""


def _in_scope(db: Database, stmt, repository: str | None, namespace: str | None):  # type: ignore[no-untyped-def]
    if not repository and not namespace:
        return stmt
    if repository:
        repo_ids = select(repositories.c.id).where(repositories.c.name == repository)
    else:
        repo_ids = repositories_in(db, (namespace or "").strip("/"))
    linked = select(repository_blobs.c.digest).where(repository_blobs.c.repository_id.in_(repo_ids))
    return stmt.where(blobs.c.digest.in_(linked))


async def count_blobs(db: Database, repository: str | None, namespace: str | None, after: str | None) -> tuple[int, int]:
    """(blobs, bytes) a scrub of this scope still has to visit after ``after``."""
    stmt = select(func.count(), func.coalesce(func.sum(blobs.c.size), 0)).where(
        blobs.c.deleting_since.is_(None), blobs.c.quarantined_at.is_(None), blobs.c.digest > (after or "")
    )
    async with db.read() as conn:
        n, total = (await conn.execute(_in_scope(db, stmt, repository, namespace))).one()
    return int(n or 0), int(total or 0)


async def next_blobs(
    db: Database, repository: str | None, namespace: str | None, after: str | None, limit: int
) -> list[tuple[str, int]]:
    """The next ``limit`` live, unquarantined blobs of the scope in digest order after ``after``."""
    stmt = (
        select(blobs.c.digest, blobs.c.size)
        .where(blobs.c.deleting_since.is_(None), blobs.c.quarantined_at.is_(None), blobs.c.digest > (after or ""))
        .order_by(blobs.c.digest)
        .limit(limit)
    )
    async with db.read() as conn:
        return [(r.digest, int(r.size)) for r in await conn.execute(_in_scope(db, stmt, repository, namespace))]


async def is_live(db: Database, digest: str) -> bool:
    async with db.read(snapshot=False) as conn:
        return (
            await conn.execute(
                select(blobs.c.digest).where(
                    blobs.c.digest == digest, blobs.c.deleting_since.is_(None), blobs.c.quarantined_at.is_(None)
                )
            )
        ).first() is not None


async def load_progress(db: Database, scope: str) -> ScrubProgress | None:
    async with db.read() as conn:
        r = (await conn.execute(select(scrub_progress).where(scrub_progress.c.scope == scope))).first()
    if r is None:
        return None
    return ScrubProgress(
        r.scope, r.last_digest, float(r.started_at), int(r.checked), int(r.checked_bytes), int(r.corrupt), r.finished_at
    )


async def save_progress(db: Database, p: ScrubProgress) -> None:
    now = time.time()
    values = {
        "last_digest": p.last_digest,
        "started_at": p.started_at,
        "updated_at": now,
        "checked": p.checked,
        "checked_bytes": p.checked_bytes,
        "corrupt": p.corrupt,
        "finished_at": p.finished_at,
    }
    async with db.write() as conn:
        await conn.execute(
            db.insert(scrub_progress).values(scope=p.scope, **values).on_conflict_do_update(index_elements=["scope"], set_=values)
        )


async def quarantine(db: Database, digest: str, size: int, actual: str | None, actual_size: int | None) -> bool:
    """Mark ``digest`` quarantined (unknown to every read from now on); False if it is gone
    or being deleted meanwhile."""
    now = time.time()
    async with db.write() as conn:
        res = await conn.execute(
            update(blobs).where(blobs.c.digest == digest, blobs.c.deleting_since.is_(None)).values(quarantined_at=now)
        )
        if not res.rowcount:
            return False
        values = {"size": size, "actual": actual, "actual_size": actual_size, "detected_at": now, "repaired_at": None}
        await conn.execute(
            db.insert(quarantined_blobs)
            .values(digest=digest, **values)
            .on_conflict_do_update(index_elements=["digest"], set_=values)
        )
    return True


async def quarantined_since(db: Database, since: float) -> list[Quarantined]:
    async with db.read() as conn:
        rows = (
            await conn.execute(
                select(quarantined_blobs).where(quarantined_blobs.c.detected_at >= since).order_by(quarantined_blobs.c.digest)
            )
        ).all()
    return [
        Quarantined(r.digest, int(r.size), r.actual, None if r.actual_size is None else int(r.actual_size), float(r.detected_at))
        for r in rows
    ]
