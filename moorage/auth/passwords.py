"""Password hashing, access-token secrets and htpasswd files.

* Passwords: bcrypt (cost from ``auth.bcrypt_rounds``), verified in a worker thread so a
  login never stalls the event loop.  bcrypt only looks at the first 72 bytes; longer
  passwords are pre-hashed (sha256, base64) so that no two long passwords collide.
* Access tokens: ``moor_<id>_<secret>``: the id finds the row, the secret (32 random bytes)
  is stored as sha256 -- enough for a high-entropy secret -- and compared in constant time.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

import bcrypt

TOKEN_PREFIX = "moor_"
#: Syntactically valid bcrypt hashes of a random password, per cost: verified against when
#: the user does not exist, so that "no such user" and "wrong password" take the same time.
_DUMMY_HASHES: dict[int, bytes] = {}


def _dummy_hash(rounds: int) -> bytes:
    h = _DUMMY_HASHES.get(rounds)
    if h is None:
        h = _DUMMY_HASHES[rounds] = bcrypt.hashpw(secrets.token_bytes(16), bcrypt.gensalt(rounds))
    return h


def _prepare(password: str) -> bytes:
    raw = password.encode()
    if len(raw) > 72:
        raw = base64.b64encode(hashlib.sha256(raw).digest())
    return raw


def hash_password(password: str, rounds: int = 12) -> str:
    return bcrypt.hashpw(_prepare(password), bcrypt.gensalt(rounds)).decode()


def check_password(password: str, hashed: str | None, rounds: int = 10) -> bool:
    """Constant-time check (bcrypt compares in constant time); a ``None`` hash never matches
    but still costs a bcrypt check of the same cost (``rounds``) as a real one."""
    if not hashed:
        bcrypt.checkpw(b"x", _dummy_hash(rounds))
        return False
    try:
        return bcrypt.checkpw(_prepare(password), hashed.encode())
    except ValueError:  # not a bcrypt hash
        return False


async def check_password_async(password: str, hashed: str | None, rounds: int = 10) -> bool:
    return await asyncio.to_thread(check_password, password, hashed, rounds)


def generate_password() -> str:
    return secrets.token_urlsafe(18)


# -- access tokens ----------------------------------------------------------------------------
def new_token() -> tuple[str, str, str]:
    """(token id, the full token shown once, the hash to store)."""
    token_id = secrets.token_hex(8)
    secret = secrets.token_urlsafe(32)
    return token_id, f"{TOKEN_PREFIX}{token_id}_{secret}", hash_secret(secret)


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def split_token(text: str) -> tuple[str, str] | None:
    """``moor_<id>_<secret>`` -> (id, secret); anything else -> None."""
    if not text.startswith(TOKEN_PREFIX):
        return None
    rest = text[len(TOKEN_PREFIX):]
    token_id, sep, secret = rest.partition("_")
    if not sep or len(token_id) != 16 or not secret:
        return None
    return token_id, secret


def secret_matches(secret: str, stored_hash: str) -> bool:
    return hmac.compare_digest(hash_secret(secret).encode(), stored_hash.encode())


# -- htpasswd ---------------------------------------------------------------------------------
@dataclass
class Htpasswd:
    """An htpasswd file of bcrypt entries (``user:$2y$...``), re-read when it changes."""

    path: Path
    _mtime: float = -1.0
    _entries: dict[str, str] | None = None

    def entries(self) -> dict[str, str]:
        try:
            mtime = os.stat(self.path).st_mtime
        except OSError:
            return {}
        if self._entries is None or mtime != self._mtime:
            entries: dict[str, str] = {}
            for line in self.path.read_text(encoding="utf-8", errors="replace").splitlines():
                line = line.strip()
                if not line or line.startswith("#") or ":" not in line:
                    continue
                user, hashed = line.split(":", 1)
                if hashed.startswith(("$2y$", "$2a$", "$2b$")):
                    entries[user] = hashed
            self._entries, self._mtime = entries, mtime
        return self._entries

    def verify(self, user: str, password: str) -> bool:
        hashed = self.entries().get(user)
        if hashed and hashed.startswith("$2y$"):
            hashed = "$2b$" + hashed[4:]
        return check_password(password, hashed)
