"""The registry's components, built in one place: settings, database, metadata store, blob store,
registry service and event bus.

``serve``, every CLI command, the benchmarks and the tests get their components from
:func:`build_components` (or :func:`opened`), so the database is opened, migrated or checked the
same way everywhere.  Policies that the core consults (immutable tags, quotas) are passed in
as constructor arguments (:class:`Policies`), never patched onto the objects afterwards.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from .config import Settings
from .metadata.db import Database
from .metadata.store import MetadataStore, TagGuard
from .registry.events import EventBus
from .registry.service import RegistryService
from .storage import BlobStore, create_blob_store

#: ``await guard(repository, digest, size)`` before an upload is committed; raises to refuse it.
CommitGuard = Callable[[str, str, int], Awaitable[None]]
UploadLimit = Callable[[str, str | None], Awaitable[int | None]]


@dataclass
class Policies:
    """Hooks that policy extensions give the core: checked inside the tag-move transaction
    (``tag_guards``) and before an upload is committed (``commit_guard``)."""

    tag_guards: list[TagGuard] = field(default_factory=list)
    commit_guard: CommitGuard | None = None
    #: ``await upload_limit(repository, digest or None)``: the most bytes an upload session may
    #: hold (quota headroom), checked as the bytes stream in; None = no limit.
    upload_limit: UploadLimit | None = None


@dataclass
class Components:
    settings: Settings
    database: Database
    metadata: MetadataStore
    blobs: BlobStore
    registry: RegistryService
    events: EventBus

    async def open(self, *, prepare: bool = True) -> None:
        """Make the database usable (migrate or check, :func:`prepare_database`) and open storage."""
        if prepare:
            await prepare_database(self.settings, self.database)
        await self.blobs.open()

    async def close(self) -> None:
        await self.blobs.close()
        await self.database.close()


PolicyFactory = Callable[[Database], Policies]


def build_components(
    settings: Settings, *, policies: PolicyFactory | None = None, pool_size: int | None = None, blobs: BlobStore | None = None
) -> Components:
    """Every component, wired; nothing is opened yet (see :meth:`Components.open`).

    ``blobs`` replaces the configured driver (the tests' in-memory store)."""
    database = Database(settings.database_url, pool_size=pool_size or settings.database.pool_size)
    hooks = policies(database) if policies is not None else Policies()
    metadata = MetadataStore(database, tag_guards=hooks.tag_guards)
    blobs = blobs if blobs is not None else create_blob_store(settings)
    registry = RegistryService(
        metadata,
        blobs,
        delete_enabled=settings.delete_enabled,
        max_manifest_bytes=settings.max_manifest_bytes,
        commit_guard=hooks.commit_guard,
        upload_limit=hooks.upload_limit,
        writer_lease=settings.uploads.writer_lease,
        max_sessions_per_repository=settings.uploads.max_sessions_per_repository,
        max_sessions_per_user=settings.uploads.max_sessions_per_user,
        events=EventBus(),
    )
    assert registry.events is not None
    return Components(settings, database, metadata, blobs, registry, registry.events)


async def prepare_database(settings: Settings, db: Database) -> None:
    """Migrate (SQLite default) or check that the schema is current (PostgreSQL default)."""
    auto = settings.database.auto_migrate
    if auto is None:
        auto = settings.is_sqlite
    if auto:
        await db.migrate()
    else:
        await db.check_schema()


@asynccontextmanager
async def opened(settings: Settings, *, policies: PolicyFactory | None = None, pool_size: int = 2) -> AsyncIterator[Components]:
    """Components opened for a command-line tool (a small pool), closed on exit."""
    components = build_components(settings, policies=policies, pool_size=pool_size)
    try:
        await components.open()
        yield components
    finally:
        await components.close()
