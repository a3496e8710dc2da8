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
from ..api import apidoc as oa
from ..api import routes as names
from ..api.admin_models import GroupGrantCreate
from ..api.common import ACCOUNTS, DATABASE
from ..api.routes import Rule
from ..api.routing import RouteTable
from ..registry.access_rules import MAX_GROUP_NAME, valid_group_name
from .admin_users import _bad, _body
from .credentials import principal, require_admin

routes = RouteTable()

GROUP_GRANTS_DOC = oa.admin_op(
    "listGroupGrants",
    "Grants to directory groups",
    {"200": oa.json_body(oa.array_of("grants", oa.ref("schemas", "GroupGrant")), "Group grants.")},
    parameters=[oa.param("group", "query", {"type": "string"}, "Only this group's.")],
)


@routes.get("/api/v1/group-grants", name=names.GROUP_GRANTS, rule=Rule.ADMIN, doc=GROUP_GRANTS_DOC)
async def list_group_grants(request: web.Request) -> web.Response:
    await require_admin(request)
    group = request.query.get("group")
    if group is not None and not valid_group_name(group):  # (NUL: PostgreSQL would refuse the query, a 500)
        raise _bad(f"invalid group name (1-{MAX_GROUP_NAME} printable characters, no surrounding spaces)")
    grants = await GroupStore(request.app[DATABASE]).list_grants(group)
    return web.json_response({"grants": grants})


GROUP_GRANT_ADD_DOC = oa.admin_op(
    "addGroupGrant",
    "Grant every member of a directory group actions on a repository pattern",
    {"201": oa.json_body(oa.ref("schemas", "GroupGrant"), "Granted.")},
    body=oa.ref("schemas", "GroupGrantCreate"),
    errors=(400, 401, 403, 413, 429, 503),
)


@routes.post("/api/v1/group-grants", name=names.GROUP_GRANT_ADD, rule=Rule.ADMIN, doc=GROUP_GRANT_ADD_DOC)
async def add_group_grant(request: web.Request) -> web.Response:
    who = await principal(request)
    body = await _body(request, GroupGrantCreate)
    actions = await request.app[ACCOUNTS].add_group_grant(who, body.group, body.pattern, body.action_set())
    return web.json_response({"group": body.group, "pattern": body.pattern, "actions": sorted(actions)}, status=201)


GROUP_GRANT_DELETE_DOC = oa.admin_op(
    "revokeGroupGrant",
    "Revoke a group grant",
    oa.NO_CONTENT,
    errors=(400, 401, 403, 404, 429, 503),
    parameters=[
        oa.param("group", "query", {"type": "string"}, "Group.", required=True),
        oa.param("pattern", "query", {"type": "string"}, "Pattern.", required=True),
    ],
)


@routes.delete("/api/v1/group-grants", name=names.GROUP_GRANT_DELETE, rule=Rule.ADMIN, doc=GROUP_GRANT_DELETE_DOC)
async def delete_group_grant(request: web.Request) -> web.Response:
    who = await principal(request)
    group, pattern = request.query.get("group"), request.query.get("pattern")
    if not group or not pattern or len(group) > MAX_GROUP_NAME or len(pattern) > 255:
        raise _bad("group and pattern query parameters are required (at most 255 characters each)")
    await request.app[ACCOUNTS].revoke_group_grant(who, group, pattern)
    return web.Response(status=204)
