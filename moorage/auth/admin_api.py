"""``/api/v1/``: a small JSON admin API over users, grants, access tokens and visibility.

Authentication: HTTP basic (password or access token) or ``Authorization: Bearer`` with a
token from ``/auth/token``.  Everything is admin-only except ``/api/v1/me`` and
``/api/v1/me/tokens`` (a scoped access token may not create or revoke tokens).

::

    GET    /api/v1/me
    GET    /api/v1/me/tokens                  POST /api/v1/me/tokens {name?, scope?, expires_in?}
    DELETE /api/v1/me/tokens/{id}             (any signed-in user, for their own tokens)
    GET    /api/v1/repositories[?n=&last=]    (name, public)
    GET    /api/v1/users                      POST /api/v1/users {name, password?, admin?, robot?}
    GET    /api/v1/users/{name}               DELETE /api/v1/users/{name}
    PUT    /api/v1/users/{name}/password {password}
    GET    /api/v1/grants[?user=]             POST /api/v1/grants {user, pattern, actions}
    DELETE /api/v1/grants?user=&pattern=
    GET    /api/v1/tokens[?user=]             POST /api/v1/tokens {user, name?, scope?, expires_in?}
    DELETE /api/v1/tokens/{id}
    GET    /api/v1/namespaces                 POST /api/v1/namespaces {name, public?}
    PUT    /api/v1/visibility {repository|namespace, public}
"""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web

from ..registry import errors
from ..registry.names import is_valid_name
from ..registry.safejson import UntrustedJSONError, loads_untrusted
from . import passwords
from .policy import parse_actions, parse_token_scope, valid_pattern, valid_username
from .state import STATE, AuthState, bearer, parse_basic
from .store import AuthStoreError, UserRecord
from .tokens import InvalidToken

routes = web.RouteTableDef()


def _bad(message: str) -> errors.RegistryError:
    return errors.Unsupported(message, status=400)


async def _caller(request: web.Request) -> tuple[UserRecord, bool]:
    """(user, may administer) of the request's credentials; 401 without valid ones."""
    state: AuthState = request.app[STATE]
    challenge = state.bearer_challenge(request, [])
    header = request.headers.get("Authorization")
    creds = parse_basic(header)
    user: UserRecord | None
    if creds is not None:
        user, token = await state.login(request, *creds, challenge=challenge)
        full = token is None or token.scope is None
    else:
        raw = bearer(header)
        if raw is None:
            raise errors.Unauthorized(headers=challenge)
        assert state.signer is not None
        try:
            claims = await state.signer.verify(raw)
        except InvalidToken as exc:
            raise errors.Unauthorized(f"invalid token: {exc}", headers=challenge) from None
        if not await state.credentials_live(claims):  # user deleted (or re-created), PAT revoked
            raise errors.Unauthorized("user deleted, or access token revoked or expired", headers=challenge)
        pat = claims.get("pat")
        full = True
        if pat:
            tok = await state.store.get_token(str(pat))
            if tok is None or not tok.usable():
                raise errors.Unauthorized("access token revoked or expired", headers=challenge)
            full = tok.scope is None
        user = await state.store.get_user(str(claims.get("sub") or ""))
        if user is None:
            raise errors.Unauthorized(headers=challenge)
    request["user"] = user.name
    request["moorage.scoped_credentials"] = not full
    return user, user.is_admin and full


async def require_admin(request: web.Request) -> AuthState:
    """The auth state if the caller is an administrator; else DENIED (also for other extensions)."""
    _, admin = await _caller(request)
    if not admin:
        raise errors.Denied("administrator rights required")
    return request.app[STATE]


async def _body(request: web.Request) -> dict[str, Any]:
    if request.content_length is not None and request.content_length > 64 * 1024:
        raise errors.SizeInvalid("request body too large", status=413)
    try:
        data = loads_untrusted(await request.read() or b"{}")
    except UntrustedJSONError:
        raise _bad("request body is not JSON") from None
    if not isinstance(data, dict):
        raise _bad("request body must be a JSON object")
    return data


def _str(data: dict[str, Any], key: str, *, required: bool = True) -> str | None:
    value = data.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value:
        raise _bad(f"{key!r} must be a non-empty string")
    return value


def _user_name(name: str | None) -> str:
    if not name or not valid_username(name):
        raise errors.NameInvalid("invalid user name (lower-case letters, digits, '.', '_', '-'; at most 64)",
                                 detail={"name": (name or "")[:100]})
    return name


@routes.get("/api/v1/me", name="api_v1_me")
async def me(request: web.Request) -> web.Response:
    user, admin = await _caller(request)
    return web.json_response({**user.public_dict(), "may_administer": admin})


async def _new_token(state: AuthState, user: str, data: dict[str, Any]) -> web.Response:
    name = data.get("name") or "token"
    if not isinstance(name, str) or len(name) > 128:
        raise _bad("'name' must be a string of at most 128 characters")
    scope = data.get("scope")
    if scope is not None:
        if not isinstance(scope, list) or not all(isinstance(s, str) for s in scope):
            raise _bad("'scope' must be a list of 'PATTERN:ACTIONS' strings")
        try:
            parse_token_scope(scope)
        except ValueError as exc:
            raise _bad(str(exc)) from None
    expires_in = data.get("expires_in")
    if expires_in is not None and (isinstance(expires_in, bool) or not isinstance(expires_in, (int, float))
                                   or not 0 < expires_in < 100 * 365 * 86400):
        raise _bad("'expires_in' must be a positive number of seconds")
    try:
        rec, text = await state.store.create_token(user, name, scope,
                                                   time.time() + expires_in if expires_in else None)
    except AuthStoreError as exc:
        raise errors.NotFound(str(exc)) from None
    return web.json_response({**rec.public_dict(), "token": text}, status=201)


async def _self_service(request: web.Request) -> tuple[AuthState, UserRecord]:
    user, _ = await _caller(request)
    if request.get("moorage.scoped_credentials"):
        raise errors.Denied("a scoped access token cannot manage tokens")
    return request.app[STATE], user


@routes.get("/api/v1/me/tokens", name="api_v1_me_tokens")
async def my_tokens(request: web.Request) -> web.Response:
    state, user = await _self_service(request)
    return web.json_response({"tokens": [t.public_dict() for t in await state.store.list_tokens(user.name)]})


@routes.post("/api/v1/me/tokens", name="api_v1_me_token_add")
async def my_token_add(request: web.Request) -> web.Response:
    state, user = await _self_service(request)
    return await _new_token(state, user.name, await _body(request))


@routes.delete("/api/v1/me/tokens/{id}", name="api_v1_me_token_delete")
async def my_token_delete(request: web.Request) -> web.Response:
    state, user = await _self_service(request)
    tok = await state.store.get_token(request.match_info["id"])
    if tok is None or tok.user_id != user.id or not await state.store.revoke_token(tok.id):
        raise errors.NotFound("no such (unrevoked) token")
    return web.Response(status=204)


@routes.get("/api/v1/repositories", name="api_v1_repositories")
async def list_repositories(request: web.Request) -> web.Response:
    state = await require_admin(request)
    raw_n = request.query.get("n", "100")
    if not raw_n.isdigit() or not 0 < int(raw_n) <= 10_000:
        raise errors.PaginationNumberInvalid(detail={"n": raw_n[:50]})
    repos = await state.store.list_repositories(int(raw_n), request.query.get("last") or None)
    return web.json_response({"repositories": repos})


@routes.get("/api/v1/users", name="api_v1_users")
async def list_users(request: web.Request) -> web.Response:
    state = await require_admin(request)
    users = await state.store.list_users()
    return web.json_response({"users": [u.public_dict() for u in users]})


@routes.post("/api/v1/users", name="api_v1_user_add")
async def add_user(request: web.Request) -> web.Response:
    state = await require_admin(request)
    data = await _body(request)
    name = _user_name(_str(data, "name"))
    robot = bool(data.get("robot", False))
    password = _str(data, "password", required=False)
    generated = None
    if password is None and not robot:
        password = generated = passwords.generate_password()
    hashed = await passwords.hash_password_async(password, state.settings.auth.bcrypt_rounds) if password else None
    if not await state.store.create_user(name, hashed, admin=bool(data.get("admin", False)), robot=robot):
        raise _bad(f"user {name!r} exists already")
    user = await state.store.get_user(name)
    assert user is not None
    body = user.public_dict()
    if generated:
        body["password"] = generated
    return web.json_response(body, status=201)


async def _existing(state: AuthState, name: str) -> UserRecord:
    user = await state.store.get_user(name)
    if user is None:
        raise errors.NotFound(f"no user {name[:100]!r}")
    return user


@routes.get("/api/v1/users/{name}", name="api_v1_user_get")
async def get_user(request: web.Request) -> web.Response:
    state = await require_admin(request)
    user = await _existing(state, request.match_info["name"])
    grants = await state.store.list_grants(user.name)
    return web.json_response({**user.public_dict(), "grants": grants})


@routes.delete("/api/v1/users/{name}", name="api_v1_user_delete")
async def delete_user(request: web.Request) -> web.Response:
    state = await require_admin(request)
    if not await state.store.delete_user(request.match_info["name"]):
        raise errors.NotFound(f"no user {request.match_info['name'][:100]!r}")
    return web.Response(status=204)


@routes.put("/api/v1/users/{name}/password", name="api_v1_user_password")
async def set_password(request: web.Request) -> web.Response:
    state = await require_admin(request)
    data = await _body(request)
    password = _str(data, "password")
    assert password is not None
    user = await _existing(state, request.match_info["name"])
    await state.store.set_password(user.name, await passwords.hash_password_async(password, state.settings.auth.bcrypt_rounds))
    return web.Response(status=204)


@routes.get("/api/v1/grants", name="api_v1_grants")
async def list_grants(request: web.Request) -> web.Response:
    state = await require_admin(request)
    return web.json_response({"grants": await state.store.list_grants(request.query.get("user"))})


@routes.post("/api/v1/grants", name="api_v1_grant_add")
async def add_grant(request: web.Request) -> web.Response:
    state = await require_admin(request)
    data = await _body(request)
    user, pattern = _str(data, "user"), _str(data, "pattern")
    assert user is not None and pattern is not None
    if not valid_pattern(pattern):
        raise _bad(f"invalid repository pattern {pattern[:100]!r}")
    raw = data.get("actions")
    try:
        actions = parse_actions(raw if isinstance(raw, (str, list)) else "")
    except ValueError as exc:
        raise _bad(str(exc)) from None
    if not actions:
        raise _bad("'actions' must name at least one of pull, push, delete, admin")
    try:
        await state.store.grant(user, pattern, actions)
    except AuthStoreError as exc:
        raise errors.NotFound(str(exc)) from None
    return web.json_response({"user": user, "pattern": pattern, "actions": sorted(actions)}, status=201)


@routes.delete("/api/v1/grants", name="api_v1_grant_delete")
async def delete_grant(request: web.Request) -> web.Response:
    state = await require_admin(request)
    user, pattern = request.query.get("user"), request.query.get("pattern")
    if not user or not pattern:
        raise _bad("user and pattern query parameters are required")
    try:
        found = await state.store.revoke(user, pattern)
    except AuthStoreError as exc:
        raise errors.NotFound(str(exc)) from None
    if not found:
        raise errors.NotFound("no such grant")
    return web.Response(status=204)


@routes.get("/api/v1/tokens", name="api_v1_tokens")
async def list_tokens(request: web.Request) -> web.Response:
    state = await require_admin(request)
    tokens = await state.store.list_tokens(request.query.get("user"))
    return web.json_response({"tokens": [t.public_dict() for t in tokens]})


@routes.post("/api/v1/tokens", name="api_v1_token_add")
async def add_token(request: web.Request) -> web.Response:
    state = await require_admin(request)
    data = await _body(request)
    user = _str(data, "user")
    assert user is not None
    return await _new_token(state, user, data)


@routes.delete("/api/v1/tokens/{id}", name="api_v1_token_delete")
async def revoke_token(request: web.Request) -> web.Response:
    state = await require_admin(request)
    if not await state.store.revoke_token(request.match_info["id"]):
        raise errors.NotFound("no such (unrevoked) token")
    return web.Response(status=204)


@routes.get("/api/v1/namespaces", name="api_v1_namespaces")
async def list_namespaces(request: web.Request) -> web.Response:
    state = await require_admin(request)
    return web.json_response({"namespaces": await state.store.list_namespaces()})


@routes.post("/api/v1/namespaces", name="api_v1_namespace_add")
async def add_namespace(request: web.Request) -> web.Response:
    state = await require_admin(request)
    data = await _body(request)
    name = _str(data, "name")
    assert name is not None
    if not is_valid_name(name):
        raise errors.NameInvalid(detail={"name": name[:100]})
    if not await state.store.create_namespace(name, bool(data.get("public", False))):
        raise _bad(f"namespace {name!r} exists already")
    return web.json_response({"name": name, "public": bool(data.get("public", False))}, status=201)


@routes.put("/api/v1/visibility", name="api_v1_visibility")
async def visibility(request: web.Request) -> web.Response:
    state = await require_admin(request)
    data = await _body(request)
    public = data.get("public")
    if not isinstance(public, bool):
        raise _bad("'public' must be true or false")
    if "repository" in data:
        name = _str(data, "repository")
        assert name is not None
        if not is_valid_name(name):
            raise errors.NameInvalid(detail={"name": name[:100]})
        await state.store.set_repository_public(name, public)
        return web.json_response({"repository": name, "public": public})
    if "namespace" in data:
        name = _str(data, "namespace")
        assert name is not None
        if not is_valid_name(name):
            raise errors.NameInvalid(detail={"name": name[:100]})
        await state.store.set_namespace_public(name, public)
        return web.json_response({"namespace": name, "public": public})
    raise _bad("give 'repository' or 'namespace'")
