"""``GET /v2/``: the API version check every client starts with."""

from __future__ import annotations

from aiohttp import web

from . import apidoc as oa
from . import routes as route_names
from .common import API_HEADERS, json_body
from .routes import Rule
from .routing import RouteTable

routes = RouteTable()

BASE_DOC = {
    "tags": ["v2"],
    "operationId": "apiVersionCheck",
    "summary": "API version check",
    "description": "200 when the caller may use the API; with auth, 401 and a WWW-Authenticate challenge tell clients how to log in.",
    "responses": {
        "200": oa.json_body({"type": "object"}, "The registry speaks OCI Distribution v2.", oa.API_VERSION),
        **oa.errors(401, 429, 503),
    },
}


BASE_NOSLASH_DOC = oa.noslash(BASE_DOC)


@routes.get("/v2/", name=route_names.BASE, rule=Rule.REGISTRY, doc=BASE_DOC)
@routes.get("/v2", name=route_names.BASE_NOSLASH, rule=Rule.REGISTRY, doc=BASE_NOSLASH_DOC)
async def api_version(request: web.Request) -> web.Response:
    return json_body({}, headers=API_HEADERS)
