"""Namespace policies as administrative operations: quotas, retention, immutable tags.

The web UI's namespaces page sets them through :class:`PolicyAdminService` (the same order as
the accounts service: authorize -> validate -> change and audit entry in one transaction), so a
quota set in the UI is audited ``quota.set`` with face ``ui``, as the CLI's ``moorage quota set``
is (face ``cli``).  The rules themselves -- what a quota counts, how retention picks tags, how an
immutable tag is enforced -- stay in :mod:`moorage.gc`; this module only changes their tables.

The ``moorage retention|immutable|quota set|rm`` commands (:mod:`moorage.gc.cli`) call the same
methods, as the operator (face ``cli``).
"""

from __future__ import annotations

from .. import errors
from ..config import Settings
from ..metadata.db import Database
from ..metadata.policy_store import PolicyStore
from ..metadata.records import RetentionPolicy
from ..registry.audit import AuditTrail, operation
from ..registry.names import is_valid_name
from ..registry.principal import Principal
from .patterns import compile_regex, parse_size
from .quotas import book

#: Longest tag regular expression accepted (``re`` compiles it; the UI form caps it too).
MAX_REGEX = 255


def _bad(message: str) -> errors.RegistryError:
    return errors.Unsupported(message[:300], status=400)


def _namespace(raw: str) -> str:
    ns = raw.strip("/")
    if not ns or not is_valid_name(ns):
        raise _bad(f"invalid namespace {ns[:100]!r}")
    return ns


def _regex(raw: str) -> str:
    if not raw or len(raw) > MAX_REGEX:
        raise _bad(f"give a regular expression of 1 to {MAX_REGEX} characters")
    try:
        compile_regex(raw)
    except ValueError as exc:
        raise _bad(str(exc)) from None
    return raw


class PolicyAdminService:
    def __init__(self, db: Database, settings: Settings) -> None:
        self.db = db
        self.store = PolicyStore(db)
        self.audit = AuditTrail(db, enabled=settings.events.enabled)

    @operation("quota.set")
    async def set_quota(self, p: Principal, namespace: str, size: str | int) -> int:
        """The storage quota of ``namespace`` (``10G``, ``500M``, bytes); the limit in bytes."""
        await self.audit.require_admin(p, "quota.set", target=namespace[:100])
        ns = _namespace(namespace)
        try:
            limit = size if isinstance(size, int) else parse_size(size)
        except ValueError as exc:
            raise _bad(str(exc)) from None
        if limit < 0:
            raise _bad("a quota is >= 0 bytes")
        async with self.db.write() as conn:
            await self.store.set_quota(ns, limit, conn=conn)
            await self.audit.record(conn, self.audit.entry(p, "quota.set", target=ns, detail={"limit": limit}))
        book(self.db).invalidate()
        return limit

    @operation("quota.delete")
    async def remove_quota(self, p: Principal, namespace: str) -> None:
        await self.audit.require_admin(p, "quota.delete", target=namespace[:100])
        ns = namespace.strip("/")
        async with self.db.write() as conn:
            if not await self.store.remove_quota(ns, conn=conn):
                raise errors.NotFound(f"no quota for {ns[:100]!r}")
            await self.audit.record(conn, self.audit.entry(p, "quota.delete", target=ns))
        book(self.db).invalidate()

    @operation("retention.set")
    async def set_retention(self, p: Principal, policy: RetentionPolicy) -> None:
        await self.audit.require_admin(p, "retention.set", target=policy.pattern[:100])
        if policy.keep_last is None and policy.keep_regex is None and policy.expire_days is None:
            raise _bad("a retention policy needs at least one of keep last, keep regex, expire days")
        if (policy.keep_last is not None and policy.keep_last < 0) or (policy.expire_days is not None and policy.expire_days < 0):
            raise _bad("keep last and expire days are >= 0")
        if policy.keep_regex is not None:
            _regex(policy.keep_regex)
        async with self.db.write() as conn:
            await self.store.set_retention(policy, conn=conn)
            detail = {"keep_last": policy.keep_last, "keep_regex": policy.keep_regex, "expire_days": policy.expire_days}
            await self.audit.record(conn, self.audit.entry(p, "retention.set", target=policy.pattern, detail=detail))

    @operation("retention.delete")
    async def remove_retention(self, p: Principal, pattern: str) -> None:
        await self.audit.require_admin(p, "retention.delete", target=pattern[:100])
        async with self.db.write() as conn:
            if not await self.store.remove_retention(pattern, conn=conn):
                raise errors.NotFound(f"no retention policy for {pattern[:100]!r}")
            await self.audit.record(conn, self.audit.entry(p, "retention.delete", target=pattern))

    @operation("immutable.set")
    async def set_immutable(self, p: Principal, pattern: str, tag_regex: str) -> None:
        await self.audit.require_admin(p, "immutable.set", target=pattern[:100])
        _regex(tag_regex)
        async with self.db.write() as conn:
            await self.store.add_immutable(pattern, tag_regex, conn=conn)
            await self.audit.record(conn, self.audit.entry(p, "immutable.set", target=pattern, detail={"tag_regex": tag_regex}))

    @operation("immutable.delete")
    async def remove_immutable(self, p: Principal, pattern: str, tag_regex: str | None) -> int:
        await self.audit.require_admin(p, "immutable.delete", target=pattern[:100])
        async with self.db.write() as conn:
            removed = await self.store.remove_immutable(pattern, tag_regex, conn=conn)
            if not removed:
                raise errors.NotFound(f"no immutable-tag rule for {pattern[:100]!r}")
            await self.audit.record(
                conn, self.audit.entry(p, "immutable.delete", target=pattern, detail={"tag_regex": tag_regex, "removed": removed})
            )
        return removed
