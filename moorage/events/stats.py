"""Operational metrics beyond HTTP.

Two kinds:

* counters of what this process did (webhook deliveries by outcome, login failures), bumped
  as it happens -- like the HTTP metrics they are per process;
* gauges about the whole registry (storage bytes and blob counts per namespace, uploads in
  progress, GC runs and bytes freed, the webhook backlog), computed by the background job every
  ``events.stats_interval`` seconds from the database and served from that snapshot, so a
  scrape never runs the (registry-sized) queries itself.  Every replica reports the same
  registry-wide values: aggregate them with ``max``, not ``sum``.

Namespace labels are capped (``MAX_NAMESPACES`` largest, the rest summed as ``_other``) so
the series count stays bounded however many users push.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

MAX_NAMESPACES = 200


class EventMetrics:
    def __init__(self, registry: CollectorRegistry | None) -> None:
        reg = registry or CollectorRegistry()  # not served when metrics are off
        self.deliveries = Counter(
            "moorage_webhook_deliveries_total",
            "Webhook delivery attempts by this process, by outcome (delivered, failed, dead)",
            ["endpoint", "outcome"],
            registry=reg,
        )
        self.login_failures = Counter(
            "moorage_login_failures_total", "Failed logins seen by this process", ["reason"], registry=reg
        )
        self.audit_entries = Counter("moorage_audit_entries_total", "Audit entries written by this process", registry=reg)
        self.snapshot = StatsSnapshot()
        reg.register(self.snapshot)


class StatsSnapshot(Collector):
    """The last database-derived values; yields nothing until the first computation."""

    def __init__(self) -> None:
        self.namespaces: list[tuple[str, int, int]] = []
        self.counters: dict[str, Any] | None = None
        self.updated_at: float | None = None
        self.duration: float = 0.0

    def update(self, namespaces: list[tuple[str, int, int]], counters: dict[str, Any], duration: float) -> None:
        namespaces = sorted(namespaces, key=lambda r: r[2], reverse=True)
        if len(namespaces) > MAX_NAMESPACES:
            rest = namespaces[MAX_NAMESPACES:]
            namespaces = namespaces[:MAX_NAMESPACES] + [("_other", sum(r[1] for r in rest), sum(r[2] for r in rest))]
        self.namespaces, self.counters, self.duration = namespaces, counters, duration
        self.updated_at = time.time()

    def collect(self) -> Iterator[Any]:
        if self.counters is None or self.updated_at is None:
            return
        size = GaugeMetricFamily(
            "moorage_namespace_storage_bytes",
            "Bytes of distinct blobs linked into each namespace (first path component)",
            labels=["namespace"],
        )
        count = GaugeMetricFamily("moorage_namespace_blobs", "Distinct blobs linked into each namespace", labels=["namespace"])
        for ns, n, total in self.namespaces:
            size.add_metric([ns], total)
            count.add_metric([ns], n)
        yield size
        yield count
        c = self.counters
        yield GaugeMetricFamily("moorage_uploads_in_progress", "Upload sessions open in the registry", value=c["uploads"])
        yield CounterMetricFamily("moorage_gc_runs", "Finished garbage-collection runs (not dry runs)", value=c["gc_runs"])
        yield CounterMetricFamily("moorage_gc_freed_bytes", "Bytes freed by garbage collection", value=c["gc_bytes"])
        yield CounterMetricFamily("moorage_gc_freed_blobs", "Blobs removed by garbage collection", value=c["gc_blobs"])
        backlog = GaugeMetricFamily(
            "moorage_webhook_outbox", "Webhook deliveries by state (pending, delivering, dead)", labels=["endpoint", "status"]
        )
        for endpoint, status, n in c["backlog"]:
            backlog.add_metric([endpoint, status], n)
        yield backlog
        oldest = c.get("oldest_open")
        yield GaugeMetricFamily(
            "moorage_webhook_oldest_pending_age_seconds",
            "Age of the oldest undelivered webhook event (0 = none)",
            value=max(0.0, self.updated_at - oldest) if oldest else 0.0,
        )
        yield GaugeMetricFamily(
            "moorage_stats_updated_timestamp_seconds", "When these gauges were computed", value=self.updated_at
        )
        yield GaugeMetricFamily("moorage_stats_duration_seconds", "Time the gauges' queries took", value=self.duration)
