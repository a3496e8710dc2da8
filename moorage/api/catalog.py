"""``GET /v2/_catalog``: repositories from the index (never a storage walk), paginated."""

from __future__ import annotations

from aiohttp import web

from . import routes as route_names
from .common import API_HEADERS, CATALOG_FILTER, json_body, link_next, pagination, service

routes = web.RouteTableDef()

#: Without ``n`` the catalog answers at most this many names, with a Link to the rest.
DEFAULT_PAGE = 10_000


@routes.get("/v2/_catalog", name=route_names.CATALOG)
async def catalog(request: web.Request) -> web.Response:
    n, last = pagination(request, default=None)
    limit = DEFAULT_PAGE if n is None else n
    headers = dict(API_HEADERS)
    found: list[str] = []
    if limit > 0:
        found = await service(request).catalog(limit + 1, last, request.get(CATALOG_FILTER))
    if limit > 0 and len(found) > limit:
        found = found[:limit]
        headers["Link"] = link_next("/v2/_catalog", limit, found[-1])
    return json_body({"repositories": found}, headers=headers)
