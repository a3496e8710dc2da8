"""Prometheus metrics: ``GET /metrics`` with per-route request counts, latencies and bytes moved.

An extension (``setup_metrics``) wired in by ``metrics_enabled``.  Labels are route names
(``manifest_get``, ``blob_get`` ...), never repository names or digests, so the series count
stays bounded however many repositories the registry holds.  Each worker process keeps its own
counters (a scrape sees the worker that answered); run one worker, or scrape each replica.

Who may read them is ``metrics.access`` (docs/auth.md): ``public``, ``authenticated`` or
``admin``; ``auto`` (the default) is ``public`` without auth and ``admin`` with it -- metrics
name routes and volumes, not secrets, but a registry that asks for credentials should not show
its traffic to anyone.  ``metrics.token`` is a scrape credential that is always let in.
Before, any *anonymous* bearer token from ``/auth/token`` passed, while Basic did not.
"""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest

from .api import apidoc as oa
from .api import routes as route_names
from .api.common import BODY_BYTES
from .api.extension import ExtensionContext
from .api.routes import Rule
from .api.routing import RouteTable, add_routes
from .config import Settings

REGISTRY_KEY = web.AppKey("metrics_registry", CollectorRegistry)
#: Methods counted under their own name in ``moorage_http_requests_total`` (any other: "other").
# -- OpenAPI operations of the routes this module declares (moorage.api.routing, .apidoc) --
METRICS_DOC = {
    "tags": ["operations"],
    "operationId": "metrics",
    "summary": "Prometheus metrics",
    "description": "Per-route request counts, latencies and bytes. In token mode any valid bearer token.",
    "responses": {
        "200": {"description": "Prometheus text exposition.", "content": {"text/plain": {"schema": {"type": "string"}}}},
        **oa.errors(401, 429),
    },
}

_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def metrics_access(settings: Settings) -> str:
    """The effective ``metrics.access``; raises ValueError for one that no one could pass."""
    access = settings.metrics.access
    if access == "auto":
        access = "public" if settings.auth.mode == "none" else "admin"
    if access != "public" and settings.auth.mode == "none" and settings.metrics.token is None:
        raise ValueError(
            f"metrics.access is {access!r} but auth.mode is 'none' and metrics.token is not set: "
            "no one could read /metrics (set metrics.token, or metrics.access: public)"
        )
    return access


def setup_metrics(ctx: ExtensionContext) -> None:
    settings, app = ctx.settings, ctx.app
    if not settings.metrics_enabled:
        return
    access = metrics_access(settings)
    registry = CollectorRegistry()
    requests = Counter("moorage_http_requests_total", "HTTP requests answered", ["method", "route", "status"], registry=registry)
    latency = Histogram(
        "moorage_http_request_duration_seconds",
        "Time to answer (until the handler returns)",
        ["route"],
        buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
        registry=registry,
    )
    received = Counter("moorage_http_request_bytes_total", "Request body bytes declared by clients", ["route"], registry=registry)
    sent = Counter("moorage_http_response_bytes_total", "Response body bytes sent", ["route"], registry=registry)
    app[REGISTRY_KEY] = ctx.metrics = registry
    registry.register(ctx.scheduler.collector())
    users = getattr(ctx.authenticator, "directory", None)
    if users is not None:  # auth.ldap: moorage_ldap_up and its error count
        registry.register(users.directory)
    oidc = getattr(ctx.authenticator, "oidc", None)
    if oidc is not None:  # auth.oidc: moorage_oidc_up and its error count
        registry.register(oidc.client)

    # The labelled children, looked up once per label set: ``labels()`` validates and locks on
    # every call (about a third of this middleware's cost per request).  The label values are
    # bounded: route names are the app's, a method outside HTTP's usual ones is "other".
    by_request: dict[tuple[str, str, str], Any] = {}
    by_route: dict[str, tuple[Any, Any, Any]] = {}

    def route_children(route: str) -> tuple[Any, Any, Any]:
        found = by_route.get(route)
        if found is None:
            found = by_route[route] = (latency.labels(route), sent.labels(route), received.labels(route))
        return found

    def request_child(method: str, route: str, status: int) -> Any:
        key = (method if method in _METHODS else "other", route, str(status))
        found = by_request.get(key)
        if found is None:
            found = by_request[key] = requests.labels(*key)
        return found

    @web.middleware
    async def metrics_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        start = time.perf_counter()
        route = getattr(request.match_info.route, "name", None) or "unmatched"
        timing, sent_bytes, received_bytes = route_children(route)
        status = 500
        try:
            response = await handler(request)
            status = response.status
            if request.method != "HEAD":  # a HEAD's Content-Length describes a body never sent
                length = response.get(BODY_BYTES, response.content_length)
                if length:
                    sent_bytes.inc(length)
            return response
        except web.HTTPException as exc:
            status = exc.status
            raise
        finally:
            timing.observe(time.perf_counter() - start)
            request_child(request.method, route, status).inc()
            if request.content_length:
                received_bytes.inc(request.content_length)

    async def metrics(request: web.Request) -> web.Response:
        if access != "public":
            from .auth.scrape import authorize_scrape

            await authorize_scrape(request, settings, access)
        resp = web.Response(body=generate_latest(registry))
        resp.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return resp

    # Outermost, so it times everything, errors included.
    app.middlewares.insert(0, metrics_middleware)
    table = RouteTable()  # METRICS: the handler checks the scrape credential / metrics.access
    table.add_route("GET", "/metrics", metrics, name=route_names.METRICS, rule=Rule.METRICS, doc=METRICS_DOC)
    add_routes(app, table)
