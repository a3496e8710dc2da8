"""The outbox worker: posts webhook deliveries, off every request path.

Each process (worker or replica) runs one :class:`DeliveryWorker`.  It claims due rows from
the database (:meth:`EventsStore.claim`: only the oldest open row of each (endpoint,
repository), so a repository's events arrive in order; a conditional UPDATE makes each claim
exclusive across processes, and the claim is a lease, so a replica that dies mid-delivery
only delays its rows until the lease runs out), posts each with its signature and a timeout,
then marks it delivered -- or schedules a retry with exponential back-off, and dead-letters
it after the endpoint's ``max_attempts`` failed attempts.

Fair shares: a receiver that accepts and never answers holds its post for at most
its timeout (<= 30 s), and holds at most ``delivery_per_endpoint`` of the process's
``delivery_concurrency`` slots; all endpoints of one namespace (or one creator) together hold
at most ``delivery_per_namespace`` (and never more than half the pool).  Rows of an endpoint
or namespace at its share are not claimed, so they never stand in front of another
endpoint's: one endpoint's slowness delays that endpoint only.

A namespace administrator's endpoint (``Endpoint.namespace`` set) is posted through a second
session whose connector refuses, at connect time, any address outside the globally routable
ones and ``events.webhooks.allowed_networks`` (:mod:`.netguard`); no delivery follows redirects.

At least once: a crash between the receiver's 2xx and our UPDATE re-sends that one event
(same body, same event id) after the lease.  A graceful stop lets in-flight posts finish
(each is bounded by its timeout) and hands back what it had not started.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp

from ..config import EventsSettings
from ..metadata.events_store import Delivery, EventsStore
from .endpoints import Endpoint, EndpointSet
from .formats import SIGNATURE_HEADER, signature
from .netguard import guarded_connector, networks
from .stats import EventMetrics

log = logging.getLogger("moorage.events")

#: Extra lease time over the endpoint timeout (the UPDATE after the post must fit in it).
LEASE_MARGIN = 30.0
USER_AGENT = "moorage-webhooks/1"


class DeliveryWorker:
    def __init__(self, store: EventsStore, endpoints: EndpointSet, cfg: EventsSettings, metrics: EventMetrics) -> None:
        self.store = store
        self.endpoints = endpoints
        self.cfg = cfg
        self.metrics = metrics
        self.me = uuid.uuid4().hex[:16]
        self._wake = asyncio.Event()
        self._stopping = False
        self._inflight: dict[int, asyncio.Task[None]] = {}
        #: Posts in flight per endpoint name and per owner (:attr:`Endpoint.owner`).
        self._by_endpoint: Counter[str] = Counter()
        self._by_owner: Counter[str] = Counter()
        self._session: aiohttp.ClientSession | None = None
        #: For namespace administrators' endpoints: only allowed destinations (:mod:`.netguard`).
        self._guarded: aiohttp.ClientSession | None = None

    def wake(self) -> None:
        """New rows were written by this process: look now instead of at the next poll."""
        self._wake.set()

    async def run(self) -> None:
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=self.cfg.delivery_concurrency * 2, ttl_dns_cache=60),
            trust_env=False,
            headers={"User-Agent": USER_AGENT},
        )
        self._guarded = aiohttp.ClientSession(
            connector=guarded_connector(
                networks(self.cfg.webhooks.allowed_networks), limit=self.cfg.delivery_concurrency * 2, ttl_dns_cache=60
            ),
            trust_env=False,
            headers={"User-Agent": USER_AGENT},
        )
        try:
            while not self._stopping:
                claimed = 0
                room = self.cfg.delivery_concurrency - len(self._inflight)
                if room > 0:
                    try:
                        skip, admit = self._shares()
                        batch = await self.store.claim(
                            self.me,
                            now=time.time(),
                            limit=room,
                            lease=self.endpoints.max_timeout() + LEASE_MARGIN,
                            skip_endpoints=skip,
                            admit=admit,
                        )
                    except asyncio.CancelledError:
                        raise
                    except Exception:  # noqa: BLE001 - database away: try again at the next poll
                        log.warning("webhook outbox: claiming failed", exc_info=True)
                        batch = []
                    for d in batch:
                        owner = self._owner(d.endpoint)
                        self._by_endpoint[d.endpoint] += 1
                        self._by_owner[owner] += 1
                        task = asyncio.create_task(self._deliver(d))
                        self._inflight[d.id] = task
                        task.add_done_callback(functools.partial(self._done, d.id, d.endpoint, owner))
                    claimed = len(batch)
                if claimed and len(self._inflight) < self.cfg.delivery_concurrency:
                    continue  # more may be due (the next event of a group whose head just went)
                self._wake.clear()
                try:  # (asyncio.timeout: a cancel is never swallowed, unlike 3.11's wait_for)
                    async with asyncio.timeout(self.cfg.delivery_poll_interval):
                        await self._wake.wait()
                except TimeoutError:
                    pass
        finally:
            await self._drain()
            await self._session.close()
            await self._guarded.close()

    def _done(self, delivery_id: int, endpoint: str, owner: str, _task: asyncio.Task[None]) -> None:
        self._inflight.pop(delivery_id, None)
        for counts, key in ((self._by_endpoint, endpoint), (self._by_owner, owner)):
            counts[key] -= 1
            if counts[key] <= 0:
                del counts[key]
        self._wake.set()  # the group's next event may be due now

    def _owner(self, endpoint: str) -> str:
        ep = self.endpoints.get(endpoint)
        return ep.owner if ep is not None else ""

    def namespace_share(self) -> int:
        """Posts one owner may have in flight: ``delivery_per_namespace``, at most half the pool."""
        return max(1, min(self.cfg.delivery_per_namespace, self.cfg.delivery_concurrency // 2))

    def _shares(self) -> tuple[set[str], Callable[[str], bool]]:
        """What the next claim must leave alone: the endpoints whose own share or whose owner's
        share is in use, and a per-batch check that keeps each within its share."""
        per_endpoint = self.cfg.delivery_per_endpoint
        per_owner = self.namespace_share()
        full_owners = {o for o, n in self._by_owner.items() if n >= per_owner}
        skip = {name for name, n in self._by_endpoint.items() if n >= per_endpoint}
        skip.update(e.name for e in self.endpoints.all if e.owner in full_owners)
        by_endpoint = Counter(self._by_endpoint)
        by_owner = Counter(self._by_owner)

        def admit(endpoint: str) -> bool:
            ep = self.endpoints.get(endpoint)
            if ep is None:
                return True  # answered at once: "endpoint no longer configured"
            if by_endpoint[endpoint] >= per_endpoint or by_owner[ep.owner] >= per_owner:
                return False
            by_endpoint[endpoint] += 1
            by_owner[ep.owner] += 1
            return True

        return skip, admit

    async def stop(self) -> None:
        self._stopping = True
        self._wake.set()

    async def _drain(self) -> None:
        """Let in-flight posts finish (each bounded by its timeout)."""
        tasks = dict(self._inflight)
        if not tasks:
            return
        _, pending = await asyncio.wait(tasks.values(), timeout=self.endpoints.max_timeout() + 5)
        if pending:
            for t in pending:
                t.cancel()
            await asyncio.wait(pending, timeout=5)
            await self._safe(self.store.release(self.me, [i for i, t in tasks.items() if t in pending]))

    async def _deliver(self, d: Delivery) -> None:
        ep = self.endpoints.get(d.endpoint)
        if ep is None:
            await self._safe(
                self.store.failed(d.id, self.me, error="endpoint no longer configured", status_code=None, retry_at=None)
            )
            self.metrics.deliveries.labels(d.endpoint, "dead").inc()
            return
        status: int | None = None
        error: str | None = None
        try:
            status = await self._post(ep, d)
            if not 200 <= status < 300:
                error = f"HTTP {status}"
        except asyncio.CancelledError:
            raise
        except TimeoutError:
            error = f"timed out after {ep.timeout:g}s"
        except aiohttp.ClientError as exc:
            error = f"{type(exc).__name__}: {exc}"[:500]
        except Exception as exc:  # noqa: BLE001 - anything else is a failed attempt too
            error = f"{type(exc).__name__}: {exc}"[:500]
        if error is None:
            await self._safe(self.store.delivered(d.id, self.me, status or 200))
            self.metrics.deliveries.labels(ep.name, "delivered").inc()
            return
        dead = d.attempts >= ep.max_attempts
        retry_at = None if dead else time.time() + self.backoff(d.attempts)
        await self._safe(self.store.failed(d.id, self.me, error=error, status_code=status, retry_at=retry_at))
        self.metrics.deliveries.labels(ep.name, "dead" if dead else "failed").inc()
        if dead:
            log.warning("webhook %s: event %s dead-lettered after %d attempts: %s", ep.name, d.event_id, d.attempts, error)

    def backoff(self, attempts: int) -> float:
        """Seconds before attempt ``attempts + 1``: doubling from ``retry_backoff``, capped, +-10% jitter."""
        base: float = min(self.cfg.retry_backoff * (2 ** max(0, attempts - 1)), self.cfg.retry_backoff_max)
        return base * random.uniform(0.9, 1.1)

    async def _post(self, ep: Endpoint, d: Delivery) -> int:
        session = self._guarded if ep.namespace is not None else self._session
        assert session is not None
        headers: dict[str, Any] = {
            "Content-Type": d.content_type,
            SIGNATURE_HEADER: signature(ep.secret, d.body),
            "X-Moorage-Event-Id": d.event_id,
            "X-Moorage-Delivery": str(d.id),
            **dict(ep.headers),
        }
        timeout = aiohttp.ClientTimeout(total=ep.timeout)
        async with session.post(ep.url, data=d.body, headers=headers, timeout=timeout, allow_redirects=False) as resp:
            await resp.content.read(64 * 1024)  # a receiver's answer is not ours to buffer whole
            return resp.status

    @staticmethod
    async def _safe(coro: Awaitable[object]) -> None:
        """Record an outcome; if the database is away the lease expires and the row is retried."""
        try:
            await coro
        except Exception:  # noqa: BLE001
            log.warning("webhook outbox: recording an outcome failed", exc_info=True)
