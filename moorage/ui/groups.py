"""``/ui/admin/group-grants``: grants to directory groups in the web UI (administrators, token
mode), beside the namespaces page's grants to users.  Parse -> the accounts service
(``add_group_grant`` / ``revoke_group_grant``: authorized, validated and audited there, face
``ui``) -> render; the same rules as ``moorage grant --group`` and ``/api/v1/group-grants``.

The form's group, namespace and pattern reach the service as typed (bounded, not cleaned): a
name with a control character or one too long is refused with the service's message, never
trimmed into another group's name."""

from __future__ import annotations

import contextlib

from aiohttp import web

from .. import errors
from ..accounts.group_store import GroupStore
from ..api import routes as route_names
from ..api.common import DATABASE
from ..api.routes import Rule
from ..api.routing import UNDOCUMENTED, RouteTable
from ..registry.access_rules import MAX_GROUP_NAME
from ..registry.names import is_valid_name
from .manage import _accounts, _refused
from .session import Form, Redirect, UIError, Viewer, check_csrf, resolve_viewer, ui_principal
from .templating import render

routes = RouteTable()
PATH = "/ui/admin/group-grants"


def _token_mode(viewer: Viewer) -> None:
    if viewer.mode != "token":
        raise UIError(404, "Grants to groups exist only with auth.mode: token.")
    if viewer.anonymous and not viewer.may_administer:
        raise Redirect("/ui/login?next=" + PATH)


def _raw(form: Form, key: str, limit: int = MAX_GROUP_NAME) -> str:
    """The field as typed, cut one past ``limit`` (so an over-long value is refused, not cut)."""
    value = form.get(key, "")
    return value[: limit + 1] if isinstance(value, str) else ""


async def _page(request: web.Request, error: str | None = None, status: int = 200) -> web.Response:
    ctx = {
        "title": "Grants to groups",
        "grants": await GroupStore(request.app[DATABASE]).list_grants(),
        "error": error,
    }
    return render("group_grants.html", request, ctx, status=status)


@routes.get(PATH, name=route_names.UI_GROUP_GRANTS, rule=Rule.SESSION, doc=UNDOCUMENTED)
async def group_grants_page(request: web.Request) -> web.StreamResponse:
    viewer = await resolve_viewer(request)
    _token_mode(viewer)
    if not viewer.may_administer:  # the listing: administrators' (as GET /api/v1/group-grants)
        raise UIError(403, "Administrator rights required.")
    return await _page(request)


@routes.post(PATH, name=route_names.UI_GROUP_GRANTS_POST, rule=Rule.SESSION, doc=UNDOCUMENTED)
async def group_grants_post(request: web.Request) -> web.StreamResponse:
    viewer, form = await check_csrf(request)
    _token_mode(viewer)
    service, who = _accounts(request), ui_principal(request, viewer)
    action = _raw(form, "action", 40)
    group = _raw(form, "group")
    try:
        if action == "grant":
            ns = _raw(form, "namespace").strip("/")
            if not ns or not is_valid_name(ns):
                raise ValueError(f"invalid namespace {ns[:100]!r}")
            actions = [a for a in ("pull", "push", "delete", "admin") if form.get(a) == "1"]
            if not actions:
                raise ValueError("tick at least one of pull, push, delete, admin")
            await service.add_group_grant(who, group, f"{ns}/*", actions)
        elif action == "revoke":
            with contextlib.suppress(errors.NotFound):  # gone already: the page shows what is left
                await service.revoke_group_grant(who, group, _raw(form, "pattern"))
        else:
            raise ValueError("unknown action")
    except ValueError as exc:
        return await _error_page(request, viewer, str(exc))
    except errors.Denied as exc:
        raise _refused(exc) from None
    except errors.RegistryError as exc:  # invalid group name, pattern ...
        return await _error_page(request, viewer, exc.message)
    raise Redirect(PATH)


async def _error_page(request: web.Request, viewer: Viewer, message: str) -> web.Response:
    """The page again with the error (400); its listing is for administrators only, so a
    form the face refused before the service was asked is a 403 to anyone else."""
    if not viewer.may_administer:
        raise UIError(403, "Administrator rights required.")
    return await _page(request, error=message, status=400)
