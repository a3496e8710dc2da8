"""``GET /v2/_catalog``: repositories from the index (never a storage walk), paginated."""

from __future__ import annotations

from aiohttp import web

from . import apidoc as oa
from . import routes as route_names
from .common import API_HEADERS, CATALOG_FILTER, json_body, link_next, pagination, service
from .routes import Rule
from .routing import RouteTable

routes = RouteTable()

#: Without ``n`` the catalog answers at most this many names, with a Link to the rest.
DEFAULT_PAGE = 10_000


CATALOG_DOC = {
    "tags": ["v2"],
    "operationId": "listRepositories",
    "summary": "List repositories",
    "description": "Lexically sorted, from the metadata index; at most 10,000 names without ``n``. With token auth only the repositories the caller may pull are listed.",
    "parameters": [oa.N, oa.LAST],
    "responses": {
        "200": oa.json_body(
            oa.ref("schemas", "Catalog"), "Repository names.", {**oa.API_VERSION, "Link": oa.ref("headers", "Link")}
        ),
        **oa.errors(400, *oa.AUTH_ERRORS),
    },
}


@routes.get("/v2/_catalog", name=route_names.CATALOG, rule=Rule.CATALOG, doc=CATALOG_DOC)
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
