"""SQL for OpenID Connect sign-ins: authorization requests under way (single use) and the
identities of OIDC users (subject, the provider's refresh token, the groups last read).

Only SQL (conventions of :mod:`moorage.metadata.auth_store`); the protocol is
:mod:`moorage.auth.oidc`'s.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

from sqlalchemy import delete, select, update

from ..metadata.db import Database
from ..metadata.tables import oidc_identities, oidc_logins


@dataclass(frozen=True, slots=True)
class PendingLogin:
    nonce: str
    code_verifier: str
    next_url: str
    redirect_uri: str
    created_at: float


@dataclass(frozen=True, slots=True)
class OidcIdentity:
    user_id: int
    subject: str
    refresh_token: str | None
    groups: frozenset[str]
    checked_at: float


class OidcStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def add_login(self, state_hash: str, login: PendingLogin, *, max_age: float) -> None:
        """Remember an authorization request (and forget those older than ``max_age``)."""
        async with self.db.write() as conn:
            await conn.execute(delete(oidc_logins).where(oidc_logins.c.created_at < time.time() - max_age))
            await conn.execute(
                oidc_logins.insert().values(
                    state_hash=state_hash,
                    nonce=login.nonce,
                    code_verifier=login.code_verifier,
                    next_url=login.next_url,
                    redirect_uri=login.redirect_uri,
                    created_at=login.created_at,
                )
            )

    async def take_login(self, state_hash: str) -> PendingLogin | None:
        """The authorization request of ``state_hash``, deleted in the same transaction: a
        state is good for one callback only (a replay finds nothing)."""
        async with self.db.write() as conn:
            row = (await conn.execute(select(oidc_logins).where(oidc_logins.c.state_hash == state_hash))).first()
            if row is None:
                return None
            res = await conn.execute(delete(oidc_logins).where(oidc_logins.c.state_hash == state_hash))
            if not res.rowcount:
                return None
        return PendingLogin(row.nonce, row.code_verifier, row.next_url, row.redirect_uri, float(row.created_at))

    async def identity(self, user_id: int) -> OidcIdentity | None:
        async with self.db.read() as conn:
            row = (await conn.execute(select(oidc_identities).where(oidc_identities.c.user_id == user_id))).first()
        if row is None:
            return None
        return OidcIdentity(
            int(row.user_id), row.subject, row.refresh_token, frozenset(json.loads(row.groups)), float(row.checked_at)
        )

    async def save_identity(self, ident: OidcIdentity) -> None:
        values = {
            "subject": ident.subject,
            "refresh_token": ident.refresh_token,
            "groups": json.dumps(sorted(ident.groups)),
            "checked_at": ident.checked_at,
        }
        async with self.db.write() as conn:
            await conn.execute(
                self.db.insert(oidc_identities)
                .values(user_id=ident.user_id, **values)
                .on_conflict_do_update(index_elements=["user_id"], set_=values)
            )

    async def forget_refresh(self, user_id: int) -> None:
        """The provider refused the refresh token: the user is gone there (or revoked us)."""
        async with self.db.write() as conn:
            await conn.execute(update(oidc_identities).where(oidc_identities.c.user_id == user_id).values(refresh_token=None))
