"""Password hashing, access-token secrets and htpasswd files.

* Passwords: bcrypt (cost from ``auth.bcrypt_rounds``), hashed and verified on a small thread
  pool of its own (:func:`run_hashing`): never on the event loop, and never on the default
  executor, where slow blob readers or file I/O would make logins wait behind them (and a
  flood of logins would starve those in turn).  bcrypt only looks at the first 72 bytes; longer
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
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TypeVar

import bcrypt

from .. import errors

T = TypeVar("T")

#: Threads hashing passwords per process: bcrypt releases the GIL, so up to one per core is
#: useful; more would only let a flood of logins take every core from the registry.
HASH_THREADS = max(1, min(4, (os.cpu_count() or 1)))
#: Hash jobs waiting for a thread (per process) before new logins are refused with 503:
#: the queue must not grow without bound under a flood of guesses at many user names.
HASH_QUEUE_MAX = 256
_pool: ThreadPoolExecutor | None = None
_pool_pid = 0
_pending = 0


class HashingBusy(errors.Unavailable):
    """Too many password checks are waiting: 503, try again."""

    message = "too many logins in progress; try again"


def _executor() -> ThreadPoolExecutor:
    """The process's hashing pool, made on first use (after any fork: threads don't survive one)."""
    global _pool, _pool_pid
    if _pool is None or _pool_pid != os.getpid():
        _pool = ThreadPoolExecutor(max_workers=HASH_THREADS, thread_name_prefix="moorage-bcrypt")
        _pool_pid = os.getpid()
    return _pool


async def run_hashing(fn: Callable[..., T], *args: object) -> T:
    """Run CPU-heavy ``fn(*args)`` (bcrypt) on the hashing pool; raises :class:`HashingBusy`
    when :data:`HASH_QUEUE_MAX` jobs are already waiting."""
    global _pending
    if _pending >= HASH_QUEUE_MAX:
        raise HashingBusy(headers={"Retry-After": "1"})
    _pending += 1
    try:
        return await asyncio.get_running_loop().run_in_executor(_executor(), partial(fn, *args))
    finally:
        _pending -= 1


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
    return await run_hashing(check_password, password, hashed, rounds)


async def hash_password_async(password: str, rounds: int = 12) -> str:
    return await run_hashing(hash_password, password, rounds)


def bcrypt_cost(hashed: str) -> int | None:
    """The cost field of ``$2y$05$...``; None if it is not a bcrypt hash."""
    parts = hashed.split("$")
    if len(parts) >= 4 and parts[1] in ("2a", "2b", "2y") and parts[2].isascii() and parts[2].isdigit():
        cost = int(parts[2])
        return cost if 4 <= cost <= 31 else None
    return None


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
    rest = text[len(TOKEN_PREFIX) :]
    token_id, sep, secret = rest.partition("_")
    if not sep or len(token_id) != 16 or not secret:
        return None
    return token_id, secret


def secret_matches(secret: str, stored_hash: str) -> bool:
    return hmac.compare_digest(hash_secret(secret).encode(), stored_hash.encode())


# -- htpasswd ---------------------------------------------------------------------------------
@dataclass
class Htpasswd:
    """An htpasswd file of bcrypt entries (``user:$2y$...``), re-read when it changes.

    A name that is not in the file is checked against a dummy hash of the file's most common
    cost (``htpasswd -B`` uses 5, Moorage's own hashes 10+): with a fixed cost, "no such
    user" answered in 74 ms and "wrong password" in 7 ms, which told names apart.
    """

    path: Path
    _mtime: float = -1.0
    _entries: dict[str, str] | None = None
    #: Cost of the dummy check for unknown names (most common cost in the file).
    dummy_rounds: int = 10

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
            costs = Counter(c for h in entries.values() if (c := bcrypt_cost(h)) is not None)
            self.dummy_rounds = costs.most_common(1)[0][0] if costs else 10
            self._entries, self._mtime = entries, mtime
        return self._entries

    def verify(self, user: str, password: str) -> bool:
        hashed = self.entries().get(user)
        if hashed and hashed.startswith("$2y$"):
            hashed = "$2b$" + hashed[4:]
        return check_password(password, hashed, self.dummy_rounds)
