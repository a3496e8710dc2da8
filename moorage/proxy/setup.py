"""Wiring of the pull-through cache: one function, ``setup_proxy(app, settings)``.

Adds the cache middleware (after auth, so only callers allowed to pull can make us fetch),
the ``/metrics`` collector and ``GET /api/v1/proxy`` (administrators: upstreams without their
credentials, and their counters).  With ``proxy.mirror_rules``, also the scheduled replication runs
and ``/api/v1/mirror`` (:mod:`.schedule`).  Nothing is added when neither is configured.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from ..api import apidoc as oa
from ..api import routes as route_names
from ..api.extension import ExtensionContext
from ..api.routes import Rule
from ..api.routing import RouteTable, add_routes
from .cache import PullThroughCache

CACHE = web.AppKey("proxy_cache", PullThroughCache)

# -- OpenAPI operations of the routes this module declares (moorage.api.routing, .apidoc) --
_UPSTREAM = oa.obj(
    ["name", "url", "namespace", "tag_ttl", "authenticated", "stats"],
    name=oa.STRING,
    url=oa.STRING,
    namespace=oa.STRING,
    tag_ttl=oa.INTEGER,
    authenticated=oa.BOOLEAN,
    stats={"type": "object", "additionalProperties": {"type": "integer"}},
)
PROXY_STATUS_DOC = oa.op(
    "proxy",
    "proxyStatus",
    "Pull-through cache upstreams and their counters",
    {"200": oa.json_body(oa.obj(["upstreams"], upstreams={"type": "array", "items": _UPSTREAM}), "Upstreams.")},
    description="Only when ``proxy.upstreams`` is configured (404 otherwise). " + oa.ADMIN_NOTE,
    errors=(401, 403, 404, 429, 503),
)


def setup_proxy(ctx: ExtensionContext) -> None:
    app, settings = ctx.app, ctx.settings
    token_mode = settings.auth.mode == "token"
    if settings.proxy.mirror_rules:
        from .schedule import setup_mirror_rules

        setup_mirror_rules(ctx, token_mode)
    if not settings.proxy.upstreams:
        return
    cache = PullThroughCache(settings, ctx.store, ctx.registry)
    app[CACHE] = cache
    app.middlewares.append(cache.middleware())

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        yield
        await cache.close()

    app.cleanup_ctx.append(lifecycle)

    registry = ctx.metrics
    if registry is not None:
        from .stats import ProxyCollector

        registry.register(ProxyCollector(cache))

    async def status(request: web.Request) -> web.Response:
        if token_mode:
            from ..auth.credentials import require_admin

            await require_admin(request)
        return web.json_response({"upstreams": [up.describe() for up in cache.upstreams]})

    # Rule ADMIN: checked by the auth middleware, and here; with htpasswd every authenticated
    # user is an administrator; with no auth anyone may read.
    table = RouteTable()
    table.add_route("GET", "/api/v1/proxy", status, name=route_names.PROXY_STATUS, rule=Rule.ADMIN, doc=PROXY_STATUS_DOC)
    add_routes(app, table)
