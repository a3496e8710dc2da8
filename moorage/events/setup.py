"""``setup_events(app, settings)``: the one place the events extension is wired into the app.

* subscribes a listener to the registry's :class:`~moorage.registry.events.EventBus`: for each
  event it finds the matching webhook endpoints (in memory) and writes their outbox rows plus
  the audit entry in one small transaction; an event no webhook wants costs no write at all
  (its audit entry is buffered and written within a second by the housekeeping loop);
* records logins (wrapping the auth state's login checks) and admin-API changes (a middleware);
* adds ``/api/v1/webhooks`` and ``/api/v1/audit`` (:mod:`.api`);
* registers the metrics (:mod:`.stats`) in the app's Prometheus registry;
* runs two background tasks (``cleanup_ctx``): the delivery worker and the housekeeping loop
  (buffered audit entries every second, API endpoints every few seconds, the gauges every
  ``events.stats_interval``, GC runs into the audit log, retention pruning hourly).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
import uuid
from typing import AsyncIterator

from aiohttp import web

from ..config import Settings
from ..metadata.events_store import PENDING, EventsStore
from ..registry.events import RegistryEvent
from .api import EventsAPI
from .audit import AuditRecorder, admin_middleware, wrap_logins
from .delivery import DeliveryWorker
from .endpoints import EndpointSet
from .formats import Source, render
from .stats import EventMetrics

log = logging.getLogger("moorage.events")

#: Seconds between re-reads of API-made endpoints (how fast replicas see each other's changes).
ENDPOINT_REFRESH = 5.0
AUDIT_FLUSH = 1.0
PRUNE_EVERY = 3600.0


class EventsExtension:
    """Everything the extension holds for one app (``app[EVENTS_EXT]``, for tests and other modules)."""

    def __init__(self, settings: Settings, store: EventsStore, metrics: EventMetrics) -> None:
        self.settings = settings
        self.store = store
        self.metrics = metrics
        self.endpoints = EndpointSet(settings, store)
        self.recorder = AuditRecorder(store, settings.events, metrics)
        self.worker = DeliveryWorker(store, self.endpoints, settings.events, metrics)
        addr = settings.events.source or f"{socket.gethostname()}:{settings.port}"
        self.source = Source(addr=addr, instance_id=str(uuid.uuid4()),
                             scheme="https" if settings.tls.certificate else "http")

    async def on_event(self, event: RegistryEvent) -> None:
        """The EventBus listener: quick -- in-memory matching, then at most one small write (the
        outbox rows, with the audit entry in the same transaction); without matching webhooks
        the audit entry is only buffered."""
        if event.action == "pull":
            if self.recorder.wants_pulls:
                entry = self.recorder.entry_for_event(event)
                if entry is not None:
                    self.recorder.buffer(entry)
            if not self.endpoints.wants_pull:
                return
            entry = None
        else:
            entry = self.recorder.entry_for_event(event)
        matching = self.endpoints.matching(event)
        if not matching:
            if entry is not None:  # no write on the request path: the housekeeping loop flushes it
                self.recorder.buffer(entry)
            return
        now = time.time()
        event_id = str(uuid.uuid4())
        rows = []
        for ep in matching:
            content_type, body = render(ep.format, event, event_id, self.source)
            rows.append({"endpoint": ep.name, "repository": event.repository, "event_id": event_id,
                         "action": event.action, "content_type": content_type, "body": body, "status": PENDING,
                         "attempts": 0, "next_attempt_at": now, "created_at": now})
        await self.store.record(rows, [entry] if entry else [])
        if entry:
            self.metrics.audit_entries.inc()
        if rows:
            self.worker.wake()

    async def refresh_stats(self) -> None:
        started = time.perf_counter()
        namespaces = await self.store.storage_by_namespace()
        counters = await self.store.counters()
        self.metrics.snapshot.update(namespaces, counters, time.perf_counter() - started)

    async def prune(self) -> None:
        cfg = self.settings.events
        now = time.time()
        audit_before = now - cfg.audit_retention_days * 86400 if cfg.audit_retention_days > 0 else None
        deliveries_before = now - cfg.delivery_history_days * 86400
        n_audit, n_deliveries = await self.store.prune(audit_before=audit_before, deliveries_before=deliveries_before)
        if n_audit or n_deliveries:
            log.info("events: pruned %d audit entries, %d finished deliveries", n_audit, n_deliveries)

    async def housekeeping(self) -> None:
        cfg = self.settings.events
        last_refresh = last_stats = 0.0
        next_prune = time.monotonic() + 10
        gc_since = time.time() - 7 * 86400
        while True:
            now = time.monotonic()
            for name, due, job in (
                ("audit flush", True, self.recorder.flush),
                ("endpoint reload", now - last_refresh >= ENDPOINT_REFRESH, self.endpoints.reload),
                ("statistics", now - last_stats >= cfg.stats_interval, self.refresh_stats),
                ("prune", now >= next_prune, self.prune),
            ):
                if not due:
                    continue
                try:
                    await job()
                except asyncio.CancelledError:
                    raise
                except Exception:  # noqa: BLE001 - retried at its next turn
                    log.warning("events: %s failed", name, exc_info=True)
                if name == "endpoint reload":
                    last_refresh = now
                elif name == "statistics":
                    last_stats = now
                    try:
                        started = time.time()
                        await self.store.import_gc_runs(gc_since)
                        gc_since = started - max(600.0, 2 * cfg.stats_interval)
                    except Exception:  # noqa: BLE001
                        log.warning("events: importing GC runs failed", exc_info=True)
                elif name == "prune":
                    next_prune = now + PRUNE_EVERY
            await asyncio.sleep(AUDIT_FLUSH)

    async def lifecycle(self, app: web.Application) -> AsyncIterator[None]:
        await self.endpoints.reload()
        worker = asyncio.create_task(self.worker.run(), name="moorage-webhooks")
        chores = asyncio.create_task(self.housekeeping(), name="moorage-events-housekeeping")
        yield
        chores.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await chores
        await self.worker.stop()
        try:
            await asyncio.wait_for(worker, self.endpoints.max_timeout() + 15)
        except (asyncio.TimeoutError, asyncio.CancelledError):
            pass
        except Exception:  # noqa: BLE001
            log.warning("events: delivery worker ended with an error", exc_info=True)
        try:
            await self.recorder.flush()
        except Exception:  # noqa: BLE001
            log.warning("events: final audit flush failed", exc_info=True)


EVENTS_EXT = web.AppKey("events_extension", EventsExtension)


def setup_events(app: web.Application, settings: Settings) -> None:
    if not settings.events.enabled:
        if settings.webhooks:
            log.warning("events.enabled is false: the %d configured webhook(s) will not be called", len(settings.webhooks))
        return
    from ..api.common import DATABASE
    from ..api.common import EVENTS
    from ..metrics import REGISTRY_KEY

    ext = EventsExtension(settings, EventsStore(app[DATABASE]), EventMetrics(app.get(REGISTRY_KEY)))
    app[EVENTS_EXT] = ext
    app[EVENTS].subscribe(ext.on_event)
    if settings.auth.mode != "none":
        from ..api.common import AUTHENTICATOR

        if AUTHENTICATOR in app:
            wrap_logins(app[AUTHENTICATOR], ext.recorder)
    app.middlewares.append(admin_middleware(ext.recorder))
    app.router.add_routes(EventsAPI(settings, ext.store, ext.endpoints).routes())
    app.cleanup_ctx.append(ext.lifecycle)
