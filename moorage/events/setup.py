"""``setup_events(app, settings)``: the one place the events extension is wired into the app.

* subscribes a listener to the registry's :class:`~moorage.registry.events.EventBus`: for each
  event it finds the matching webhook endpoints (in memory) and writes their outbox rows plus
  the audit entry in one small transaction; an event no webhook wants costs no write at all
  (its audit entry is buffered and written within a second by the housekeeping loop);
* records logins (wrapping the auth state's login checks) and admin-API changes (a middleware);
* adds ``/api/v1/webhooks`` and ``/api/v1/audit`` (:mod:`.api`);
* registers the metrics (:mod:`.stats`) in the app's Prometheus registry;
* registers its background jobs with the scheduler (:mod:`moorage.scheduler`): the delivery
  worker (``events.delivery``, continuous, drained at shutdown) and the housekeeping
  (``events.audit-flush`` every second, ``events.endpoint-reload`` every few seconds,
  ``events.statistics`` and ``events.gc-audit`` every ``events.stats_interval``, and
  ``events.prune`` hourly, on the leader only).
"""

from __future__ import annotations

import logging
import socket
import time
import uuid
from typing import AsyncIterator

from aiohttp import web

from ..config import Settings
from ..metadata.events_store import PENDING, EventsStore
from ..registry.events import RegistryEvent
from ..scheduler import Job
from .api import EventsAPI
from .audit import AuditRecorder, admin_middleware, wrap_logins
from .delivery import DeliveryWorker
from .endpoints import EndpointSet
from .formats import Source, render
from .stats import EventMetrics
from .webhooks import WebhookService

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
        self.source = Source(addr=addr, instance_id=str(uuid.uuid4()), scheme="https" if settings.tls.certificate else "http")
        self._gc_since = time.time() - 7 * 86400
        #: The webhook service (set by :func:`setup_events`; the web UI calls it too).
        self.webhooks: WebhookService | None = None

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
            rows.append(
                {
                    "endpoint": ep.name,
                    "repository": event.repository,
                    "event_id": event_id,
                    "action": event.action,
                    "content_type": content_type,
                    "body": body,
                    "status": PENDING,
                    "attempts": 0,
                    "next_attempt_at": now,
                    "created_at": now,
                }
            )
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

    async def import_gc_runs(self) -> None:
        """GC runs into the audit log (idempotent: keyed by run id), from a little before the last look."""
        started = time.time()
        await self.store.import_gc_runs(self._gc_since)
        self._gc_since = started - max(600.0, 2 * self.settings.events.stats_interval)

    def jobs(self) -> list[Job]:
        """The extension's background jobs (failures are logged by the scheduler, retried next turn)."""
        cfg = self.settings.events
        return [
            Job("events.delivery", self.worker.run, stop=self.worker.stop, grace=lambda: self.endpoints.max_timeout() + 15),
            Job("events.audit-flush", self.recorder.flush, interval=AUDIT_FLUSH),
            Job("events.endpoint-reload", self.endpoints.reload, interval=ENDPOINT_REFRESH),
            Job("events.statistics", self.refresh_stats, interval=float(cfg.stats_interval), first_delay=0),
            Job("events.gc-audit", self.import_gc_runs, interval=float(cfg.stats_interval), first_delay=0),
            # Pruning is for the whole cluster: one process does it.
            Job("events.prune", self.prune, interval=PRUNE_EVERY, first_delay=10, leader_only=True),
        ]

    async def lifecycle(self, app: web.Application) -> AsyncIterator[None]:
        await self.endpoints.reload()
        yield
        # The scheduler (stopped before this runs) has drained the delivery worker.
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
    from ..api.common import EVENTS, SCHEDULER
    from ..metrics import REGISTRY_KEY

    ext = EventsExtension(settings, EventsStore(app[DATABASE]), EventMetrics(app.get(REGISTRY_KEY)))
    app[EVENTS_EXT] = ext
    app[EVENTS].subscribe(ext.on_event)
    if settings.auth.mode != "none":
        from ..api.common import AUTHENTICATOR

        if AUTHENTICATOR in app:
            wrap_logins(app[AUTHENTICATOR], ext.recorder)
    app.middlewares.append(admin_middleware(ext.recorder))
    webhooks = WebhookService(app[DATABASE], settings, ext.store, ext.endpoints, ext.source, ext.worker.wake)
    ext.webhooks = webhooks
    app.router.add_routes(EventsAPI(settings, ext.store, ext.endpoints, webhooks).routes())
    app.cleanup_ctx.append(ext.lifecycle)
    for job in ext.jobs():
        app[SCHEDULER].register(job)
