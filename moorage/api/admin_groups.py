"""``/api/v1/group-grants``: grants to directory groups (admin only; moorage.auth.groups).

    GET    /api/v1/group-grants[?group=]
    POST   /api/v1/group-grants {group, pattern, actions}
    DELETE /api/v1/group-grants?group=&pattern=

Parse -> call the group store -> render; who is in a group is the directory's answer.
"""

from __future__ import annotations

from aiohttp import web

from ..metadata.group_store import GroupStore
from .. import errors
from . import routes as names
from .admin_models import GroupGrantCreate
from .admin_users import _bad, _body
from .common import DATABASE
from .credentials import require_admin

routes = web.RouteTableDef()


def _store(request: web.Request) -> GroupStore:
    return GroupStore(request.app[DATABASE])


@routes.get("/api/v1/group-grants", name=names.GROUP_GRANTS)
async def list_group_grants(request: web.Request) -> web.Response:
    await require_admin(request)
    group = request.query.get("group")
    return web.json_response({"grants": await _store(request).list_grants(group[:255] if group else None)})


@routes.post("/api/v1/group-grants", name=names.GROUP_GRANT_ADD)
async def add_group_grant(request: web.Request) -> web.Response:
    await require_admin(request)
    body = await _body(request, GroupGrantCreate)
    actions = body.action_set()
    await _store(request).grant(body.group, body.pattern, actions)
    return web.json_response({"group": body.group, "pattern": body.pattern, "actions": sorted(actions)}, status=201)


@routes.delete("/api/v1/group-grants", name=names.GROUP_GRANT_DELETE)
async def delete_group_grant(request: web.Request) -> web.Response:
    await require_admin(request)
    group, pattern = request.query.get("group"), request.query.get("pattern")
    if not group or not pattern or len(group) > 255 or len(pattern) > 255:
        raise _bad("group and pattern query parameters are required (at most 255 characters each)")
    if not await _store(request).revoke(group, pattern):
        raise errors.NotFound("no such group grant")
    return web.Response(status=204)
