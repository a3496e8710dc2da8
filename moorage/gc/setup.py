"""The server extension of the storage policies: quotas, repository delete, scheduled GC (listed in ``moorage.composition.default_extensions``).

``setup_gc(ctx)``:

* adds the quota middleware (:mod:`moorage.gc.quota_middleware`; upload requests only, no
  query at all when no quota exists: the quota list is cached, :mod:`.quotas`) -- the same check
  at upload completion (``RegistryService.commit_guard``) for sizes known only then is a core
  hook (:mod:`.policies`);
* adds ``DELETE /api/v1/repositories/{name}`` (admin; :mod:`moorage.gc.admin_http`);
* with ``gc.interval > 0``, registers the collector as the scheduler's leader-only job ``gc``,
  run every ``gc.interval`` seconds (grace ``gc.grace``, ``gc.delete_untagged``): of several
  workers or replicas sharing the database only the leader collects (:mod:`moorage.scheduler`);
  concurrent collectors are safe anyway (docs/gc.md), just wasteful.
"""

from __future__ import annotations

import logging
import os

from ..api.extension import ExtensionContext
from ..config import Settings
from ..registry.events import EventBus
from ..scheduler import Job

log = logging.getLogger("moorage.gc")


def setup_gc(ctx: ExtensionContext) -> None:
    from ..api.routing import add_routes
    from .admin_http import repository_delete_routes
    from .quota_middleware import UPLOAD_ROUTES, quota_middleware
    from .quotas import UploadQuotaCheck, book

    settings = ctx.settings
    # Immutable tags and the quota check at commit are core hooks (moorage.gc.policies, passed
    # in by the composition root); here the quota check of declared sizes before any byte.
    book(ctx.database, ttl=settings.gc.quota_cache_seconds)
    ctx.route_middlewares.add(quota_middleware(UploadQuotaCheck(ctx.database)), lambda route: route in UPLOAD_ROUTES)
    add_routes(ctx.app, repository_delete_routes())
    if settings.gc.interval > 0:
        ctx.scheduler.register(_job(settings, ctx.events))


def _job(settings: Settings, events: EventBus | None = None) -> Job:
    async def collect_once() -> None:
        from ..registry.service import COLLECTOR
        from .collector import GCOptions
        from .service import collect_on_thread

        gc = settings.gc
        opts = GCOptions(grace=gc.grace, delete_untagged=gc.delete_untagged, upload_expiry=gc.upload_expiry)
        summary = (await collect_on_thread(settings, opts, events, COLLECTOR)).summary()
        log.info("gc: %s (pid %d)", summary, os.getpid())  # which worker collected

    # Failures are logged by the scheduler and retried at the next interval.
    return Job("gc", collect_once, interval=float(settings.gc.interval), leader_only=True)
