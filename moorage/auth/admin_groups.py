"""``/api/v1/group-grants``: grants to directory groups (admin only; moorage.auth.groups).

    GET    /api/v1/group-grants[?group=]
    POST   /api/v1/group-grants {group, pattern, actions}
    DELETE /api/v1/group-grants?group=&pattern=

Parse -> call the accounts service (``add_group_grant`` / ``revoke_group_grant``: it
authorizes, validates, changes and audits in one transaction) -> render; the listing reads the
group store.  Who is in a group is the directory's answer.
"""

from __future__ import annotations

from aiohttp import web

from ..accounts.group_store import GroupStore
from ..api import routes as names
from ..api.admin_models import GroupGrantCreate
from ..api.common import ACCOUNTS, DATABASE
from ..registry.access_rules import MAX_GROUP_NAME, valid_group_name
from .admin_users import _bad, _body
from .credentials import principal, require_admin

routes = web.RouteTableDef()


@routes.get("/api/v1/group-grants", name=names.GROUP_GRANTS)
async def list_group_grants(request: web.Request) -> web.Response:
    await require_admin(request)
    group = request.query.get("group")
    if group is not None and not valid_group_name(group):  # (NUL: PostgreSQL would refuse the query, a 500)
        raise _bad(f"invalid group name (1-{MAX_GROUP_NAME} printable characters, no surrounding spaces)")
    grants = await GroupStore(request.app[DATABASE]).list_grants(group)
    return web.json_response({"grants": grants})


@routes.post("/api/v1/group-grants", name=names.GROUP_GRANT_ADD)
async def add_group_grant(request: web.Request) -> web.Response:
    who = await principal(request)
    body = await _body(request, GroupGrantCreate)
    actions = await request.app[ACCOUNTS].add_group_grant(who, body.group, body.pattern, body.action_set())
    return web.json_response({"group": body.group, "pattern": body.pattern, "actions": sorted(actions)}, status=201)


@routes.delete("/api/v1/group-grants", name=names.GROUP_GRANT_DELETE)
async def delete_group_grant(request: web.Request) -> web.Response:
    who = await principal(request)
    group, pattern = request.query.get("group"), request.query.get("pattern")
    if not group or not pattern or len(group) > MAX_GROUP_NAME or len(pattern) > 255:
        raise _bad("group and pattern query parameters are required (at most 255 characters each)")
    await request.app[ACCOUNTS].revoke_group_grant(who, group, pattern)
    return web.Response(status=204)
