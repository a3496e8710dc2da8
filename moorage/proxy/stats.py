"""Counters of the pull-through cache, per upstream, exported to ``/metrics`` and the admin API."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

from prometheus_client.core import CounterMetricFamily

if TYPE_CHECKING:
    from .cache import PullThroughCache


@dataclass
class ProxyStats:
    #: Requests served from local content (tags within their TTL or re-validated, blobs present).
    hits: int = 0
    #: Requests that had to fetch from the upstream.
    misses: int = 0
    #: Tags re-validated with a HEAD whose digest had not changed.
    revalidated: int = 0
    #: Requests answered from the cache because the upstream could not be reached.
    stale: int = 0
    #: Requests that waited for another request's upstream fetch instead of fetching again.
    shared: int = 0
    #: Bytes served from local content (what the upstream did not have to send).
    bytes_saved: int = 0
    #: Bytes fetched from the upstream.
    bytes_fetched: int = 0
    #: Upstream failures (unreachable, refusing us, wrong bytes).
    upstream_errors: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


class ProxyCollector:
    """A prometheus collector reading the counters at scrape time (labels: upstream name)."""

    def __init__(self, cache: PullThroughCache) -> None:
        self.cache = cache

    def collect(self) -> Iterator[CounterMetricFamily]:
        docs = {
            "hits": "Cached requests answered from local content",
            "misses": "Cached requests that fetched from the upstream",
            "revalidated": "Tags re-validated upstream and found unchanged",
            "stale": "Requests served from the cache while the upstream was unavailable",
            "shared": "Requests that shared another request's upstream blob fetch",
            "bytes_saved": "Bytes served from the cache instead of the upstream",
            "bytes_fetched": "Bytes fetched from upstreams",
            "upstream_errors": "Upstream failures (unreachable, refused, wrong content)",
        }
        for key, doc in docs.items():
            metric = CounterMetricFamily(f"moorage_proxy_{key}", doc, labels=["upstream"])
            for up in self.cache.upstreams:
                metric.add_metric([up.name], getattr(up.stats, key))
            yield metric
