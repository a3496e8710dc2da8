"""``DELETE /api/v1/repositories/{name}``: forget a repository (admin).

Repository delete removes the repository's tags, manifests, links and upload sessions in one
write transaction; the blobs that only it used are reclaimed by the next ``moorage gc`` (the
same sweep as everything else, so the delete itself never races a push of a shared layer).
Admin only: the route is declared ADMIN, so the auth middleware
checks the caller before this handler runs (token mode: an administrator, basic or bearer;
htpasswd: any user, every htpasswd user is an administrator there; ``none``: anyone).  ``delete_enabled: false`` turns it off (405
UNSUPPORTED) like every other delete.

The deletion itself is the registry service's operation (``RegistryService.delete_repository``,
the same the web UI and ``moorage repo delete`` call, with its audit entry and event in its
transaction); this module is the HTTP side only, registered by ``moorage.gc.setup``.
"""

from __future__ import annotations

from aiohttp import web

from ..api import apidoc as oa
from ..api import routes as route_names
from ..api.blobs import NAME
from ..api.common import API_HEADERS, request_principal, service
from ..api.routes import Rule
from ..api.routing import RouteTable

PATH = f"/api/v1/repositories/{NAME}"

# -- OpenAPI operations of the routes this module declares (moorage.api.routing, .apidoc) --
REPOSITORY_DELETE_DOC = oa.admin_op(
    "deleteRepository",
    "Delete a repository (tags, manifests, links, uploads; blobs go at the next GC)",
    {
        "202": oa.json_body(
            {
                "type": "object",
                "required": ["repository", "deleted"],
                "properties": {"repository": {"type": "string"}, "deleted": {"type": "object"}},
            },
            "Deleted.",
            oa.API_VERSION,
        )
    },
    parameters=[oa.NAME],
    errors=(400, 401, 403, 404, 405, 429, 503),
)


async def repository_delete(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    result = await service(request).delete_repository(name, request_principal(request, "api"))
    return web.json_response({"repository": name, "deleted": result}, status=202, headers=API_HEADERS)


def repository_delete_routes() -> RouteTable:
    """The route, ADMIN (registered by ``moorage.gc.setup``)."""
    table = RouteTable()
    table.add_route(
        "DELETE", PATH, repository_delete, name=route_names.REPOSITORY_DELETE, rule=Rule.ADMIN, doc=REPOSITORY_DELETE_DOC
    )
    return table
