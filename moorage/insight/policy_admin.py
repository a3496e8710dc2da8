"""The vulnerability pull policy's settings as administrative operations.

A namespace's pull policy (refuse images with findings at or above a severity) and its
allow-list (advisories accepted anyway, until an expiry) are changed through
:class:`PullPolicyAdmin` by every face -- ``/api/v1/insight/policies|allowlist``,
``moorage vuln-policy`` and ``moorage vuln-allow`` -- in the order of every service operation:
authorize (administrators) -> validate -> change and audit entry in one transaction.  Before,
the API and the CLI wrote through the store, the API's changes were audited by route name
after the fact and the CLI's not at all.

The rule itself -- which pulls are refused -- stays in :class:`~moorage.insight.service.InsightService`
(``policy_for``, the registry's ``serve_guard``).
"""

from __future__ import annotations

import math
import time

from .. import errors
from ..registry.audit import AuditTrail, operation
from ..registry.names import is_valid_name
from ..registry.principal import Principal
from .osv import SEVERITIES
from .packages import clean_text
from .service import InsightService

#: Longest advisory id accepted (OSV ids are short; the column is bounded).
MAX_ADVISORY = 255
#: Longest reason kept with an allow-list entry.
MAX_REASON = 1000
#: Longest allow-list expiry, in days (100 years).
MAX_DAYS = 36500
#: Severities a policy can block at (``NONE`` blocks nothing: remove the policy instead).
BLOCKABLE = SEVERITIES[1:]


def _bad(message: str) -> errors.RegistryError:
    return errors.Unsupported(message[:300], status=400)


def checked_namespace(raw: str) -> str:
    """A policy's namespace: a namespace or repository name (NAME_INVALID otherwise)."""
    if not is_valid_name(raw):
        raise errors.NameInvalid(detail={"name": raw[:256]})
    return raw


def _advisory(raw: str) -> str:
    """OSV ids are short printable text (a NUL was a 500 on PostgreSQL)."""
    if not raw or len(raw) > MAX_ADVISORY or clean_text(raw) != raw:
        raise _bad("not an advisory id")
    return raw


class PullPolicyAdmin:
    def __init__(self, insight: InsightService, *, audited: bool) -> None:
        self.insight = insight
        self.store = insight.store
        self.audit = AuditTrail(insight.store.db, enabled=audited)

    @operation("vuln_policy.set")
    async def set_policy(self, p: Principal, namespace: str, block_severity: str) -> str:
        """Refuse pulls in ``namespace`` of images with findings at or above ``block_severity``;
        the severity as stored (upper case)."""
        await self.audit.require_admin(p, "vuln_policy.set", target=namespace[:100])
        ns = checked_namespace(namespace)
        severity = block_severity.upper() if isinstance(block_severity, str) else ""
        if severity not in BLOCKABLE:
            raise _bad(f"block_severity must be one of {', '.join(BLOCKABLE)}")
        async with self.store.db.write() as conn:
            await self.store.set_policy(ns, severity, conn=conn)
            await self.audit.record(conn, self.audit.entry(p, "vuln_policy.set", target=ns, detail={"block_severity": severity}))
        self.insight.forget_policies()
        return severity

    @operation("vuln_policy.delete")
    async def remove_policy(self, p: Principal, namespace: str) -> bool:
        """No pull policy on ``namespace`` (idempotent: whether there was one)."""
        await self.audit.require_admin(p, "vuln_policy.delete", target=namespace[:100])
        ns = checked_namespace(namespace)
        async with self.store.db.write() as conn:
            existed = await self.store.set_policy(ns, None, conn=conn)
            await self.audit.record(conn, self.audit.entry(p, "vuln_policy.delete", target=ns, detail={"existed": existed}))
        self.insight.forget_policies()
        return existed

    @operation("vuln_allow.add")
    async def allow(self, p: Principal, namespace: str, advisory: str, days: float | None, reason: str) -> float | None:
        """Accept ``advisory`` in ``namespace``'s policy, for ``days`` (None: until removed);
        the expiry time."""
        await self.audit.require_admin(p, "vuln_allow.add", target=f"{namespace}/{advisory}"[:100])
        ns, advisory = checked_namespace(namespace), _advisory(advisory)
        if days is not None and (
            isinstance(days, bool) or not isinstance(days, (int, float)) or not math.isfinite(days) or not 0 < days <= MAX_DAYS
        ):
            raise _bad(f"expires_in_days must be a number of days between 0 and {MAX_DAYS}")
        expires = time.time() + float(days) * 86400 if days is not None else None
        kept = clean_text(reason, MAX_REASON) if isinstance(reason, str) else ""
        async with self.store.db.write() as conn:
            await self.store.allow(ns, advisory, expires, kept, conn=conn)
            detail = {"id": advisory, "expires_at": expires}
            await self.audit.record(conn, self.audit.entry(p, "vuln_allow.add", target=ns, detail=detail))
        return expires

    @operation("vuln_allow.delete")
    async def disallow(self, p: Principal, namespace: str, advisory: str) -> None:
        await self.audit.require_admin(p, "vuln_allow.delete", target=f"{namespace}/{advisory}"[:100])
        ns, advisory = checked_namespace(namespace), _advisory(advisory)
        async with self.store.db.write() as conn:
            if not await self.store.disallow(ns, advisory, conn=conn):
                raise errors.NotFound(f"{advisory} is not on {ns}'s allow-list")
            await self.audit.record(conn, self.audit.entry(p, "vuln_allow.delete", target=ns, detail={"id": advisory}))
