"""SQL for grants to directory groups and for directory users provisioned at first sign-in.

Only SQL (same conventions as :mod:`moorage.metadata.auth_store`); who is in which group is the
directory's answer (:mod:`moorage.auth.groups`), never stored here.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from sqlalchemy import delete, select

from ..metadata.auth_store import _user
from ..metadata.db import Database
from ..metadata.records import GrantRow, UserRecord
from ..metadata.tables import group_grants, users

#: Groups one principal is matched against at most (a directory answer is bounded too).
MAX_GROUPS = 1000


class GroupStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    # -- grants to groups -----------------------------------------------------------------

    async def grant(self, group: str, pattern: str, actions: Iterable[str], *, conn: Any = None) -> None:
        """Give ``group`` ``actions`` on ``pattern`` (replaces an earlier grant on the pattern)."""
        acts = ",".join(sorted(actions))
        async with self.db.write_in(conn) as conn:
            await conn.execute(
                self.db.insert(group_grants)
                .values(group_name=group, pattern=pattern, actions=acts, created_at=time.time())
                .on_conflict_do_update(index_elements=["group_name", "pattern"], set_={"actions": acts})
            )

    async def revoke(self, group: str, pattern: str, *, conn: Any = None) -> bool:
        async with self.db.write_in(conn) as conn:
            res = await conn.execute(
                delete(group_grants).where(group_grants.c.group_name == group, group_grants.c.pattern == pattern)
            )
            return bool(res.rowcount)

    async def list_grants(self, group: str | None = None) -> list[dict[str, Any]]:
        q = select(group_grants.c.group_name, group_grants.c.pattern, group_grants.c.actions).order_by(
            group_grants.c.group_name, group_grants.c.pattern
        )
        if group is not None:
            q = q.where(group_grants.c.group_name == group)
        async with self.db.read() as conn:
            return [{"group": r.group_name, "pattern": r.pattern, "actions": r.actions.split(",")} for r in await conn.execute(q)]

    async def grants_of(self, groups: Iterable[str]) -> list[GrantRow]:
        """Every grant to any of ``groups`` (the union is the policy's business)."""
        names = sorted(set(groups))[:MAX_GROUPS]
        if not names:
            return []
        async with self.db.read() as conn:
            rows = await conn.execute(
                select(group_grants.c.pattern, group_grants.c.actions).where(group_grants.c.group_name.in_(names))
            )
            return [GrantRow(r.pattern, r.actions) for r in rows]

    # -- directory users ------------------------------------------------------------------
    async def provision(self, name: str, source: str) -> UserRecord | None:
        """The user ``name`` of ``source`` (``"ldap"``), created on first sign-in; None when the
        name belongs to a local user (or another source): never merged."""
        now = time.time()
        async with self.db.write() as conn:
            await conn.execute(
                self.db.insert(users)
                .values(
                    name=name,
                    password_hash=None,
                    is_admin=False,
                    is_robot=False,
                    created_at=now,
                    password_changed_at=now,
                    source=source,
                )
                .on_conflict_do_nothing(index_elements=["name"])
            )
            row = (await conn.execute(select(users).where(users.c.name == name))).first()
        if row is None or row.source != source:
            return None
        return _user(row)
