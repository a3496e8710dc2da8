"""``DELETE /api/v1/repositories/{name}``: forget a repository (admin).

Repository delete removes the repository's tags, manifests, links and upload sessions in one
write transaction; the blobs that only it used are reclaimed by the next ``moorage gc`` (the
same sweep as everything else, so the delete itself never races a push of a shared layer).
Admin only: with ``auth.mode: token`` the auth module's admin check (basic or bearer) runs in
the handler (the auth middleware skips ``api_v1_*`` routes, they authenticate themselves);
with ``htpasswd`` the auth middleware has authenticated the caller (every htpasswd user is an
administrator there); with ``none`` anyone may.  ``delete_enabled: false`` turns it off (405
UNSUPPORTED) like every other delete.

The deletion itself is the policy package's (``moorage.gc.repositories``), handed in by
``moorage.gc.setup``; this module is the HTTP side only.
"""

from __future__ import annotations

from typing import Any, Awaitable, Callable

from aiohttp import web

from ..registry import errors
from ..registry.names import validate_name
from .blobs import NAME
from .common import API_HEADERS, SETTINGS

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
#: ``await delete(name)``: what was removed (counts), None if the repository is unknown.
RepositoryDelete = Callable[[str], Awaitable[dict[str, int] | None]]
#: ``await require_admin(request)``: raises unless the caller is an administrator.
AdminCheck = Callable[[web.Request], Awaitable[Any]]

PATH = f"/api/v1/repositories/{NAME}"
#: Route names: in token mode the auth middleware leaves ``api_v1_*`` routes to their handlers.
ROUTE_TOKEN_MODE = "api_v1_repository_delete"
ROUTE = "gc_repository_delete"


def repository_delete_handler(delete: RepositoryDelete, require_admin: AdminCheck | None) -> Handler:
    async def handler(request: web.Request) -> web.Response:
        if require_admin is not None:
            await require_admin(request)
        if not request.app[SETTINGS].delete_enabled:
            raise errors.Unsupported("deletes are disabled on this registry")
        name = request.match_info["name"]
        validate_name(name)
        result = await delete(name)
        if result is None:
            raise errors.NameUnknown(detail={"name": name})
        return web.json_response({"repository": name, "deleted": result}, status=202, headers=API_HEADERS)

    return handler


def add_repository_delete(router: web.UrlDispatcher, delete: RepositoryDelete, *, token_mode: bool,
                          require_admin: AdminCheck | None = None) -> None:
    """Register the route (its name depends on the auth mode, see :data:`ROUTE_TOKEN_MODE`)."""
    router.add_delete(PATH, repository_delete_handler(delete, require_admin),
                      name=ROUTE_TOKEN_MODE if token_mode else ROUTE)
