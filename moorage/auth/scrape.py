"""Who may read ``/metrics``: the check behind ``metrics.access`` (called by
:mod:`moorage.metrics`, which is wired in whether or not auth is).

* a configured scrape credential (``metrics.token``) as ``Authorization: Bearer`` always
  passes (constant-time compare);
* ``token`` mode: HTTP basic (password or access token, rate limited like every login) or a
  JWT from ``/auth/token``, as for the admin API; an anonymous token is nobody;
* ``htpasswd`` mode: HTTP basic against the file; every user there may do everything, so
  ``authenticated`` and ``admin`` are the same.
"""

from __future__ import annotations

import hmac

from aiohttp import web

from .. import errors
from ..api.common import AUTHENTICATOR
from ..config import Settings
from .credentials import bearer, caller, parse_basic


def scrape_token_matches(request: web.Request, settings: Settings) -> bool:
    expected = settings.metrics.token
    got = bearer(request.headers.get("Authorization"))
    if expected is None or got is None:
        return False
    return hmac.compare_digest(got.encode(), expected.get_secret_value().encode())


async def authorize_scrape(request: web.Request, settings: Settings, access: str) -> None:
    """Return if the caller may read the metrics under ``access`` (``authenticated`` or
    ``admin``); raise 401 (no or bad credentials) or 403 (not an administrator)."""
    if scrape_token_matches(request, settings):
        return
    state = request.app.get(AUTHENTICATOR)
    if state is None:  # auth.mode none: only the scrape credential can get in
        raise errors.Unauthorized("metrics need the scrape credential", headers={"WWW-Authenticate": 'Bearer realm="metrics"'})
    if state.htpasswd is not None:
        creds = parse_basic(request.headers.get("Authorization"))
        if creds is None:
            raise errors.Unauthorized(headers=state.basic_challenge())
        await state.htpasswd_login(request, *creds)
        request["user"] = creds[0]
        return
    _, admin = await caller(request)
    if access == "admin" and not admin:
        raise errors.Denied("metrics are for administrators (metrics.access: admin)")
