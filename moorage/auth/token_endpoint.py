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

from ..registry import errors
from .policy import Principal, parse_scopes
from .state import STATE, AuthState, parse_basic
from .tokens import InvalidToken, rfc3339

routes = web.RouteTableDef()

_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


def _state(request: web.Request) -> AuthState:
    return request.app[STATE]


def _check_service(state: AuthState, service: str | None) -> None:
    if service and service != state.service:
        raise errors.Denied(f"this token server issues tokens for service {state.service!r} only", status=400)


async def _respond(state: AuthState, principal: Principal, scopes_raw: list[str], *, refresh: str | None,
                   not_after: float | None, oauth: bool) -> web.Response:
    assert state.signer is not None
    access = await state.grant(principal, parse_scopes(scopes_raw))
    token, expires_in, issued = state.signer.issue(principal.name or "", access, token_id=principal.token_id,
                                                   not_after=not_after, user_id=principal.user_id,
                                                   user_created_at=principal.user_created_at)
    body: dict[str, Any] = {"token": token, "access_token": token, "expires_in": expires_in, "issued_at": rfc3339(issued)}
    if oauth:
        body["scope"] = " ".join(f"{a['type']}:{a['name']}:{','.join(a['actions'])}" for a in access)
    if refresh:
        body["refresh_token"] = refresh
    return web.json_response(body, headers=_NO_STORE)


@routes.get("/auth/token", name="auth_token_get")
async def token_get(request: web.Request) -> web.Response:
    state = _state(request)
    _check_service(state, request.query.get("service"))
    creds = parse_basic(request.headers.get("Authorization"))
    principal = Principal(None)
    refresh = None
    not_after = None
    if creds is not None:
        user, token = await state.login(request, *creds, challenge=state.basic_challenge())
        principal = await state.store.principal(user, token)
        not_after = token.expires_at if token else None
        if request.query.get("offline_token", "").lower() == "true":
            assert state.signer is not None
            refresh = state.signer.issue_refresh(user.name, password_changed_at=user.password_changed_at,
                                                 token_id=token.id if token else None, not_after=not_after)
        request["user"] = user.name
    return await _respond(state, principal, request.query.getall("scope", []), refresh=refresh,
                          not_after=not_after, oauth=False)


@routes.post("/auth/token", name="auth_token_post")
async def token_post(request: web.Request) -> web.Response:
    state = _state(request)
    assert state.signer is not None
    if request.content_type != "application/x-www-form-urlencoded":
        raise errors.Unsupported("expected an application/x-www-form-urlencoded body", status=400)
    if request.content_length is not None and request.content_length > 64 * 1024:
        raise errors.SizeInvalid("token request too large", status=413)
    form = await request.post()
    _check_service(state, str(form.get("service") or "") or None)
    grant_type = str(form.get("grant_type") or "")
    scopes = [str(v) for v in form.getall("scope", [])]
    offline = str(form.get("access_type") or "").lower() == "offline"
    if grant_type == "password":
        username, password = str(form.get("username") or ""), str(form.get("password") or "")
        if not username:
            raise errors.Unauthorized("username required", headers=state.basic_challenge())
        user, token = await state.login(request, username, password, challenge=state.basic_challenge())
        principal = await state.store.principal(user, token)
        not_after = token.expires_at if token else None
        refresh = None
        if offline:
            refresh = state.signer.issue_refresh(user.name, password_changed_at=user.password_changed_at,
                                                 token_id=token.id if token else None, not_after=not_after)
    elif grant_type == "refresh_token":
        try:
            claims = await state.signer.verify(str(form.get("refresh_token") or ""), refresh=True)
        except InvalidToken as exc:
            raise errors.Unauthorized(f"invalid refresh token: {exc}") from None
        user = await state.store.get_user(str(claims.get("sub") or ""))
        if user is None:
            raise errors.Unauthorized("invalid refresh token: unknown user")
        token = None
        if claims.get("pat"):
            token = await state.store.get_token(str(claims["pat"]))
            if token is None or not token.usable() or token.user_id != user.id:
                raise errors.Unauthorized("invalid refresh token: access token revoked or expired")
        elif claims.get("pwc") != user.password_changed_at:
            raise errors.Unauthorized("invalid refresh token: password changed")
        principal = await state.store.principal(user, token)
        not_after = token.expires_at if token else None
        refresh = str(form.get("refresh_token")) if offline else None
    else:
        raise errors.Unsupported(f"unsupported grant_type {grant_type[:50]!r}", status=400)
    request["user"] = user.name
    return await _respond(state, principal, scopes, refresh=refresh, not_after=not_after, oauth=True)


@routes.get("/auth/jwks", name="auth_jwks")
async def jwks(request: web.Request) -> web.Response:
    """The public half of the signing key(s), for anyone verifying Moorage tokens."""
    signer = _state(request).signer
    assert signer is not None
    return web.json_response(signer.jwks())
