"""The audit entries of service operations, and the list of those operations.

An operation is a service method marked with :func:`operation`: its audit action is named by
the operation (``user.add``, ``grant.add``, ``token.create`` ...), never by the HTTP route
that happened to call it, so the same change made through the API, the web UI or the CLI
leaves the same entry -- actor, face, action, target, outcome.  :func:`operations` lists them
(the parity test in tests/test_accounts_parity.py drives every one through every face).

The entry of a change is written on the change's own connection, so both commit or neither
does.  A refused attempt (authorization) is written in a transaction of its own with outcome
``denied``: nothing else was written.  Values in ``detail`` are chosen per operation and never
hold a password, secret or token.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from .. import errors
from ..metadata.db import Database
from ..metadata.events_store import AuditEntry, EventsStore
from .principal import Principal

F = TypeVar("F", bound=Callable[..., Awaitable[Any]])

#: Attribute an operation's method carries: its audit action.
ACTION_ATTR = "__audit_action__"
OK = "ok"
DENIED = "denied"


def operation(action: str) -> Callable[[F], F]:
    """Mark a service method as a state-changing operation audited as ``action``."""

    def mark(fn: F) -> F:
        setattr(fn, ACTION_ATTR, action)
        return fn

    return mark


def operations(cls: type) -> dict[str, str]:
    """``{method name: audit action}`` of every operation of a service class."""
    out: dict[str, str] = {}
    for name in dir(cls):
        action = getattr(getattr(cls, name, None), ACTION_ATTR, None)
        if isinstance(action, str):
            out[name] = action
    return out


class AuditTrail:
    """Builds and writes audit entries for the services (``enabled`` False: ``events.enabled``
    is off, and the registry keeps no audit log)."""

    def __init__(self, db: Database, *, enabled: bool) -> None:
        self.store = EventsStore(db)
        self.db = db
        self.enabled = enabled

    @staticmethod
    def entry(
        principal: Principal,
        action: str,
        *,
        target: str | None,
        repository: str | None = None,
        outcome: str = OK,
        detail: dict[str, Any] | None = None,
    ) -> AuditEntry:
        return {
            "time": time.time(),
            "actor": principal.actor,
            "action": action,
            "repository": repository,
            "target": target,
            "client_ip": principal.address or "",
            "user_agent": (principal.user_agent or "")[:300],
            "detail": {k: v for k, v in (detail or {}).items() if v is not None} or None,
            "face": principal.face,
            "outcome": outcome,
        }

    async def record(self, conn: Any, entry: AuditEntry) -> None:
        """Write ``entry`` inside the caller's transaction ``conn``."""
        if self.enabled:
            await self.store.insert_audit(conn, [entry])

    async def denied(self, principal: Principal, action: str, *, target: str | None, reason: str) -> None:
        """A refused attempt: its own small transaction (nothing else is written)."""
        if not self.enabled:
            return
        entry = self.entry(principal, action, target=target, outcome=DENIED, detail={"reason": reason[:200]})
        async with self.db.write() as conn:
            await self.store.insert_audit(conn, [entry])

    async def require_admin(self, principal: Principal, action: str, *, target: str | None) -> None:
        """Authorize an administrator's operation (its first step): a refusal is audited
        ``denied`` in a transaction of its own, then raised as DENIED."""
        if not principal.admin:
            await self.denied(principal, action, target=target, reason="administrator rights required")
            raise errors.Denied("administrator rights required")
