"""``GET /v2/``: the API version check every client starts with."""

from __future__ import annotations

from aiohttp import web

from . import routes as route_names
from .common import API_HEADERS, json_body

routes = web.RouteTableDef()


@routes.get("/v2/", name=route_names.BASE)
@routes.get("/v2", name=route_names.BASE_NOSLASH)
async def api_version(request: web.Request) -> web.Response:
    return json_body({}, headers=API_HEADERS)
