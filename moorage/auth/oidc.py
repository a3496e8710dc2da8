"""OpenID Connect sign-in for the web UI (``auth.oidc``), with Authlib (PKCE, state and nonce
generation) and joserfc (Authlib's JOSE library: ID token signature from the provider's JWKS and
the registered claims) -- no hand-written crypto.

The flow (authorization code, RFC 6749 4.1, with PKCE S256, RFC 7636):

1. ``/auth/oidc/login`` makes ``state``, ``nonce`` and a ``code_verifier``, stores them (keyed by
   the state's hash, single use) and sends the browser to the provider's
   ``authorization_endpoint``; the state is also set in a short-lived cookie, so a callback
   can only complete in the browser that started it (no login CSRF).
2. ``/auth/oidc/callback`` takes the stored request (deleted in the same transaction: a
   replayed state finds nothing), exchanges the code with the verifier and the client secret,
   and verifies the ID token: signature by a key of the provider's JWKS (asymmetric
   algorithms only; ``none``/HS* refused), ``iss`` = the configured issuer, ``aud`` holds
   ``client_id`` (and ``azp`` is it when there are several audiences), ``exp`` in the future,
   ``iat`` present, ``nonce`` = the stored one.
3. The user named by ``username_claim`` is provisioned (``users.source = 'oidc'``; a local or
   LDAP user of that name is refused, never merged) and a Moorage UI session is opened.

Registry clients cannot follow a browser: an OIDC user makes an access token in the UI.  Its
use is checked against the provider at most ``cache_ttl`` seconds apart: the refresh token
kept from the sign-in is redeemed (a refresh-token grant) and the new ID token's groups
replace the stored ones; a provider that refuses the refresh (user deleted or disabled,
session revoked) ends the user's access, their tokens included.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections.abc import Iterator
from typing import Any

import aiohttp

from .. import errors
from ..accounts.group_store import GroupStore
from ..config import OidcSettings
from ..metadata.records import UserRecord
from ..registry.access_rules import Grant, parse_actions, valid_username
from .ldap import DirectoryEntry
from .oidc_store import OidcIdentity, OidcStore, PendingLogin

log = logging.getLogger("moorage.auth.oidc")

#: Source tag of users provisioned from OpenID Connect (``users.source``).
OIDC = "oidc"
#: Seconds a sign-in may take between the redirect and the callback.
LOGIN_TTL = 600.0
#: Seconds the discovery document and the JWKS are kept (the JWKS is re-read at once for an
#: unknown ``kid``, at most every ``JWKS_MIN_REFRESH`` seconds).
METADATA_TTL = 3600.0
JWKS_MIN_REFRESH = 30.0
#: Clock skew allowed on ``exp``/``iat``.
LEEWAY = 60
#: Signature algorithms accepted for ID tokens (asymmetric only).
ALGORITHMS = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"]
#: Bounds on what the provider may send.
MAX_RESPONSE = 1024 * 1024
MAX_GROUPS = 1000


class ProviderUnavailable(errors.Unavailable):
    """The provider does not answer (or answers nonsense): a retryable outage, not a refusal."""

    def __init__(self, message: str) -> None:
        super().__init__(message, headers={"Retry-After": "5"})


class SignInRefused(errors.Unauthorized):
    """The provider's answer does not let this sign-in through (the message says why)."""


def state_hash(state: str) -> str:
    return hashlib.sha256(state.encode()).hexdigest()


class OidcClient:
    """The relying party: discovery, authorization URL, code and refresh grants, ID tokens."""

    def __init__(self, settings: OidcSettings) -> None:
        self.settings = settings
        self._session: aiohttp.ClientSession | None = None
        self._metadata: tuple[dict[str, Any], float] | None = None
        self._jwks: tuple[Any, float] | None = None
        self.last_error: str | None = None
        self.errors_total = 0

    @property
    def issuer(self) -> str:
        return self.settings.issuer

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    # -- HTTP -------------------------------------------------------------------------------
    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.settings.timeout))
        return self._session

    def _down(self, why: str) -> ProviderUnavailable:
        message = f"the OpenID provider at {self.issuer} does not answer ({why})"
        self.errors_total += 1
        if self.last_error != message:
            log.warning("%s", message)
        self.last_error = message
        return ProviderUnavailable(message)

    async def _json(self, method: str, url: str, **kw: Any) -> tuple[int, dict[str, Any]]:
        try:
            async with self._http().request(method, url, allow_redirects=False, **kw) as resp:
                body = await resp.content.read(MAX_RESPONSE + 1)
                status = resp.status
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise self._down(type(exc).__name__) from None
        if len(body) > MAX_RESPONSE:
            raise self._down("answer too large")
        if status >= 500:
            raise self._down(f"HTTP {status}")
        try:
            data = json.loads(body)
        except ValueError:
            raise self._down(f"HTTP {status}, not JSON") from None
        if not isinstance(data, dict):
            raise self._down("not a JSON object")
        self.last_error = None
        return status, data

    # -- discovery and keys -----------------------------------------------------------------
    async def metadata(self) -> dict[str, Any]:
        now = time.monotonic()
        if self._metadata is not None and now - self._metadata[1] < METADATA_TTL:
            return self._metadata[0]
        status, doc = await self._json("GET", self.issuer + "/.well-known/openid-configuration")
        if status != 200:
            raise self._down(f"discovery answered HTTP {status}")
        if doc.get("issuer") != self.issuer:
            # OpenID Connect Discovery 4.3: the issuer in the document must be the one asked for
            raise self._down(f"discovery names issuer {str(doc.get('issuer'))[:200]!r}, not the configured one")
        for key in ("authorization_endpoint", "token_endpoint", "jwks_uri"):
            if not isinstance(doc.get(key), str) or not doc[key].startswith(("https://", "http://")):
                raise self._down(f"discovery has no {key}")
        self._metadata = (doc, now)
        return doc

    async def probe(self) -> None:
        """``/readyz``: the discovery document answers now (not from the cache)."""
        self._metadata = None
        await self.metadata()

    async def keys(self, *, refresh: bool = False) -> Any:
        from joserfc.jwk import KeySet

        now = time.monotonic()
        if self._jwks is not None:
            age = now - self._jwks[1]
            if age < METADATA_TTL and not (refresh and age >= JWKS_MIN_REFRESH):
                return self._jwks[0]
        status, doc = await self._json("GET", (await self.metadata())["jwks_uri"])
        if status != 200:
            raise self._down(f"JWKS answered HTTP {status}")
        try:
            keys = KeySet.import_key_set(doc)  # type: ignore[arg-type]
        except Exception:  # noqa: BLE001 - whatever joserfc finds wrong: an unusable provider
            raise self._down("JWKS unreadable") from None
        self._jwks = (keys, now)
        return keys

    # -- the flow -----------------------------------------------------------------------------
    async def start(self, redirect_uri: str) -> tuple[str, str, PendingLogin]:
        """(authorization URL, state, the request to remember) for a new sign-in."""
        from authlib.common.security import generate_token
        from authlib.common.urls import add_params_to_uri
        from authlib.oauth2.rfc7636 import create_s256_code_challenge

        meta = await self.metadata()
        state, nonce, verifier = generate_token(43), generate_token(43), generate_token(64)
        params = [
            ("response_type", "code"),
            ("client_id", self.settings.client_id),
            ("redirect_uri", redirect_uri),
            ("scope", " ".join(self.settings.scopes)),
            ("state", state),
            ("nonce", nonce),
            ("code_challenge", create_s256_code_challenge(verifier)),
            ("code_challenge_method", "S256"),
        ]
        url = add_params_to_uri(meta["authorization_endpoint"], params)
        return url, state, PendingLogin(nonce, verifier, "/", redirect_uri, time.time())

    async def _token_request(self, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        meta = await self.metadata()
        methods = meta.get("token_endpoint_auth_methods_supported") or ["client_secret_basic"]
        secret = self.settings.client_secret.get_secret_value()
        kw: dict[str, Any] = {}
        if "client_secret_basic" in methods:
            from urllib.parse import quote

            # RFC 6749 2.3.1: form-encode id and secret before Basic
            kw["auth"] = aiohttp.BasicAuth(quote(self.settings.client_id, safe=""), quote(secret, safe=""))
        else:
            form = {**form, "client_id": self.settings.client_id, "client_secret": secret}
        return await self._json("POST", meta["token_endpoint"], data=form, headers={"Accept": "application/json"}, **kw)

    async def exchange(self, code: str, pending: PendingLogin) -> dict[str, Any]:
        """The token response for an authorization code (with the PKCE verifier)."""
        status, tokens = await self._token_request(
            {
                "grant_type": "authorization_code",
                "code": code,
                "redirect_uri": pending.redirect_uri,
                "code_verifier": pending.code_verifier,
                "client_id": self.settings.client_id,
            }
        )
        if status != 200 or not isinstance(tokens.get("id_token"), str):
            err = str(tokens.get("error") or f"HTTP {status}")[:100]
            raise SignInRefused(f"the OpenID provider refused the sign-in ({err})")
        return tokens

    async def refresh(self, refresh_token: str) -> dict[str, Any] | None:
        """A refresh-token grant; None when the provider refuses it (user gone, disabled,
        session revoked)."""
        status, tokens = await self._token_request({"grant_type": "refresh_token", "refresh_token": refresh_token})
        if status != 200:
            return None
        return tokens

    async def verify_id_token(self, raw: str, *, nonce: str | None) -> dict[str, Any]:
        """The claims of an ID token this provider issued for this client (OIDC Core 3.1.3.7);
        :class:`SignInRefused` otherwise."""
        from joserfc import jwt
        from joserfc.errors import JoseError

        if len(raw) > 64 * 1024:
            raise SignInRefused("ID token too large")
        keys = await self.keys()
        try:
            try:
                token = jwt.decode(raw, keys, algorithms=ALGORITHMS)
            except JoseError:
                token = jwt.decode(raw, await self.keys(refresh=True), algorithms=ALGORITHMS)  # key rotation
            registry = jwt.JWTClaimsRegistry(
                leeway=LEEWAY,
                iss={"essential": True, "value": self.issuer},
                aud={"essential": True, "value": self.settings.client_id},
                exp={"essential": True},
                iat={"essential": True},
                sub={"essential": True},
                **({"nonce": {"essential": True, "value": nonce}} if nonce is not None else {}),  # type: ignore[arg-type]
            )
            registry.validate(token.claims)
        except (JoseError, ValueError) as exc:
            raise SignInRefused(f"invalid ID token ({type(exc).__name__}: {str(exc)[:120]})") from None
        claims = dict(token.claims)
        aud = claims.get("aud")
        if isinstance(aud, list) and len(aud) > 1 and claims.get("azp") != self.settings.client_id:
            raise SignInRefused("invalid ID token (several audiences and azp is not this client)")
        return claims

    async def userinfo(self, access_token: str) -> dict[str, Any]:
        meta = await self.metadata()
        url = meta.get("userinfo_endpoint")
        if not isinstance(url, str):
            return {}
        status, info = await self._json("GET", url, headers={"Authorization": f"Bearer {access_token}"})
        return info if status == 200 else {}

    # -- metrics ------------------------------------------------------------------------------
    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        up = GaugeMetricFamily("moorage_oidc_up", "1 if the last call to the OpenID provider succeeded", labels=["issuer"])
        up.add_metric([self.issuer], 0.0 if self.last_error else 1.0)
        yield up
        errs = CounterMetricFamily("moorage_oidc_errors", "Calls to the OpenID provider that failed", labels=["issuer"])
        errs.add_metric([self.issuer], float(self.errors_total))
        yield errs


def _groups(claims: dict[str, Any], claim: str) -> frozenset[str]:
    value = claims.get(claim)
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        return frozenset()
    return frozenset(g[:255] for g in value[:MAX_GROUPS] if isinstance(g, str) and g)


class OidcUsers:
    """OIDC users as the Authenticator sees them (the same face as moorage.auth.groups.DirectoryUsers)."""

    def __init__(self, settings: OidcSettings, client: OidcClient, store: OidcStore, groups: GroupStore) -> None:
        self.settings = settings
        self.client = client
        self.store = store
        self.groups = groups
        self._locks: dict[int, asyncio.Lock] = {}

    async def _claims_groups(self, claims: dict[str, Any], tokens: dict[str, Any]) -> frozenset[str]:
        if self.settings.groups_claim in claims:
            return _groups(claims, self.settings.groups_claim)
        access = tokens.get("access_token")
        if isinstance(access, str):
            return _groups(await self.client.userinfo(access), self.settings.groups_claim)
        return frozenset()

    async def complete(self, code: str, pending: PendingLogin) -> UserRecord:
        """Finish a sign-in: exchange, verify, provision; the Moorage user."""
        tokens = await self.client.exchange(code, pending)
        claims = await self.client.verify_id_token(tokens["id_token"], nonce=pending.nonce)
        name = claims.get(self.settings.username_claim)
        if name is None and isinstance(tokens.get("access_token"), str):  # not in the ID token: userinfo
            name = (await self.client.userinfo(tokens["access_token"])).get(self.settings.username_claim)
        if not isinstance(name, str) or not valid_username(name):
            raise SignInRefused(
                f"the provider's {self.settings.username_claim!r} claim is not a valid Moorage user name "
                "(lower-case letters, digits, '.', '_', '-'; at most 64)"
            )
        groups = await self._claims_groups(claims, tokens)
        user = await self.groups.provision(name, OIDC)
        if user is None:
            raise SignInRefused(
                f"the name {name!r} belongs to a local (or directory) Moorage user; the OpenID account of the same "
                "name cannot sign in (an administrator must remove or rename that user first)"
            )
        old = await self.store.identity(user.id)
        if old is not None and old.subject != str(claims["sub"]):
            raise SignInRefused(f"the name {name!r} belongs to another account at the OpenID provider")
        refresh = tokens.get("refresh_token") if isinstance(tokens.get("refresh_token"), str) else None
        await self.store.save_identity(OidcIdentity(user.id, str(claims["sub"]), refresh, groups, time.time()))
        return user

    async def current_of(self, user: UserRecord) -> DirectoryEntry | None:
        """The user's groups, re-read from the provider once older than ``cache_ttl``; None
        when the provider no longer vouches for them."""
        ident = await self.store.identity(user.id)
        if ident is None:
            return None
        if time.time() - ident.checked_at < self.settings.cache_ttl:
            return DirectoryEntry(ident.subject, ident.groups)
        lock = self._locks.setdefault(user.id, asyncio.Lock())
        async with lock:  # one refresh at a time per user (a refresh token is single use)
            ident = await self.store.identity(user.id)
            if ident is None:
                return None
            if time.time() - ident.checked_at < self.settings.cache_ttl:
                return DirectoryEntry(ident.subject, ident.groups)
            if not ident.refresh_token:
                return None
            tokens = await self.client.refresh(ident.refresh_token)
            if tokens is None:
                # Refresh tokens are often single use: another replica may have just redeemed
                # this one.  Its answer (a new token, a fresh check) is then the answer.
                for _ in range(2):
                    other = await self.store.identity(user.id)
                    if other is not None and other.refresh_token and other.refresh_token != ident.refresh_token:
                        return DirectoryEntry(other.subject, other.groups)
                    await asyncio.sleep(1.0)
                await self.store.forget_refresh(user.id)
                return None
            claims: dict[str, Any] = {}
            if isinstance(tokens.get("id_token"), str):
                claims = await self.client.verify_id_token(tokens["id_token"], nonce=None)
                if str(claims.get("sub")) != ident.subject:
                    await self.store.forget_refresh(user.id)
                    return None
            groups = await self._claims_groups(claims, tokens)
            new_refresh = tokens.get("refresh_token") if isinstance(tokens.get("refresh_token"), str) else ident.refresh_token
            await self.store.save_identity(OidcIdentity(user.id, ident.subject, new_refresh, groups, time.time()))
            return DirectoryEntry(ident.subject, groups)

    async def live(self, user: UserRecord) -> DirectoryEntry:
        entry = await self.current_of(user)
        if entry is None:
            raise errors.Unauthorized(f"the OpenID provider no longer vouches for {user.name!r}; sign in again in the web UI")
        return entry

    async def current(self, name: str) -> DirectoryEntry | None:
        from ..metadata.auth_store import AuthStore

        user = await AuthStore(self.groups.db).get_user(name)
        if user is None or user.source != OIDC:
            return None
        return await self.current_of(user)

    def is_admin(self, entry: DirectoryEntry) -> bool:
        return bool(entry.groups & set(self.settings.admin_groups))

    async def grants(self, entry: DirectoryEntry) -> list[Grant]:
        return [Grant(g.pattern, parse_actions(g.actions)) for g in await self.groups.grants_of(entry.groups)]
