"""Builds the aiohttp application from the registry's components: the OCI routes, the error
middleware, the components' lifecycle, and whatever extensions the composition root passes in.

This module imports no extension: :mod:`moorage.composition` decides which ones run.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

from aiohttp import web

from ..components import Components
from ..metadata.leader import leader_lock
from ..registry.upload_claims import ProcessLiveness
from ..scheduler import Scheduler
from . import base, blobs, catalog, health, manifests, openapi, referrers, tags, uploads
from .common import BLOBS, COMPONENTS, DATABASE, EVENTS, NOTICES, SCHEDULER, SERVICE, SETTINGS, STORE
from .errors import error_middleware
from .extension import Extension as ExtensionProtocol
from .extension import ExtensionContext
from .routing import add_routes, route_registry
from .scoped import ROUTE_MIDDLEWARES, RouteMiddlewares
from .storage_full import FULL_STATE, FullState

log = logging.getLogger("moorage")

#: An extension: ``setup(ctx)`` adds routes, middlewares, background jobs and event listeners
#: through the :class:`~moorage.api.extension.ExtensionContext` it is handed.
Extension = ExtensionProtocol


def create_app(components: Components, extensions: list[Extension] = ()) -> web.Application:  # type: ignore[assignment]
    settings = components.settings
    app = web.Application(middlewares=[error_middleware], client_max_size=settings.max_manifest_bytes + 1)
    app[COMPONENTS] = components
    app[SETTINGS] = settings
    app[DATABASE] = components.database
    app[STORE] = components.metadata
    app[BLOBS] = components.blobs
    app[SERVICE] = components.registry
    app[EVENTS] = components.events
    app[FULL_STATE] = FullState()  # "storage is full": one log line a minute, /readyz detail
    app[NOTICES] = []
    route_registry(app)  # every route is declared into it (moorage.api.routing)
    scheduler = app[SCHEDULER] = Scheduler(lambda: leader_lock(components.database, settings.data))

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        try:
            await components.open()
        except BaseException:
            # Close what was opened, so the failure is reported on a loop with no stray
            # callbacks (aiosqlite threads answering a closed loop print tracebacks).
            await components.close()
            raise
        liveness = ProcessLiveness(settings.data / "claims")  # claims of dead local processes are taken over
        liveness.open()
        components.registry.liveness = liveness
        yield
        components.registry.liveness = None
        liveness.close()
        await components.close()

    app.cleanup_ctx.append(lifecycle)
    scoped = app[ROUTE_MIDDLEWARES] = RouteMiddlewares()
    ctx = ExtensionContext(app, settings, components, scheduler, scoped, app[NOTICES])
    for ext in extensions:
        ext(ctx)
    app.middlewares.append(scoped.dispatch())  # innermost: the route-scoped ones, in setup order

    async def background_jobs(app: web.Application) -> AsyncIterator[None]:
        # Last to start (the extensions' own start-up has run), first to stop.
        await scheduler.start()
        yield
        await scheduler.stop()

    app.cleanup_ctx.append(background_jobs)
    # Order matters: upload routes before the blob routes they share a prefix with.
    add_routes(app, *(module.routes for module in (base, health, catalog, tags, manifests, uploads, blobs, referrers)))
    add_routes(app, openapi.routes)  # GET /api/openapi.json, public
    return app
