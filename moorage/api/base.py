"""``GET /v2/``: the API version check every client starts with."""

from __future__ import annotations

from aiohttp import web

from .common import API_HEADERS

routes = web.RouteTableDef()


@routes.get("/v2/", name="base")
@routes.get("/v2", name="base_noslash")
async def api_version(request: web.Request) -> web.Response:
    return web.json_response({}, headers=API_HEADERS)


@routes.get("/healthz", name="public_healthz")  # "public_": auth middlewares let it through
async def healthz(request: web.Request) -> web.Response:
    """Liveness for container healthchecks and load balancers (no auth, no storage access)."""
    return web.json_response({"status": "ok"})
