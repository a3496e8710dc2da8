"""``GET /v2/_catalog``: repositories from the index (never a storage walk), paginated."""

from __future__ import annotations

from aiohttp import web

from .common import API_HEADERS, CATALOG_FILTER, json_body, link_next, pagination, service
from . import routes as route_names

routes = web.RouteTableDef()

#: Without ``n`` the catalog answers at most this many names, with a Link to the rest.
DEFAULT_PAGE = 10_000


@routes.get("/v2/_catalog", name=route_names.CATALOG)
async def catalog(request: web.Request) -> web.Response:
    n, last = pagination(request, default=None)
    limit = DEFAULT_PAGE if n is None else n
    headers = dict(API_HEADERS)
    found: list[str] = []
    visible = request.get(CATALOG_FILTER)
    if limit > 0 and visible is not None:
        found = await _filtered(request, visible, limit + 1, last)
    elif limit > 0:
        found = await service(request).catalog(limit + 1, last)
    if limit > 0:
        if len(found) > limit:
            found = found[:limit]
            headers["Link"] = link_next("/v2/_catalog", limit, found[-1])
    return json_body({"repositories": found}, headers=headers)


async def _filtered(request: web.Request, visible, want: int, last: str | None) -> list[str]:  # type: ignore[no-untyped-def]
    """Up to ``want`` names after ``last`` that the caller may see, reading the index in batches."""
    found: list[str] = []
    batch = max(want, 100)
    while len(found) < want:
        names = await service(request).catalog(batch, last)
        if not names:
            break
        found.extend(await visible(names))
        last = names[-1]
        if len(names) < batch:
            break
    return found[:want]
