"""Garbage collection as an operation of a caller: who may start one, and the audit entry
that says who did.

The collection itself is :meth:`moorage.gc.collector.Collector.run` (its public entry point,
unchanged); this adds what a face must not decide on its own: only administrators collect,
and the run's ``gc.run`` audit entry carries the actor and face (``ui``, ...).  Runs nobody
started (the scheduler's, ``moorage gc``) are still copied into the audit log from the
``gc_runs`` table without an actor; a run started here is written as that same entry (keyed
by the run's id, :meth:`~moorage.metadata.events_store.EventsStore.attribute_gc_run`), so it is
listed once, with who started it.
"""

from __future__ import annotations

import asyncio
import threading
import time

from ..config import Settings
from ..metadata.db import Database
from ..metadata.events_store import EventsStore
from ..metadata.store import MetadataStore
from ..registry.audit import AuditTrail, operation
from ..registry.events import EventBus, ThreadBridge
from ..registry.principal import Principal
from ..registry.service import RegistryService
from ..storage import BlobStore
from .collector import Collector, GCOptions, GCResult


class GCService:
    """Collections started by a person (the web UI's GC page).

    The collection runs on a thread of its own, with its own event loop, database engine and
    blob store (as the scheduled collection does, :mod:`.setup`): loading the index of a big
    registry is CPU work that would otherwise stall every request the process serves.
    ``blobs`` (the serving process's store) is used instead when ``isolated`` is false.
    """

    def __init__(
        self, db: Database, blobs: BlobStore, settings: Settings, *, isolated: bool = True, events: EventBus | None = None
    ) -> None:
        self.db = db
        self.blobs = blobs
        self.settings = settings
        self.isolated = isolated
        #: The server's bus: the run's deletes are recorded through it (actor ``gc``/``retention``,
        #: the face of whoever started the run), in their transactions.
        self.events = events
        self.audit = AuditTrail(db, enabled=settings.events.enabled)

    @operation("gc.run")
    async def collect(self, p: Principal, *, dry_run: bool, delete_untagged: bool) -> GCResult:
        """One collection with the configured grace period and upload expiry (``dry_run``:
        only what it would remove); ``delete_untagged`` also removes untagged manifests."""
        await self.audit.require_admin(p, "gc.run", target=None)
        cfg = self.settings.gc
        untagged = delete_untagged or cfg.delete_untagged
        opts = GCOptions(grace=cfg.grace, dry_run=dry_run, delete_untagged=untagged, upload_expiry=cfg.upload_expiry)
        since = time.time()
        by = Principal.job("gc", p.face)
        if self.isolated:
            result = await collect_on_thread(self.settings, opts, self.events, by, name="moorage-gc-ui")
        else:
            registry = RegistryService(MetadataStore(self.db), self.blobs, events=self.events)
            result = await Collector(self.db, self.blobs, opts, registry=registry, by=by).run()
        if self.audit.enabled:
            s = result.summary()
            detail = {
                "dry_run": dry_run,
                "delete_untagged": untagged,
                "grace": cfg.grace,
                "blobs_removed": s["blobs_removed"],
                "bytes_removed": s["bytes_removed"],
                "manifests_removed": s["manifests_removed"],
                "tags_removed": s["tags_removed"],
            }
            entry = self.audit.entry(p, "gc.run", target=None, detail=detail)
            async with self.db.write() as conn:
                await EventsStore(self.db).attribute_gc_run(conn, entry, since=since - 1, dry_run=dry_run)
        return result


async def collect_on_thread(
    settings: Settings, opts: GCOptions, events: EventBus | None, by: Principal, *, name: str = "moorage-gc"
) -> GCResult:
    """One collection on a daemon thread with its own event loop, database engine and store.

    Loading the index of a big registry is CPU work (tens of thousands of rows); on its own
    thread it does not stall the serving loop, and a shutdown mid-run just drops the thread
    (the protocol is kill -9 safe; the next run finishes any tombstones).  Its deletes are
    recorded through the server's ``events`` bus, seen from the thread as a
    :class:`~moorage.registry.events.ThreadBridge`: in their transactions, as ``by``.
    Used by the scheduled collection and by one started in the web UI.
    """
    loop = asyncio.get_running_loop()
    bridge = ThreadBridge(events, loop) if events is not None else None
    done: asyncio.Future[GCResult] = loop.create_future()

    def deliver(value: GCResult | None, exc: BaseException | None) -> None:
        if done.cancelled():
            return
        if exc is not None:
            done.set_exception(exc)
        elif value is not None:
            done.set_result(value)

    def work() -> None:
        try:
            value = asyncio.run(_collect(settings, opts, bridge, by))
        except BaseException as exc:  # noqa: BLE001 - handed to the awaiting task
            loop.call_soon_threadsafe(deliver, None, exc)
        else:
            loop.call_soon_threadsafe(deliver, value, None)

    threading.Thread(target=work, name=name, daemon=True).start()
    return await done


async def _collect(settings: Settings, opts: GCOptions, events: EventBus | None, by: Principal) -> GCResult:
    from ..storage import create_blob_store

    db = Database(settings.database_url, pool_size=2)
    store = create_blob_store(settings)
    await store.open()
    try:
        registry = RegistryService(MetadataStore(db), store, events=events)
        return await Collector(db, store, opts, registry=registry, by=by).run()
    finally:
        await store.close()
        await db.close()
