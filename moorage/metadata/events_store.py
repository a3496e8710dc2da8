"""SQL of the events extension: the webhook outbox, API-made webhook endpoints, the audit log
and the statistics behind the operational gauges.

Same conventions as :mod:`moorage.metadata.store`: one short transaction per method, times in
epoch seconds, plain values out.  Works on SQLite (one writer at a time per file, so a
conditional ``UPDATE`` is an atomic claim) and PostgreSQL (``FOR UPDATE SKIP LOCKED`` lets
replicas claim different rows without waiting on each other; the same conditional ``UPDATE``
then makes a claim exclusive even if two replicas picked the same row).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Required, TypedDict

from sqlalchemy import and_, case, delete, func, insert, literal, or_, select, update

from .db import Database
from .errors import translated
from .tables import audit_log, blobs, gc_runs, repositories, repository_blobs, uploads, webhook_deliveries, webhooks

PENDING, DELIVERING, DELIVERED, DEAD = "pending", "delivering", "delivered", "dead"
_OPEN = (PENDING, DELIVERING)
#: Most candidate rows one claim looks at when the caller filters them (``admit``).
CLAIM_WINDOW = 512


def outbox_row(
    endpoint: str, repository: str, event_id: str, action: str, content_type: str, body: bytes, now: float
) -> dict[str, Any]:
    """A new outbox row: one delivery of one rendered event to one endpoint, due ``now``."""
    return {
        "endpoint": endpoint,
        "repository": repository,
        "event_id": event_id,
        "action": action,
        "content_type": content_type,
        "body": body,
        "status": PENDING,
        "attempts": 0,
        "next_attempt_at": now,
        "created_at": now,
    }


@dataclass(slots=True)
class Delivery:
    id: int
    endpoint: str
    repository: str
    event_id: str
    action: str
    content_type: str
    body: bytes
    status: str
    attempts: int
    next_attempt_at: float
    last_status: int | None
    last_error: str | None
    created_at: float
    finished_at: float | None

    def public_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "endpoint": self.endpoint,
            "repository": self.repository,
            "event_id": self.event_id,
            "action": self.action,
            "status": self.status,
            "attempts": self.attempts,
            "next_attempt_at": self.next_attempt_at if self.status == PENDING else None,
            "last_status": self.last_status,
            "last_error": self.last_error,
            "created_at": self.created_at,
            "finished_at": self.finished_at,
        }


def _delivery(row: Any) -> Delivery:
    return Delivery(
        int(row.id),
        row.endpoint,
        row.repository,
        row.event_id,
        row.action,
        row.content_type,
        bytes(row.body),
        row.status,
        int(row.attempts),
        float(row.next_attempt_at),
        row.last_status,
        row.last_error,
        float(row.created_at),
        row.finished_at,
    )


@dataclass(slots=True)
class AuditQuery:
    actor: str | None = None
    #: Exact name, or a prefix when it ends with ``*`` (``team/*``).
    repository: str | None = None
    #: Exact action, or a prefix when it ends with ``*`` (``grant.*``).
    action: str | None = None
    since: float | None = None
    until: float | None = None
    before_id: int | None = None
    limit: int = 100
    #: Restrict to these namespaces (a repository equal to one, or below it) ...
    namespaces: Sequence[str] | None = None
    #: ... or to entries by this actor.  Both None = everything (administrators).
    own_actor: str | None = None


class AuditEntry(TypedDict, total=False):
    """One audit-log entry as its writers build it; what is left out is NULL (``time``: now),
    strings are cut to their column's size when written."""

    time: float
    actor: str | None
    action: Required[str]
    repository: str | None
    target: str | None
    client_ip: str | None
    user_agent: str | None
    detail: dict[str, Any] | None
    #: Entries with the same key are written once (aggregated pulls and logins, imported GC runs).
    dedupe_key: str
    #: Through which face the change came (``api``, ``ui``, ``cli`` ...) and its outcome (``ok``,
    #: ``denied``); NULL where the writer does not say (older entries, registry events).
    face: str | None
    outcome: str | None


class EventsStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    # -- outbox ---------------------------------------------------------------------------
    async def record(self, deliveries: Sequence[dict[str, Any]], audit: Sequence[AuditEntry]) -> None:
        """Insert outbox rows and audit entries in one small write transaction."""
        if not deliveries and not audit:
            return
        async with self.db.write() as conn:
            if deliveries:
                await conn.execute(insert(webhook_deliveries), list(deliveries))
            if audit:
                await self._insert_audit(conn, audit)

    def record_in(self, conn: Any, deliveries: Sequence[dict[str, Any]], audit: Sequence[AuditEntry]) -> None:
        """Insert outbox rows and audit entries with ``conn``, a synchronous connection inside
        somebody else's write transaction: the registry change the event is about, so the
        change, its audit entry and its deliveries commit (or vanish) together."""
        if deliveries:
            conn.execute(_INSERT_DELIVERY, list(deliveries))
        plain = []
        for r in audit:
            if r.get("dedupe_key"):
                conn.execute(
                    self.db.insert(audit_log).values(**_audit_values(r)).on_conflict_do_nothing(index_elements=["dedupe_key"])
                )
            else:  # (a push's entry: one statement built once, on the change's hot path)
                plain.append(_audit_values(r))
        if plain:  # one executemany for a batch (a collector's deletes)
            conn.execute(_INSERT_AUDIT, plain[0] if len(plain) == 1 else plain)

    async def enqueue(self, conn: Any, deliveries: Sequence[dict[str, Any]]) -> None:
        """Insert outbox rows inside the caller's transaction ``conn`` (with its audit entry)."""
        if deliveries:
            await conn.execute(insert(webhook_deliveries), list(deliveries))

    async def claim(
        self,
        me: str,
        *,
        now: float,
        lease: float,
        limit: int,
        skip_endpoints: Collection[str] = (),
        admit: Callable[[str], bool] | None = None,
    ) -> list[Delivery]:
        """Claim up to ``limit`` due deliveries, at most one per (endpoint, repository): the
        oldest open one of each, so a repository's events go out in order.

        ``skip_endpoints`` are left alone (their share of the worker is in use), and ``admit``
        is asked for each candidate's endpoint in order, so the caller can hold each endpoint
        and namespace to its share within one batch: rows of a busy endpoint never stand in
        front of another endpoint's."""
        d = webhook_deliveries
        e = d.alias("earlier")
        earlier = (
            select(literal(1))
            .where(
                e.c.endpoint == d.c.endpoint,
                e.c.repository == d.c.repository,
                e.c.status.in_(_OPEN),
                e.c.id < d.c.id,
            )
            .exists()
        )
        due = or_(
            and_(d.c.status == PENDING, d.c.next_attempt_at <= now), and_(d.c.status == DELIVERING, d.c.claimed_until < now)
        )
        skip = d.c.endpoint.not_in(sorted(skip_endpoints)) if skip_endpoints else literal(True)
        # With ``admit`` some candidates are passed over: look at a bounded window beyond ``limit``.
        window = limit if admit is None else min(CLAIM_WINDOW, limit * 8)
        query = (
            select(d.c.id, d.c.endpoint)
            .where(d.c.status.in_(_OPEN), due, skip, ~earlier)
            .order_by(d.c.id)
            .limit(window)
            .with_for_update(skip_locked=True, of=d)
        )
        # An idle outbox costs one indexed read per poll, not a write transaction (on SQLite a
        # write transaction takes the file's one write lock).
        async with self.db.read(snapshot=False) as conn:
            if (await conn.execute(select(d.c.id).where(d.c.status.in_(_OPEN), due, skip).limit(1))).first() is None:
                return []
        out: list[Delivery] = []
        async with self.db.write() as conn:
            candidates = [(int(r.id), str(r.endpoint)) for r in (await conn.execute(query)).all()]
            for did, endpoint in candidates:
                if len(out) >= limit:
                    break
                if admit is not None and not admit(endpoint):
                    continue
                res = await conn.execute(
                    update(d)
                    .where(d.c.id == did, due)
                    .values(status=DELIVERING, claimed_by=me, claimed_until=now + lease, attempts=d.c.attempts + 1)
                )
                if res.rowcount == 1:
                    row = (await conn.execute(select(d).where(d.c.id == did))).one()
                    out.append(_delivery(row))
        return out

    async def delivered(self, delivery_id: int, me: str, status_code: int) -> None:
        d = webhook_deliveries
        async with self.db.write() as conn:
            await conn.execute(
                update(d)
                .where(d.c.id == delivery_id, d.c.claimed_by == me)
                .values(
                    status=DELIVERED,
                    last_status=status_code,
                    last_error=None,
                    claimed_by=None,
                    claimed_until=None,
                    finished_at=time.time(),
                )
            )

    async def failed(self, delivery_id: int, me: str, *, error: str, status_code: int | None, retry_at: float | None) -> None:
        """An attempt failed: back to pending until ``retry_at``, or dead (``retry_at`` None)."""
        d = webhook_deliveries
        values: dict[str, Any] = dict(last_error=error[:2000], last_status=status_code, claimed_by=None, claimed_until=None)
        if retry_at is None:
            values.update(status=DEAD, finished_at=time.time())
        else:
            values.update(status=PENDING, next_attempt_at=retry_at)
        async with self.db.write() as conn:
            await conn.execute(update(d).where(d.c.id == delivery_id, d.c.claimed_by == me).values(**values))

    async def release(self, me: str, ids: Iterable[int]) -> None:
        """Hand claimed-but-unsent deliveries back (shutdown), without counting an attempt."""
        d = webhook_deliveries
        ids = list(ids)
        if not ids:
            return
        async with self.db.write() as conn:
            await conn.execute(
                update(d)
                .where(d.c.id.in_(ids), d.c.claimed_by == me, d.c.status == DELIVERING)
                .values(status=PENDING, claimed_by=None, claimed_until=None, attempts=d.c.attempts - 1)
            )

    async def deliveries(
        self, endpoint: str, *, status: str | None = None, limit: int = 100, before_id: int | None = None
    ) -> list[Delivery]:
        d = webhook_deliveries
        q = select(d).where(d.c.endpoint == endpoint)
        if status:
            q = q.where(d.c.status == status)
        if before_id is not None:
            q = q.where(d.c.id < before_id)
        async with self.db.read() as conn:
            rows = (await conn.execute(q.order_by(d.c.id.desc()).limit(limit))).all()
        return [_delivery(r) for r in rows]

    async def get_delivery(self, delivery_id: int) -> Delivery | None:
        async with self.db.read() as conn:
            row = (await conn.execute(select(webhook_deliveries).where(webhook_deliveries.c.id == delivery_id))).first()
        return _delivery(row) if row else None

    async def retry(self, delivery_id: int, endpoint: str, *, conn: Any = None) -> bool:
        """Put a dead delivery back in the queue (an operator's decision: it may now arrive after
        later events of its repository).  ``conn``: the caller's transaction (the webhook
        service writes the audit entry in it)."""
        d = webhook_deliveries
        async with self.db.write_in(conn) as conn:
            res = await conn.execute(
                update(d)
                .where(d.c.id == delivery_id, d.c.endpoint == endpoint, d.c.status == DEAD)
                .values(status=PENDING, attempts=0, next_attempt_at=time.time(), finished_at=None)
            )
        return bool(res.rowcount)

    # -- API-made endpoints ---------------------------------------------------------------
    async def list_webhooks(self) -> list[dict[str, Any]]:
        async with self.db.read() as conn:
            rows = (await conn.execute(select(webhooks).order_by(webhooks.c.name))).all()
        return [_webhook(r) for r in rows]

    async def create_webhook(self, row: dict[str, Any], *, conn: Any = None) -> bool:
        values = {**row, "created_at": time.time()}
        for key in ("actions", "repositories", "targets"):
            values[key] = json.dumps(list(values[key]))
        async with self.db.write_in(conn) as conn:
            res = await conn.execute(self.db.insert(webhooks).values(**values).on_conflict_do_nothing(index_elements=["name"]))
        return bool(res.rowcount)

    async def delete_webhook(self, name: str, *, conn: Any = None) -> bool:
        async with self.db.write_in(conn) as conn:
            res = await conn.execute(delete(webhooks).where(webhooks.c.name == name))
            if res.rowcount:
                # Nothing will deliver them any more: close them so the history says why.
                await conn.execute(
                    update(webhook_deliveries)
                    .where(webhook_deliveries.c.endpoint == name, webhook_deliveries.c.status.in_(_OPEN))
                    .values(status=DEAD, last_error="endpoint deleted", finished_at=time.time(), claimed_by=None)
                )
        return bool(res.rowcount)

    # -- audit log ------------------------------------------------------------------------
    async def insert_audit(self, conn: Any, rows: Sequence[AuditEntry]) -> None:
        """Write ``rows`` on ``conn``: inside the caller's transaction, so a change and its audit
        entry commit (or roll back) together (:mod:`moorage.accounts`)."""
        await self._insert_audit(conn, rows)

    async def _insert_audit(self, conn: Any, rows: Sequence[AuditEntry]) -> None:
        plain = [r for r in rows if not r.get("dedupe_key")]
        keyed = [r for r in rows if r.get("dedupe_key")]
        if plain:
            await conn.execute(insert(audit_log), [_audit_values(r) for r in plain])
        for r in keyed:  # one statement each: ON CONFLICT DO NOTHING keeps the first per key
            await conn.execute(
                self.db.insert(audit_log).values(**_audit_values(r)).on_conflict_do_nothing(index_elements=["dedupe_key"])
            )

    async def audit(self, rows: Sequence[AuditEntry]) -> None:
        if rows:
            async with self.db.write() as conn:
                await self._insert_audit(conn, rows)

    async def query_audit(self, q: AuditQuery) -> list[dict[str, Any]]:
        a = audit_log
        stmt = select(a)
        if q.actor is not None:
            stmt = stmt.where(a.c.actor == q.actor)
        if q.repository:
            stmt = stmt.where(_prefix_or_exact(a.c.repository, q.repository))
        if q.action:
            stmt = stmt.where(_prefix_or_exact(a.c.action, q.action))
        if q.since is not None:
            stmt = stmt.where(a.c.time >= q.since)
        if q.until is not None:
            stmt = stmt.where(a.c.time < q.until)
        if q.before_id is not None:
            stmt = stmt.where(a.c.id < q.before_id)
        if q.namespaces is not None or q.own_actor is not None:
            allowed = []
            for ns in q.namespaces or ():
                allowed.append(a.c.repository == ns)
                allowed.append(func.substr(a.c.repository, 1, len(ns) + 1) == ns + "/")
            if q.own_actor is not None:
                allowed.append(a.c.actor == q.own_actor)
            stmt = stmt.where(or_(*allowed) if allowed else literal(False))
        async with self.db.read() as conn:
            rows = (await conn.execute(stmt.order_by(a.c.id.desc()).limit(q.limit))).all()
        return [_audit_out(r) for r in rows]

    # -- housekeeping ---------------------------------------------------------------------
    async def prune(self, *, audit_before: float | None, deliveries_before: float | None, batch: int = 5000) -> tuple[int, int]:
        """Delete expired audit entries and finished deliveries, ``batch`` rows per short
        transaction (a long backlog never holds the write lock for long)."""
        d = webhook_deliveries
        jobs = []
        if audit_before is not None:
            jobs.append((audit_log, audit_log.c.time < audit_before))
        if deliveries_before is not None:
            jobs.append((d, and_(d.c.status.in_((DELIVERED, DEAD)), d.c.finished_at < deliveries_before)))
        counts = []
        for table, cond in jobs:
            total = 0
            while True:
                ids = select(table.c.id).where(cond).limit(batch).scalar_subquery()
                async with self.db.write() as conn:
                    n = (await conn.execute(delete(table).where(table.c.id.in_(ids)))).rowcount or 0
                total += n
                if n < batch:
                    break
            counts.append(total)
        n_audit = counts.pop(0) if audit_before is not None else 0
        n_deliveries = counts.pop(0) if deliveries_before is not None else 0
        return int(n_audit), int(n_deliveries)

    async def _read_all(self, query: Any) -> list[Any]:
        """A registry-sized read off the event loop: SQLite reads otherwise run on it."""
        if self.db.is_sqlite and self.db.sync_read_engine is not None:

            def run() -> list[Any]:
                with translated(), self.db.sync_read_engine.connect() as conn:
                    return list(conn.execute(query).all())

            return await asyncio.to_thread(run)
        async with self.db.read() as conn:
            return list((await conn.execute(query)).all())

    async def import_gc_runs(self, since: float) -> int:
        """Copy finished garbage-collection runs into the audit log (idempotent: keyed by run id)."""
        async with self.db.read() as conn:
            rows = (
                await conn.execute(select(gc_runs).where(gc_runs.c.finished_at.is_not(None), gc_runs.c.finished_at >= since))
            ).all()
        entries: list[AuditEntry] = [
            {
                "time": float(r.finished_at),
                "actor": None,
                "action": "gc.run",
                "repository": None,
                "target": None,
                "client_ip": None,
                "user_agent": None,
                "detail": {
                    "dry_run": bool(r.dry_run),
                    "blobs_removed": int(r.blobs_removed),
                    "bytes_removed": int(r.bytes_removed),
                    "manifests_removed": int(r.manifests_removed),
                    "tags_removed": int(r.tags_removed),
                    "started_at": float(r.started_at),
                },
                "dedupe_key": f"gc.run:{r.id}",
            }
            for r in rows
        ]
        await self.audit(entries)
        return len(entries)

    async def attribute_gc_run(self, conn: Any, entry: AuditEntry, *, since: float, dry_run: bool) -> int | None:
        """Write ``entry`` (a ``gc.run`` with its actor and face) as *the* audit entry of the
        newest run recorded in ``gc_runs`` since ``since`` (with this ``dry_run``), inside the
        caller's transaction ``conn``: keyed like :meth:`import_gc_runs`'s entries, replacing
        an actor-less copy the import may already have written, so a run started by someone
        is listed once, with who started it.  The run's id, or None (none recorded: the entry
        is written unkeyed)."""
        run_id = (
            await conn.execute(
                select(gc_runs.c.id)
                .where(gc_runs.c.started_at >= since, gc_runs.c.finished_at.is_not(None), gc_runs.c.dry_run.is_(dry_run))
                .order_by(gc_runs.c.id.desc())
                .limit(1)
            )
        ).scalar()
        row = dict(entry)
        if run_id is not None:
            key = f"gc.run:{run_id}"
            await conn.execute(delete(audit_log).where(audit_log.c.dedupe_key == key))
            row["dedupe_key"] = key
        await self._insert_audit(conn, [row])  # type: ignore[list-item]
        return int(run_id) if run_id is not None else None

    # -- statistics for the gauges --------------------------------------------------------
    def _namespace_of(self, column: Any) -> Any:
        if self.db.is_sqlite:
            return case((func.instr(column, "/") > 0, func.substr(column, 1, func.instr(column, "/") - 1)), else_=column)
        return func.split_part(column, "/", 1)

    async def storage_by_namespace(self) -> list[tuple[str, int, int]]:
        """(namespace, distinct blobs, their bytes) per first path component; a blob linked
        into several repositories of one namespace counts once."""
        ns = self._namespace_of(repositories.c.name).label("ns")
        linked = (
            select(ns, blobs.c.digest, blobs.c.size)
            .select_from(
                repository_blobs.join(repositories, repositories.c.id == repository_blobs.c.repository_id).join(
                    blobs, blobs.c.digest == repository_blobs.c.digest
                )
            )
            .where(blobs.c.deleting_since.is_(None))
            .distinct()
            .subquery()
        )
        q = select(linked.c.ns, func.count(), func.coalesce(func.sum(linked.c.size), 0)).group_by(linked.c.ns)
        rows = await self._read_all(q)
        return [(str(r[0]), int(r[1]), int(r[2])) for r in rows]

    async def counters(self) -> dict[str, Any]:
        """Uploads in progress, GC totals, outbox backlog per (endpoint, status)."""
        d = webhook_deliveries
        async with self.db.read() as conn:
            n_uploads = (await conn.execute(select(func.count()).select_from(uploads))).scalar() or 0
            gc = (
                await conn.execute(
                    select(
                        func.count(),
                        func.coalesce(func.sum(gc_runs.c.bytes_removed), 0),
                        func.coalesce(func.sum(gc_runs.c.blobs_removed), 0),
                    ).where(gc_runs.c.finished_at.is_not(None), gc_runs.c.dry_run.is_(False))
                )
            ).one()
            backlog = (
                await conn.execute(
                    select(d.c.endpoint, d.c.status, func.count())
                    .where(d.c.status.in_((PENDING, DELIVERING, DEAD)))
                    .group_by(d.c.endpoint, d.c.status)
                )
            ).all()
            oldest = (await conn.execute(select(func.min(d.c.created_at)).where(d.c.status.in_(_OPEN)))).scalar()
        return {
            "uploads": int(n_uploads),
            "gc_runs": int(gc[0]),
            "gc_bytes": int(gc[1]),
            "gc_blobs": int(gc[2]),
            "backlog": [(r[0], r[1], int(r[2])) for r in backlog],
            "oldest_open": float(oldest) if oldest is not None else None,
        }


def _prefix_or_exact(column: Any, value: str) -> Any:
    if value.endswith("*"):
        prefix = value.rstrip("*")
        return func.substr(column, 1, len(prefix)) == prefix if prefix else literal(True)
    return column == value


_INSERT_AUDIT = insert(audit_log)
_INSERT_DELIVERY = insert(webhook_deliveries)


def _audit_values(r: AuditEntry) -> dict[str, Any]:
    detail = r.get("detail")
    return {
        "time": r.get("time") or time.time(),
        "actor": _cut(r.get("actor"), 255),
        "action": r["action"][:64],
        "repository": _cut(r.get("repository"), 255),
        "target": _cut(r.get("target"), 300),
        "client_ip": _cut(r.get("client_ip"), 64),
        "user_agent": _cut(r.get("user_agent"), 300),
        "detail": json.dumps(detail, sort_keys=True) if detail else None,
        "dedupe_key": _cut(r.get("dedupe_key"), 400),
        "face": _cut(r.get("face"), 16),
        "outcome": _cut(r.get("outcome"), 16),
    }


def _cut(value: Any, n: int) -> Any:
    return value[:n] if isinstance(value, str) else value


def _audit_out(r: Any) -> dict[str, Any]:
    return {
        "id": int(r.id),
        "time": float(r.time),
        "actor": r.actor,
        "action": r.action,
        "repository": r.repository,
        "target": r.target,
        "client_ip": r.client_ip,
        "user_agent": r.user_agent,
        "detail": json.loads(r.detail) if r.detail else None,
        "face": r.face,
        "outcome": r.outcome,
    }


def _webhook(r: Any) -> dict[str, Any]:
    return {
        "name": r.name,
        "url": r.url,
        "secret": r.secret,
        "format": r.format,
        "actions": json.loads(r.actions),
        "repositories": json.loads(r.repositories),
        "targets": json.loads(r.targets),
        "timeout": float(r.timeout),
        "max_attempts": int(r.max_attempts),
        "namespace": r.namespace,
        "created_by": r.created_by,
        "created_at": float(r.created_at),
    }
