"""Queries over the policy tables: storage quotas, retention policies, immutable-tag rules.

The rules themselves (what a quota refuses, which tags a retention policy removes, when a tag
may move) live in :mod:`moorage.gc`; this module only reads and writes rows and returns the
record types of :mod:`.records`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy import ColumnElement, Connection, and_, delete, func, or_, select

from .db import Database
from .records import ImmutableRule, Quota, RetentionPolicy, TagHolder, TagInfo
from .tables import blobs, immutable_tags, manifests, quotas, repositories, repository_blobs, retention_policies, tags

if TYPE_CHECKING:  # the asyncio extension (and the ORM it imports) is not loaded on SQLite
    from sqlalchemy.ext.asyncio import AsyncConnection


def repositories_in(db: Database, namespace: str) -> Any:
    """The ids of ``namespace`` itself and of every repository below it: the name equal to it
    or in the byte range of ``namespace/``, two ranges of the name index (quotas, scrub's namespace scope).  (A ``LIKE 'ns/%'``
    is case-insensitive on SQLite and so read every name: 270 ms per quota check at 1M
    repositories, on every push into a namespace with a quota -- issue 24.)"""
    from .store import prefix_successor

    name = db.lexical(repositories.c.name)
    prefix = namespace + "/"
    upper = prefix_successor(prefix)
    below = name >= prefix if upper is None else and_(name >= prefix, name < upper)
    return select(repositories.c.id).where(or_(repositories.c.name == namespace, below))


class PolicyStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    # ---------------------------------------------------------------------------- quotas

    async def set_quota(self, namespace: str, limit_bytes: int, *, conn: Any = None) -> None:
        async with self.db.write_in(conn) as conn:
            await conn.execute(
                self.db.insert(quotas)
                .values(namespace=namespace, limit_bytes=limit_bytes, created_at=time.time())
                .on_conflict_do_update(index_elements=["namespace"], set_={"limit_bytes": limit_bytes})
            )

    async def list_quotas(self) -> list[Quota]:
        async with self.db.read() as conn:
            rows = (await conn.execute(select(quotas.c.namespace, quotas.c.limit_bytes).order_by(quotas.c.namespace))).all()
        return [Quota(r.namespace, int(r.limit_bytes)) for r in rows]

    async def remove_quota(self, namespace: str, *, conn: Any = None) -> bool:
        async with self.db.write_in(conn) as conn:
            res = await conn.execute(delete(quotas).where(quotas.c.namespace == namespace))
        return bool(res.rowcount)

    async def namespace_usage(self, namespace: str) -> int:
        """Unique bytes of the blobs linked in ``namespace`` (and the repositories below it)."""
        digests = (
            select(repository_blobs.c.digest)
            .where(repository_blobs.c.repository_id.in_(repositories_in(self.db, namespace)))
            .distinct()
        )
        async with self.db.read() as conn:
            total = (
                await conn.execute(select(func.coalesce(func.sum(blobs.c.size), 0)).where(blobs.c.digest.in_(digests)))
            ).scalar()
        return int(total or 0)

    async def linked_in_namespace(self, namespace: str, digest: str) -> bool:
        q = (
            select(repository_blobs.c.digest)
            .where(repository_blobs.c.repository_id.in_(repositories_in(self.db, namespace)), repository_blobs.c.digest == digest)
            .limit(1)
        )
        async with self.db.read() as conn:
            return (await conn.execute(q)).first() is not None

    # ------------------------------------------------------------------------- retention
    async def set_retention(self, policy: RetentionPolicy, *, conn: Any = None) -> None:
        values = {"keep_last": policy.keep_last, "keep_regex": policy.keep_regex, "expire_days": policy.expire_days}
        async with self.db.write_in(conn) as conn:
            await conn.execute(
                self.db.insert(retention_policies)
                .values(pattern=policy.pattern, created_at=time.time(), **values)
                .on_conflict_do_update(index_elements=["pattern"], set_=values)
            )

    async def list_retention(self) -> list[RetentionPolicy]:
        async with self.db.read() as conn:
            rows = (await conn.execute(select(retention_policies).order_by(retention_policies.c.pattern))).all()
        return [RetentionPolicy(r.pattern, r.keep_last, r.keep_regex, r.expire_days) for r in rows]

    async def remove_retention(self, pattern: str, *, conn: Any = None) -> bool:
        async with self.db.write_in(conn) as conn:
            res = await conn.execute(delete(retention_policies).where(retention_policies.c.pattern == pattern))
        return bool(res.rowcount)

    async def load_tags(self, repository: str | None = None) -> list[TagInfo]:
        q = select(
            tags.c.repository_id, repositories.c.name.label("repository"), tags.c.name, tags.c.manifest_id, tags.c.updated_at
        ).select_from(tags.join(repositories, repositories.c.id == tags.c.repository_id))
        if repository is not None:
            q = q.where(repositories.c.name == repository)
        async with self.db.read() as conn:
            rows = (await conn.execute(q)).all()
        return [TagInfo(int(r.repository_id), r.repository, r.name, int(r.manifest_id), float(r.updated_at)) for r in rows]

    async def load_tags_of(self, repository_ids: Sequence[int]) -> list[TagInfo]:
        """The tags of these repositories (a batch of :meth:`retention_repositories`)."""
        if not repository_ids:
            return []
        q = (
            select(
                tags.c.repository_id, repositories.c.name.label("repository"), tags.c.name, tags.c.manifest_id, tags.c.updated_at
            )
            .select_from(tags.join(repositories, repositories.c.id == tags.c.repository_id))
            .where(tags.c.repository_id.in_(list(repository_ids)))
        )
        async with self.db.read(snapshot=False) as conn:
            rows = (await conn.execute(q)).all()
        return [TagInfo(int(r.repository_id), r.repository, r.name, int(r.manifest_id), float(r.updated_at)) for r in rows]

    async def retention_repositories(self, rules: Sequence[tuple[int | None, float | None]]) -> list[tuple[int, str, int]]:
        """(id, name, tag count) of the repositories where at least one (keep_last, pushed-before
        cutoff) rule can remove a tag: more than ``keep_last`` tags and one older than the
        cutoff.  A superset of the repositories any set of these policies removes from (a tag
        goes only if every matching rule removes it), found in one pass over the tags' index:
        a policy ``keep_last 10`` over a million one-tag repositories reads no repository."""
        if not rules:
            return []
        count, oldest = func.count(), func.min(tags.c.updated_at)
        conds = []
        for keep_last, cutoff in rules:
            both = [count > (keep_last or 0)]
            if cutoff is not None:
                both.append(oldest < cutoff)
            conds.append(and_(*both))
        per_repo = select(tags.c.repository_id, count.label("n")).group_by(tags.c.repository_id).having(or_(*conds)).subquery()
        q = select(repositories.c.id, repositories.c.name, per_repo.c.n).join(
            per_repo, per_repo.c.repository_id == repositories.c.id
        )
        async with self.db.read(snapshot=False) as conn:
            return [(int(r[0]), r[1], int(r[2])) for r in await conn.execute(q)]

    async def retention_candidates(
        self,
        repository: str,
        rules: Sequence[tuple[int | None, float | None]],
        *,
        limit: int | None = None,
        after: tuple[float, str] | None = None,
    ) -> list[TagInfo]:
        """The tags of ``repository`` that every rule (keep_last, pushed-before cutoff) removes,
        newest first -- found by the database on ``ix_tags_updated``, so a repository of
        100,000 tags costs what it loses, not what it holds (issue 24).

        A tag is beyond ``keep_last`` when it sorts after the ``keep_last``-th newest tag in
        the planner's order (push time descending, then name byte-wise).  ``limit``/``after``
        (the last returned tag's (push time, name)): the next batch only, so a plan of 99,990
        tags is read a thousand at a time (one walk of the index from ``after``).
        """
        name = self.db.lexical(tags.c.name)
        order = (tags.c.updated_at.desc(), name)

        def beyond(at: float, tag: str) -> list[ColumnElement[bool]]:
            # (t, name) after (at, tag) in that order; ``<=`` makes it a range of the index
            return [tags.c.updated_at <= at, or_(tags.c.updated_at < at, and_(tags.c.updated_at == at, name > tag))]

        async with self.db.read() as conn:
            rid = (await conn.execute(select(repositories.c.id).where(repositories.c.name == repository))).scalar()
            if rid is None:
                return []
            where = [tags.c.repository_id == rid]
            for keep_last, cutoff in rules:
                if keep_last:
                    edge = (
                        await conn.execute(
                            select(tags.c.updated_at, tags.c.name)
                            .where(tags.c.repository_id == rid)
                            .order_by(*order)
                            .offset(keep_last - 1)
                            .limit(1)
                        )
                    ).first()
                    if edge is None:
                        return []  # fewer tags than this rule keeps
                    where += beyond(edge.updated_at, edge.name)
                if cutoff is not None:
                    where.append(tags.c.updated_at < cutoff)
            if after is not None:
                where += beyond(float(after[0]), after[1])
            q = select(tags.c.name, tags.c.manifest_id, tags.c.updated_at).where(*where).order_by(*order)
            rows = (await conn.execute(q.limit(limit) if limit is not None else q)).all()
        rid = int(rid)
        return [TagInfo(rid, repository, r.name, int(r.manifest_id), float(r.updated_at)) for r in rows]

    async def remove_tags_unmoved(
        self,
        doomed: Sequence[TagInfo],
        batch: int = 200,
        *,
        record: Callable[[Connection, list[TagInfo]], None] | None = None,
    ) -> int:
        """Delete the tags, each only if it still points where it did (a re-push wins), one
        transaction per ``batch``.  ``record(conn, removed)``: the audit/outbox writes of
        exactly the tags a transaction removed, run last in it."""
        from .store import untagged_statement

        removed = 0
        for i in range(0, len(doomed), batch):
            async with self.db.write() as conn:
                untagged: list[int] = []
                gone: list[TagInfo] = []
                for t in doomed[i : i + batch]:
                    res = await conn.execute(
                        delete(tags).where(
                            and_(
                                tags.c.repository_id == t.repository_id,
                                tags.c.name == t.name,
                                tags.c.manifest_id == t.manifest_id,
                                tags.c.updated_at == t.updated_at,
                            )
                        )
                    )
                    if res.rowcount:
                        removed += int(res.rowcount)
                        untagged.append(t.manifest_id)
                        gone.append(t)
                if untagged:  # their space comes back with GC after the grace period, as for a tag delete
                    await conn.execute(untagged_statement(untagged))
                if gone and record is not None:
                    await conn.run_sync(record, gone)
        return removed

    # ------------------------------------------------------------------------ immutable
    async def add_immutable(self, repo_pattern: str, tag_regex: str, *, conn: Any = None) -> None:
        async with self.db.write_in(conn) as conn:
            await conn.execute(
                self.db.insert(immutable_tags)
                .values(repo_pattern=repo_pattern, tag_regex=tag_regex, created_at=time.time())
                .on_conflict_do_nothing(index_elements=["repo_pattern", "tag_regex"])
            )

    async def list_immutable(self) -> list[ImmutableRule]:
        async with self.db.read() as conn:
            return await immutable_rules(conn, ordered=True)

    async def remove_immutable(self, repo_pattern: str, tag_regex: str | None = None, *, conn: Any = None) -> int:
        q = delete(immutable_tags).where(immutable_tags.c.repo_pattern == repo_pattern)
        if tag_regex is not None:
            q = q.where(immutable_tags.c.tag_regex == tag_regex)
        async with self.db.write_in(conn) as conn:
            return int((await conn.execute(q)).rowcount or 0)


# -- inside MetadataStore.put_manifest's write transaction (the tag guards get its connection) --
async def immutable_rules(conn: AsyncConnection, *, ordered: bool = False) -> list[ImmutableRule]:
    q = select(immutable_tags.c.repo_pattern, immutable_tags.c.tag_regex)
    if ordered:
        q = q.order_by(immutable_tags.c.repo_pattern, immutable_tags.c.tag_regex)
    rows = (await conn.execute(q)).all()
    return [ImmutableRule(r.repo_pattern, r.tag_regex) for r in rows]


async def claim_tag(conn: AsyncConnection, db: Database, repo_id: int, tag: str, manifest_id: int) -> TagHolder | None:
    """Point ``tag`` at ``manifest_id`` if nobody has it yet (atomic under concurrency), then
    return whoever holds it, row-locked until the transaction ends."""
    await conn.execute(
        db.insert(tags)
        .values(repository_id=repo_id, name=tag, manifest_id=manifest_id, updated_at=time.time())
        .on_conflict_do_nothing(index_elements=["repository_id", "name"])
    )
    row = (
        await conn.execute(
            select(tags.c.manifest_id, manifests.c.digest)
            .select_from(tags.join(manifests, manifests.c.id == tags.c.manifest_id))
            .where(tags.c.repository_id == repo_id, tags.c.name == tag)
            .with_for_update(of=tags)
        )
    ).first()
    return None if row is None else TagHolder(int(row.manifest_id), row.digest)
