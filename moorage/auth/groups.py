"""Directory users and grants to groups: what the Authenticator asks when a user comes from
the directory (``auth.ldap``).

* Sign-in (password): always a fresh read of the directory (bind as the user, groups read
  again); the answer is cached for ``auth.ldap.cache_ttl`` seconds.
* Everything else a directory user does -- an access token used as a password, a refresh
  token, a registry token used on ``/v2/``, a UI session -- asks :meth:`DirectoryUsers.current`,
  which re-reads the directory (as the service account) once the cached answer is older than
  ``cache_ttl``.  A user removed from the directory is then refused; a user whose groups
  changed gets the rights of the new groups (registry tokens carry a fingerprint of the groups
  they were issued for, ``dgf``, and are refused once it no longer matches: the client fetches
  a new one).  So a removal takes effect at most ``cache_ttl`` seconds later, everywhere.
* A user's rights are their own grants plus every grant to a group they are in; members of an
  ``admin_groups`` group are administrators (recomputed at each read, never stored).
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass

from .. import errors
from ..accounts.group_store import GroupStore
from ..config import LdapSettings
from ..metadata.records import UserRecord
from ..registry.access_rules import Grant, parse_actions
from ..registry.access_rules import valid_group_name as valid_group_name  # (re-exported: its old home)
from .ldap import DirectoryEntry, LdapDirectory

#: Source tag of users provisioned from LDAP (``users.source``).
LDAP = "ldap"
#: Cached directory answers kept at most (least recently read dropped first).
MAX_CACHED = 10_000


class ClearRefusal(errors.Unauthorized):
    """A refusal whose message is safe and useful to show as it is (not a wrong password)."""


class NameConflict(ClearRefusal):
    """A directory account whose name belongs to a local user: refused, never merged."""


def fingerprint(entry: DirectoryEntry, admin: bool) -> str:
    """Short digest of what a directory answer grants (groups + admin), put in registry tokens."""
    text = "\n".join(sorted(entry.groups)) + ("\nADMIN" if admin else "")
    return hashlib.sha256(text.encode()).hexdigest()[:24]


@dataclass(slots=True)
class _Cached:
    entry: DirectoryEntry | None
    at: float


class DirectoryUsers:
    """The directory as the Authenticator sees it: sign-in, the current entry (cached), rights."""

    def __init__(self, settings: LdapSettings, directory: LdapDirectory, groups: GroupStore) -> None:
        self.settings = settings
        self.directory = directory
        self.groups = groups
        self._cache: dict[str, _Cached] = {}

    def _remember(self, name: str, entry: DirectoryEntry | None) -> None:
        if len(self._cache) >= MAX_CACHED:
            oldest = min(self._cache, key=lambda k: self._cache[k].at)
            del self._cache[oldest]
        self._cache[name] = _Cached(entry, time.monotonic())

    async def sign_in(self, name: str, password: str) -> DirectoryEntry | None:
        """A fresh bind as ``name`` (None: unknown or wrong password; 503 on an outage)."""
        entry = await self.directory.authenticate(name, password)
        if entry is not None:
            self._remember(name, entry)
        return entry

    async def current(self, name: str) -> DirectoryEntry | None:
        """``name``'s entry, read again once the cached one is older than ``cache_ttl``."""
        hit = self._cache.get(name)
        if hit is not None and time.monotonic() - hit.at < self.settings.cache_ttl:
            return hit.entry
        entry = await self.directory.lookup(name)
        self._remember(name, entry)
        return entry

    async def live(self, user: UserRecord) -> DirectoryEntry:
        """The entry of directory user ``user``; 401 if they are no longer in the directory."""
        entry = await self.current(user.name)
        if entry is None:
            raise errors.Unauthorized(f"{user.name!r} is no longer in the directory")
        return entry

    def is_admin(self, entry: DirectoryEntry) -> bool:
        return bool(entry.groups & set(self.settings.admin_groups))

    async def grants(self, entry: DirectoryEntry) -> list[Grant]:
        return [Grant(g.pattern, parse_actions(g.actions)) for g in await self.groups.grants_of(entry.groups)]

    async def provision(self, name: str) -> UserRecord:
        """The Moorage user of directory user ``name``, created at their first sign-in; a local
        user of that name is never taken over."""
        user = await self.groups.provision(name, LDAP)
        if user is None:
            raise NameConflict(
                f"the name {name!r} belongs to a local Moorage user; the directory account of the same name "
                "cannot sign in (an administrator must remove or rename the local user first)"
            )
        return user
