"""``GET /v2/<name>/tags/list``: lexically sorted, paginated with ``n``/``last`` and ``Link``."""

from __future__ import annotations

from aiohttp import web

from . import apidoc as oa
from . import routes as route_names
from .blobs import NAME
from .common import API_HEADERS, json_body, link_next, pagination, reader, service
from .routes import Rule
from .routing import RouteTable

routes = RouteTable()

TAGS_LIST_DOC = {
    "tags": ["v2"],
    "operationId": "listTags",
    "summary": "List tags",
    "parameters": [oa.NAME, oa.N, oa.LAST],
    "responses": {
        "200": oa.json_body(
            oa.ref("schemas", "TagList"),
            "Tags of the repository, lexically sorted.",
            {**oa.API_VERSION, "Link": oa.ref("headers", "Link")},
        ),
        **oa.errors(400, 404, *oa.AUTH_ERRORS),
    },
}


@routes.get(f"/v2/{NAME}/tags/list", name=route_names.TAGS_LIST, rule=Rule.PULL, doc=TAGS_LIST_DOC)
async def list_tags(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    n, last = pagination(request, default=None)
    headers = dict(API_HEADERS)
    if n == 0:
        found: list[str] = []
        await service(request).list_tags(name, 0, last, reader(request))  # still 404 for an unknown repository
    else:
        found = await service(request).list_tags(name, None if n is None else n + 1, last, reader(request))
        if n is not None and len(found) > n:
            found = found[:n]
            headers["Link"] = link_next(f"/v2/{name}/tags/list", n, found[-1])
    return json_body({"name": name, "tags": found}, headers=headers)
