"""The Authenticator: credentials -> identity, registry tokens issued and verified, failed-login
rate limits, and what a principal is granted.

No HTTP lives here beyond the request's address (rate-limit key) and the challenge headers an
``Unauthorized`` carries: the HTTP side (``/auth/token``, ``/api/v1/``, the middleware) parses
requests and calls these methods.  ``moorage.events`` wraps :meth:`Authenticator.login` and
:meth:`Authenticator.htpasswd_login` to audit logins, so their signatures are part of the contract.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import math
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .. import errors
from ..accounts import passwords
from ..accounts.passwords import Htpasswd
from ..config import Settings
from ..metadata.auth_store import AuthStore
from ..metadata.records import TokenRecord, UserRecord
from ..metadata.store import MAX_CATALOG_RANGES
from ..registry.access_rules import (
    Grant,
    Principal,
    Scope,
    granted_actions,
    namespace_prefixes,
    parse_actions,
    pull_ranges,
    registry_actions,
    repository_rights,
    valid_username,
)
from ..registry.catalog_scope import CatalogScope
from ..registry.names import is_valid_name
from .tokens import InvalidToken, TokenSigner

if TYPE_CHECKING:
    from aiohttp import web

    from ..api.access import Access
    from .groups import DirectoryUsers
    from .oidc import OidcUsers

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


class StaleCredentials(InvalidToken):
    """A well-signed token whose user is gone (or re-created) or whose access token is revoked."""


@dataclass
class Authenticator:
    settings: Settings
    store: AuthStore
    signer: TokenSigner | None = None
    htpasswd: Htpasswd | None = None
    #: Directory users (``auth.ldap``; moorage.auth.groups); None: local users only.
    directory: DirectoryUsers | None = None
    #: OpenID Connect users (``auth.oidc``; moorage.auth.oidc); None: off.
    oidc: OidcUsers | None = None
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
            raise errors.TooManyRequests(
                "too many failed logins; try again later", headers={"Retry-After": str(max(1, math.ceil(left)))}
            )

    def _remembered(self, cache_key: str) -> bool:
        exp = self._verified.get(cache_key)
        return exp is not None and exp > time.monotonic()

    def _remember(self, cache_key: str) -> None:
        if len(self._verified) > 10_000:
            self._verified.clear()
        self._verified[cache_key] = time.monotonic() + VERIFIED_TTL

    async def login(
        self, request: web.Request, username: str, password: str, challenge: dict[str, str]
    ) -> tuple[UserRecord, TokenRecord | None]:
        """Check a username with a password or an access token (rate limited per user+IP)."""
        key = f"{username[:200]}|{request.remote or ''}"
        user = await self.store.get_user(username)
        token: TokenRecord | None = None
        ok = False
        parts = passwords.split_token(password)
        if parts is None and user is not None and user.source == "oidc":
            from .groups import ClearRefusal

            await self._claim(key)
            raise ClearRefusal(
                f"{username!r} signs in through the web UI (OpenID Connect); registry clients use an access token made there",
                headers=challenge,
            )
        if parts is None and self.directory is not None and (user is None or user.source == "ldap"):
            return await self._directory_login(request, key, username, password, user, challenge), None
        if parts is not None:
            await self._claim(key)
            token = await self.store.get_token(parts[0])
            ok = (
                token is not None
                and user is not None
                and token.user_id == user.id
                and token.usable()
                and passwords.secret_matches(parts[1], token.secret_hash)
            )
            if ok and token is not None:
                await self.store.touch_token(token.id)
                if user is not None and user.source is not None:
                    await self._directory_entry(user, challenge)
        else:
            stored = user.password_hash if user else None
            cache_key = hashlib.sha256(f"{username}\0{password}\0{stored}".encode()).hexdigest()
            if stored and self._remembered(cache_key):
                return user, None  # type: ignore[return-value]  # stored implies user
            await self._claim(key)
            ok = await passwords.run_hashing(passwords.check_password, password, stored, self.settings.auth.bcrypt_rounds)
            if ok:
                self._remember(cache_key)
            elif user is not None and self.directory is not None:
                await self._refuse_name_conflict(username, password, challenge)
        if not ok or user is None:
            raise errors.Unauthorized("invalid username or password", headers=challenge)
        await self.store.clear_failures(key)
        return user, token

    # -- directory users (moorage.auth.groups) -------------------------------------------
    async def _directory_login(
        self, request: web.Request, key: str, username: str, password: str, user: UserRecord | None, challenge: dict[str, str]
    ) -> UserRecord:
        """A directory sign-in (a fresh bind; same rate limit as local users); the user is
        provisioned at the first one.  503 (not 401) when the directory does not answer."""
        assert self.directory is not None
        if not valid_username(username):  # names double as namespaces; nothing reaches LDAP
            raise errors.Unauthorized("invalid username or password", headers=challenge)
        await self._claim(key)
        entry = await self.directory.sign_in(username, password)
        if entry is None:
            raise errors.Unauthorized("invalid username or password", headers=challenge)
        if user is None:
            user = await self.directory.provision(username)
        await self.store.clear_failures(key)
        return user

    async def _refuse_name_conflict(self, username: str, password: str, challenge: dict[str, str]) -> None:
        """A wrong local password that is the directory password of the same name: say why it
        is refused (a name in both is never merged).  An outage changes nothing here."""
        assert self.directory is not None
        from .groups import NameConflict
        from .ldap import DirectoryUnavailable

        if not valid_username(username) or not password:
            return
        try:
            entry = await self.directory.directory.authenticate(username, password)
        except DirectoryUnavailable:
            return
        if entry is not None:
            raise NameConflict(
                f"the name {username!r} belongs to a local Moorage user; the directory account of the same name "
                "cannot sign in here (an administrator must remove or rename the local user first)",
                headers=challenge,
            )

    def _provider(self, source: str | None) -> Any:
        """Who vouches for users of ``source`` (``users.source``): LDAP, OIDC, or None."""
        return {"ldap": self.directory, "oidc": self.oidc}.get(source or "")

    async def _directory_entry(self, user: UserRecord, challenge: dict[str, str] | None = None) -> Any:
        """The current entry (groups) of a directory or OIDC user (401 if gone; 503 on an
        outage); None for a local user.  A user whose provider is not configured any more has
        no rights at all (fail closed)."""
        if user.source is None:
            return None
        provider = self._provider(user.source)
        if provider is None:
            raise errors.Unauthorized(
                f"{user.source} users cannot sign in: auth.{user.source} is not configured", headers=challenge
            )
        try:
            return await provider.live(user)
        except errors.Unauthorized as exc:
            exc.headers.update(challenge or {})
            raise

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

    # -- registry tokens ------------------------------------------------------------------
    async def verify(self, raw: str) -> dict[str, Any]:
        """The claims of a registry token that is well signed *and* whose user and access token
        still stand; raises :class:`InvalidToken` (:class:`StaleCredentials` for the latter)."""
        assert self.signer is not None
        claims = await self.signer.verify(raw)
        if not await self.credentials_live(claims):
            raise StaleCredentials("user deleted, or access token revoked or expired")
        return claims

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
        if ok and "dgf" in claims:
            ok = await self._directory_unchanged(str(subject), claims["dgf"])
        if REVOCATION_TTL > 0:
            if len(self._token_ok) > 10_000:
                self._token_ok.clear()
            self._token_ok[key] = (ok, now)
        return ok

    async def _directory_unchanged(self, name: str, issued_for: Any) -> bool:
        """Is a directory user's registry token still for their current groups (``dgf``)?"""
        from .groups import fingerprint

        source, _, _fp = str(issued_for).partition(":")
        provider = self._provider(source)
        if provider is None:
            return False
        entry = await provider.current(name)
        return entry is not None and f"{source}:{fingerprint(entry, provider.is_admin(entry))}" == issued_for

    async def issue(
        self, principal: Principal, scopes: list[Scope], *, not_after: float | None
    ) -> tuple[str, int, float, list[dict[str, Any]]]:
        """(JWT, expires_in, issued_at, access claim) for what ``principal`` is granted of ``scopes``."""
        assert self.signer is not None
        access = await self.grant(principal, scopes)
        token, expires_in, issued = self.signer.issue(
            principal.name or "",
            access,
            token_id=principal.token_id,
            not_after=not_after,
            user_id=principal.user_id,
            user_created_at=principal.user_created_at,
            extra={"dgf": principal.directory} if principal.directory else None,
        )
        return token, expires_in, issued, access

    def issue_refresh(self, user: UserRecord, token: TokenRecord | None) -> str:
        """A refresh token for ``user`` (logged in with ``token``, or a password)."""
        assert self.signer is not None
        return self.signer.issue_refresh(
            user.name,
            password_changed_at=user.password_changed_at,
            token_id=token.id if token else None,
            not_after=token.expires_at if token else None,
        )

    async def redeem_refresh(self, raw: str) -> tuple[UserRecord, TokenRecord | None]:
        """The user (and access token) a refresh token stands for; 401 if it no longer holds:
        user gone, access token revoked or expired, password changed since."""
        assert self.signer is not None
        try:
            claims = await self.signer.verify(raw, refresh=True)
        except InvalidToken as exc:
            raise errors.Unauthorized(f"invalid refresh token: {exc}") from None
        user = await self.store.get_user(str(claims.get("sub") or ""))
        if user is None:
            raise errors.Unauthorized("invalid refresh token: unknown user")
        token = None
        if claims.get("pat"):
            token = await self.store.get_token(str(claims["pat"]))
            if token is None or not token.usable() or token.user_id != user.id:
                raise errors.Unauthorized("invalid refresh token: access token revoked or expired")
        elif claims.get("pwc") != user.password_changed_at:
            raise errors.Unauthorized("invalid refresh token: password changed")
        return user, token

    # -- who is asking, for the admin API and the extensions -------------------------------
    async def identify(
        self, request: web.Request, *, basic: tuple[str, str] | None, bearer: str | None, challenge: dict[str, str]
    ) -> tuple[UserRecord, TokenRecord | None]:
        """(user, access token) of HTTP basic credentials (password or access token) or a
        bearer JWT (its ``pat``); the token is None for a password.  401 without valid ones."""
        if basic is not None:
            user, token = await self.login(request, *basic, challenge=challenge)
            return await self.as_directory_says(user, challenge), token
        if bearer is None:
            raise errors.Unauthorized(headers=challenge)
        try:
            claims = await self.verify(bearer)
        except StaleCredentials as exc:  # user deleted (or re-created), PAT revoked
            raise errors.Unauthorized(str(exc), headers=challenge) from None
        except InvalidToken as exc:
            raise errors.Unauthorized(f"invalid token: {exc}", headers=challenge) from None
        tok = None
        pat = claims.get("pat")
        if pat:
            tok = await self.store.get_token(str(pat))
            if tok is None or not tok.usable():
                raise errors.Unauthorized("access token revoked or expired", headers=challenge)
        found = await self.store.get_user(str(claims.get("sub") or ""))
        if found is None:
            raise errors.Unauthorized(headers=challenge)
        return await self.as_directory_says(found, challenge), tok

    async def as_directory_says(self, user: UserRecord, challenge: dict[str, str] | None = None) -> UserRecord:
        """``user`` with ``is_admin`` from the directory's groups now (a directory user; a local
        user as it is)."""
        entry = await self._directory_entry(user, challenge)
        if entry is None:
            return user
        return dataclasses.replace(user, is_admin=self._provider(user.source).is_admin(entry))

    # -- what a principal gets ------------------------------------------------------------
    async def principal(self, user: UserRecord, token: TokenRecord | None = None) -> Principal:
        """Everything needed to decide for ``user`` (logged in with ``token``, if any): for a
        directory user also their groups' grants, and admin by ``admin_groups``."""
        user_grants = [Grant(g.pattern, parse_actions(g.actions)) for g in await self.store.grants_of(user.id)]
        is_admin, directory = user.is_admin, None
        entry = await self._directory_entry(user)
        if entry is not None:
            from .groups import fingerprint

            provider = self._provider(user.source)
            user_grants += await provider.grants(entry)
            is_admin = provider.is_admin(entry)
            directory = f"{user.source}:{fingerprint(entry, is_admin)}"
        token_scope = None
        if token is not None and token.scope is not None:
            token_scope = []
            for item in token.scope:
                pattern, _, acts = item.rpartition(":")
                token_scope.append(Grant(pattern, parse_actions(acts)))
        return Principal(
            name=user.name,
            is_admin=is_admin,
            is_robot=user.is_robot,
            grants=user_grants,
            token_scope=token_scope,
            token_id=token.id if token else None,
            user_id=user.id,
            user_created_at=user.created_at,
            directory=directory,
        )

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
        return await self.principal(user, token)

    async def catalog_scope(self, principal: Principal) -> CatalogScope:
        """The catalog filter of ``principal`` (:meth:`visible`) with the name ranges that hold
        everything it can keep: the account's (:func:`pull_ranges`), the public namespaces',
        the public repositories' (issue 24: a user with 10 namespaces reads 10 ranges)."""

        async def keep(names: list[str]) -> list[str]:
            return await self.visible(principal, names)

        ranges = pull_ranges(principal)
        public_ns = await self.store.public_namespaces(MAX_CATALOG_RANGES) if ranges is not None else None
        if ranges is None or public_ns is None:
            return CatalogScope(keep, bounded=False)
        prefixes, names = ranges
        prefixes = sorted(set(prefixes) | {ns + "/" for ns in public_ns})
        public_spaces = frozenset(public_ns)

        def pull(name: str, repository_public: bool) -> bool:
            # visible()'s rule, with public_repositories() answered from what is known: the
            # repository's own flag (read with the name) and every public namespace (above).
            public = repository_public or any(ns in public_spaces for ns in namespace_prefixes(name))
            return "pull" in repository_rights(principal, name, public=public)

        return CatalogScope(keep, tuple(prefixes), tuple(names), public=True, pull=pull)

    async def visible(self, principal: Principal, names: list[str], action: str = "pull") -> list[str]:
        """The repositories of ``names`` on which ``principal`` has ``action`` (``pull``: may
        see) -- the registry's one read rule: the catalog filter (:meth:`catalog_scope`), the
        insight API's results and the web UI's list condition
        (:meth:`~moorage.ui.session.Viewer.visibility`, the same grants, token scope and
        public marks as SQL; ``tests/test_read_rules.py`` keeps the faces equal)."""
        public = await self.store.public_repositories(names)
        return [n for n in names if action in repository_rights(principal, n, public=n in public)]


def _quoted(text: str) -> str:
    """Safe inside a quoted-string of a header (names are validated before they get here;
    this only guards the Host-derived realm and configured values)."""
    return "".join(c for c in text if c >= " " and c != "\x7f").replace("\\", "\\\\").replace('"', '\\"')
