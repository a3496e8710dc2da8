"""The accounts service: users, robots, access tokens, grants (to users and to directory
groups), visibility and namespaces.

Every face -- ``/api/v1`` (:mod:`moorage.auth.admin_users`, :mod:`moorage.auth.admin_groups`),
the web UI (:mod:`moorage.ui.manage`, :mod:`moorage.ui.groups`), the CLI
(:mod:`moorage.auth.cli`, :mod:`moorage.auth.groups_cli`) -- calls these operations and
nothing else to change accounts.  Each operation takes the caller as a
:class:`~moorage.registry.principal.Principal` and does, in this order:

1. **authorize** -- administrators only, except that a signed-in user with full (unscoped)
   credentials creates and revokes their own access tokens; a refusal is audited ``denied``
   and raised as ``DENIED`` (403);
2. **validate** -- names, patterns, actions, scopes, lifetimes (the 4xx of the API);
   passwords are hashed here, before any transaction is open (bcrypt is slow);
3. **change** in one database transaction, and
4. **audit** -- the entry (:mod:`.audit`) on the same connection, so the change and its
   entry commit together.

Token minting is bounded by the minting token (docs/auth.md, "Tokens that make tokens"): a
call made with an access token may only create tokens that expire no later than that token,
a scoped token creates none, and the new token records its parent, so revoking a token
revokes every token made with it (:meth:`~moorage.metadata.auth_store.AuthStore.revoke_token`).
Password sessions (a password login, the CLI) mint without that bound.

Errors are the registry's (:mod:`moorage.errors`): the API renders them as they are,
the UI and the CLI turn them into a page or a one-line message.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from .. import errors
from ..config import Settings
from ..metadata.auth_store import AuthStore, AuthStoreError
from ..metadata.db import Database
from ..metadata.records import TokenRecord, UserRecord
from ..registry.access_rules import (
    MAX_GROUP_NAME,
    parse_actions,
    parse_token_scope,
    valid_group_name,
    valid_pattern,
    valid_username,
)
from ..registry.audit import AuditTrail, operation
from ..registry.names import is_valid_name
from ..registry.principal import Principal
from . import passwords
from .group_store import GroupStore

#: Longest access-token label, and longest lifetime accepted (a century).
MAX_TOKEN_NAME = 128
MAX_LIFETIME = 100 * 365 * 86400.0
#: Most scope items on one token.
MAX_SCOPE_ITEMS = 100
#: Longest password accepted (bcrypt reads 72 bytes; the rest only costs).
MAX_PASSWORD = 4096


def _bad(message: str) -> errors.RegistryError:
    return errors.Unsupported(message[:300], status=400)


def _check_pattern(pattern: str) -> None:
    """A grant's repository pattern (to a user or a group; added or revoked): the same rule
    everywhere, so no face stores a grant that the revoke then refuses."""
    if not valid_pattern(pattern):
        raise _bad(f"invalid repository pattern {pattern[:100]!r}")


def _grant_actions(pattern: str, actions: str | Iterable[str]) -> frozenset[str]:
    """The one validation of a new grant, to a user or to a group: a valid pattern and at
    least one known action (returned as the set stored)."""
    _check_pattern(pattern)
    try:
        acts = parse_actions(actions)
    except ValueError as exc:
        raise _bad(str(exc)) from None
    if not acts:
        raise _bad("name at least one of pull, push, delete, admin")
    return acts


def _short(text: str) -> str:
    return text[:100]


def _check_user(name: str) -> None:
    """Every operation that takes a user name checks it before any query: a name outside the
    grammar names no user, and one with NUL or a lone surrogate would make PostgreSQL (or the
    driver) refuse the statement -- a 500 instead of the client's 400."""
    if not name or not valid_username(name):
        raise errors.NameInvalid(
            "invalid user name (lower-case letters, digits, '.', '_', '-'; at most 64)", detail={"name": name[:100]}
        )


def _check_group(group: str) -> None:
    if not valid_group_name(group):
        raise _bad(f"invalid group name (1-{MAX_GROUP_NAME} printable characters, no surrounding spaces)")


def inactive_accounts_note(settings: Settings) -> str | None:
    """Why users, grants and access tokens change nothing under ``settings`` (None: they do).

    Only token mode reads them: with ``auth.mode: none`` anyone may do anything, with
    ``htpasswd`` the file decides.  A face (the CLI) shows this after a change, so an
    administrator who adds a user to an open registry learns that it is still open."""
    mode = settings.auth.mode
    if mode == "token":
        return None
    if mode == "none":
        return "auth.mode is none: users, grants and tokens have no effect until auth is on (auth.mode: token)"
    return f"auth.mode is {mode}: users, grants and tokens have no effect (the htpasswd file decides); they need auth.mode: token"


class AccountsService:
    """Account operations (see the module docstring); one per app, or per CLI command."""

    def __init__(self, db: Database, settings: Settings) -> None:
        self.db = db
        self.settings = settings
        self.store = AuthStore(db)
        self.groups = GroupStore(db)
        self.audit = AuditTrail(db, enabled=settings.events.enabled)

    # -- authorize --------------------------------------------------------------------------
    async def _require_full(self, p: Principal, action: str, target: str | None) -> None:
        """Own tokens: any signed-in user with full credentials (a scoped token manages none)."""
        if p.name is None:
            await self.audit.denied(p, action, target=target, reason="not signed in")
            raise errors.Denied("sign in to manage access tokens")
        if p.scoped:
            await self.audit.denied(p, action, target=target, reason="scoped access token")
            raise errors.Denied("a scoped access token cannot manage tokens")

    # -- users ------------------------------------------------------------------------------
    @operation("user.add")
    async def add_user(
        self, p: Principal, name: str, password: str | None, *, admin: bool = False, robot: bool = False
    ) -> tuple[UserRecord, str | None]:
        """A new user (or robot: no password unless one is given, logs in with tokens).
        Without a password a human user gets a generated one, returned once."""
        await self.audit.require_admin(p, "user.add", target=_short(name))
        _check_user(name)
        generated = None
        if password is None and not robot:
            password = generated = passwords.generate_password()
        if password is not None and (not password or len(password) > MAX_PASSWORD or "\x00" in password):
            raise _bad(f"a password is 1 to {MAX_PASSWORD} characters, without NUL")
        hashed = await passwords.hash_password_async(password, self.settings.auth.bcrypt_rounds) if password else None
        async with self.db.write() as conn:
            if not await self.store.create_user(name, hashed, admin=admin, robot=robot, conn=conn):
                raise _bad(f"user {name!r} exists already")
            user = await self.store.get_user(name, conn=conn)
            assert user is not None
            await self.audit.record(conn, self.audit.entry(p, "user.add", target=name, detail={"admin": admin, "robot": robot}))
        return user, generated

    @operation("user.delete")
    async def delete_user(self, p: Principal, name: str) -> None:
        """Delete a user with their grants and access tokens."""
        await self.audit.require_admin(p, "user.delete", target=_short(name))
        _check_user(name)
        async with self.db.write() as conn:
            if not await self.store.delete_user(name, conn=conn):
                raise errors.NotFound(f"no user {name[:100]!r}")
            await self.audit.record(conn, self.audit.entry(p, "user.delete", target=name))

    @operation("user.password")
    async def set_password(self, p: Principal, name: str, password: str | None) -> str | None:
        """Set ``name``'s password (``None``: generate one, returned once).  Refresh tokens and
        web sessions opened with the old one stop working."""
        await self.audit.require_admin(p, "user.password", target=_short(name))
        _check_user(name)
        generated = None
        if password is None:
            password = generated = passwords.generate_password()
        if not password or len(password) > MAX_PASSWORD or "\x00" in password:
            raise _bad(f"a password is 1 to {MAX_PASSWORD} characters, without NUL")
        if await self.store.get_user(name) is None:  # before bcrypt: no hashing for a typo
            raise errors.NotFound(f"no user {name[:100]!r}")
        hashed = await passwords.hash_password_async(password, self.settings.auth.bcrypt_rounds)
        async with self.db.write() as conn:
            if not await self.store.set_password(name, hashed, conn=conn):
                raise errors.NotFound(f"no user {name[:100]!r}")
            await self.audit.record(conn, self.audit.entry(p, "user.password", target=name))
        return generated

    # -- grants -----------------------------------------------------------------------------
    # A grant to a user and one to a directory group are the same rule with another holder:
    # administrators only (a namespace administrator grants nothing, inside their namespace or
    # out), one validation (:func:`_grant_actions`, :func:`_check_pattern`) and one audit entry
    # shape (:meth:`_audit_grant`); only the holder's check and its store differ.
    @operation("grant.add")
    async def add_grant(self, p: Principal, user: str, pattern: str, actions: str | Iterable[str]) -> frozenset[str]:
        """``user`` gets ``actions`` on every repository matching ``pattern`` (replacing an
        earlier grant on the same pattern)."""
        await self.audit.require_admin(p, "grant.add", target=_short(pattern))
        _check_user(user)
        acts = _grant_actions(pattern, actions)
        async with self.db.write() as conn:
            try:
                await self.store.grant(user, pattern, acts, conn=conn)
            except AuthStoreError as exc:
                raise errors.NotFound(str(exc)[:300]) from None
            await self._audit_grant(conn, p, "grant.add", pattern, {"user": user}, acts)
        return acts

    @operation("grant.revoke")
    async def revoke_grant(self, p: Principal, user: str, pattern: str) -> None:
        await self.audit.require_admin(p, "grant.revoke", target=_short(pattern))
        _check_user(user)
        _check_pattern(pattern)
        async with self.db.write() as conn:
            try:
                found = await self.store.revoke(user, pattern, conn=conn)
            except AuthStoreError as exc:
                raise errors.NotFound(str(exc)[:300]) from None
            if not found:
                raise errors.NotFound(f"{user[:64]} has no grant on {pattern[:100]!r}")
            await self._audit_grant(conn, p, "grant.revoke", pattern, {"user": user})

    # Who is in a group is the directory's (or the OpenID provider's) answer at sign-in
    # (moorage.auth.groups); these rows only say what a group's members get.
    @operation("group_grant.add")
    async def add_group_grant(self, p: Principal, group: str, pattern: str, actions: str | Iterable[str]) -> frozenset[str]:
        """Every member of directory group ``group`` gets ``actions`` on every repository
        matching ``pattern``, on top of their own grants (replacing an earlier grant of the
        group on the same pattern).  ``admin`` on ``NS/*`` makes them NS's administrators."""
        await self.audit.require_admin(p, "group_grant.add", target=_short(pattern))
        _check_group(group)
        acts = _grant_actions(pattern, actions)
        async with self.db.write() as conn:
            await self.groups.grant(group, pattern, acts, conn=conn)
            await self._audit_grant(conn, p, "group_grant.add", pattern, {"group": group}, acts)
        return acts

    @operation("group_grant.revoke")
    async def revoke_group_grant(self, p: Principal, group: str, pattern: str) -> None:
        await self.audit.require_admin(p, "group_grant.revoke", target=_short(pattern))
        _check_group(group)
        _check_pattern(pattern)
        async with self.db.write() as conn:
            if not await self.groups.revoke(group, pattern, conn=conn):
                raise errors.NotFound(f"group {group[:100]} has no grant on {pattern[:100]!r}")
            await self._audit_grant(conn, p, "group_grant.revoke", pattern, {"group": group})

    async def _audit_grant(
        self, conn: Any, p: Principal, action: str, pattern: str, holder: dict[str, str], acts: frozenset[str] | None = None
    ) -> None:
        """The audit entry of a grant change, in its transaction: the pattern as the target,
        the holder (``user`` or ``group``) and, for an add, the actions in the detail."""
        detail: dict[str, Any] = dict(holder)
        if acts is not None:
            detail["actions"] = sorted(acts)
        await self.audit.record(conn, self.audit.entry(p, action, target=pattern, detail=detail))

    # -- access tokens ----------------------------------------------------------------------
    @operation("token.create")
    async def create_token(
        self, p: Principal, user: str, name: str, scope: list[str] | None, expires_at: float | None
    ) -> tuple[TokenRecord, str]:
        """A new access token for ``user``: the record and its text (shown once).

        Administrators make tokens for anyone; everybody else for themselves, with full
        credentials.  A call made with an access token is bounded by it: the new token
        expires no later than it (and a scoped token makes none), and is revoked with it."""
        if user != p.name:
            await self.audit.require_admin(p, "token.create", target=_short(user))
        else:
            await self._require_full(p, "token.create", _short(user))
        _check_user(user)
        name = name or "token"
        if len(name) > MAX_TOKEN_NAME:
            raise _bad(f"a token name is at most {MAX_TOKEN_NAME} characters")
        if scope is not None:
            if len(scope) > MAX_SCOPE_ITEMS:
                raise _bad(f"at most {MAX_SCOPE_ITEMS} scope items")
            try:
                parse_token_scope(scope)
            except ValueError as exc:
                raise _bad(str(exc)) from None
        now = time.time()
        if expires_at is not None and not now < expires_at < now + MAX_LIFETIME:
            raise _bad("the expiry must lie in the future, within a century")
        token_id, text, secret_hash = passwords.new_token()
        async with self.db.write() as conn:
            parent = await self._minting_token(p, conn)
            if parent is not None:
                if parent.scope is not None:
                    raise errors.Denied("a scoped access token cannot manage tokens")
                if parent.expires_at is not None and (expires_at is None or expires_at > parent.expires_at):
                    raise _bad("an access token can only create tokens that expire no later than itself")
            try:
                rec = await self.store.create_token(
                    user,
                    name,
                    scope,
                    expires_at,
                    token_id=token_id,
                    secret_hash=secret_hash,
                    parent_id=parent.id if parent else None,
                    conn=conn,
                )
            except AuthStoreError as exc:
                raise errors.NotFound(str(exc)[:300]) from None
            detail: dict[str, Any] = {"user": user, "name": name, "scope": scope, "expires_at": expires_at}
            if parent is not None:
                detail["parent"] = parent.id
            await self.audit.record(conn, self.audit.entry(p, "token.create", target=rec.id, detail=detail))
        return rec, text

    async def _minting_token(self, p: Principal, conn: Any) -> TokenRecord | None:
        """The access token the call came with, read inside the transaction; 401-like
        refusal if it no longer stands (revoked or expired since the request was checked)."""
        if p.token_id is None:
            return None
        tok = await self.store.get_token(p.token_id, conn=conn, for_update=True)  # vs. a concurrent revoke
        if tok is None or not tok.usable():
            raise errors.Denied("the access token this request came with is revoked or expired")
        return tok

    @operation("token.revoke")
    async def revoke_token(self, p: Principal, token_id: str, *, own_only: bool = False) -> int:
        """Revoke a token and every token made with it; the number revoked.  Administrators
        revoke any token (unless ``own_only``: the "my tokens" faces), others their own."""
        if own_only or not p.admin:
            await self._require_full(p, "token.revoke", _short(token_id))
        async with self.db.write() as conn:
            tok = await self.store.get_token(token_id, conn=conn) if 0 < len(token_id) <= 64 else None
            if tok is None or ((own_only or not p.admin) and tok.user != p.name):
                raise errors.NotFound("no such (unrevoked) token")
            count = await self.store.revoke_token(tok.id, conn=conn)
            if not count:
                raise errors.NotFound("no such (unrevoked) token")
            await self.audit.record(
                conn,
                self.audit.entry(p, "token.revoke", target=tok.id, detail={"user": tok.user, "name": tok.name, "revoked": count}),
            )
        return count

    # -- visibility and namespaces ----------------------------------------------------------
    @operation("visibility.set")
    async def set_visibility(
        self, p: Principal, *, repository: str | None = None, namespace: str | None = None, public: bool
    ) -> None:
        """Make a repository, or every repository under a namespace, public (anonymous pull)
        or private again."""
        target = repository if repository is not None else namespace
        await self.audit.require_admin(p, "visibility.set", target=_short(target or ""))
        if target is None:
            raise _bad("give 'repository' or 'namespace'")
        if not is_valid_name(target):
            raise errors.NameInvalid("invalid repository name", detail={"name": target[:100]})
        async with self.db.write() as conn:
            if repository is not None:
                await self.store.set_repository_public(repository, public, conn=conn)
            else:
                await self.store.set_namespace_public(target, public, conn=conn)
            await self.audit.record(
                conn,
                self.audit.entry(
                    p,
                    "visibility.set",
                    target=target,
                    repository=repository,
                    detail={"kind": "repository" if repository is not None else "namespace", "public": public},
                ),
            )

    @operation("namespace.add")
    async def add_namespace(self, p: Principal, name: str, public: bool = False) -> None:
        await self.audit.require_admin(p, "namespace.add", target=_short(name))
        if not name or not is_valid_name(name):
            raise errors.NameInvalid("invalid namespace name", detail={"name": name[:100]})
        async with self.db.write() as conn:
            if not await self.store.create_namespace(name, public, conn=conn):
                raise _bad(f"namespace {name!r} exists already")
            await self.audit.record(conn, self.audit.entry(p, "namespace.add", target=name, detail={"public": public}))

    @operation("namespace.delete")
    async def delete_namespace(self, p: Principal, name: str) -> None:
        """Delete a namespace record (its repositories stay)."""
        await self.audit.require_admin(p, "namespace.delete", target=_short(name))
        async with self.db.write() as conn:
            if not await self.store.delete_namespace(name, conn=conn):
                raise errors.NotFound(f"no namespace {name[:100]!r}")
            await self.audit.record(conn, self.audit.entry(p, "namespace.delete", target=name))
