"""``/ui/admin/group-grants``: grants to directory groups in the web UI (administrators, token
mode), beside the namespaces page's grants to users.  Parse -> GroupStore -> render; the same
checks as ``moorage grant --group`` and ``/api/v1/group-grants``."""

from __future__ import annotations

from aiohttp import web

from ..api import routes as route_names
from ..api.common import DATABASE
from ..auth.groups import valid_group_name
from ..auth.policy import parse_actions, valid_pattern
from ..metadata.group_store import GroupStore
from ..registry.names import is_valid_name
from .format import clean
from .session import Form, Redirect, UIError, Viewer, check_csrf, resolve_viewer
from .templating import render

routes = web.RouteTableDef()
PATH = "/ui/admin/group-grants"


def _require_admin(viewer: Viewer) -> None:
    if viewer.mode != "token":
        raise UIError(404, "Grants to groups exist only with auth.mode: token.")
    if viewer.anonymous:
        raise Redirect("/ui/login?next=" + PATH)
    if not viewer.may_administer:
        raise UIError(403, "Administrator rights required.")


def _field(form: Form, key: str, limit: int = 255) -> str:
    value = form.get(key, "")
    return clean(value, limit) if isinstance(value, str) else ""


async def _page(request: web.Request, error: str | None = None, status: int = 200) -> web.Response:
    ctx = {
        "title": "Grants to groups",
        "grants": await GroupStore(request.app[DATABASE]).list_grants(),
        "error": error,
    }
    return render("group_grants.html", request, ctx, status=status)


@routes.get(PATH, name=route_names.UI_GROUP_GRANTS)
async def group_grants_page(request: web.Request) -> web.StreamResponse:
    _require_admin(await resolve_viewer(request))
    return await _page(request)


@routes.post(PATH, name=route_names.UI_GROUP_GRANTS_POST)
async def group_grants_post(request: web.Request) -> web.StreamResponse:
    viewer, form = await check_csrf(request)
    _require_admin(viewer)
    store = GroupStore(request.app[DATABASE])
    action = _field(form, "action", 40)
    group = _field(form, "group")
    try:
        if not valid_group_name(group):
            raise ValueError("give a group name (1-255 printable characters)")
        if action == "grant":
            ns = _field(form, "namespace").strip("/")
            if not ns or not is_valid_name(ns):
                raise ValueError(f"invalid namespace {ns[:100]!r}")
            actions = parse_actions([a for a in ("pull", "push", "delete", "admin") if _field(form, a) == "1"])
            if not actions:
                raise ValueError("tick at least one of pull, push, delete, admin")
            await store.grant(group, f"{ns}/*", actions)
        elif action == "revoke":
            pattern = _field(form, "pattern")
            if not valid_pattern(pattern):
                raise ValueError("invalid pattern")
            await store.revoke(group, pattern)
        else:
            raise ValueError("unknown action")
    except ValueError as exc:
        return await _page(request, error=str(exc), status=400)
    raise Redirect(PATH)
