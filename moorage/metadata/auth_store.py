"""SQL for users, namespaces, grants, access tokens, signing keys and login rate limits.

Only SQL: who may do what is decided in :mod:`moorage.auth` (the ``Authenticator`` and the
policy), which reads and writes through this store.  Same conventions as :mod:`moorage.metadata.store`: one short transaction per method, times
in epoch seconds, plain values out.  Used by the server, the CLI and the admin API alike, so
everything works while ``moorage serve`` runs (SQLite WAL, or a shared PostgreSQL).
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import AsyncIterator, Iterable
from typing import Any

from sqlalchemy import case, delete, func, literal, or_, select, union_all, update

from .db import Database
from .records import GrantRow, TokenRecord, UserRecord
from .tables import access_tokens, grants, login_failures, namespaces, oidc_identities, repositories, signing_keys, users


class AuthStoreError(ValueError):
    """Something the caller asked for cannot be done (unknown user, duplicate name ...)."""


def _user(row: Any) -> UserRecord:
    return UserRecord(
        int(row.id),
        row.name,
        row.password_hash,
        bool(row.is_admin),
        bool(row.is_robot),
        float(row.created_at),
        float(row.password_changed_at),
        row.source,
    )


def _namespace_prefixes(repository: str) -> list[str]:
    """``a/b/c`` -> [``a``, ``a/b``] (the same rule as :func:`moorage.registry.access_rules.namespace_prefixes`,
    which this layer may not import)."""
    parts = repository.split("/")
    return ["/".join(parts[:i]) for i in range(1, len(parts))]


_TOKEN_COLUMNS = (access_tokens, users.c.name.label("user_name"))


def _token(row: Any) -> TokenRecord:
    return TokenRecord(
        row.id,
        row.user_name,
        int(row.user_id),
        row.name,
        row.secret_hash,
        json.loads(row.scope) if row.scope else None,
        row.expires_at,
        row.revoked_at,
        row.last_used_at,
        float(row.created_at),
        row.parent_id,
    )


class AuthStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    @contextlib.asynccontextmanager
    async def _rx(self, conn: Any) -> AsyncIterator[Any]:
        """``conn`` or a read transaction of the method's own."""
        if conn is not None:
            yield conn
            return
        async with self.db.read() as own:
            yield own

    # -- users ----------------------------------------------------------------------------
    async def count_users(self, *, admins_only: bool = False) -> int:
        q = select(func.count()).select_from(users)
        if admins_only:
            q = q.where(users.c.is_admin.is_(True))
        async with self.db.read() as conn:
            return int((await conn.execute(q)).scalar_one())

    async def get_user(self, name: str, *, conn: Any = None) -> UserRecord | None:
        async with self._rx(conn) as conn:
            row = (await conn.execute(select(users).where(users.c.name == name))).first()
        return None if row is None else _user(row)

    async def list_users(self) -> list[UserRecord]:
        async with self.db.read() as conn:
            return [_user(r) for r in await conn.execute(select(users).order_by(users.c.name))]

    async def create_user(
        self,
        name: str,
        password_hash: str | None,
        *,
        admin: bool = False,
        robot: bool = False,
        if_no_admin: bool = False,
        conn: Any = None,
    ) -> bool:
        """Create a user; False if the name is taken (or, with ``if_no_admin``, if an admin
        exists already -- the first-start admin, race-free between replicas)."""
        now = time.time()
        async with self.db.write_in(conn) as conn:
            if (
                if_no_admin
                and (await conn.execute(select(users.c.id).where(users.c.is_admin.is_(True)).limit(1))).first() is not None
            ):
                return False
            res = await conn.execute(
                self.db.insert(users)
                .values(
                    name=name,
                    password_hash=password_hash,
                    is_admin=admin,
                    is_robot=robot,
                    created_at=now,
                    password_changed_at=now,
                )
                .on_conflict_do_nothing(index_elements=["name"])
            )
            return bool(res.rowcount)

    async def set_password(self, name: str, password_hash: str, *, conn: Any = None) -> bool:
        async with self.db.write_in(conn) as conn:
            res = await conn.execute(
                update(users).where(users.c.name == name).values(password_hash=password_hash, password_changed_at=time.time())
            )
            return bool(res.rowcount)

    async def set_admin(self, name: str, admin: bool) -> bool:
        async with self.db.write() as conn:
            res = await conn.execute(update(users).where(users.c.name == name).values(is_admin=admin))
            return bool(res.rowcount)

    async def delete_user(self, name: str, *, conn: Any = None) -> bool:
        async with self.db.write_in(conn) as conn:
            uid = (await conn.execute(select(users.c.id).where(users.c.name == name))).scalar()
            if uid is None:
                return False
            # explicit, in case the SQLite connection runs without foreign keys
            await conn.execute(delete(grants).where(grants.c.user_id == uid))
            await conn.execute(delete(access_tokens).where(access_tokens.c.user_id == uid))
            await conn.execute(delete(oidc_identities).where(oidc_identities.c.user_id == uid))
            await conn.execute(delete(users).where(users.c.id == uid))
            return True

    # -- grants ---------------------------------------------------------------------------
    async def grant(self, user: str, pattern: str, actions: Iterable[str], *, conn: Any = None) -> None:
        acts = ",".join(sorted(actions))
        async with self.db.write_in(conn) as conn:
            uid = (await conn.execute(select(users.c.id).where(users.c.name == user))).scalar()
            if uid is None:
                raise AuthStoreError(f"no user {user!r}")
            await conn.execute(
                self.db.insert(grants)
                .values(user_id=uid, pattern=pattern, actions=acts, created_at=time.time())
                .on_conflict_do_update(index_elements=["user_id", "pattern"], set_={"actions": acts})
            )

    async def revoke(self, user: str, pattern: str, *, conn: Any = None) -> bool:
        async with self.db.write_in(conn) as conn:
            uid = (await conn.execute(select(users.c.id).where(users.c.name == user))).scalar()
            if uid is None:
                raise AuthStoreError(f"no user {user!r}")
            res = await conn.execute(delete(grants).where(grants.c.user_id == uid, grants.c.pattern == pattern))
            return bool(res.rowcount)

    async def list_grants(self, user: str | None = None) -> list[dict[str, Any]]:
        q = (
            select(users.c.name, grants.c.pattern, grants.c.actions)
            .select_from(grants.join(users, users.c.id == grants.c.user_id))
            .order_by(users.c.name, grants.c.pattern)
        )
        if user is not None:
            q = q.where(users.c.name == user)
        async with self.db.read() as conn:
            return [{"user": r.name, "pattern": r.pattern, "actions": r.actions.split(",")} for r in await conn.execute(q)]

    # -- visibility -----------------------------------------------------------------------
    async def set_repository_public(self, name: str, public: bool, *, conn: Any = None) -> None:
        async with self.db.write_in(conn) as conn:
            await conn.execute(
                self.db.insert(repositories)
                .values(name=name, public=public, created_at=time.time())
                .on_conflict_do_update(index_elements=["name"], set_={"public": public})
            )

    async def set_namespace_public(self, name: str, public: bool, *, conn: Any = None) -> None:
        async with self.db.write_in(conn) as conn:
            await conn.execute(
                self.db.insert(namespaces)
                .values(name=name, public=public, created_at=time.time())
                .on_conflict_do_update(index_elements=["name"], set_={"public": public})
            )

    async def create_namespace(self, name: str, public: bool = False, *, conn: Any = None) -> bool:
        async with self.db.write_in(conn) as conn:
            res = await conn.execute(
                self.db.insert(namespaces)
                .values(name=name, public=public, created_at=time.time())
                .on_conflict_do_nothing(index_elements=["name"])
            )
            return bool(res.rowcount)

    async def delete_namespace(self, name: str, *, conn: Any = None) -> bool:
        async with self.db.write_in(conn) as conn:
            res = await conn.execute(delete(namespaces).where(namespaces.c.name == name))
            return bool(res.rowcount)

    async def list_namespaces(self) -> list[dict[str, Any]]:
        async with self.db.read() as conn:
            rows = await conn.execute(select(namespaces).order_by(namespaces.c.name))
            return [{"name": r.name, "public": bool(r.public), "created_at": r.created_at} for r in rows]

    async def list_repositories(self, n: int, last: str | None) -> list[dict[str, Any]]:
        name = self.db.lexical(repositories.c.name)
        q = select(repositories.c.name, repositories.c.public, repositories.c.created_at).order_by(name).limit(n)
        if last:
            q = q.where(name > last)
        async with self.db.read() as conn:
            return [{"name": r.name, "public": bool(r.public), "created_at": r.created_at} for r in await conn.execute(q)]

    async def public_namespaces(self, limit: int) -> list[str] | None:
        """The public namespaces (name order), or None if there are more than ``limit``."""
        async with self.db.read(snapshot=False) as conn:
            found = list(
                (
                    await conn.execute(
                        select(namespaces.c.name)
                        .where(namespaces.c.public.is_(True))
                        .order_by(namespaces.c.name)
                        .limit(limit + 1)
                    )
                ).scalars()
            )
        return None if len(found) > limit else found

    async def public_repositories(self, names: Iterable[str]) -> set[str]:
        """Which of ``names`` anyone may pull (the repository or one of its namespaces is public)."""
        names = list(dict.fromkeys(names))
        if not names:
            return set()
        prefixes = sorted({p for n in names for p in _namespace_prefixes(n)})
        # One statement (one round trip, no transaction): the public repositories among
        # ``names`` and the public namespaces among their prefixes, told apart by ``kind``.
        stmt: Any = select(repositories.c.name, literal(True).label("repo")).where(
            repositories.c.name.in_(names), repositories.c.public.is_(True)
        )
        if prefixes:
            ns = select(namespaces.c.name, literal(False).label("repo")).where(
                namespaces.c.name.in_(prefixes), namespaces.c.public.is_(True)
            )
            stmt = union_all(stmt, ns)
        async with self.db.read(snapshot=False) as conn:
            rows = (await conn.execute(stmt)).all()
        public_repos = {r[0] for r in rows if r[1]}
        public_ns = {r[0] for r in rows if not r[1]}
        return {n for n in names if n in public_repos or any(p in public_ns for p in _namespace_prefixes(n))}

    # -- principals -----------------------------------------------------------------------
    async def grants_of(self, user_id: int) -> list[GrantRow]:
        """A user's grants (the auth layer turns them into a ``Principal``)."""
        async with self.db.read() as conn:
            rows = await conn.execute(select(grants.c.pattern, grants.c.actions).where(grants.c.user_id == user_id))
            return [GrantRow(r.pattern, r.actions) for r in rows]

    # -- access tokens --------------------------------------------------------------------
    async def create_token(
        self,
        user: str,
        name: str,
        scope: list[str] | None,
        expires_at: float | None,
        *,
        token_id: str,
        secret_hash: str,
        parent_id: str | None = None,
        conn: Any = None,
    ) -> TokenRecord:
        """Store a new access token (id and secret hash made by the caller,
        :func:`moorage.auth.accounts.create_access_token`); ``parent_id``: the token it was
        made with, whose revocation revokes it."""
        now = time.time()
        async with self.db.write_in(conn) as conn:
            uid = (await conn.execute(select(users.c.id).where(users.c.name == user))).scalar()
            if uid is None:
                raise AuthStoreError(f"no user {user!r}")
            await conn.execute(
                access_tokens.insert().values(
                    id=token_id,
                    user_id=uid,
                    name=name,
                    secret_hash=secret_hash,
                    scope=json.dumps(scope) if scope is not None else None,
                    expires_at=expires_at,
                    created_at=now,
                    parent_id=parent_id,
                )
            )
        return TokenRecord(token_id, user, int(uid), name, secret_hash, scope, expires_at, None, None, now, parent_id)

    async def get_token(self, token_id: str, *, conn: Any = None, for_update: bool = False) -> TokenRecord | None:
        """A token by id.  ``for_update`` (inside the caller's write transaction): lock its row
        until that commits -- a token minted with it and a revocation of it cannot interleave on
        PostgreSQL (SQLite serialises write transactions anyway)."""
        q = (
            select(*_TOKEN_COLUMNS)
            .select_from(access_tokens.join(users, users.c.id == access_tokens.c.user_id))
            .where(access_tokens.c.id == token_id)
        )
        if for_update:
            q = q.with_for_update(of=access_tokens)
        async with self._rx(conn) as conn:
            row = (await conn.execute(q)).first()
        return None if row is None else _token(row)

    async def list_tokens(self, user: str | None = None) -> list[TokenRecord]:
        q = (
            select(*_TOKEN_COLUMNS)
            .select_from(access_tokens.join(users, users.c.id == access_tokens.c.user_id))
            .order_by(access_tokens.c.created_at)
        )
        if user is not None:
            q = q.where(users.c.name == user)
        async with self.db.read() as conn:
            return [_token(r) for r in await conn.execute(q)]

    async def revoke_token(self, token_id: str, *, conn: Any = None) -> int:
        """Revoke an unrevoked token and every token made with it, with theirs, and so on
        (one transaction).  The number revoked: 0 if ``token_id`` is unknown or revoked already."""
        now = time.time()
        async with self.db.write_in(conn) as conn:
            res = await conn.execute(
                update(access_tokens)
                .where(access_tokens.c.id == token_id, access_tokens.c.revoked_at.is_(None))
                .values(revoked_at=now)
            )
            if not res.rowcount:
                return 0
            count = 1
            frontier, seen = [token_id], {token_id}
            while frontier:  # breadth first; ``seen`` guards against a (corrupt) cycle
                children = [
                    c
                    for c in (
                        await conn.execute(select(access_tokens.c.id).where(access_tokens.c.parent_id.in_(frontier[:500])))
                    ).scalars()
                    if c not in seen
                ]
                frontier = frontier[500:] + children
                seen.update(children)
                if children:
                    res = await conn.execute(
                        update(access_tokens)
                        .where(access_tokens.c.id.in_(children), access_tokens.c.revoked_at.is_(None))
                        .values(revoked_at=now)
                    )
                    count += int(res.rowcount or 0)
            return count

    async def touch_token(self, token_id: str) -> None:
        async with self.db.write() as conn:
            await conn.execute(update(access_tokens).where(access_tokens.c.id == token_id).values(last_used_at=time.time()))

    async def credentials_live(self, subject: str, user_id: int | None, created_at: float | None, token_id: str | None) -> bool:
        """Does the user an access token (JWT) was issued to still exist -- the same user, not a
        new one of that name -- and, for a JWT got with a personal access token, is that token
        neither revoked nor expired?  One indexed read, so deleting a user or revoking a token
        stops its JWTs at once, on every replica."""
        now = time.time()
        q = select(users.c.id).where(users.c.name == subject)
        if user_id is not None:
            q = q.where(users.c.id == user_id)
        if created_at is not None:
            q = q.where(users.c.created_at == created_at)
        if token_id is not None:
            q = q.join(access_tokens, access_tokens.c.user_id == users.c.id).where(
                access_tokens.c.id == token_id,
                access_tokens.c.revoked_at.is_(None),
                or_(access_tokens.c.expires_at.is_(None), access_tokens.c.expires_at > now),
            )
        async with self.db.read(snapshot=False) as conn:
            return (await conn.execute(q.limit(1))).first() is not None

    # -- signing keys ---------------------------------------------------------------------
    async def signing_keys(self) -> list[tuple[str, str, str]]:
        """(kid, algorithm, private PEM), oldest first: the first is the one that signs."""
        async with self.db.read() as conn:
            rows = await conn.execute(select(signing_keys).order_by(signing_keys.c.created_at, signing_keys.c.kid))
            return [(r.kid, r.algorithm, r.private_pem) for r in rows]

    async def add_signing_key(self, kid: str, algorithm: str, pem: str, created_at: float | None = None) -> None:
        async with self.db.write() as conn:
            await conn.execute(
                self.db.insert(signing_keys)
                .values(kid=kid, algorithm=algorithm, private_pem=pem, created_at=created_at or time.time())
                .on_conflict_do_nothing(index_elements=["kid"])
            )

    # -- failed logins --------------------------------------------------------------------
    async def claim_attempt(self, key: str, window: float) -> tuple[int, float]:
        """Count one login attempt for ``key`` *before* its password is checked, and return
        (attempts in the current window including this one, seconds left in the window).

        One statement (an upsert that restarts an expired window), so checking the budget and
        spending it are atomic: N parallel guesses see N distinct counts, on one worker or many
        replicas.  A successful login then clears the key (:meth:`clear_failures`).
        """
        now = time.time()
        lf = login_failures
        expired = lf.c.window_start + window <= now
        stmt = (
            self.db.insert(lf)
            .values(key=key, window_start=now, count=1)
            .on_conflict_do_update(
                index_elements=["key"],
                set_={
                    "count": case((expired, 1), else_=lf.c.count + 1),
                    "window_start": case((expired, now), else_=lf.c.window_start),
                },
            )
            .returning(lf.c.count, lf.c.window_start)
        )
        async with self.db.write() as conn:
            count, window_start = (await conn.execute(stmt)).one()  # (Row.count is tuple.count)
        return int(count), float(window_start) + window - now

    async def clear_failures(self, key: str) -> None:
        async with self.db.write() as conn:
            await conn.execute(delete(login_failures).where(login_failures.c.key == key))
