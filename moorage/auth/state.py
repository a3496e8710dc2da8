"""The auth middlewares: the matched route's rule (declared with it: :mod:`moorage.api.routing`) says what
the request needs; the middleware answers 401 with a challenge, 403, or lets it through.

A route registered without a declared rule is refused, in every ``auth.mode`` (fail closed): a
new route cannot go unprotected by going around the declarations.  ``setup.py`` wires the middlewares into the app.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from .. import errors
from ..api.access import Access, required_access
from ..api.common import CATALOG_FILTER, CREDENTIALS_ALLOW
from ..api.routes import HANDLER_DECIDES, Rule
from ..api.routing import RouteRegistry, route_rule
from ..registry.access_rules import token_covers
from ..registry.names import is_valid_name
from .authenticator import Authenticator, StaleCredentials
from .credentials import bearer, caller, parse_basic
from .tokens import InvalidToken

log = logging.getLogger("moorage.auth")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _checked(request: web.Request, needed: list[Access]) -> tuple[web.Request, list[Access]]:
    """Refuse an invalid repository name before authenticating (it can't exist, so nothing
    leaks, and it never reaches a header); drop a mount whose source name is invalid."""
    out: list[Access] = []
    for i, need in enumerate(needed):
        if need.type == "repository" and not is_valid_name(need.name):
            if i == 0:
                raise errors.NameInvalid(detail={"name": need.name[:300]})
            query = {k: v for k, v in request.query.items() if k not in ("mount", "from")}
            request = request.clone(rel_url=request.rel_url.with_query(query))
            continue
        out.append(need)
    return request, out


def _claims_allow(access: Any) -> Callable[[str, str], bool]:
    """``may(action, repository)`` of a verified token's ``access`` claim."""
    claims = access if isinstance(access, list) else []

    def may(action: str, repository: str) -> bool:
        return token_covers(claims, "repository", repository, (action,))[0]

    return may


def token_middleware(auth: Authenticator, registry: RouteRegistry) -> Any:
    @web.middleware
    async def auth_token(request: web.Request, handler: Handler) -> web.StreamResponse:
        rule = route_rule(request, registry)
        if rule is None or rule in HANDLER_DECIDES or rule is Rule.VISIBLE:
            return await handler(request)
        if rule is Rule.AUTHENTICATED or rule is Rule.ADMIN:
            _, admin = await caller(request)
            if rule is Rule.ADMIN and not admin:
                raise errors.Denied("administrator rights required")
            return await handler(request)
        original = request  # the access log reads the user from the request it was given
        request, needed = _checked(request, required_access(request, rule))
        raw = bearer(request.headers.get("Authorization"))
        if raw is None:
            raise errors.Unauthorized(headers=auth.bearer_challenge(request, needed))
        try:
            claims = await auth.verify(raw)
        except StaleCredentials as exc:
            raise errors.Unauthorized(str(exc), headers=auth.bearer_challenge(request, needed, "invalid_token")) from None
        except InvalidToken as exc:
            raise errors.Unauthorized(
                f"invalid token: {exc}", headers=auth.bearer_challenge(request, needed, "invalid_token")
            ) from None
        pat = claims.get("pat")
        subject = claims.get("sub") or ""
        if subject:
            request["user"] = original["user"] = subject
        access = claims.get("access") or []
        # What the token allows, for the service operation's own check (Principal.require).
        request[CREDENTIALS_ALLOW] = original[CREDENTIALS_ALLOW] = _claims_allow(access)
        for i, need in enumerate(needed):
            covered, known = token_covers(access, need.type, need.name, need.actions)
            if covered:
                continue
            if i > 0 and request.query.get("mount"):
                # Cross-repository mount from a repository the caller may not read: ignore
                # the mount and start an ordinary upload (the spec allows a registry to).
                query = {k: v for k, v in request.query.items() if k not in ("mount", "from")}
                request = request.clone(rel_url=request.rel_url.with_query(query))
                continue
            challenge = auth.bearer_challenge(request, [need], "insufficient_scope")
            if known:
                raise errors.Denied(
                    detail=[{"Type": need.type, "Name": need.name, "Action": a} for a in need.actions], headers=challenge
                )
            raise errors.Unauthorized("token does not cover this request", headers=challenge)
        if rule is Rule.CATALOG:
            principal = await auth.principal_of(subject, str(pat) if pat else None)
            request[CATALOG_FILTER] = await auth.catalog_scope(principal)
        return await handler(request)

    return auth_token


def htpasswd_middleware(auth: Authenticator, registry: RouteRegistry) -> Any:
    """Every user in the file may do everything: any rule but those the handler decides needs
    valid basic credentials."""

    @web.middleware
    async def auth_htpasswd(request: web.Request, handler: Handler) -> web.StreamResponse:
        rule = route_rule(request, registry)
        if rule is None or rule in HANDLER_DECIDES:
            return await handler(request)
        creds = parse_basic(request.headers.get("Authorization"))
        if creds is None:
            raise errors.Unauthorized(headers=auth.basic_challenge())
        await auth.htpasswd_login(request, *creds)
        request["user"] = creds[0]
        return await handler(request)

    return auth_htpasswd
