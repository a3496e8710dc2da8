"""Storage quotas per namespace, counted by unique blob bytes linked in the namespace.

A blob linked into several repositories of one namespace counts once; manifests (stored in
the database) do not count.  :func:`check_push` is called by the quota middleware
(:mod:`.api`) *before* a request's body is read, where the size is known:

* monolithic ``POST ?digest=`` with a ``Content-Length`` (0 added if the digest is already in
  the namespace);
* a cross-repository mount (the blob's size, unless already in the namespace);
* every ``PATCH`` with a ``Content-Length`` (bytes already in the session + the chunk);
* the completing ``PUT`` (session + last chunk, 0 if the digest is already in the namespace).

The check is not atomic with the link (two concurrent pushes may both pass the last byte
below the limit): a quota is a guard-rail, not an accounting ledger.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from sqlalchemy import delete, func, or_, select

from ..metadata.db import Database
from ..metadata.tables import blobs, quotas, repositories, repository_blobs
from ..registry import errors
from .patterns import human, in_namespace


@dataclass(frozen=True, slots=True)
class Quota:
    namespace: str
    limit_bytes: int


async def set_quota(db: Database, namespace: str, limit_bytes: int) -> None:
    namespace = namespace.strip("/")
    if not namespace:
        raise ValueError("namespace must not be empty")
    if limit_bytes < 0:
        raise ValueError("quota must be >= 0 bytes")
    async with db.write() as conn:
        await conn.execute(db.insert(quotas).values(
            namespace=namespace, limit_bytes=limit_bytes, created_at=time.time()
        ).on_conflict_do_update(index_elements=["namespace"], set_={"limit_bytes": limit_bytes}))


async def list_quotas(db: Database) -> list[Quota]:
    async with db.read() as conn:
        rows = (await conn.execute(select(quotas).order_by(quotas.c.namespace))).all()
    return [Quota(r.namespace, int(r.limit_bytes)) for r in rows]


async def remove_quota(db: Database, namespace: str) -> bool:
    async with db.write() as conn:
        res = await conn.execute(delete(quotas).where(quotas.c.namespace == namespace.strip("/")))
    return bool(res.rowcount)


def _like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _repos_in(namespace: str):  # type: ignore[no-untyped-def]
    return select(repositories.c.id).where(or_(
        repositories.c.name == namespace,
        repositories.c.name.like(_like_escape(namespace) + "/%", escape="\\"),
    ))


async def usage(db: Database, namespace: str) -> int:
    """Unique bytes of the blobs linked in ``namespace``."""
    digests = select(repository_blobs.c.digest).where(repository_blobs.c.repository_id.in_(_repos_in(namespace))).distinct()
    async with db.read() as conn:
        total = (await conn.execute(select(func.coalesce(func.sum(blobs.c.size), 0)).where(blobs.c.digest.in_(digests)))).scalar()
    return int(total or 0)


async def _linked_in(db: Database, namespace: str, digest: str) -> bool:
    q = select(repository_blobs.c.digest).where(
        repository_blobs.c.repository_id.in_(_repos_in(namespace)), repository_blobs.c.digest == digest
    ).limit(1)
    async with db.read() as conn:
        return (await conn.execute(q)).first() is not None


async def applicable(db: Database, repository: str) -> list[Quota]:
    return [q for q in await list_quotas(db) if in_namespace(q.namespace, repository)]


async def check_push(db: Database, repository: str, added: int, digest: str | None = None) -> None:
    """Raise DENIED if adding ``added`` bytes (blob ``digest`` if known) to ``repository`` exceeds a quota."""
    for quota in await applicable(db, repository):
        if digest and await _linked_in(db, quota.namespace, digest):
            continue
        used = await usage(db, quota.namespace)
        if used + added > quota.limit_bytes:
            raise errors.Denied(
                f"storage quota of namespace {quota.namespace!r} exceeded: quota {quota.limit_bytes} bytes "
                f"({human(quota.limit_bytes)}), used {used} bytes, this push adds {added} bytes",
                detail={"namespace": quota.namespace, "quota": quota.limit_bytes, "used": used, "adding": added},
            )


async def headroom(db: Database, repository: str, digest: str | None = None) -> int | None:
    """Bytes ``repository`` may still add under its quotas (the tightest one), None if no quota
    applies (or ``digest`` is already counted in every namespace that has one).

    Used on upload bodies as they stream in (``RegistryService.upload_limit``), so a chunked
    body without ``Content-Length`` cannot write past a quota before its size is known.
    """
    room: int | None = None
    for quota in await applicable(db, repository):
        if digest and await _linked_in(db, quota.namespace, digest):
            continue
        left = max(0, quota.limit_bytes - await usage(db, quota.namespace))
        room = left if room is None else min(room, left)
    return room
