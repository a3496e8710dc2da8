"""``/api/v1/``: a small JSON admin API over users, grants, access tokens and visibility.

Handlers only: parse the request (bodies through :mod:`moorage.api.admin_models`), call the
accounts service (:class:`~moorage.accounts.service.AccountsService`: it authorizes,
validates, changes and audits in one transaction) for changes and the store for listings,
shape the response.  Who may
call what is the routes table's (:mod:`moorage.api.routes`: ``api_v1_me*`` any signed-in user,
the rest administrators), enforced by the auth middleware before a handler runs; the handlers
ask :func:`~moorage.auth.credentials.caller` again (answered from the request, no second login).

Authentication: HTTP basic (password or access token) or ``Authorization: Bearer`` with a
token from ``/auth/token``.  A scoped access token may not create or revoke tokens; an access
token creates only tokens that expire no later than itself, revoked with it.

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
from typing import TypeVar

from aiohttp import web
from pydantic import BaseModel

from .. import errors
from ..accounts.service import AccountsService
from ..api import routes as names
from ..api.admin_models import (
    AdminTokenCreate,
    GrantCreate,
    NamespaceCreate,
    PasswordSet,
    TokenCreate,
    UserCreate,
    VisibilitySet,
    validate,
)
from ..api.common import ACCOUNTS, AUTHENTICATOR
from ..metadata.errors import storable
from ..metadata.records import UserRecord
from ..registry.access_rules import valid_username
from ..registry.principal import Principal
from ..registry.safejson import UntrustedJSONError, loads_untrusted
from .authenticator import Authenticator
from .credentials import SCOPED, caller, principal, require_admin

routes = web.RouteTableDef()
M = TypeVar("M", bound=BaseModel)
#: Largest admin request body accepted.
MAX_BODY_BYTES = 64 * 1024


def _bad(message: str) -> errors.RegistryError:
    return errors.Unsupported(message, status=400)


async def _body(request: web.Request, model: type[M]) -> M:
    if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
        raise errors.SizeInvalid("request body too large", status=413)
    raw = await request.read()  # a chunked body declares no length: its size shows here
    if len(raw) > MAX_BODY_BYTES:
        raise errors.SizeInvalid("request body too large", status=413)
    try:
        data = loads_untrusted(raw or b"{}")
    except UntrustedJSONError:
        raise _bad("request body is not JSON") from None
    if not isinstance(data, dict):
        raise _bad("request body must be a JSON object")
    return validate(model, data)


def _user_param(request: web.Request) -> str | None:
    """``?user=``, validated like every user name (NUL would make PostgreSQL refuse the query: a
    500); absent or empty: None (all users)."""
    user = request.query.get("user") or None
    if user is not None and not valid_username(user):
        raise errors.NameInvalid(
            "invalid user name (lower-case letters, digits, '.', '_', '-'; at most 64)", detail={"name": user[:100]}
        )
    return user


async def _service(request: web.Request) -> tuple[AccountsService, Principal]:
    return request.app[ACCOUNTS], await principal(request)


@routes.get("/api/v1/me", name=names.ME)
async def me(request: web.Request) -> web.Response:
    user, admin = await caller(request)
    return web.json_response({**user.public_dict(), "may_administer": admin})


async def _new_token(request: web.Request, user: str | None, body: TokenCreate) -> web.Response:
    service, who = await _service(request)
    expires_at = time.time() + body.expires_in if body.expires_in else None
    rec, text = await service.create_token(who, user or who.actor, body.name or "token", body.scope, expires_at)
    return web.json_response({**rec.public_dict(), "token": text}, status=201)


async def _self_service(request: web.Request) -> tuple[Authenticator, UserRecord]:
    user, _ = await caller(request)
    if request.get(SCOPED):
        raise errors.Denied("a scoped access token cannot manage tokens")
    return request.app[AUTHENTICATOR], user


@routes.get("/api/v1/me/tokens", name=names.ME_TOKENS)
async def my_tokens(request: web.Request) -> web.Response:
    auth, user = await _self_service(request)
    return web.json_response({"tokens": [t.public_dict() for t in await auth.store.list_tokens(user.name)]})


@routes.post("/api/v1/me/tokens", name=names.ME_TOKEN_ADD)
async def my_token_add(request: web.Request) -> web.Response:
    return await _new_token(request, None, await _body(request, TokenCreate))


@routes.delete("/api/v1/me/tokens/{id}", name=names.ME_TOKEN_DELETE)
async def my_token_delete(request: web.Request) -> web.Response:
    service, who = await _service(request)
    await service.revoke_token(who, request.match_info["id"], own_only=True)
    return web.Response(status=204)


@routes.get("/api/v1/repositories", name=names.REPOSITORIES)
async def list_repositories(request: web.Request) -> web.Response:
    auth = await require_admin(request)
    raw_n = request.query.get("n", "100")
    if not raw_n.isascii() or not raw_n.isdigit() or not 0 < int(raw_n) <= 10_000:
        raise errors.PaginationNumberInvalid(detail={"n": raw_n[:50]})
    last = request.query.get("last") or None
    if last is not None and (len(last) > 255 or not storable(last)):
        raise _bad("invalid 'last' (a repository name)")
    repos = await auth.store.list_repositories(int(raw_n), last)
    return web.json_response({"repositories": repos})


@routes.get("/api/v1/users", name=names.USERS)
async def list_users(request: web.Request) -> web.Response:
    auth = await require_admin(request)
    users = await auth.store.list_users()
    return web.json_response({"users": [u.public_dict() for u in users]})


@routes.post("/api/v1/users", name=names.USER_ADD)
async def add_user(request: web.Request) -> web.Response:
    service, who = await _service(request)
    body = await _body(request, UserCreate)
    user, generated = await service.add_user(who, body.name, body.password, admin=body.admin, robot=body.robot)
    out = user.public_dict()
    if generated:
        out["password"] = generated
    return web.json_response(out, status=201)


async def _existing(auth: Authenticator, name: str) -> UserRecord:
    user = await auth.store.get_user(name) if valid_username(name) else None  # no query for a name no user has
    if user is None:
        raise errors.NotFound(f"no user {name[:100]!r}")
    return user


@routes.get("/api/v1/users/{name}", name=names.USER_GET)
async def get_user(request: web.Request) -> web.Response:
    auth = await require_admin(request)
    user = await _existing(auth, request.match_info["name"])
    grants = await auth.store.list_grants(user.name)
    return web.json_response({**user.public_dict(), "grants": grants})


@routes.delete("/api/v1/users/{name}", name=names.USER_DELETE)
async def delete_user(request: web.Request) -> web.Response:
    service, who = await _service(request)
    await service.delete_user(who, request.match_info["name"])
    return web.Response(status=204)


@routes.put("/api/v1/users/{name}/password", name=names.USER_PASSWORD)
async def set_password(request: web.Request) -> web.Response:
    service, who = await _service(request)
    body = await _body(request, PasswordSet)
    await service.set_password(who, request.match_info["name"], body.password)
    return web.Response(status=204)


@routes.get("/api/v1/grants", name=names.GRANTS)
async def list_grants(request: web.Request) -> web.Response:
    auth = await require_admin(request)
    return web.json_response({"grants": await auth.store.list_grants(_user_param(request))})


@routes.post("/api/v1/grants", name=names.GRANT_ADD)
async def add_grant(request: web.Request) -> web.Response:
    service, who = await _service(request)
    body = await _body(request, GrantCreate)
    actions = await service.add_grant(who, body.user, body.pattern, body.action_set())
    return web.json_response({"user": body.user, "pattern": body.pattern, "actions": sorted(actions)}, status=201)


@routes.delete("/api/v1/grants", name=names.GRANT_DELETE)
async def delete_grant(request: web.Request) -> web.Response:
    service, who = await _service(request)
    user, pattern = request.query.get("user"), request.query.get("pattern")
    if not user or not pattern:
        raise _bad("user and pattern query parameters are required")
    await service.revoke_grant(who, user, pattern)
    return web.Response(status=204)


@routes.get("/api/v1/tokens", name=names.TOKENS)
async def list_tokens(request: web.Request) -> web.Response:
    auth = await require_admin(request)
    tokens = await auth.store.list_tokens(_user_param(request))
    return web.json_response({"tokens": [t.public_dict() for t in tokens]})


@routes.post("/api/v1/tokens", name=names.TOKEN_ADD)
async def add_token(request: web.Request) -> web.Response:
    body = await _body(request, AdminTokenCreate)
    return await _new_token(request, body.user, body)


@routes.delete("/api/v1/tokens/{id}", name=names.TOKEN_DELETE)
async def revoke_token(request: web.Request) -> web.Response:
    service, who = await _service(request)
    await service.revoke_token(who, request.match_info["id"])
    return web.Response(status=204)


@routes.get("/api/v1/namespaces", name=names.NAMESPACES)
async def list_namespaces(request: web.Request) -> web.Response:
    auth = await require_admin(request)
    return web.json_response({"namespaces": await auth.store.list_namespaces()})


@routes.post("/api/v1/namespaces", name=names.NAMESPACE_ADD)
async def add_namespace(request: web.Request) -> web.Response:
    service, who = await _service(request)
    body = await _body(request, NamespaceCreate)
    await service.add_namespace(who, body.name, body.public)
    return web.json_response({"name": body.name, "public": body.public}, status=201)


@routes.put("/api/v1/visibility", name=names.VISIBILITY)
async def visibility(request: web.Request) -> web.Response:
    service, who = await _service(request)
    body = await _body(request, VisibilitySet)
    if body.repository is not None:
        await service.set_visibility(who, repository=body.repository, public=body.public)
        return web.json_response({"repository": body.repository, "public": body.public})
    if body.namespace is not None:
        await service.set_visibility(who, namespace=body.namespace, public=body.public)
        return web.json_response({"namespace": body.namespace, "public": body.public})
    raise _bad("give 'repository' or 'namespace'")
