"""Authentication state and middlewares: who is asking (basic, htpasswd or bearer token), what the
request needs, and the answer (401 with a challenge, 403, or through).  ``setup.py`` wires them
into the app; the token endpoint and admin API import them from here (no import cycle)."""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

from aiohttp import web

from ..api.access import Access, required_access
from ..api.common import CATALOG_FILTER
from ..config import Settings
from ..registry import errors
from ..registry.names import is_valid_name
from . import passwords
from .passwords import Htpasswd
from .policy import Principal, Scope, granted_actions, registry_actions, repository_rights, token_covers
from .store import AuthStore, TokenRecord, UserRecord
from .tokens import InvalidToken, TokenSigner

log = logging.getLogger("moorage.auth")

#: Failed-login window for ``auth.login_rate_limit``.
RATE_WINDOW = 60.0
#: How long a verified (user, password) pair is remembered, so that clients asking for one
#: token per scope don't pay a bcrypt check each time.
VERIFIED_TTL = 60.0
#: How long "this token's user exists / its access token is not revoked" is believed on the
#: registry side (0 = look it up on every request: one indexed read, and deleting a user or
#: revoking a token is effective at once, on every replica).
REVOCATION_TTL = 0.0
#: Route names the auth middleware leaves alone (they authenticate for themselves;
#: ``metrics``: see :mod:`moorage.metrics` and ``metrics.access``).
SELF_AUTHENTICATING = ("auth_", "api_v1_", "public_", "metrics")


@dataclass
class AuthState:
    settings: Settings
    store: AuthStore
    signer: TokenSigner | None = None
    htpasswd: Htpasswd | None = None
    _verified: dict[str, float] = field(default_factory=dict)
    _token_ok: dict[str, tuple[bool, float]] = field(default_factory=dict)

    @property
    def service(self) -> str:
        return self.settings.auth.service

    # -- realm / challenges ---------------------------------------------------------------
    def realm(self, request: web.Request) -> str:
        base = self.settings.auth.token.realm or f"{request.scheme}://{request.host}"
        return base.rstrip("/") + "/auth/token"

    def bearer_challenge(self, request: web.Request, needed: list[Access], error: str | None = None) -> dict[str, str]:
        value = f'Bearer realm="{_quoted(self.realm(request))}",service="{_quoted(self.service)}"'
        if needed:
            scope = " ".join(f"{a.type}:{a.name}:{','.join(a.actions)}" for a in needed)
            value += f',scope="{_quoted(scope)}"'
        if error:
            value += f',error="{error}"'
        return {"WWW-Authenticate": value}

    def basic_challenge(self) -> dict[str, str]:
        return {"WWW-Authenticate": f'Basic realm="{self.settings.auth.htpasswd.realm}",charset="UTF-8"'}

    # -- logins ---------------------------------------------------------------------------
    async def _claim(self, key: str) -> None:
        """Spend one attempt of ``key``'s failed-login budget before checking a password;
        429 if it is spent.  The count and the decision are one atomic statement, so parallel
        guesses can't all read "9 failures so far" and each run bcrypt (73 did, for a limit of
        10): at most ``login_rate_limit`` checks per window reach bcrypt, over every worker."""
        count, left = await self.store.claim_attempt(key, RATE_WINDOW)
        if count > self.settings.auth.login_rate_limit:
            raise errors.TooManyRequests("too many failed logins; try again later",
                                         headers={"Retry-After": str(max(1, math.ceil(left)))})

    def _remembered(self, cache_key: str) -> bool:
        exp = self._verified.get(cache_key)
        return exp is not None and exp > time.monotonic()

    def _remember(self, cache_key: str) -> None:
        if len(self._verified) > 10_000:
            self._verified.clear()
        self._verified[cache_key] = time.monotonic() + VERIFIED_TTL

    async def login(self, request: web.Request, username: str, password: str,
                    challenge: dict[str, str]) -> tuple[UserRecord, TokenRecord | None]:
        """Check a username with a password or an access token (rate limited per user+IP)."""
        key = f"{username[:200]}|{request.remote or ''}"
        user = await self.store.get_user(username)
        token: TokenRecord | None = None
        ok = False
        parts = passwords.split_token(password)
        if parts is not None:
            await self._claim(key)
            token = await self.store.get_token(parts[0])
            ok = (token is not None and user is not None and token.user_id == user.id and token.usable()
                  and passwords.secret_matches(parts[1], token.secret_hash))
            if ok and token is not None:
                await self.store.touch_token(token.id)
        else:
            stored = user.password_hash if user else None
            cache_key = hashlib.sha256(f"{username}\0{password}\0{stored}".encode()).hexdigest()
            if stored and self._remembered(cache_key):
                return user, None  # type: ignore[return-value]  # stored implies user
            await self._claim(key)
            ok = await passwords.run_hashing(passwords.check_password, password, stored, self.settings.auth.bcrypt_rounds)
            if ok:
                self._remember(cache_key)
        if not ok or user is None:
            raise errors.Unauthorized("invalid username or password", headers=challenge)
        await self.store.clear_failures(key)
        return user, token

    async def htpasswd_login(self, request: web.Request, username: str, password: str) -> None:
        assert self.htpasswd is not None
        entries = self.htpasswd.entries()
        stored = entries.get(username)
        cache_key = hashlib.sha256(f"{username}\0{password}\0{stored}".encode()).hexdigest()
        if stored and self._remembered(cache_key):
            return
        key = f"{username[:200]}|{request.remote or ''}"
        await self._claim(key)
        if not await passwords.run_hashing(self.htpasswd.verify, username, password):
            raise errors.Unauthorized("invalid username or password", headers=self.basic_challenge())
        await self.store.clear_failures(key)
        self._remember(cache_key)

    async def credentials_live(self, claims: dict[str, Any]) -> bool:
        """Is the user a JWT names still there (the same user: ``uid``, ``ucr``), and its personal
        access token (``pat``) still usable?  Anonymous tokens name nobody: always live."""
        subject = claims.get("sub") or ""
        pat = claims.get("pat")
        if not subject and not pat:
            return True
        uid = claims.get("uid")
        uid = uid if isinstance(uid, int) and not isinstance(uid, bool) else None
        ucr = claims.get("ucr")
        ucr = float(ucr) if isinstance(ucr, (int, float)) and not isinstance(ucr, bool) else None
        key = f"{subject}\0{uid}\0{ucr}\0{pat}"
        now = time.monotonic()
        hit = self._token_ok.get(key)
        if hit is not None and now - hit[1] < REVOCATION_TTL:
            return hit[0]
        ok = await self.store.credentials_live(str(subject), uid, ucr, str(pat) if pat else None)
        if REVOCATION_TTL > 0:
            if len(self._token_ok) > 10_000:
                self._token_ok.clear()
            self._token_ok[key] = (ok, now)
        return ok

    # -- what a principal gets ------------------------------------------------------------
    async def grant(self, principal: Principal, scopes: list[Scope]) -> list[dict[str, Any]]:
        """The ``access`` claim for ``scopes``: only actions actually granted; unknown
        resource types and names get nothing.  A repository name that breaks the spec's
        grammar (or is over 255 characters) is dropped before anything is matched against
        it: it can't exist, and no pattern ever sees attacker-sized input."""
        scopes = [s for s in scopes if s.type != "repository" or is_valid_name(s.name)]
        repos = [s.name for s in scopes if s.type == "repository"]
        public = await self.store.public_repositories(repos) if repos else set()
        access: list[dict[str, Any]] = []
        for s in scopes:
            if s.type == "repository":
                acts = granted_actions(s.actions, repository_rights(principal, s.name, public=s.name in public))
            elif s.type == "registry":
                acts = registry_actions(principal, s)
            else:
                acts = ()
            if acts:
                access.append({"type": s.type, "name": s.name, "actions": list(acts)})
        return access

    async def principal_of(self, subject: str, token_id: str | None) -> Principal:
        if not subject:
            return Principal(None)
        user = await self.store.get_user(subject)
        if user is None:
            return Principal(None)
        token = await self.store.get_token(token_id) if token_id else None
        return await self.store.principal(user, token)


STATE = web.AppKey("auth_state", AuthState)


def _quoted(text: str) -> str:
    """Safe inside a quoted-string of a header (names are validated before they get here;
    this only guards the Host-derived realm and configured values)."""
    return "".join(c for c in text if c >= " " and c != "\x7f").replace("\\", "\\\\").replace('"', '\\"')


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


def _skip(request: web.Request) -> bool:
    if request.match_info.http_exception is not None:  # no route: the 404/405 is the answer
        return True
    name = getattr(request.match_info.route, "name", None) or ""
    return name.startswith(SELF_AUTHENTICATING)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def token_middleware(state: AuthState) -> Any:
    @web.middleware
    async def auth_token(request: web.Request, handler: Handler) -> web.StreamResponse:
        if _skip(request):
            return await handler(request)
        original = request  # the access log reads the user from the request it was given
        request, needed = _checked(request, required_access(request))
        raw = bearer(request.headers.get("Authorization"))
        if raw is None:
            raise errors.Unauthorized(headers=state.bearer_challenge(request, needed))
        assert state.signer is not None
        try:
            claims = await state.signer.verify(raw)
        except InvalidToken as exc:
            raise errors.Unauthorized(f"invalid token: {exc}", headers=state.bearer_challenge(request, needed, "invalid_token")) from None
        pat = claims.get("pat")
        if not await state.credentials_live(claims):
            raise errors.Unauthorized("user deleted, or access token revoked or expired",
                                      headers=state.bearer_challenge(request, needed, "invalid_token"))
        subject = claims.get("sub") or ""
        if subject:
            request["user"] = original["user"] = subject
        access = claims.get("access") or []
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
            challenge = state.bearer_challenge(request, [need], "insufficient_scope")
            if known:
                raise errors.Denied(detail=[{"Type": need.type, "Name": need.name, "Action": a} for a in need.actions],
                                    headers=challenge)
            raise errors.Unauthorized("token does not cover this request", headers=challenge)
        if needed and needed[0].type == "registry" and needed[0].name == "catalog":
            principal = await state.principal_of(subject, str(pat) if pat else None)

            async def visible(names: list[str]) -> list[str]:
                public = await state.store.public_repositories(names)
                return [n for n in names if "pull" in repository_rights(principal, n, public=n in public)]

            request[CATALOG_FILTER] = visible
        return await handler(request)

    return auth_token


def htpasswd_middleware(state: AuthState) -> Any:
    @web.middleware
    async def auth_htpasswd(request: web.Request, handler: Handler) -> web.StreamResponse:
        if _skip(request):
            return await handler(request)
        creds = parse_basic(request.headers.get("Authorization"))
        if creds is None:
            raise errors.Unauthorized(headers=state.basic_challenge())
        await state.htpasswd_login(request, *creds)
        request["user"] = creds[0]
        return await handler(request)

    return auth_htpasswd
