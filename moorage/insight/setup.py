"""The server extension: scan images after push, re-match after advisory imports, give the
registry service its pull rule (the vulnerability policy, :attr:`RegistryService.serve_guard`:
asked for every manifest served for a pull, local or from the cache, by tag or by digest),
serve ``/api/v1/insight/``.

Scans run one at a time on a background job of the scheduler (``insight.scans``, continuous, in
every process: it consumes this process's queue) fed by the registry's push events (a bounded
queue: a push never waits for a scan).  The queue is served round-robin by namespace
(:class:`~moorage.insight.fairness.FairQueue`): one user's thousand pushes do not keep another
user's one image waiting behind them.  Every minute the task also checks whether the
vulnerability database changed (``moorage vulndb import`` run while serving, or another
replica) and re-matches the stored inventories without reading layers.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

from aiohttp import web

from .. import errors
from ..api.extension import ExtensionContext
from ..api.routing import add_routes
from ..metadata.store import ManifestRecord
from ..registry.events import Actor, RegistryEvent
from ..scheduler import Job
from .fairness import FairQueue
from .http import INSIGHT, routes
from .layers import Limits
from .service import InsightService
from .store import InsightStore

log = logging.getLogger("moorage.insight")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def setup_insight(ctx: ExtensionContext) -> None:
    cfg = ctx.settings.insight
    app = ctx.app
    if not cfg.enabled:
        return
    if cfg.scan_on_push:  # findings, the API and pull policies need no extra; making SBOMs does
        from ..extras import require

        require("insight", "insight.scan_on_push")
    bus = ctx.events

    async def notify(repository: str, digest: str, counts: dict[str, int], worst: str) -> None:
        await bus.publish(RegistryEvent("scan", "manifest", repository, digest=digest, actor=Actor(name="moorage")))

    insight = InsightService(
        InsightStore(ctx.database),
        ctx.registry,
        ctx.blobs,
        notify=notify,
        limits=Limits.from_settings(cfg),
    )
    app[INSIGHT] = insight
    add_routes(app, routes)
    ctx.registry.serve_guard = _pull_policy(insight)
    queue = FairQueue(cfg.queue_size)

    async def on_event(event: RegistryEvent) -> None:
        # A manifest the pull-through cache stored has no layers here yet: nothing to read; and
        # the SBOM referrers this extension pushes itself (face ``job``) are no images to scan.
        if (
            cfg.scan_on_push
            and event.action == "push"
            and event.kind == "manifest"
            and event.digest
            and event.face not in ("proxy", "job")
        ):
            try:
                dropped = queue.put_nowait((event.repository, event.digest))
            except asyncio.QueueFull:
                dropped = (event.repository, event.digest)
            if dropped is not None:
                log.warning("insight: scan queue full, %s@%s not scanned (run `moorage sbom --all`)", *dropped)

    bus.subscribe(on_event, wants=lambda action: action == "push")  # pulls never reach it

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        registry = ctx.metrics  # metrics are set up after this extension: read at start
        if registry is not None:
            registry.register(_Collector(insight, queue))
        yield

    app.cleanup_ctx.append(lifecycle)
    ctx.scheduler.register(Job("insight.scans", functools.partial(_work, insight, queue)))


class _Collector:
    """``/metrics``: scans done and failed, the scan queue, images by worst severity (refreshed by
    the worker at most once a minute; no database query per scrape)."""

    def __init__(self, insight: InsightService, queue: FairQueue) -> None:
        self.insight, self.queue = insight, queue

    def collect(self):  # type: ignore[no-untyped-def]
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        stats = self.insight.stats
        scans = CounterMetricFamily("moorage_insight_scans", "Image scans by outcome", labels=["outcome"])
        scans.add_metric(["ok"], stats["scans_ok"])
        scans.add_metric(["failed"], stats["scans_failed"])
        yield scans
        yield GaugeMetricFamily("moorage_insight_scan_queue", "Images waiting for a scan", value=self.queue.qsize())
        yield GaugeMetricFamily(
            "moorage_insight_scan_memory_bytes",
            "Bytes the scans of this process hold now, of insight.max_process_bytes",
            value=self.insight.budget.used,
        )
        worst = GaugeMetricFamily("moorage_insight_images", "Scanned images by their worst finding", labels=["worst"])
        for severity, n in sorted(stats["images_by_worst"].items()):
            worst.add_metric([severity or "none"], n)
        yield worst
        yield GaugeMetricFamily(
            "moorage_insight_advisories", "Advisories in the vulnerability database", value=stats["advisories"]
        )


async def _refresh_stats(insight: InsightService) -> None:
    by_worst: dict[str, int] = {}
    for row in await insight.store.images():
        by_worst[row.worst] = by_worst.get(row.worst, 0) + 1
    insight.stats["images_by_worst"] = by_worst
    insight.stats["advisories"] = await insight.store.advisory_count()


async def _work(insight: InsightService, queue: FairQueue) -> None:
    seen_generation: int | None = None
    while True:
        # asyncio.timeout, not wait_for: on 3.11 wait_for swallows a cancel that arrives as
        # get() completes, and shutdown then waits on a worker that never ends.
        repository = digest = ""
        try:
            async with asyncio.timeout(60):
                repository, digest = await queue.get()
        except TimeoutError:
            pass
        try:
            if digest:
                record = await insight.registry.get_manifest(repository, digest)
                results = await insight.scan_manifest(repository, record.digest, record.media_type, record.payload)
                insight.stats["scans_ok"] += 1
                for r in results:
                    log.info(
                        "insight: %s@%s %s: %d packages, findings %s",
                        repository,
                        r.digest[:19],
                        r.platform or "-",
                        r.package_count,
                        r.counts or "none",
                    )
            generation = await insight.store.generation()
            if seen_generation is not None and generation != seen_generation:
                log.info("insight: vulnerability database changed; re-matched %d images", await insight.rematch_all())
            seen_generation = generation
            if not digest or queue.empty():
                await _refresh_stats(insight)
        except asyncio.CancelledError:
            raise
        except errors.RegistryError as exc:  # deleted meanwhile, quota ...: nothing to scan
            log.info("insight: %s@%s not scanned: %s", repository, digest[:19], exc)
        except Exception:
            insight.stats["scans_failed"] += 1
            log.exception("insight: scanning %s@%s failed", repository, digest[:19])


def _pull_policy(insight: InsightService) -> Callable[[str, ManifestRecord], Awaitable[None]]:
    """The pull rule: DENIED for an image whose findings the repository's policy refuses.
    Without any policy it is a look at a cached (2 s) empty table: no query, no await per pull."""

    async def pull_policy(repository: str, record: ManifestRecord) -> None:
        if insight.no_policy_now():  # the usual case, without three awaits
            return
        reason = await insight.pull_refusal(repository, record.digest)
        if reason:
            raise errors.Denied(reason, detail={"digest": record.digest})

    return pull_policy
