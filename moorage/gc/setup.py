"""The server extension of the storage policies: quotas, repository delete, scheduled GC (listed in ``moorage.composition.default_extensions``).

``setup_gc(ctx)``:

* adds the quota middleware (:mod:`moorage.api.quota_middleware`; upload requests only, no
  query at all when no quota exists: the quota list is cached, :mod:`.quotas`) -- the same check
  at upload completion (``RegistryService.commit_guard``) for sizes known only then is a core
  hook (:mod:`.policies`);
* adds ``DELETE /api/v1/repositories/{name}`` (admin; :mod:`moorage.api.gc_admin`);
* with ``gc.interval > 0``, registers the collector as the scheduler's leader-only job ``gc``,
  run every ``gc.interval`` seconds (grace ``gc.grace``, ``gc.delete_untagged``): of several
  workers or replicas sharing the database only the leader collects (:mod:`moorage.scheduler`);
  concurrent collectors are safe anyway (docs/gc.md), just wasteful.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from typing import Any

from ..api.extension import ExtensionContext
from ..config import Settings
from ..registry.events import EventBus, ThreadBridge
from ..scheduler import Job

log = logging.getLogger("moorage.gc")


def setup_gc(ctx: ExtensionContext) -> None:
    from ..api.gc_admin import add_repository_delete
    from ..api.quota_middleware import UPLOAD_ROUTES, quota_middleware
    from .quotas import UploadQuotaCheck, book

    settings = ctx.settings
    # Immutable tags and the quota check at commit are core hooks (moorage.gc.policies, passed
    # in by the composition root); here the quota check of declared sizes before any byte.
    book(ctx.database, ttl=settings.gc.quota_cache_seconds)
    ctx.route_middlewares.add(quota_middleware(UploadQuotaCheck(ctx.database)), lambda route: route in UPLOAD_ROUTES)
    add_repository_delete(ctx.app.router, token_mode=settings.auth.mode == "token")
    if settings.gc.interval > 0:
        ctx.scheduler.register(_job(settings, ctx.events))


def _job(settings: Settings, events: EventBus | None = None) -> Job:
    async def collect_once() -> None:
        summary = await _in_thread(settings, events)
        log.info("gc: %s (pid %d)", summary, os.getpid())  # which worker collected

    # Failures are logged by the scheduler and retried at the next interval.
    return Job("gc", collect_once, interval=float(settings.gc.interval), leader_only=True)


async def _in_thread(settings: Settings, events: EventBus | None = None) -> dict[str, Any]:
    """One collection on a daemon thread with its own event loop, database engine and store.

    Loading the index of a big registry is CPU work (tens of thousands of rows); on its own
    thread it does not stall the serving loop, and a shutdown mid-run just drops the thread
    (the protocol is kill -9 safe; the next run finishes any tombstones).  Its deletes are
    recorded through the server's ``events`` bus (:class:`~moorage.registry.events.ThreadBridge`):
    in their transactions, as ``gc``/``retention`` through the face ``job``.
    """
    loop = asyncio.get_running_loop()
    bridge = ThreadBridge(events, loop) if events is not None else None
    done: asyncio.Future[dict[str, Any]] = loop.create_future()

    def deliver(value: dict[str, Any] | None, exc: BaseException | None) -> None:
        if done.cancelled():
            return
        if exc is not None:
            done.set_exception(exc)
        else:
            done.set_result(value or {})

    def work() -> None:
        try:
            value = asyncio.run(_collect(settings, bridge))
        except BaseException as exc:  # noqa: BLE001 - handed to the awaiting task
            loop.call_soon_threadsafe(deliver, None, exc)
        else:
            loop.call_soon_threadsafe(deliver, value, None)

    threading.Thread(target=work, name="moorage-gc", daemon=True).start()
    return await done


async def _collect(settings: Settings, events: EventBus | None) -> dict[str, Any]:
    from ..metadata.db import Database
    from ..metadata.store import MetadataStore
    from ..registry.service import COLLECTOR, RegistryService
    from ..storage import create_blob_store
    from .collector import Collector, GCOptions

    db = Database(settings.database_url, pool_size=2)
    store = create_blob_store(settings)
    await store.open()
    try:
        opts = GCOptions(
            grace=settings.gc.grace, delete_untagged=settings.gc.delete_untagged, upload_expiry=settings.gc.upload_expiry
        )
        registry = RegistryService(MetadataStore(db), store, events=events)
        return (await Collector(db, store, opts, registry=registry, by=COLLECTOR).run()).summary()
    finally:
        await store.close()
        await db.close()
