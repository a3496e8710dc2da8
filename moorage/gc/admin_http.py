"""``DELETE /api/v1/repositories/{name}``: forget a repository (admin).

Repository delete removes the repository's tags, manifests, links and upload sessions in one
write transaction; the blobs that only it used are reclaimed by the next ``moorage gc`` (the
same sweep as everything else, so the delete itself never races a push of a shared layer).
Admin only: both route names are ADMIN in :mod:`moorage.api.routes`, so the auth middleware
checks the caller before this handler runs (token mode: an administrator, basic or bearer;
htpasswd: any user, every htpasswd user is an administrator there; ``none``: anyone).  ``delete_enabled: false`` turns it off (405
UNSUPPORTED) like every other delete.

The deletion itself is the registry service's operation (``RegistryService.delete_repository``,
the same the web UI and ``moorage repo delete`` call, with its audit entry and event in its
transaction); this module is the HTTP side only, registered by ``moorage.gc.setup``.
"""

from __future__ import annotations

from aiohttp import web

from ..api import routes as route_names
from ..api.blobs import NAME
from ..api.common import API_HEADERS, request_principal, service

PATH = f"/api/v1/repositories/{NAME}"


async def repository_delete(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    result = await service(request).delete_repository(name, request_principal(request, "api"))
    return web.json_response({"repository": name, "deleted": result}, status=202, headers=API_HEADERS)


def add_repository_delete(router: web.UrlDispatcher, *, token_mode: bool) -> None:
    """Register the route (its name depends on the auth mode: :data:`moorage.api.routes.REPOSITORY_DELETE`)."""
    router.add_delete(PATH, repository_delete, name=route_names.REPOSITORY_DELETE.pick(token_mode))
