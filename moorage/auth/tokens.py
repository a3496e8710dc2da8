"""Signed registry tokens (JWT, ES256) and the key that signs them.

The key is an EC P-256 key generated on first start.  It lives in the metadata database (so
every replica behind a load balancer signs and verifies with the same key) and is also written
to ``<data>/auth/token-signing-key.pem`` (mode 0600) for backups and for verifying tokens
elsewhere.  A PEM already in that file when the database has no key is adopted.  The header's
``kid`` is the key's RFC 7638 JWK thumbprint.

Access tokens carry the Docker token spec's claims (``iss``, ``sub``, ``aud`` = service,
``exp``/``nbf``/``iat``, ``jti``, ``access``) plus ``pat`` -- the id of the access token used
to log in, so a revoked access token stops its JWTs at once -- and ``uid``/``ucr``, the user's row id and creation time,
so a deleted user's JWTs stop at once too (the registry looks both up on every request).  Refresh tokens are JWTs with
``token_use: refresh`` and are never accepted by the registry.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import secrets
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from ..filemodes import private_dir, private_file
from ..metadata.auth_store import AuthStore

log = logging.getLogger("moorage.auth")

ALGORITHM = "ES256"
#: Clock skew tolerated between replicas.
LEEWAY = 10


class InvalidToken(Exception):
    pass


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def public_jwk(key: ec.EllipticCurvePrivateKey) -> dict[str, str]:
    nums = key.public_key().public_numbers()
    return {"crv": "P-256", "kty": "EC", "x": _b64(nums.x.to_bytes(32, "big")), "y": _b64(nums.y.to_bytes(32, "big"))}


def key_id(key: ec.EllipticCurvePrivateKey) -> str:
    """RFC 7638 thumbprint of the public key."""
    jwk = public_jwk(key)
    canon = json.dumps({k: jwk[k] for k in ("crv", "kty", "x", "y")}, separators=(",", ":"), sort_keys=True)
    return _b64(hashlib.sha256(canon.encode()).digest())


def generate_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def key_pem(key: ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()


def load_pem(pem: str) -> ec.EllipticCurvePrivateKey:
    key = serialization.load_pem_private_key(pem.encode(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError("the token signing key must be an EC P-256 key")
    return key


def rfc3339(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class TokenSigner:
    def __init__(
        self,
        store: AuthStore,
        *,
        issuer: str,
        service: str,
        key_path: Path,
        expiry: int = 300,
        refresh_expiry: int = 30 * 24 * 3600,
    ) -> None:
        self.store = store
        self.issuer = issuer
        self.service = service
        self.key_path = key_path
        self.expiry = expiry
        self.refresh_expiry = refresh_expiry
        self._keys: dict[str, ec.EllipticCurvePrivateKey] = {}
        self._active: str | None = None
        self._reloaded_at = 0.0
        #: Verified access tokens (raw JWT -> claims): a client sends the same token on every
        #: request of a push, and an ES256 check costs far more than a dict lookup.
        self._verified: dict[str, dict[str, Any]] = {}

    # -- keys -----------------------------------------------------------------------------
    async def load(self) -> None:
        """Load the shared key from the database, creating it (or adopting the file's) first."""
        rows = await self.store.signing_keys()
        if not rows:
            key = None
            if self.key_path.exists():
                try:
                    key = load_pem(self.key_path.read_text())
                except ValueError as exc:
                    log.warning("ignoring %s: %s", self.key_path, exc)
            if key is None:
                key = generate_key()
            await self.store.add_signing_key(key_id(key), ALGORITHM, key_pem(key))
            rows = await self.store.signing_keys()  # another replica may have won the race
        self._install(rows)
        self._write_file()

    def _install(self, rows: list[tuple[str, str, str]]) -> None:
        keys = {kid: load_pem(pem) for kid, alg, pem in rows if alg == ALGORITHM}
        if not keys:
            raise RuntimeError("no usable token signing key in the database")
        self._keys = keys
        self._active = next(kid for kid, alg, _ in rows if alg == ALGORITHM)

    def _write_file(self) -> None:
        assert self._active is not None
        pem = key_pem(self._keys[self._active])
        try:
            if not self.key_path.parent.exists():
                private_dir(self.key_path.parent)
            private_file(self.key_path)  # an existing copy: tightened (see moorage.filemodes)
            if self.key_path.exists() and self.key_path.read_text() == pem:
                return
            tmp = self.key_path.with_name(self.key_path.name + f".{os.getpid()}.tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(pem)
            os.replace(tmp, self.key_path)
        except OSError as exc:  # read-only data dir: the database copy is what matters
            log.warning("could not write %s: %s", self.key_path, exc)

    async def _reload(self) -> None:
        if time.monotonic() - self._reloaded_at < 5:
            return
        self._reloaded_at = time.monotonic()
        rows = await self.store.signing_keys()
        if rows:
            self._install(rows)

    def jwks(self) -> dict[str, Any]:
        return {"keys": [{**public_jwk(k), "kid": kid, "alg": ALGORITHM, "use": "sig"} for kid, k in self._keys.items()]}

    # -- tokens ---------------------------------------------------------------------------
    def issue(
        self,
        subject: str,
        access: list[dict[str, Any]],
        *,
        token_id: str | None = None,
        not_after: float | None = None,
        user_id: int | None = None,
        user_created_at: float | None = None,
        extra: dict[str, Any] | None = None,
    ) -> tuple[str, int, float]:
        """(JWT, expires_in, issued_at) for ``access``; never outlives ``not_after``.

        ``uid``/``ucr`` (the user's row id and creation time) let the registry refuse the token
        once that user is deleted, even if a new user of the same name is made (SQLite may
        reuse the row id; the creation time differs)."""
        assert self._active is not None, "TokenSigner.load() first"
        now = time.time()
        exp = now + self.expiry
        if not_after is not None:
            exp = min(exp, not_after)
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "sub": subject,
            "aud": self.service,
            "exp": int(exp),
            "nbf": int(now) - 1,
            "iat": int(now),
            "jti": secrets.token_hex(16),
            "access": access,
        }
        if token_id:
            claims["pat"] = token_id
        if user_id is not None:
            claims["uid"] = user_id
        if user_created_at is not None:
            claims["ucr"] = user_created_at
        for name, value in (extra or {}).items():  # e.g. "dgf" (moorage.auth.groups); never overrides
            claims.setdefault(name, value)
        token = jwt.encode(claims, self._keys[self._active], algorithm=ALGORITHM, headers={"kid": self._active})
        return token, max(0, int(exp - now)), now

    def issue_refresh(
        self, subject: str, *, password_changed_at: float | None, token_id: str | None, not_after: float | None = None
    ) -> str:
        assert self._active is not None
        now = time.time()
        exp = now + self.refresh_expiry
        if not_after is not None:
            exp = min(exp, not_after)
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "sub": subject,
            "aud": self.service,
            "token_use": "refresh",
            "exp": int(exp),
            "iat": int(now),
            "jti": secrets.token_hex(16),
        }
        if token_id:
            claims["pat"] = token_id
        elif password_changed_at is not None:
            claims["pwc"] = password_changed_at
        return jwt.encode(claims, self._keys[self._active], algorithm=ALGORITHM, headers={"kid": self._active})

    async def verify(self, token: str, *, refresh: bool = False) -> dict[str, Any]:
        """The claims of a valid token for this service; raises :class:`InvalidToken`."""
        if not refresh:
            hit = self._verified.get(token)
            if hit is not None and hit["exp"] + LEEWAY > time.time():
                return hit
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise InvalidToken(f"malformed token: {exc}") from None
        kid = header.get("kid")
        if header.get("alg") != ALGORITHM or not isinstance(kid, str):
            raise InvalidToken("unsupported token algorithm or missing kid")
        key = self._keys.get(kid)
        if key is None:
            await self._reload()
            key = self._keys.get(kid)
            if key is None:
                raise InvalidToken("token signed by an unknown key")
        try:
            claims = jwt.decode(
                token,
                key.public_key(),
                algorithms=[ALGORITHM],
                audience=self.service,
                issuer=self.issuer,
                leeway=LEEWAY,
                options={"require": ["exp", "iat", "aud", "iss", "sub"]},
            )
        except jwt.PyJWTError as exc:
            raise InvalidToken(str(exc)) from None
        if (claims.get("token_use") == "refresh") != refresh:
            raise InvalidToken("wrong kind of token")
        if not refresh:
            if not isinstance(claims.get("access", []), list):
                raise InvalidToken("malformed access claim")
            if len(self._verified) >= 4096:
                self._verified.clear()
            self._verified[token] = claims
        return claims
