"""``setup_events(app, settings)``: the one place the events extension is wired into the app.

* is the :class:`~moorage.registry.events.EventBus`'s change recorder: for each registry change
  (push, tag, delete, mount, repository delete -- announced by the registry service, whatever
  the face) it finds the matching webhook endpoints (in memory) and hands the service the
  writes of their outbox rows and of the change's audit entry, which run inside the change's
  own transaction (a crash cannot keep the change and lose its event); a change neither
  audited nor wanted by a webhook (a blob push or mount without blob webhooks) writes nothing;
* subscribes a listener for the events that are not changes (pulls webhooks want, scans), and
  counts pulls into the audit log (a :class:`~moorage.registry.events.Pull` per manifest GET,
  no event): their entries are buffered and written within a second by the housekeeping loop;
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
from collections.abc import AsyncIterator, Callable
from typing import Any

from aiohttp import web

from ..api.extension import ExtensionContext
from ..api.routing import add_routes
from ..config import Settings
from ..metadata.events_store import EventsStore, outbox_row
from ..registry.events import RegistryEvent
from ..scheduler import Job
from .api import EventsAPI
from .audit import AuditRecorder, admin_middleware, audited_route, wrap_logins
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
#: Most share of time the per-namespace storage figures may take of one database connection:
#: they join every repository's blob links (3.5 s at 1M repositories on PostgreSQL, in every
#: server process), so after a scan of t seconds the next waits at least t / STATS_DUTY --
#: every 60 s (``events.stats_interval``) while it is quick, about every 2 minutes at 1M.
#: The cheap counters (uploads, GC totals, delivery backlog) are read at every interval.
STATS_DUTY = 0.05


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
        #: The per-namespace storage figures: the last ones read, and when the next scan may run
        #: (``clock()`` seconds; see :data:`STATS_DUTY`).
        self._namespaces: list[tuple[str, int, int]] = []
        self._namespaces_due = float("-inf")
        self.clock: Callable[[], float] = time.monotonic
        #: Ids of recorded changes with outbox rows, not yet announced as committed.
        self._to_deliver: set[str] = set()
        #: The webhook service (set by :func:`setup_events`; the web UI calls it too).
        self.webhooks: WebhookService | None = None

    # -- the ChangeRecorder protocol (moorage.registry.events) ------------------------------
    def in_transaction(self, event: RegistryEvent) -> Callable[[Any], None] | None:
        """The audit entry and outbox rows of a change, to be written in its transaction."""
        return self.in_transaction_many([event])

    def in_transaction_many(self, events: list[RegistryEvent]) -> Callable[[Any], None] | None:
        """The audit entries and outbox rows of changes committed together, as one write (a
        collector's batch of thousands of deletes costs two statements, not two per delete)."""
        rows: list[dict[str, Any]] = []
        entries: list[Any] = []
        for event in events:
            entry = self.recorder.entry_for_event(event)
            matching = self.endpoints.matching(event)
            if entry is not None:
                entries.append(entry)
            if matching:
                rows += self._rows(event, matching)
                # the delivery worker is woken for these after the commit (not for an audit entry alone)
                if len(self._to_deliver) > 10_000:
                    self._to_deliver.clear()  # (changes that never committed; the worker polls anyway)
                self._to_deliver.add(event.id)
        if not rows and not entries:
            return None
        store = self.store

        def write(conn: Any) -> None:
            store.record_in(conn, rows, entries)

        return write

    def committed(self, event: RegistryEvent) -> None:
        if event.kind != "blob" or event.action == "delete":  # the ones entry_for_event audits
            self.metrics.audit_entries.inc()
        if event.id in self._to_deliver:
            self._to_deliver.discard(event.id)
            self.worker.wake()

    def _rows(self, event: RegistryEvent, matching: list[Any]) -> list[dict[str, Any]]:
        now = time.time()
        rows = []
        for ep in matching:
            content_type, body = render(ep.format, event, event.id, self.source)
            rows.append(outbox_row(ep.name, event.repository, event.id, event.action, content_type, body, now))
        return rows

    async def on_event(self, event: RegistryEvent) -> None:
        """The EventBus listener, for what is not a change (pulls webhooks want, scans): quick --
        in-memory matching, then at most one small write (the outbox rows, with the audit entry
        in the same transaction); without matching webhooks the audit entry is only buffered.
        Changes were recorded in their own transaction already (``event.durable``); a pull's
        audit entry was made by :meth:`AuditRecorder.count_pull` (the bus's pull counter)."""
        if event.durable:
            return
        entry = None if event.action == "pull" else self.recorder.entry_for_event(event)
        matching = self.endpoints.matching(event)
        if not matching:
            if entry is not None:  # no write on the request path: the housekeeping loop flushes it
                self.recorder.buffer(entry)
            return
        rows = self._rows(event, matching)
        await self.store.record(rows, [entry] if entry else [])
        if entry:
            self.metrics.audit_entries.inc()
        if rows:
            self.worker.wake()

    def wants(self, action: str) -> bool:
        """What :meth:`on_event` takes: everything but pulls, and pulls while a webhook wants them."""
        return action != "pull" or self.endpoints.wants_pull

    async def refresh_stats(self) -> None:
        started = self.clock()
        if started >= self._namespaces_due:
            self._namespaces = await self.store.storage_by_namespace()
            took = self.clock() - started
            self._namespaces_due = started + took + took / STATS_DUTY
        counters = await self.store.counters()
        self.metrics.snapshot.update(self._namespaces, counters, self.clock() - started)

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


async def command_recorder(settings: Settings, db: Any) -> EventsExtension | None:
    """The change recorder of a command-line process (``moorage repo delete``, ``moorage
    import-distribution``): the same audit entries and outbox rows as the server writes, in the
    change's transaction; the server's delivery worker sends them (it polls the outbox)."""
    if not settings.events.enabled:
        return None
    ext = EventsExtension(settings, EventsStore(db), EventMetrics(None))
    await ext.endpoints.reload()
    return ext


def setup_events(ctx: ExtensionContext) -> None:
    app, settings = ctx.app, ctx.settings
    if not settings.events.enabled:
        if settings.webhooks:
            log.warning("events.enabled is false: the %d configured webhook(s) will not be called", len(settings.webhooks))
        return
    ext = EventsExtension(settings, EventsStore(ctx.database), EventMetrics(ctx.metrics))
    app[EVENTS_EXT] = ext
    # Pulls (every manifest GET): counted into the audit buffer when the audit log keeps them
    # (no event built), and as events only while a webhook wants them.
    ctx.events.subscribe(ext.on_event, wants=ext.wants)
    if ext.recorder.wants_pulls:
        ctx.events.count_pulls(ext.recorder.count_pull)
    ctx.events.recorder = ext
    if ctx.authenticator is not None:
        wrap_logins(ctx.authenticator, ext.recorder)
    ctx.route_middlewares.add(admin_middleware(ext.recorder), audited_route)
    webhooks = WebhookService(ctx.database, settings, ext.store, ext.endpoints, ext.source, ext.worker.wake)
    ext.webhooks = webhooks
    add_routes(app, EventsAPI(settings, ext.store, ext.endpoints, webhooks).routes())
    app.cleanup_ctx.append(ext.lifecycle)
    for job in ext.jobs():
        ctx.scheduler.register(job)
