"""Record types the metadata stores hand to the layers above them: plain dataclasses, no SQL,
no behaviour beyond what the values themselves say (is a token still usable, its public form).

One module for every store's records, in sections per extension, so a caller sees in one place
what comes out of the database.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

# -- auth: users, access tokens, grants (moorage.metadata.auth_store) --------------------------------


@dataclass(slots=True)
class UserRecord:
    id: int
    name: str
    password_hash: str | None
    is_admin: bool
    is_robot: bool
    created_at: float
    password_changed_at: float

    def public_dict(self) -> dict[str, Any]:
        return {"name": self.name, "admin": self.is_admin, "robot": self.is_robot, "created_at": self.created_at}


@dataclass(slots=True)
class TokenRecord:
    """A personal access token or robot token (the secret itself is never stored)."""

    id: str
    user: str
    user_id: int
    name: str
    secret_hash: str
    scope: list[str] | None
    expires_at: float | None
    revoked_at: float | None
    last_used_at: float | None
    created_at: float

    def usable(self, now: float | None = None) -> bool:
        now = time.time() if now is None else now
        return self.revoked_at is None and (self.expires_at is None or self.expires_at > now)

    def public_dict(self) -> dict[str, Any]:
        return {
            "id": self.id, "user": self.user, "name": self.name, "scope": self.scope,
            "expires_at": self.expires_at, "revoked_at": self.revoked_at,
            "last_used_at": self.last_used_at, "created_at": self.created_at,
        }


@dataclass(frozen=True, slots=True)
class GrantRow:
    """One row of a user's grants: a repository pattern and its comma-separated actions."""

    pattern: str
    actions: str


# -- end of auth ------------------------------------------------------------------------------------
