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

**The quota list is cached** (:class:`QuotaBook`, one per :class:`Database`): the quota
middleware consults it on every upload request, and on a registry without quotas that read
was 12 % of the server's GIL time (benchmarks/PROFILE-load.md).  A change made through this
process (the policy admin service: the UI, the CLI) applies to the next request;
a change made by another process (``moorage quota set``, another worker or replica) applies
within ``gc.quota_cache_seconds`` (default 2 s; 0 reads the table on every check).  Usage is
never cached: only the (tiny, rarely changed) list of quotas is.
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Callable
from contextvars import ContextVar

from .. import errors
from ..metadata.db import Database
from ..metadata.policy_store import PolicyStore
from ..metadata.records import Quota
from .patterns import human, in_namespace

__all__ = [
    "QUOTA_APPLIES",
    "Quota",
    "QuotaBook",
    "applicable",
    "book",
    "check_push",
    "headroom",
    "list_quotas",
    "quota_applies",
    "usage",
    "UploadQuotaCheck",
]

#: What the quota middleware found for the request it checked (per request task): False when no
#: quota applies to the repository, so the check on streamed bytes (``policies.quota_headroom``)
#: needs no lookup of its own on the usual, quota-less push.
QUOTA_APPLIES: ContextVar[bool | None] = ContextVar("moorage_quota_applies", default=None)
#: Default of ``gc.quota_cache_seconds``: how stale this process's quota list may be when
#: another process changed the table.
QUOTA_CACHE_SECONDS = 2.0


class QuotaBook:
    """The quota list of one database, read at most once per ``ttl`` seconds.

    :meth:`invalidate` (called by :func:`set_quota` and :func:`remove_quota`) drops it at once;
    a read that was in flight while it was invalidated is not kept (it may predate the write).
    """

    def __init__(self, store: PolicyStore, ttl: float = QUOTA_CACHE_SECONDS, clock: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self.ttl = ttl
        self.clock = clock
        self._quotas: list[Quota] | None = None
        self._until = 0.0
        self._generation = 0
        #: Table reads so far (for tests and benchmarks).
        self.reads = 0

    async def all(self) -> list[Quota]:
        if self._quotas is not None and self.clock() < self._until:
            return self._quotas
        generation, started = self._generation, self.clock()
        self.reads += 1
        quotas = await self.store.list_quotas()
        if generation == self._generation and self.ttl > 0:
            self._quotas, self._until = quotas, started + self.ttl
        return quotas

    def invalidate(self) -> None:
        self._generation += 1
        self._quotas = None


_books: weakref.WeakKeyDictionary[Database, QuotaBook] = weakref.WeakKeyDictionary()


def book(db: Database, ttl: float | None = None) -> QuotaBook:
    """The quota book of ``db`` (created on first use; ``ttl`` sets its cache lifetime)."""
    found = _books.get(db)
    if found is None:
        found = _books[db] = QuotaBook(PolicyStore(db), QUOTA_CACHE_SECONDS if ttl is None else ttl)
    elif ttl is not None:
        found.ttl = ttl
    return found


async def list_quotas(db: Database) -> list[Quota]:
    """Every quota, read now (not cached: for the CLI and the admin pages)."""
    return await PolicyStore(db).list_quotas()


async def usage(db: Database, namespace: str) -> int:
    """Unique bytes of the blobs linked in ``namespace``."""
    return await PolicyStore(db).namespace_usage(namespace)


async def applicable(db: Database, repository: str) -> list[Quota]:
    """The quotas of the namespaces ``repository`` lies in (from the cached list)."""
    quotas = await book(db).all()
    return [q for q in quotas if in_namespace(q.namespace, repository)] if quotas else []


async def quota_applies(db: Database, repository: str) -> bool:
    """Whether any quota covers ``repository``; remembered for this request in :data:`QUOTA_APPLIES`."""
    found = bool(await applicable(db, repository))
    QUOTA_APPLIES.set(found)
    return found


async def check_push(db: Database, repository: str, added: int, digest: str | None = None) -> None:
    """Raise DENIED if adding ``added`` bytes (blob ``digest`` if known) to ``repository`` exceeds a quota."""
    store = PolicyStore(db)
    for quota in await applicable(db, repository):
        if digest and await store.linked_in_namespace(quota.namespace, digest):
            continue
        used = await store.namespace_usage(quota.namespace)
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
    store = PolicyStore(db)
    room: int | None = None
    for quota in await applicable(db, repository):
        if digest and await store.linked_in_namespace(quota.namespace, digest):
            continue
        left = max(0, quota.limit_bytes - await store.namespace_usage(quota.namespace))
        room = left if room is None else min(room, left)
    return room


class UploadQuotaCheck:
    """The quotas of ``db`` as the quota middleware asks for them
    (:class:`moorage.gc.quota_middleware.UploadQuota`)."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def applies(self, repository: str) -> bool:
        return await quota_applies(self.db, repository)

    async def check(self, repository: str, added: int, digest: str | None) -> None:
        await check_push(self.db, repository, added, digest)
