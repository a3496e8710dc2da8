"""``/auth/token``: the Docker Registry token server (GET) and its OAuth2 form (POST).

GET (``docker``, ``podman``, ``skopeo``, ``oras``): ``?service=&scope=...&scope=...`` with HTTP
basic credentials, or none for an anonymous token (pull of public repositories).
``offline_token=true`` with credentials also returns a ``refresh_token``.

POST (``docker``/``containerd`` with an identity token): ``application/x-www-form-urlencoded``
``grant_type=password`` (``username``, ``password``) or ``grant_type=refresh_token``
(``refresh_token``), ``service``, ``scope`` (space-separated), ``client_id``;
``access_type=offline`` asks for a refresh token.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from .. import errors
from ..api import apidoc as oa
from ..api import routes as names
from ..api.common import AUTHENTICATOR
from ..api.routes import Rule
from ..api.routing import RouteTable
from ..registry.access_rules import Principal, parse_scopes
from .authenticator import Authenticator
from .credentials import parse_basic
from .tokens import rfc3339

routes = RouteTable()

# -- OpenAPI: parts of this module's route operations (moorage.api.apidoc) --
_SCOPE = {
    **oa.param(
        "scope",
        "query",
        {"type": "array", "items": {"type": "string"}},
        "``repository:NAME:pull,push`` or ``registry:catalog:*`` (repeatable).",
    ),
    "explode": True,
}
_TOKEN_OK = oa.json_body(
    oa.ref("schemas", "Token"),
    "A token (only the actions actually granted are in it).",
    {"Cache-Control": oa.str_header("``no-store``")},
)

_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
#: Largest token request form accepted.
MAX_FORM_BYTES = 64 * 1024


def _auth(request: web.Request) -> Authenticator:
    return request.app[AUTHENTICATOR]


def _check_service(auth: Authenticator, service: str | None) -> None:
    if service and service != auth.service:
        raise errors.Denied(f"this token server issues tokens for service {auth.service!r} only", status=400)


async def _respond(
    auth: Authenticator, principal: Principal, scopes_raw: list[str], *, refresh: str | None, not_after: float | None, oauth: bool
) -> web.Response:
    token, expires_in, issued, access = await auth.issue(principal, parse_scopes(scopes_raw), not_after=not_after)
    body: dict[str, Any] = {"token": token, "access_token": token, "expires_in": expires_in, "issued_at": rfc3339(issued)}
    if oauth:
        body["scope"] = " ".join(f"{a['type']}:{a['name']}:{','.join(a['actions'])}" for a in access)
    if refresh:
        body["refresh_token"] = refresh
    return web.json_response(body, headers=_NO_STORE)


AUTH_TOKEN_GET_DOC = {
    "tags": ["auth"],
    "operationId": "getToken",
    "summary": "Docker token flow",
    "description": "Basic credentials (password, or an access token as the password), or none for an anonymous token (public repositories).",
    "security": [{"basic": []}, {}],
    "parameters": [
        oa.param("service", "query", {"type": "string"}, "Must be the configured service."),
        _SCOPE,
        oa.param("offline_token", "query", {"type": "string", "enum": ["true", "false"]}, "``true``: also a refresh token."),
    ],
    "responses": {"200": _TOKEN_OK, **oa.errors(400, 401, 429, 503)},
}


@routes.get("/auth/token", name=names.AUTH_TOKEN_GET, rule=Rule.TOKEN_SERVER, doc=AUTH_TOKEN_GET_DOC)
async def token_get(request: web.Request) -> web.Response:
    auth = _auth(request)
    _check_service(auth, request.query.get("service"))
    creds = parse_basic(request.headers.get("Authorization"))
    principal = Principal(None)
    refresh = None
    not_after = None
    if creds is not None:
        user, token = await auth.login(request, *creds, challenge=auth.basic_challenge())
        principal = await auth.principal(user, token)
        not_after = token.expires_at if token else None
        if request.query.get("offline_token", "").lower() == "true":
            refresh = auth.issue_refresh(user, token)
        request["user"] = user.name
    return await _respond(auth, principal, request.query.getall("scope", []), refresh=refresh, not_after=not_after, oauth=False)


AUTH_TOKEN_POST_DOC = {
    "tags": ["auth"],
    "operationId": "postToken",
    "summary": "OAuth2 token flow (docker, containerd)",
    "requestBody": {
        "required": True,
        "content": {
            "application/x-www-form-urlencoded": {
                "schema": {
                    "type": "object",
                    "required": ["grant_type"],
                    "properties": {
                        "grant_type": {"type": "string", "enum": ["password", "refresh_token"]},
                        "username": {"type": "string"},
                        "password": {"type": "string"},
                        "refresh_token": {"type": "string"},
                        "service": {"type": "string"},
                        "scope": {"type": "string", "description": "Space-separated scopes."},
                        "client_id": {"type": "string"},
                        "access_type": {"type": "string", "enum": ["online", "offline"]},
                    },
                }
            }
        },
    },
    "responses": {"200": _TOKEN_OK, **oa.errors(400, 401, 413, 429, 503)},
}


@routes.post("/auth/token", name=names.AUTH_TOKEN_POST, rule=Rule.TOKEN_SERVER, doc=AUTH_TOKEN_POST_DOC)
async def token_post(request: web.Request) -> web.Response:
    auth = _auth(request)
    if request.content_type != "application/x-www-form-urlencoded":
        raise errors.Unsupported("expected an application/x-www-form-urlencoded body", status=400)
    if request.content_length is not None and request.content_length > MAX_FORM_BYTES:
        raise errors.SizeInvalid("token request too large", status=413)
    if len(await request.read()) > MAX_FORM_BYTES:  # a chunked body declares no length; post() reads this cached copy
        raise errors.SizeInvalid("token request too large", status=413)
    form = await request.post()
    _check_service(auth, str(form.get("service") or "") or None)
    grant_type = str(form.get("grant_type") or "")
    scopes = [str(v) for v in form.getall("scope", [])]
    offline = str(form.get("access_type") or "").lower() == "offline"
    if grant_type == "password":
        username, password = str(form.get("username") or ""), str(form.get("password") or "")
        if not username:
            raise errors.Unauthorized("username required", headers=auth.basic_challenge())
        user, token = await auth.login(request, username, password, challenge=auth.basic_challenge())
        refresh = auth.issue_refresh(user, token) if offline else None
    elif grant_type == "refresh_token":
        user, token = await auth.redeem_refresh(str(form.get("refresh_token") or ""))
        refresh = str(form.get("refresh_token")) if offline else None
    else:
        raise errors.Unsupported(f"unsupported grant_type {grant_type[:50]!r}", status=400)
    principal = await auth.principal(user, token)
    request["user"] = user.name
    return await _respond(auth, principal, scopes, refresh=refresh, not_after=token.expires_at if token else None, oauth=True)


AUTH_JWKS_DOC = {
    "tags": ["auth"],
    "operationId": "getJwks",
    "summary": "Public keys that verify Moorage tokens",
    "responses": {"200": oa.json_body(oa.ref("schemas", "JWKS"), "JSON Web Key Set.")},
}


@routes.get("/auth/jwks", name=names.AUTH_JWKS, rule=Rule.PUBLIC, doc=AUTH_JWKS_DOC)
async def jwks(request: web.Request) -> web.Response:
    """The public half of the signing key(s), for anyone verifying Moorage tokens."""
    signer = _auth(request).signer
    assert signer is not None
    return web.json_response(signer.jwks())
