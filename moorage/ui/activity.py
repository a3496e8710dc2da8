"""Push/pull activity for the chart: registry events counted per repository and hour.

Pulls come as :class:`~moorage.registry.events.Pull` s to :meth:`ActivityRecorder.count_pull`
(a bus counter: one arrives on every manifest GET, so it builds no event and must not touch the
database), pushes as events to :meth:`ActivityRecorder.on_event`; both only bump an in-memory
counter; a background job adds the counters to ``ui_activity`` every
few seconds (one write transaction however busy the registry is) and prunes buckets older
than ``ui.activity_days``.  The table therefore stays bounded by (repositories active per
hour) x (hours kept).  Only manifest events count: a ``docker pull`` is one manifest pull
and many blob pulls.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable

from aiohttp import web

from ..errors import BackendUnavailable
from ..registry.events import Pull, RegistryEvent
from ..scheduler import Job
from .queries import UIQueries

#: The app's activity recorder (the statistics page reads its unsaved counts).
ACTIVITY = web.AppKey["ActivityRecorder"]("ui_activity")

log = logging.getLogger("moorage.ui")

#: Seconds between flushes of the counters to the database.
FLUSH_INTERVAL = 5.0
#: Distinct (hour, repository) counters kept in memory before an early flush is due.
MAX_PENDING = 10_000
#: Seconds between full refreshes of the repository sort figures (catching what no event
#: announces: garbage collection, retention, repository deletes, other replicas' pushes).
FULL_REFRESH = 600.0


class ActivityRecorder:
    def __init__(self, queries: UIQueries, keep_days: int) -> None:
        self.queries = queries
        self.keep_days = keep_days
        self._pending: dict[tuple[int, str], list[int]] = {}
        self._wake = asyncio.Event()
        self._last_prune = 0.0
        self._last_full = 0.0
        #: Repositories whose sort figures changed (pushes, deletes) since the last flush.
        self._dirty: set[str] = set()

    async def on_event(self, event: RegistryEvent) -> None:
        """The bus listener for changes (it is subscribed without pulls: :meth:`count_pull`)."""
        if event.action in ("push", "delete", "mount") and len(self._dirty) < MAX_PENDING:
            self._dirty.add(event.repository)
        if event.kind == "manifest" and event.action == "push":
            self._count(int(event.timestamp.timestamp() // 3600), event.repository, 0)

    def count_pull(self, pull: Pull) -> None:
        """The bus's pull counter: a manifest pull is one more in its hour (a layer pull is not)."""
        if pull.kind == "manifest":
            self._count(int(pull.time // 3600), pull.repository, 1)

    @staticmethod
    def wants(action: str) -> bool:
        """What :meth:`on_event` takes: not pulls (they come to :meth:`count_pull`)."""
        return action != "pull"

    def _count(self, bucket: int, repository: str, column: int) -> None:
        counts = self._pending.get((bucket, repository))
        if counts is None:
            counts = self._pending[(bucket, repository)] = [0, 0]
        counts[column] += 1
        if len(self._pending) >= MAX_PENDING:
            self._wake.set()

    async def flush(self) -> None:
        """Write the pending counters, refresh the sort figures, prune old rows."""
        await self.flush_counts()
        await self._maintain()

    async def flush_counts(self) -> None:
        """Write the pending counters (also called before the activity chart is drawn)."""
        pending, self._pending = self._pending, {}
        if pending:
            try:
                await self.queries.add_activity({k: (v[0], v[1]) for k, v in pending.items()})
            except Exception as exc:  # noqa: BLE001 - keep the counts for the next try, bounded
                if isinstance(exc, BackendUnavailable):
                    log.warning("could not record push/pull activity: %s", exc)
                else:
                    log.exception("could not record push/pull activity")
                if len(self._pending) < MAX_PENDING:
                    for k, v in pending.items():
                        mine = self._pending.setdefault(k, [0, 0])
                        mine[0] += v[0]
                        mine[1] += v[1]

    async def refresh_dirty(self) -> None:
        """Refresh now the sort figures of the repositories changed since the last flush (the
        storage chart reads those figures; at most MAX_PENDING names)."""
        dirty, self._dirty = self._dirty, set()
        if dirty:
            try:
                await self.queries.refresh_stats(sorted(dirty))
            except Exception:  # noqa: BLE001 - figures only: the next flush tries again
                self._dirty |= dirty
                log.warning("could not refresh repository figures", exc_info=True)

    async def _maintain(self) -> None:
        dirty, self._dirty = self._dirty, set()
        now = time.time()
        try:
            if now - self._last_full > FULL_REFRESH:
                self._last_full = now
                await self.queries.refresh_stats()
            elif dirty:
                await self.queries.refresh_stats(sorted(dirty))
        except BackendUnavailable as exc:  # the next refresh repairs them
            log.warning("could not refresh repository figures: %s", exc)
        except Exception:  # noqa: BLE001 - figures for sorting only; the next refresh repairs them
            log.exception("could not refresh repository figures")
        if now - self._last_prune > 3600:
            self._last_prune = now
            try:
                await self.queries.prune_activity(int(now // 3600) - self.keep_days * 24)
                await self.queries.prune_sessions()
            except Exception:  # noqa: BLE001 - old rows only; the next hour tries again
                log.warning("could not prune old activity and UI sessions", exc_info=True)

    def job(self) -> Job:
        """The scheduler's job (every process: it writes this process's counters): a full refresh
        of the sort figures at start, then a flush every ``FLUSH_INTERVAL`` or when woken."""
        return Job("ui.activity", self.flush, interval=FLUSH_INTERVAL, first_delay=0, trigger=self._wake)

    def cleanup_ctx(self) -> Callable[[web.Application], AsyncIterator[None]]:
        async def ctx(app: web.Application) -> AsyncIterator[None]:
            yield
            try:  # the scheduler (stopped before this runs) no longer flushes: the last counts
                await self.flush()
            except Exception:  # noqa: BLE001 - shutting down: said, not raised
                log.warning("could not write the last push/pull activity", exc_info=True)

        return ctx
