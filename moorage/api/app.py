"""Builds the aiohttp application: storage, metadata, service, routes and middlewares."""

from __future__ import annotations

import logging
from typing import AsyncIterator, Callable

from aiohttp import web

from ..config import Settings
from ..metadata.db import Database
from ..metadata.store import MetadataStore
from ..registry.service import RegistryService
from ..registry.upload_claims import ProcessLiveness
from ..storage import create_blob_store
from . import base, blobs, catalog, manifests, referrers, tags, uploads
from ..registry.events import EventBus
from .common import BLOBS, EVENTS, SERVICE, SETTINGS
from .errors import error_middleware

log = logging.getLogger("moorage")

DATABASE = web.AppKey("database", Database)
STORE = web.AppKey("store", MetadataStore)

#: Optional features register here: ``fn(app, settings)`` called while building the app.
Extension = Callable[[web.Application, Settings], None]


async def prepare_database(settings: Settings, db: Database) -> None:
    """Migrate (SQLite default) or check that the schema is current (PostgreSQL default)."""
    auto = settings.database.auto_migrate
    if auto is None:
        auto = settings.is_sqlite
    if auto:
        await db.migrate()
    else:
        await db.check_schema()


def create_app(settings: Settings, extensions: list[Extension] | None = None) -> web.Application:
    db = Database(settings.database_url, pool_size=settings.database.pool_size)
    store = MetadataStore(db)
    blob_store = create_blob_store(settings)
    svc = RegistryService(store, blob_store, delete_enabled=settings.delete_enabled,
                          max_manifest_bytes=settings.max_manifest_bytes, writer_lease=settings.uploads.writer_lease,
                          max_sessions_per_repository=settings.uploads.max_sessions_per_repository,
                          max_sessions_per_user=settings.uploads.max_sessions_per_user)

    app = web.Application(middlewares=[error_middleware], client_max_size=settings.max_manifest_bytes + 1)
    app[SETTINGS] = settings
    app[DATABASE] = db
    app[STORE] = store
    app[BLOBS] = blob_store
    app[SERVICE] = svc
    app[EVENTS] = EventBus()

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        await prepare_database(settings, db)
        await blob_store.open()
        liveness = ProcessLiveness(settings.data / "claims")
        liveness.open()
        svc.liveness = liveness
        yield
        svc.liveness = None
        liveness.close()
        await blob_store.close()
        await db.close()

    app.cleanup_ctx.append(lifecycle)
    for ext in extensions or default_extensions(settings):
        ext(app, settings)
    # Order matters: upload routes before the blob routes they share a prefix with.
    for module in (base, catalog, tags, manifests, uploads, blobs, referrers):
        app.router.add_routes(module.routes)
    return app


def default_extensions(settings: Settings) -> list[Extension]:
    """Optional modules wired in by configuration (auth, UI, metrics, GC scheduler ...)."""
    exts: list[Extension] = []
    try:
        from ..auth.setup import setup_auth
    except ImportError:  # pragma: no cover - auth not built yet
        pass
    else:
        exts.append(setup_auth)
    from ..gc.setup import setup_gc  # deletes API, quotas, GC schedule (issue 5)
    from ..metrics import setup_metrics

    exts.append(setup_gc)
    exts.append(setup_metrics)
    return exts

