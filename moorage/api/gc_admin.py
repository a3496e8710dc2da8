"""``DELETE /api/v1/repositories/{name}``: forget a repository (admin).

Repository delete removes the repository's tags, manifests, links and upload sessions in one
write transaction; the blobs that only it used are reclaimed by the next ``moorage gc`` (the
same sweep as everything else, so the delete itself never races a push of a shared layer).
Admin only: both route names are ADMIN in :mod:`moorage.api.routes`, so the auth middleware
checks the caller before this handler runs (token mode: an administrator, basic or bearer;
htpasswd: any user, every htpasswd user is an administrator there; ``none``: anyone).  ``delete_enabled: false`` turns it off (405
UNSUPPORTED) like every other delete.

The deletion itself is the policy package's (``moorage.gc.repositories``), handed in by
``moorage.gc.setup``; this module is the HTTP side only.
"""

from __future__ import annotations

from typing import Awaitable, Callable

from aiohttp import web

from ..registry import errors
from ..registry.names import validate_name
from .blobs import NAME
from . import routes as route_names
from .common import API_HEADERS, SETTINGS

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
#: ``await delete(name)``: what was removed (counts), None if the repository is unknown.
RepositoryDelete = Callable[[str], Awaitable[dict[str, int] | None]]

PATH = f"/api/v1/repositories/{NAME}"


def repository_delete_handler(delete: RepositoryDelete) -> Handler:
    async def handler(request: web.Request) -> web.Response:
        if not request.app[SETTINGS].delete_enabled:
            raise errors.Unsupported("deletes are disabled on this registry")
        name = request.match_info["name"]
        validate_name(name)
        result = await delete(name)
        if result is None:
            raise errors.NameUnknown(detail={"name": name})
        return web.json_response({"repository": name, "deleted": result}, status=202, headers=API_HEADERS)

    return handler


def add_repository_delete(router: web.UrlDispatcher, delete: RepositoryDelete, *, token_mode: bool) -> None:
    """Register the route (its name depends on the auth mode: :data:`moorage.api.routes.REPOSITORY_DELETE`)."""
    router.add_delete(PATH, repository_delete_handler(delete), name=route_names.REPOSITORY_DELETE.pick(token_mode))
