"""Management pages: deleting tags and manifests, visibility, access tokens, users and robots,
grants and policies per namespace (the operator pages -- audit, webhooks, GC -- are :mod:`.admin`).

Every change is a POST carrying the form's CSRF token (:func:`~moorage.ui.session.check_csrf`)
and is allowed exactly when the API would allow it: repository deletes need the ``delete``
right, everything else is for administrators (with ``auth.mode: none`` anyone; with
htpasswd every signed-in user), personal access tokens for any signed-in user with full
credentials.  Account changes (users, robots, tokens, grants, visibility) are operations of
the accounts service (:class:`~moorage.accounts.service.AccountsService`), called with the
viewer as a ``ui`` :class:`~moorage.registry.principal.Principal`: it decides who may, and
audits them exactly as it does for the API and the CLI.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

from aiohttp import web

from .. import errors
from ..accounts.service import AccountsService
from ..api import routes as route_names
from ..api.common import ACCOUNTS, DATABASE, SERVICE, SETTINGS
from ..api.routes import Rule
from ..api.routing import UNDOCUMENTED, RouteTable
from ..registry.access_rules import parse_actions, parse_token_scope
from ..registry.names import is_valid_name
from .format import clean
from .pages import NAME, _repo_name, registry_host, visible_repository
from .queries import Row
from .session import QUERIES, Form, Redirect, UIError, Viewer, check_csrf, resolve_viewer, ui_principal
from .templating import render

routes = RouteTable()


def _auth_state(request: web.Request) -> Any:
    from ..api.common import AUTHENTICATOR

    state = request.app.get(AUTHENTICATOR)
    if state is None:
        raise UIError(404, "Users and tokens exist only with auth.mode: token.")
    return state


def _accounts(request: web.Request) -> AccountsService:
    service = request.app.get(ACCOUNTS)
    if service is None:
        raise UIError(404, "Users and tokens exist only with auth.mode: token.")
    return service


def _signed_in(viewer: Viewer, *, token_mode: bool = False, next_page: str = "") -> None:
    """The face's part of an account change: the page exists in this mode, and someone is
    signed in (else the sign-in page); who may do what is the service's to decide."""
    if token_mode and viewer.mode != "token":
        raise UIError(404, "Users, grants and visibility exist only with auth.mode: token.")
    if viewer.anonymous and not viewer.may_administer:
        raise Redirect("/ui/login" + (f"?next={next_page}" if next_page else ""))


def _refused(exc: errors.RegistryError) -> UIError:
    """A service refusal as an error page."""
    if isinstance(exc, errors.Denied):
        message = exc.message if "token" in exc.message else "Administrator rights required."
        return UIError(403, message)
    return UIError(exc.status if 400 <= exc.status < 500 else 400, exc.message)


def _require_admin(viewer: Viewer, *, token_mode: bool = False) -> None:
    if token_mode and viewer.mode != "token":
        raise UIError(404, "Users, grants and visibility exist only with auth.mode: token.")
    if viewer.anonymous and not viewer.may_administer:
        raise Redirect("/ui/login")
    if not viewer.may_administer:
        raise UIError(403, "Administrator rights required.")


def _field(form: Form, key: str, limit: int = 255) -> str:
    value = form.get(key, "")
    return clean(value, limit) if isinstance(value, str) else ""


def _path_id(request: web.Request, key: str) -> str:
    """A token id or user name from the path: plain characters only, or 404."""
    value = request.match_info[key]
    if not (0 < len(value) <= 64) or not all(c.isascii() and (c.isalnum() or c in "._-") for c in value):
        raise UIError(404, "Not found.")
    return value


# -- deleting tags and manifests -------------------------------------------------------------
@routes.get(f"/ui/repo/{NAME}/-/delete", name=route_names.UI_DELETE_CONFIRM, rule=Rule.SESSION, doc=UNDOCUMENTED)
async def delete_confirm(request: web.Request) -> web.StreamResponse:
    viewer = await resolve_viewer(request)
    name = _repo_name(request)
    _, rights = await visible_repository(request, viewer, name)
    if "delete" not in rights:
        raise UIError(403, "You may not delete in this repository.")
    tag, digest = request.query.get("tag", "")[:128], request.query.get("digest", "")[:200]
    if not tag and not digest:
        raise UIError(400, "Say which tag or manifest to delete.")
    return render("delete_confirm.html", request, {"title": "Confirm deletion", "name": name, "tag": tag, "digest": digest})


@routes.post(f"/ui/repo/{NAME}/-/delete", name=route_names.UI_DELETE, rule=Rule.SESSION, doc=UNDOCUMENTED)
async def delete_post(request: web.Request) -> web.StreamResponse:
    viewer, form = await check_csrf(request)
    name = _repo_name(request)
    _, rights = await visible_repository(request, viewer, name)
    if "delete" not in rights:
        raise UIError(403, "You may not delete in this repository.")
    if not request.app[SETTINGS].delete_enabled:
        raise UIError(405, "Deletes are disabled on this registry (delete_enabled: false).")
    tag, digest = _field(form, "tag", 200), _field(form, "digest", 200)
    reference = digest or tag
    if not reference or (tag and digest):
        raise UIError(400, "Give either a tag or a digest.")
    if viewer.name:
        request["user"] = viewer.name  # (the access log's user)
    try:
        await request.app[SERVICE].delete_manifest(name, reference, ui_principal(request, viewer))
    except errors.ManifestUnknown:
        raise UIError(404, "It is gone already.") from None
    except (errors.TagInvalid, errors.DigestInvalid):
        raise UIError(400, "Not a valid tag or digest.") from None
    raise Redirect(f"/ui/repo/{name}")


# -- deleting a repository (administrators, as DELETE /api/v1/repositories/NAME) ----------------
@routes.get(f"/ui/repo/{NAME}/-/delete-repository", name=route_names.UI_REPO_DELETE_CONFIRM, rule=Rule.SESSION, doc=UNDOCUMENTED)
async def repository_delete_confirm(request: web.Request) -> web.StreamResponse:
    viewer = await resolve_viewer(request)
    _require_admin(viewer)
    name = _repo_name(request)
    await visible_repository(request, viewer, name)
    return render("delete_repository_confirm.html", request, {"title": "Confirm repository deletion", "name": name})


@routes.post(f"/ui/repo/{NAME}/-/delete-repository", name=route_names.UI_REPO_DELETE, rule=Rule.SESSION, doc=UNDOCUMENTED)
async def repository_delete_post(request: web.Request) -> web.StreamResponse:
    """The registry service's repository delete (the same operation as the API and the CLI)."""
    viewer, form = await check_csrf(request)
    _require_admin(viewer)
    name = _repo_name(request)
    await visible_repository(request, viewer, name)
    if _field(form, "confirm", 300) != name:
        raise UIError(400, "Type the repository's name to confirm.")
    if not request.app[SETTINGS].delete_enabled:
        raise UIError(405, "Deletes are disabled on this registry (delete_enabled: false).")
    if viewer.name:
        request["user"] = viewer.name  # (the access log's user)
    try:
        await request.app[SERVICE].delete_repository(name, ui_principal(request, viewer))
    except errors.NameUnknown:
        raise UIError(404, "It is gone already.") from None
    raise Redirect("/ui/")


@routes.post(f"/ui/repo/{NAME}/-/visibility", name=route_names.UI_VISIBILITY, rule=Rule.SESSION, doc=UNDOCUMENTED)
async def visibility_post(request: web.Request) -> web.StreamResponse:
    viewer, form = await check_csrf(request)
    _signed_in(viewer, token_mode=True)
    name = _repo_name(request)
    if viewer.may_administer:
        await visible_repository(request, viewer, name)
    try:
        await _accounts(request).set_visibility(
            ui_principal(request, viewer), repository=name, public=_field(form, "public") == "1"
        )
    except errors.RegistryError as exc:
        raise _refused(exc) from None
    raise Redirect(f"/ui/repo/{name}")


# -- personal access tokens ------------------------------------------------------------------
async def _tokens_page(
    request: web.Request, viewer: Viewer, created: dict[str, Any] | None = None, error: str | None = None, status: int = 200
) -> web.Response:
    state = _auth_state(request)
    tokens = await state.store.list_tokens(viewer.name)
    return render(
        "tokens.html",
        request,
        {
            "title": "Access tokens",
            "tokens": tokens,
            "created": created,
            "error": error,
            "host": registry_host(request),
            "now": time.time(),
        },
        status=status,
    )


def _require_token_user(viewer: Viewer) -> None:
    if viewer.mode != "token":
        raise UIError(404, "Personal access tokens exist only with auth.mode: token.")
    if viewer.anonymous:
        raise Redirect("/ui/login?next=/ui/tokens")
    if viewer.scoped:
        raise UIError(403, "Signed in with a scoped access token: it cannot manage tokens.")


@routes.get("/ui/tokens", name=route_names.UI_TOKENS, rule=Rule.SESSION, doc=UNDOCUMENTED)
async def tokens_page(request: web.Request) -> web.StreamResponse:
    viewer = await resolve_viewer(request)
    _require_token_user(viewer)
    return await _tokens_page(request, viewer)


def _token_params(form: Form) -> tuple[str, list[str] | None, float | None]:
    name = _field(form, "name", 128) or "token"
    raw_scope = _field(form, "scope", 4000)
    scope = [s for s in raw_scope.replace(",", " ").split() if s] or None
    if scope is not None:
        parse_token_scope(scope)  # ValueError -> shown to the user
    days = _field(form, "expires_days", 10)
    expires = None
    if days:
        if not days.isdigit() or not 0 < int(days) <= 3650:
            raise ValueError("expiry must be a whole number of days between 1 and 3650")
        expires = time.time() + int(days) * 86400
    return name, scope, expires


@routes.post("/ui/tokens", name=route_names.UI_TOKENS_POST, rule=Rule.SESSION, doc=UNDOCUMENTED)
async def token_create(request: web.Request) -> web.StreamResponse:
    viewer, form = await check_csrf(request)
    _require_token_user(viewer)
    try:
        name, scope, expires = _token_params(form)
    except ValueError as exc:
        return await _tokens_page(request, viewer, error=str(exc), status=400)
    assert viewer.name is not None
    try:
        rec, text = await _accounts(request).create_token(ui_principal(request, viewer), viewer.name, name, scope, expires)
    except errors.Denied as exc:
        raise _refused(exc) from None
    except errors.RegistryError as exc:
        return await _tokens_page(request, viewer, error=exc.message, status=400)
    return await _tokens_page(request, viewer, created={"record": rec, "secret": text, "user": viewer.name})


@routes.post("/ui/tokens/{id}/revoke", name=route_names.UI_TOKEN_REVOKE, rule=Rule.SESSION, doc=UNDOCUMENTED)
async def token_revoke(request: web.Request) -> web.StreamResponse:
    viewer, _ = await check_csrf(request)
    _require_token_user(viewer)
    try:
        await _accounts(request).revoke_token(ui_principal(request, viewer), _path_id(request, "id"), own_only=True)
    except errors.NotFound:
        raise UIError(404, "No such token.") from None
    except errors.RegistryError as exc:
        raise _refused(exc) from None
    raise Redirect("/ui/tokens")


# -- users and robots (admins) ---------------------------------------------------------------
async def _users_page(
    request: web.Request, created: dict[str, Any] | None = None, error: str | None = None, status: int = 200
) -> web.Response:
    if created is not None:  # every key the template asks for (StrictUndefined)
        created = Row({"name": "", "password": None, "secret": None, "reset": False, **created})
    store = _auth_state(request).store
    users = await store.list_users()
    grants = await store.list_grants()
    tokens = await store.list_tokens()
    by_user: dict[str, list[dict[str, Any]]] = {}
    for g in grants:
        by_user.setdefault(g["user"], []).append(g)
    robot_tokens: dict[str, list[Any]] = {}
    for t in tokens:
        robot_tokens.setdefault(t.user, []).append(t)
    return render(
        "users.html",
        request,
        {
            "title": "Users and robots",
            "users": users,
            "grants": by_user,
            "tokens": robot_tokens,
            "created": created,
            "error": error,
            "host": registry_host(request),
            "now": time.time(),
        },
        status=status,
    )


@routes.get("/ui/admin/users", name=route_names.UI_USERS, rule=Rule.SESSION, doc=UNDOCUMENTED)
async def users_page(request: web.Request) -> web.StreamResponse:
    viewer = await resolve_viewer(request)
    _require_admin(viewer, token_mode=True)
    return await _users_page(request)


@routes.post("/ui/admin/users", name=route_names.UI_USERS_POST, rule=Rule.SESSION, doc=UNDOCUMENTED)
async def user_create(request: web.Request) -> web.StreamResponse:
    viewer, form = await check_csrf(request)
    _signed_in(viewer, token_mode=True)
    service, who = _accounts(request), ui_principal(request, viewer)
    name = _field(form, "name", 100)
    robot = _field(form, "kind") == "robot"
    raw_password = form.get("password", "")
    password = None if robot else (str(raw_password)[:4096].replace("\x00", "") or None)
    try:
        _, generated = await service.add_user(who, name, password, admin=_field(form, "admin") == "1" and not robot, robot=robot)
        created: dict[str, Any] = {"name": name, "password": generated}
        if robot:
            _, text = await service.create_token(who, name, "robot", None, None)
            created["secret"] = text
    except errors.Denied as exc:
        raise _refused(exc) from None
    except errors.NameInvalid:
        return await _users_page(request, error="Invalid name: lower-case letters, digits, '.', '_', '-'.", status=400)
    except errors.RegistryError as exc:
        message = f"{name} exists already." if "exists already" in exc.message else exc.message
        return await _users_page(request, error=message, status=400)
    return await _users_page(request, created=created)


@routes.post("/ui/admin/users/{user}/delete", name=route_names.UI_USER_DELETE, rule=Rule.SESSION, doc=UNDOCUMENTED)
async def user_delete(request: web.Request) -> web.StreamResponse:
    viewer, _ = await check_csrf(request)
    _signed_in(viewer, token_mode=True)
    name = _path_id(request, "user")
    if name == viewer.name:
        raise UIError(400, "You cannot delete yourself.")
    try:
        await _accounts(request).delete_user(ui_principal(request, viewer), name)
    except errors.NotFound:
        raise UIError(404, "No such user.") from None
    except errors.RegistryError as exc:
        raise _refused(exc) from None
    await request.app[QUERIES].delete_sessions_of(name)
    raise Redirect("/ui/admin/users")


@routes.post("/ui/admin/users/{user}/password", name=route_names.UI_USER_PASSWORD, rule=Rule.SESSION, doc=UNDOCUMENTED)
async def user_password(request: web.Request) -> web.StreamResponse:
    """A new generated password (shown once); the user's password sessions end with it."""
    viewer, _ = await check_csrf(request)
    _signed_in(viewer, token_mode=True)
    service = _accounts(request)
    name = _path_id(request, "user")
    if viewer.may_administer:  # (robots: nothing to reset; shown before the service is asked)
        user = await service.store.get_user(name)
        if user is None or user.is_robot:
            raise UIError(404, "No such user (robots have tokens, not passwords).")
    try:
        password = await service.set_password(ui_principal(request, viewer), name, None)
    except errors.NotFound:
        raise UIError(404, "No such user (robots have tokens, not passwords).") from None
    except errors.RegistryError as exc:
        raise _refused(exc) from None
    return await _users_page(request, created={"name": name, "password": password, "reset": True})


@routes.post("/ui/admin/users/{user}/token", name=route_names.UI_USER_TOKEN, rule=Rule.SESSION, doc=UNDOCUMENTED)
async def robot_token(request: web.Request) -> web.StreamResponse:
    viewer, form = await check_csrf(request)
    _signed_in(viewer, token_mode=True)
    name = _path_id(request, "user")
    try:
        tname, scope, expires = _token_params(form)
    except ValueError as exc:
        if not viewer.may_administer:
            raise UIError(403, "Administrator rights required.") from None
        return await _users_page(request, error=str(exc), status=400)
    try:
        _, text = await _accounts(request).create_token(ui_principal(request, viewer), name, tname, scope, expires)
    except errors.NotFound:
        raise UIError(404, "No such user.") from None
    except errors.Denied as exc:
        raise _refused(exc) from None
    except errors.RegistryError as exc:
        return await _users_page(request, error=exc.message, status=400)
    return await _users_page(request, created={"name": name, "password": None, "secret": text})


@routes.post("/ui/admin/tokens/{id}/revoke", name=route_names.UI_ADMIN_TOKEN_REVOKE, rule=Rule.SESSION, doc=UNDOCUMENTED)
async def admin_token_revoke(request: web.Request) -> web.StreamResponse:
    viewer, _ = await check_csrf(request)
    _signed_in(viewer, token_mode=True)
    try:
        await _accounts(request).revoke_token(ui_principal(request, viewer), _path_id(request, "id"))
    except errors.NotFound:
        raise UIError(404, "No such (unrevoked) token.") from None
    except errors.RegistryError as exc:
        raise _refused(exc) from None
    raise Redirect("/ui/admin/users")


# -- namespaces: visibility, grants, retention, immutable tags, quotas -------------------------
@routes.get("/ui/admin/namespaces", name=route_names.UI_NAMESPACES, rule=Rule.SESSION, doc=UNDOCUMENTED)
async def namespaces_page(request: web.Request) -> web.StreamResponse:
    viewer = await resolve_viewer(request)
    _require_admin(viewer)
    return await _namespaces_page(request, viewer)


async def _namespaces_page(request: web.Request, viewer: Viewer, error: str | None = None, status: int = 200) -> web.Response:
    from ..gc import immutable, quotas, retention

    db = request.app[DATABASE]
    queries = request.app[QUERIES]
    from sqlalchemy import true

    names = set(await queries.namespaces_of(true()))
    declared: dict[str, bool] = {}
    grants: list[dict[str, Any]] = []
    users: list[str] = []
    if viewer.mode == "token":
        store = _auth_state(request).store
        for ns in await store.list_namespaces():
            declared[ns["name"]] = ns["public"]
        grants = await store.list_grants()
        users = [u.name for u in await store.list_users()]
    names |= set(declared)
    quota_rows = []
    for q in await quotas.list_quotas(db):
        quota_rows.append({"namespace": q.namespace, "limit": q.limit_bytes, "used": await quotas.usage(db, q.namespace)})
    ctx = {
        "title": "Namespaces and policies",
        "namespaces": sorted(names),
        "declared": declared,
        "grants": grants,
        "users": users,
        "retention": await retention.list_policies(db),
        "immutable": await immutable.list_rules(db),
        "quotas": quota_rows,
        "error": error,
    }
    return render("namespaces.html", request, ctx, status=status)


def _namespace(form: Form, key: str = "namespace") -> str:
    ns = _field(form, key).strip("/")
    if not ns or not is_valid_name(ns):
        raise ValueError(f"invalid namespace {ns[:100]!r}")
    return ns


@routes.post("/ui/admin/namespaces", name=route_names.UI_NAMESPACES_POST, rule=Rule.SESSION, doc=UNDOCUMENTED)
async def namespaces_post(request: web.Request) -> web.StreamResponse:
    """One endpoint, ``action`` says what: the forms on the namespaces page."""
    viewer, form = await check_csrf(request)
    _require_admin(viewer)
    from ..gc.policy_admin import PolicyAdminService
    from ..metadata.records import RetentionPolicy

    policies = PolicyAdminService(request.app[DATABASE], request.app[SETTINGS])
    who = ui_principal(request, viewer)
    action = _field(form, "action", 40)
    try:
        if action in ("visibility", "grant", "revoke") and viewer.mode != "token":
            raise UIError(404, "Grants and visibility exist only with auth.mode: token.")
        if action == "visibility":
            await _accounts(request).set_visibility(
                ui_principal(request, viewer), namespace=_namespace(form), public=_field(form, "public") == "1"
            )
        elif action == "grant":
            ns = _namespace(form)
            acts = [a for a in ("pull", "push", "delete", "admin") if _field(form, a) == "1"]
            if not parse_actions(acts):
                raise ValueError("tick at least one of pull, push, delete, admin")
            await _accounts(request).add_grant(ui_principal(request, viewer), _field(form, "user", 64), f"{ns}/*", acts)
        elif action == "revoke":
            try:
                await _accounts(request).revoke_grant(
                    ui_principal(request, viewer), _field(form, "user", 64), _field(form, "pattern")
                )
            except errors.NotFound:
                pass  # gone already: the page shows what is left
        elif action == "retention":
            ns = _namespace(form)
            keep_last = _field(form, "keep_last", 10)
            expire = _field(form, "expire_days", 10)
            regex = _field(form, "keep_regex", 255) or None
            policy = RetentionPolicy(f"{ns}/*", int(keep_last) if keep_last else None, regex, float(expire) if expire else None)
            await policies.set_retention(who, policy)
        elif action == "retention_remove":
            with contextlib.suppress(errors.NotFound):  # gone already: the page shows what is left
                await policies.remove_retention(who, _field(form, "pattern"))
        elif action == "immutable":
            ns = _namespace(form)
            regex = _field(form, "tag_regex", 255)
            if not regex:
                raise ValueError("give a tag regular expression (e.g. ^v[0-9].*)")
            await policies.set_immutable(who, f"{ns}/*", regex)
        elif action == "immutable_remove":
            with contextlib.suppress(errors.NotFound):
                await policies.remove_immutable(who, _field(form, "pattern"), _field(form, "tag_regex") or None)
        elif action == "quota":
            await policies.set_quota(who, _namespace(form), _field(form, "limit", 40))
        elif action == "quota_remove":
            with contextlib.suppress(errors.NotFound):
                await policies.remove_quota(who, _field(form, "namespace"))
        else:
            raise ValueError("unknown action")
    except ValueError as exc:
        return await _namespaces_page(request, viewer, error=str(exc), status=400)
    except errors.Denied as exc:
        raise _refused(exc) from None
    except errors.RegistryError as exc:  # unknown user, invalid pattern ...
        return await _namespaces_page(request, viewer, error=exc.message, status=400)
    raise Redirect("/ui/admin/namespaces")


# Garbage collection, the audit log, webhooks, the vulnerability database and the cache: :mod:`.admin`.
