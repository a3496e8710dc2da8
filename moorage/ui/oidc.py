"""``/auth/oidc/login`` and ``/auth/oidc/callback``: the browser side of OpenID Connect sign-in
(``auth.oidc``; the protocol is moorage.auth.oidc's).  Registered only when ``auth.oidc`` is set.

The state travels twice: in the authorization request (stored server-side, single use, keyed by
its hash) and in a short-lived ``SameSite=Lax`` cookie, so a callback completes only in the
browser that started the sign-in and only once.
"""

from __future__ import annotations

import dataclasses
import hmac

from aiohttp import web

from ..api import routes as route_names
from ..api.common import AUTHENTICATOR, SETTINGS
from ..api.routes import Rule
from ..api.routing import UNDOCUMENTED, RouteTable
from ..auth.oidc import LOGIN_TTL, OidcUsers, ProviderUnavailable, SignInRefused, state_hash
from .pages import _safe_next
from .session import Redirect, UIError, open_session, set_cookie

routes = RouteTable()
STATE_COOKIE = "moorage_oidc_state"
CALLBACK = "/auth/oidc/callback"


def _users(request: web.Request) -> OidcUsers:
    auth = request.app.get(AUTHENTICATOR)
    users = getattr(auth, "oidc", None)
    if users is None:
        raise UIError(404, "OpenID Connect sign-in is not configured.")
    return users  # type: ignore[no-any-return]


def redirect_uri(request: web.Request) -> str:
    """``<registry URL>/auth/oidc/callback``: ``auth.token.realm`` if set, else the request's URL."""
    base = request.app[SETTINGS].auth.token.realm or f"{request.scheme}://{request.host}"
    return base.rstrip("/") + CALLBACK


@routes.get("/auth/oidc/login", name=route_names.UI_OIDC_LOGIN, rule=Rule.SESSION, doc=UNDOCUMENTED)
async def oidc_login(request: web.Request) -> web.StreamResponse:
    users = _users(request)
    try:
        url, state, pending = await users.client.start(redirect_uri(request))
    except ProviderUnavailable as exc:
        raise UIError(503, exc.message) from None
    pending = dataclasses.replace(pending, next_url=_safe_next(request.query.get("next")))
    await users.store.add_login(state_hash(state), pending, max_age=LOGIN_TTL)
    set_cookie(request, STATE_COOKIE, state, max_age=int(LOGIN_TTL), samesite="Lax")
    raise Redirect(url)


@routes.get(CALLBACK, name=route_names.UI_OIDC_CALLBACK, rule=Rule.SESSION, doc=UNDOCUMENTED)
async def oidc_callback(request: web.Request) -> web.StreamResponse:
    users = _users(request)
    query = request.query
    state = query.get("state", "")[:200]
    cookie = request.cookies.get(STATE_COOKIE, "")[:200]
    set_cookie(request, STATE_COOKIE, "", max_age=None, samesite="Lax")
    if query.get("error"):
        raise UIError(401, f"The OpenID provider refused the sign-in ({query['error'][:100]}).")
    if not state or not cookie or not hmac.compare_digest(state.encode(), cookie.encode()):
        raise UIError(400, "This sign-in was not started in this browser, or was already used: sign in again.")
    pending = await users.store.take_login(state_hash(state))
    if pending is None or pending.created_at + LOGIN_TTL < _now():
        raise UIError(400, "This sign-in expired or was already used: sign in again.")
    code = query.get("code", "")
    if not code or len(code) > 4096:
        raise UIError(400, "The OpenID provider sent no authorization code.")
    try:
        user = await users.complete(code, pending)
    except SignInRefused as exc:
        raise UIError(401, exc.message) from None
    except ProviderUnavailable as exc:
        raise UIError(503, exc.message) from None
    await open_session(request, user.name, None)
    raise Redirect(pending.next_url)


def _now() -> float:
    import time

    return time.time()
