"""Credentials on an HTTP request: the ``Authorization`` header parsed, and who the caller is
(for the admin API, the auth middleware's AUTHENTICATED / ADMIN rules and the extensions).

The checking itself is the :class:`~moorage.auth.authenticator.Authenticator`'s; this module
only reads headers and remembers the answer on the request, so a route the middleware has
already identified the caller for does not log in (and count a login attempt, and audit it) twice.
"""

from __future__ import annotations

import base64
import binascii

from aiohttp import web

from .. import errors
from ..api.common import AUTHENTICATOR, request_principal
from ..metadata.records import TokenRecord, UserRecord
from ..registry.access_rules import Principal as AccessPrincipal
from ..registry.principal import Principal
from .authenticator import Authenticator

#: Request key: ``(user, may administer)`` once the caller is identified.
CALLER = "moorage.caller"
#: Request key: True when the caller used a scoped access token (less than their full rights).
SCOPED = "moorage.scoped_credentials"
#: Request key: the access token the caller came with (None: a password).
CALLER_TOKEN = "moorage.caller_token"


def parse_basic(header: str | None) -> tuple[str, str] | None:
    """``Basic base64(user:pass)`` -> (user, pass); None if absent; raises if malformed."""
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise errors.Unauthorized("malformed basic credentials") from None
    user, sep, password = decoded.partition(":")
    if not sep or not user:
        raise errors.Unauthorized("malformed basic credentials")
    return user, password


def bearer(header: str | None) -> str | None:
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


async def caller(request: web.Request) -> tuple[UserRecord, bool]:
    """(user, may administer) of the request's credentials -- HTTP basic (password or access
    token) or a bearer JWT; 401 without valid ones."""
    known = request.get(CALLER)
    if known is not None:
        return known  # type: ignore[no-any-return]
    auth: Authenticator = request.app[AUTHENTICATOR]
    header = request.headers.get("Authorization")
    user, token = await auth.identify(
        request, basic=parse_basic(header), bearer=bearer(header), challenge=auth.bearer_challenge(request, [])
    )
    full = token is None or token.scope is None
    request["user"] = user.name
    request[SCOPED] = not full
    request[CALLER_TOKEN] = token
    request[CALLER] = (user, user.is_admin and full)
    return request[CALLER]  # type: ignore[no-any-return]


async def reader(request: web.Request) -> AccessPrincipal | None:
    """Who reads, for the one read rule (:meth:`Authenticator.visible`), token mode: the caller
    with what their credentials allow -- an access token's scope narrows its owner's grants
    exactly as it does for ``/v2/_catalog`` -- anonymous without an ``Authorization`` header, and
    ``None`` (sees everything) for an administrator with full credentials."""
    if "Authorization" not in request.headers:
        return AccessPrincipal(None)
    user, admin = await caller(request)
    if admin:
        return None
    auth: Authenticator = request.app[AUTHENTICATOR]
    return await auth.principal(user, request.get(CALLER_TOKEN))


async def principal(request: web.Request) -> Principal:
    """The caller of an ``/api/v1`` request (token mode) as a service
    :class:`~moorage.registry.principal.Principal` (face ``api``): 401 without credentials."""
    user, admin = await caller(request)
    token: TokenRecord | None = request.get(CALLER_TOKEN)
    return request_principal(
        request,
        "api",
        name=user.name,
        admin=admin,
        token_id=token.id if token else None,
        token_expires=token.expires_at if token else None,
        scope=tuple(token.scope) if token and token.scope is not None else None,
    )


async def require_admin(request: web.Request) -> Authenticator:
    """The Authenticator if the caller is an administrator; else DENIED (also for other extensions)."""
    _, admin = await caller(request)
    if not admin:
        raise errors.Denied("administrator rights required")
    return request.app[AUTHENTICATOR]
