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

import time

from ..accounts.audit import AuditTrail, operation
from ..config import Settings
from ..metadata.db import Database
from ..metadata.events_store import EventsStore
from ..registry import errors
from ..registry.principal import Principal
from ..storage import BlobStore
from .collector import Collector, GCOptions, GCResult


class GCService:
    """Collections started by a person (the web UI's GC page)."""

    def __init__(self, db: Database, blobs: BlobStore, settings: Settings) -> None:
        self.db = db
        self.blobs = blobs
        self.settings = settings
        self.audit = AuditTrail(db, enabled=settings.events.enabled)

    @operation("gc.run")
    async def collect(self, p: Principal, *, dry_run: bool, delete_untagged: bool) -> GCResult:
        """One collection with the configured grace period and upload expiry (``dry_run``:
        only what it would remove); ``delete_untagged`` also removes untagged manifests."""
        if not p.admin:
            await self.audit.denied(p, "gc.run", target=None, reason="administrator rights required")
            raise errors.Denied("administrator rights required")
        cfg = self.settings.gc
        untagged = delete_untagged or cfg.delete_untagged
        opts = GCOptions(grace=cfg.grace, dry_run=dry_run, delete_untagged=untagged, upload_expiry=cfg.upload_expiry)
        since = time.time()
        result = await Collector(self.db, self.blobs, opts).run()
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
