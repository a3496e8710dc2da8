"""``/api/v1/``: a small JSON admin API over users, grants, access tokens and visibility.

Handlers only: parse the request (bodies through :mod:`moorage.api.admin_models`), call the
accounts service (:class:`~moorage.accounts.service.AccountsService`: it authorizes,
validates, changes and audits in one transaction) for changes and the store for listings,
shape the response.  Who may
call what is each route's declared rule (``api_v1_me*`` any signed-in user, the rest
administrators; :mod:`moorage.api.routing`), enforced by the auth middleware before a handler runs; the handlers
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
from ..api import apidoc as oa
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
from ..api.common import ACCOUNTS, AUTHENTICATOR, json_object
from ..api.routes import Rule
from ..api.routing import RouteTable
from ..metadata.errors import storable
from ..metadata.records import UserRecord
from ..registry.access_rules import valid_username
from ..registry.principal import Principal
from .authenticator import Authenticator
from .credentials import SCOPED, caller, principal, require_admin

routes = RouteTable()

# -- OpenAPI: parts of this module's route operations (moorage.api.apidoc) --
_USER_PARAM = oa.param("name", "path", {"type": "string"}, "User name.")
_TOKEN_ID = oa.param("id", "path", {"type": "string"}, "Access token id.")
M = TypeVar("M", bound=BaseModel)
#: Largest admin request body accepted.


def _bad(message: str) -> errors.RegistryError:
    return errors.Unsupported(message, status=400)


async def _body(request: web.Request, model: type[M]) -> M:
    return validate(model, await json_object(request))


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


ME_DOC = oa.admin_op("getMe", "Who am I", {"200": oa.json_body(oa.ref("schemas", "User"), "The caller.")})


@routes.get("/api/v1/me", name=names.ME, rule=Rule.AUTHENTICATED, doc=ME_DOC)
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


ME_TOKENS_DOC = oa.admin_op(
    "listMyTokens", "My access tokens", {"200": oa.json_body(oa.array_of("tokens", oa.ref("schemas", "AccessToken")), "Tokens.")}
)


@routes.get("/api/v1/me/tokens", name=names.ME_TOKENS, rule=Rule.AUTHENTICATED, doc=ME_TOKENS_DOC)
async def my_tokens(request: web.Request) -> web.Response:
    auth, user = await _self_service(request)
    return web.json_response({"tokens": [t.public_dict() for t in await auth.store.list_tokens(user.name)]})


ME_TOKEN_ADD_DOC = oa.admin_op(
    "createMyToken",
    "Create an access token for myself",
    {"201": oa.json_body(oa.ref("schemas", "AccessToken"), "Created; ``token`` is the secret, shown once.")},
    body=oa.ref("schemas", "TokenCreate"),
    errors=(400, 401, 403, 404, 413, 429, 503),
)


@routes.post("/api/v1/me/tokens", name=names.ME_TOKEN_ADD, rule=Rule.AUTHENTICATED, doc=ME_TOKEN_ADD_DOC)
async def my_token_add(request: web.Request) -> web.Response:
    return await _new_token(request, None, await _body(request, TokenCreate))


ME_TOKEN_DELETE_DOC = oa.admin_op(
    "revokeMyToken", "Revoke one of my tokens", oa.NO_CONTENT, parameters=[_TOKEN_ID], errors=(400, 401, 403, 404, 429, 503)
)


@routes.delete("/api/v1/me/tokens/{id}", name=names.ME_TOKEN_DELETE, rule=Rule.AUTHENTICATED, doc=ME_TOKEN_DELETE_DOC)
async def my_token_delete(request: web.Request) -> web.Response:
    service, who = await _service(request)
    await service.revoke_token(who, request.match_info["id"], own_only=True)
    return web.Response(status=204)


REPOSITORIES_DOC = oa.admin_op(
    "adminListRepositories",
    "Repositories with their visibility",
    {"200": oa.json_body(oa.array_of("repositories", oa.ref("schemas", "NamedVisibility")), "Repositories.")},
    parameters=[oa.param("n", "query", {"type": "integer", "minimum": 1, "maximum": 10000}, "Page size (100)."), oa.LAST],
)


@routes.get("/api/v1/repositories", name=names.REPOSITORIES, rule=Rule.ADMIN, doc=REPOSITORIES_DOC)
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


USERS_DOC = oa.admin_op("listUsers", "Users", {"200": oa.json_body(oa.array_of("users", oa.ref("schemas", "User")), "Users.")})


@routes.get("/api/v1/users", name=names.USERS, rule=Rule.ADMIN, doc=USERS_DOC)
async def list_users(request: web.Request) -> web.Response:
    auth = await require_admin(request)
    users = await auth.store.list_users()
    return web.json_response({"users": [u.public_dict() for u in users]})


USER_ADD_DOC = oa.admin_op(
    "createUser",
    "Create a user",
    {"201": oa.json_body(oa.ref("schemas", "User"), "Created (``password`` when generated).")},
    body=oa.ref("schemas", "UserCreate"),
    errors=(400, 401, 403, 413, 429, 503),
)


@routes.post("/api/v1/users", name=names.USER_ADD, rule=Rule.ADMIN, doc=USER_ADD_DOC)
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


USER_GET_DOC = oa.admin_op(
    "getUser",
    "A user and their grants",
    {"200": oa.json_body(oa.ref("schemas", "User"), "The user.")},
    parameters=[_USER_PARAM],
    errors=(400, 401, 403, 404, 429, 503),
)


@routes.get("/api/v1/users/{name}", name=names.USER_GET, rule=Rule.ADMIN, doc=USER_GET_DOC)
async def get_user(request: web.Request) -> web.Response:
    auth = await require_admin(request)
    user = await _existing(auth, request.match_info["name"])
    grants = await auth.store.list_grants(user.name)
    return web.json_response({**user.public_dict(), "grants": grants})


USER_DELETE_DOC = oa.admin_op(
    "deleteUser", "Delete a user", oa.NO_CONTENT, parameters=[_USER_PARAM], errors=(400, 401, 403, 404, 429, 503)
)


@routes.delete("/api/v1/users/{name}", name=names.USER_DELETE, rule=Rule.ADMIN, doc=USER_DELETE_DOC)
async def delete_user(request: web.Request) -> web.Response:
    service, who = await _service(request)
    await service.delete_user(who, request.match_info["name"])
    return web.Response(status=204)


USER_PASSWORD_DOC = oa.admin_op(
    "setPassword",
    "Set a user's password",
    oa.NO_CONTENT,
    parameters=[_USER_PARAM],
    body=oa.ref("schemas", "PasswordSet"),
    errors=(400, 401, 403, 404, 413, 429, 503),
)


@routes.put("/api/v1/users/{name}/password", name=names.USER_PASSWORD, rule=Rule.ADMIN, doc=USER_PASSWORD_DOC)
async def set_password(request: web.Request) -> web.Response:
    service, who = await _service(request)
    body = await _body(request, PasswordSet)
    await service.set_password(who, request.match_info["name"], body.password)
    return web.Response(status=204)


GRANTS_DOC = oa.admin_op(
    "listGrants",
    "Grants",
    {"200": oa.json_body(oa.array_of("grants", oa.ref("schemas", "Grant")), "Grants.")},
    parameters=[oa.param("user", "query", {"type": "string"}, "Only this user's.")],
)


@routes.get("/api/v1/grants", name=names.GRANTS, rule=Rule.ADMIN, doc=GRANTS_DOC)
async def list_grants(request: web.Request) -> web.Response:
    auth = await require_admin(request)
    return web.json_response({"grants": await auth.store.list_grants(_user_param(request))})


GRANT_ADD_DOC = oa.admin_op(
    "addGrant",
    "Grant a user actions on a repository pattern",
    {"201": oa.json_body(oa.ref("schemas", "Grant"), "Granted.")},
    body=oa.ref("schemas", "GrantCreate"),
    errors=(400, 401, 403, 404, 413, 429, 503),
)


@routes.post("/api/v1/grants", name=names.GRANT_ADD, rule=Rule.ADMIN, doc=GRANT_ADD_DOC)
async def add_grant(request: web.Request) -> web.Response:
    service, who = await _service(request)
    body = await _body(request, GrantCreate)
    actions = await service.add_grant(who, body.user, body.pattern, body.action_set())
    return web.json_response({"user": body.user, "pattern": body.pattern, "actions": sorted(actions)}, status=201)


GRANT_DELETE_DOC = oa.admin_op(
    "revokeGrant",
    "Revoke a grant",
    oa.NO_CONTENT,
    errors=(400, 401, 403, 404, 429, 503),
    parameters=[
        oa.param("user", "query", {"type": "string"}, "User.", required=True),
        oa.param("pattern", "query", {"type": "string"}, "Pattern.", required=True),
    ],
)


@routes.delete("/api/v1/grants", name=names.GRANT_DELETE, rule=Rule.ADMIN, doc=GRANT_DELETE_DOC)
async def delete_grant(request: web.Request) -> web.Response:
    service, who = await _service(request)
    user, pattern = request.query.get("user"), request.query.get("pattern")
    if not user or not pattern:
        raise _bad("user and pattern query parameters are required")
    await service.revoke_grant(who, user, pattern)
    return web.Response(status=204)


TOKENS_DOC = oa.admin_op(
    "listTokens",
    "Access tokens",
    {"200": oa.json_body(oa.array_of("tokens", oa.ref("schemas", "AccessToken")), "Tokens.")},
    parameters=[oa.param("user", "query", {"type": "string"}, "Only this user's.")],
)


@routes.get("/api/v1/tokens", name=names.TOKENS, rule=Rule.ADMIN, doc=TOKENS_DOC)
async def list_tokens(request: web.Request) -> web.Response:
    auth = await require_admin(request)
    tokens = await auth.store.list_tokens(_user_param(request))
    return web.json_response({"tokens": [t.public_dict() for t in tokens]})


TOKEN_ADD_DOC = oa.admin_op(
    "createToken",
    "Create an access token for a user",
    {"201": oa.json_body(oa.ref("schemas", "AccessToken"), "Created; ``token`` is the secret, shown once.")},
    body=oa.ref("schemas", "AdminTokenCreate"),
    errors=(400, 401, 403, 404, 413, 429, 503),
)


@routes.post("/api/v1/tokens", name=names.TOKEN_ADD, rule=Rule.ADMIN, doc=TOKEN_ADD_DOC)
async def add_token(request: web.Request) -> web.Response:
    body = await _body(request, AdminTokenCreate)
    return await _new_token(request, body.user, body)


TOKEN_DELETE_DOC = oa.admin_op(
    "revokeToken", "Revoke an access token", oa.NO_CONTENT, parameters=[_TOKEN_ID], errors=(400, 401, 403, 404, 429, 503)
)


@routes.delete("/api/v1/tokens/{id}", name=names.TOKEN_DELETE, rule=Rule.ADMIN, doc=TOKEN_DELETE_DOC)
async def revoke_token(request: web.Request) -> web.Response:
    service, who = await _service(request)
    await service.revoke_token(who, request.match_info["id"])
    return web.Response(status=204)


NAMESPACES_DOC = oa.admin_op(
    "listNamespaces",
    "Namespaces",
    {"200": oa.json_body(oa.array_of("namespaces", oa.ref("schemas", "NamedVisibility")), "Namespaces.")},
)


@routes.get("/api/v1/namespaces", name=names.NAMESPACES, rule=Rule.ADMIN, doc=NAMESPACES_DOC)
async def list_namespaces(request: web.Request) -> web.Response:
    auth = await require_admin(request)
    return web.json_response({"namespaces": await auth.store.list_namespaces()})


NAMESPACE_ADD_DOC = oa.admin_op(
    "createNamespace",
    "Create a namespace",
    {"201": oa.json_body(oa.ref("schemas", "NamedVisibility"), "Created.")},
    body=oa.ref("schemas", "NamespaceCreate"),
    errors=(400, 401, 403, 413, 429, 503),
)


@routes.post("/api/v1/namespaces", name=names.NAMESPACE_ADD, rule=Rule.ADMIN, doc=NAMESPACE_ADD_DOC)
async def add_namespace(request: web.Request) -> web.Response:
    service, who = await _service(request)
    body = await _body(request, NamespaceCreate)
    await service.add_namespace(who, body.name, body.public)
    return web.json_response({"name": body.name, "public": body.public}, status=201)


VISIBILITY_DOC = oa.admin_op(
    "setVisibility",
    "Make a repository or namespace public or private",
    {
        "200": oa.json_body(
            {
                "type": "object",
                "required": ["public"],
                "properties": {"repository": {"type": "string"}, "namespace": {"type": "string"}, "public": {"type": "boolean"}},
            },
            "Done.",
        )
    },
    body=oa.ref("schemas", "VisibilitySet"),
    errors=(400, 401, 403, 413, 429, 503),
)


@routes.put("/api/v1/visibility", name=names.VISIBILITY, rule=Rule.ADMIN, doc=VISIBILITY_DOC)
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
