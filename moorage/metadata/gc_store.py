"""Queries of the garbage collector and of repository delete (the protocol is in ``docs/gc.md``).

What is decided where: :mod:`moorage.gc.collector` decides *what* to delete from a snapshot of
the index (:meth:`GCStore.snapshot`, marked by the pure :mod:`moorage.gc.mark`); every method
here that deletes *re-checks* its candidates with fresh statements under row locks inside its
own write transaction, so a push, tag or link that committed after the snapshot always wins.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from typing import Any

from sqlalchemy import (
    ARRAY,
    Connection,
    Integer,
    and_,
    any_,
    bindparam,
    delete,
    exists,
    func,
    insert,
    or_,
    select,
    tuple_,
    update,
)

from .db import Database
from .records import BlobState, ConsistencyRows, IndexSnapshot, ManifestNode, RepositoryDeleted, StaleUpload, TagInfo
from .tables import blobs, gc_runs, manifest_blobs, manifest_children, manifests, repositories, repository_blobs, tags, uploads

#: The columns of a manifest in the collector's view of the index (:func:`_manifest_node`):
#: one list for the whole snapshot and the batches, so neither can miss one.
_NODE_COLUMNS = (
    manifests.c.id,
    manifests.c.repository_id,
    manifests.c.digest,
    manifests.c.subject_digest,
    manifests.c.created_at,
    manifests.c.size,
    manifests.c.untagged_at,
)


def _manifest_node(r: Any) -> ManifestNode:
    return ManifestNode(
        int(r.id), int(r.repository_id), r.digest, r.subject_digest, float(r.created_at), int(r.size), r.untagged_at
    )


#: A retention policy as the collector's batches test it: (does its pattern match this
#: repository name, keep_last, pushed-before cutoff or None).
RetentionRule = tuple[Callable[[str], bool], int | None, float | None]


class GCStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    # ------------------------------------------------------------------------ snapshot
    async def snapshot(self) -> IndexSnapshot:
        """The whole index (tags, manifests, references, blobs, links) in one read transaction."""
        async with self.db.read() as conn:
            repos = {int(r.id): r.name for r in await conn.execute(select(repositories.c.id, repositories.c.name))}
            tag_rows = (
                await conn.execute(select(tags.c.repository_id, tags.c.name, tags.c.manifest_id, tags.c.updated_at))
            ).all()
            mans = {int(r.id): _manifest_node(r) for r in await conn.execute(select(*_NODE_COLUMNS))}
            children: dict[int, list[str]] = {}
            for r in await conn.execute(select(manifest_children.c.manifest_id, manifest_children.c.child_digest)):
                children.setdefault(int(r.manifest_id), []).append(r.child_digest)
            mblobs: dict[int, list[str]] = {}
            for r in await conn.execute(select(manifest_blobs.c.manifest_id, manifest_blobs.c.digest)):
                mblobs.setdefault(int(r.manifest_id), []).append(r.digest)
            blob_rows = {
                r.digest: BlobState(int(r.size), float(r.last_linked_at), r.pending_until, r.deleting_since)
                for r in await conn.execute(
                    select(blobs.c.digest, blobs.c.size, blobs.c.last_linked_at, blobs.c.pending_until, blobs.c.deleting_since)
                )
            }
            links = [
                (int(r.repository_id), r.digest, float(r.created_at))
                for r in await conn.execute(
                    select(repository_blobs.c.repository_id, repository_blobs.c.digest, repository_blobs.c.created_at)
                )
            ]
        tag_infos = [
            TagInfo(int(r.repository_id), repos.get(int(r.repository_id), "?"), r.name, int(r.manifest_id), float(r.updated_at))
            for r in tag_rows
        ]
        return IndexSnapshot(repos, tag_infos, mans, children, mblobs, blob_rows, links)

    # ------------------------------------------------------- bounded-memory mark (issue 24)
    async def repository_id(self, name: str) -> int | None:
        async with self.db.read(snapshot=False) as conn:
            rid = (await conn.execute(select(repositories.c.id).where(repositories.c.name == name))).scalar()
        return None if rid is None else int(rid)

    async def index_batches(
        self,
        repository_id: int | None = None,
        batch: int = 1000,
        *,
        skip_clean: bool = False,
        retention_rules: Sequence[RetentionRule] = (),
    ) -> AsyncIterator[IndexSnapshot]:
        """The index, ``batch`` whole repositories at a time (by id), all read in ONE snapshot.

        Each yielded :class:`IndexSnapshot` holds those repositories' tags, manifests, index
        children, blob references, links and the rows of the blobs they reference: what
        :func:`moorage.gc.mark.mark_batch` and the summary's "kept" lines need, since manifest
        reachability never leaves a repository.  Memory is one batch,
        whatever the size of the registry.  ``repository_id``: that repository only.
        The consumer must not run other transactions between batches on SQLite's event loop
        (the read holds its snapshot until the last batch).

        ``skip_clean``: leave out the repositories the database shows hold nothing to mark --
        every manifest tagged, every link's blob referenced by one of its manifests (the
        common case: at 100,000 repositories reading and walking them in Python was 3/4 of a
        dry run).  Such a repository yields no condemned manifest, no link and no "kept" line
        under the module's rules, unless retention removes tags or one repository is scoped.
        ``retention_rules``: the retention policies as (pattern test, keep_last, pushed-before
        cutoff); a repository where one of them can remove a tag (its pattern matches, more
        tags than ``keep_last``, one older than the cutoff) is read too (issue 24: with a
        policy every repository used to be read -- 85 s for a dry run at 1M repositories).
        """
        after = -1
        async with self.db.read() as conn:
            while True:
                narrowed: list[int] | None = None  # the batch's repositories with something to mark
                if skip_clean and repository_id is None:
                    # Only the batch's id range is read here, and the names of the repositories
                    # with something to mark: at 10M repositories reading every name (to drop
                    # nearly all of them) was 40% of a dry run.
                    page = select(repositories.c.id).where(repositories.c.id > after).order_by(repositories.c.id).limit(batch)
                    hi = (await conn.execute(select(func.max(page.subquery().c.id)))).scalar()
                    if hi is None:
                        return
                    lo, after = after + 1, int(hi)  # no repository has an id in (after, first id)
                    marked = await self._repositories_to_mark(conn, lo, hi, retention_rules)
                    if not marked:
                        continue
                    repos = await self._names(conn, sorted(marked))
                    narrowed = sorted(repos)
                else:
                    q = select(repositories.c.id, repositories.c.name).order_by(repositories.c.id)
                    if repository_id is not None:
                        q = q.where(repositories.c.id == repository_id)
                    else:
                        q = q.where(repositories.c.id > after).limit(batch)
                    repos = {int(r.id): r.name for r in await conn.execute(q)}
                    if not repos:
                        return
                    lo, hi = min(repos), max(repos)
                    after = hi

                def in_range(column: Any, lo: int = lo, hi: int = hi, ids: list[int] | None = narrowed) -> Any:
                    return column.between(lo, hi) if ids is None else self._in_ids(column, ids)

                in_batch = in_range(manifests.c.repository_id)
                tag_rows = (
                    await conn.execute(
                        select(tags.c.repository_id, tags.c.name, tags.c.manifest_id, tags.c.updated_at).where(
                            in_range(tags.c.repository_id)
                        )
                    )
                ).all()
                mans = {int(r.id): _manifest_node(r) for r in await conn.execute(select(*_NODE_COLUMNS).where(in_batch))}
                # References by manifest id lists (primary-key probes): a join on the
                # repository range makes PostgreSQL hash-join a scan of every reference.
                children: dict[int, list[str]] = {}
                mblobs: dict[int, list[str]] = {}
                ids = sorted(mans)
                for i in range(0, len(ids), 5000):
                    chunk = ids[i : i + 5000]
                    for r in await conn.execute(
                        select(manifest_children.c.manifest_id, manifest_children.c.child_digest).where(
                            self._in_ids(manifest_children.c.manifest_id, chunk)
                        )
                    ):
                        children.setdefault(int(r.manifest_id), []).append(r.child_digest)
                    for r in await conn.execute(
                        select(manifest_blobs.c.manifest_id, manifest_blobs.c.digest).where(
                            manifest_blobs.c.manifest_id.in_(chunk)
                        )
                    ):
                        mblobs.setdefault(int(r.manifest_id), []).append(r.digest)
                links = [
                    (int(r.repository_id), r.digest, float(r.created_at))
                    for r in await conn.execute(
                        select(repository_blobs.c.repository_id, repository_blobs.c.digest, repository_blobs.c.created_at).where(
                            in_range(repository_blobs.c.repository_id)
                        )
                    )
                ]
                tag_infos = [
                    TagInfo(
                        int(r.repository_id),
                        repos.get(int(r.repository_id), "?"),
                        r.name,
                        int(r.manifest_id),
                        float(r.updated_at),
                    )
                    for r in tag_rows
                ]
                # The rows of the blobs this batch references (what the summary's "kept" lines
                # weigh); blobs no manifest references are the database's question (blob_candidates).
                digests = sorted({d for ds in mblobs.values() for d in ds})
                blob_rows: dict[str, BlobState] = {}
                for i in range(0, len(digests), 5000):
                    for r in await conn.execute(
                        select(
                            blobs.c.digest, blobs.c.size, blobs.c.last_linked_at, blobs.c.pending_until, blobs.c.deleting_since
                        ).where(blobs.c.digest.in_(digests[i : i + 5000]))
                    ):
                        blob_rows[r.digest] = BlobState(int(r.size), float(r.last_linked_at), r.pending_until, r.deleting_since)
                yield IndexSnapshot(repos, tag_infos, mans, children, mblobs, blob_rows, links)
                if repository_id is not None:
                    return

    async def _names(self, conn: Any, ids: list[int]) -> dict[int, str]:
        """id -> name of the repositories ``ids`` (sorted), in id order, in lists of 5,000."""
        out: dict[int, str] = {}
        for i in range(0, len(ids), 5000):
            q = select(repositories.c.id, repositories.c.name).where(self._in_ids(repositories.c.id, ids[i : i + 5000]))
            out.update((int(r.id), r.name) for r in await conn.execute(q.order_by(repositories.c.id)))
        return out

    async def _repositories_to_mark(self, conn: Any, lo: int, hi: int, retention_rules: Sequence[RetentionRule] = ()) -> set[int]:
        """Repositories with ids in [lo, hi] holding an untagged manifest or a link whose blob
        none of their manifests references, or where a retention rule can remove a tag: the
        only ones a batch's mark can find anything in (``index_batches(skip_clean=True)``)."""
        # The subqueries carry OFFSET 0 so PostgreSQL keeps them as per-row index probes; as
        # anti-joins it hashes every tag / reference of the registry for each batch.
        m = manifests.alias("m")
        untagged = select(m.c.repository_id).where(
            m.c.repository_id.between(lo, hi), ~exists(select(tags.c.manifest_id).where(tags.c.manifest_id == m.c.id).offset(0))
        )
        ref = manifests.alias("ref")
        unreferenced_link = select(repository_blobs.c.repository_id).where(
            repository_blobs.c.repository_id.between(lo, hi),
            ~exists(
                select(manifest_blobs.c.manifest_id)
                .select_from(manifest_blobs.join(ref, ref.c.id == manifest_blobs.c.manifest_id))
                .where(
                    ref.c.repository_id == repository_blobs.c.repository_id, manifest_blobs.c.digest == repository_blobs.c.digest
                )
                .offset(0)
            ),
        )
        found: set[int] = set()
        for q in (untagged, unreferenced_link):
            found.update(int(r[0]) for r in await conn.execute(q.distinct()))
        if retention_rules:
            count, oldest = func.count(), func.min(tags.c.updated_at)
            conds = [
                and_(count > (keep_last or 0), *([] if cutoff is None else [oldest < cutoff]))
                for _, keep_last, cutoff in retention_rules
            ]
            shortened = (
                select(tags.c.repository_id, count, oldest)
                .where(tags.c.repository_id.between(lo, hi))
                .group_by(tags.c.repository_id)
                .having(or_(*conds))
            )
            counted = [(int(rid), int(n), float(first)) for rid, n, first in await conn.execute(shortened)]
            names = await self._names(conn, sorted(rid for rid, _, _ in counted))  # the patterns need them
            for rid, n, first in counted:
                name = names.get(rid)
                if name is not None and any(
                    matches(name) and n > (keep_last or 0) and (cutoff is None or first < cutoff)
                    for matches, keep_last, cutoff in retention_rules
                ):
                    found.add(int(rid))
        return found

    def _in_ids(self, column: Any, ids: list[int]) -> Any:
        """``column IN ids``; on PostgreSQL as ``= ANY(array)``: one bound parameter, so the
        statement is prepared and planned once instead of once per list of 1,000 literals."""
        if self.db.is_sqlite:
            return column.in_(ids)
        return column == any_(bindparam("ids", ids, type_=ARRAY(Integer)))

    @staticmethod
    def _garbage_blob(cutoff: float, now: float) -> list[Any]:
        """What makes a blob row sweepable apart from references (the sweep re-checks the same)."""
        return [
            blobs.c.deleting_since.is_(None),
            blobs.c.last_linked_at < cutoff,
            or_(blobs.c.pending_until.is_(None), blobs.c.pending_until < now),
            ~exists().where(and_(repository_blobs.c.digest == blobs.c.digest, repository_blobs.c.created_at >= cutoff)),
        ]

    async def blob_candidates(
        self, cutoff: float, now: float, *, among: Iterable[str] | None = None, page: int = 2000
    ) -> list[tuple[str, int]]:
        """Blobs no manifest references, unleased, without a young link (the sweep's rule),
        found by the database a page at a time in digest order; ``among``: only these digests."""
        where = [*self._garbage_blob(cutoff, now), ~exists().where(manifest_blobs.c.digest == blobs.c.digest)]
        out: list[tuple[str, int]] = []
        if among is not None:
            wanted = sorted(set(among))
            for i in range(0, len(wanted), page):
                q = select(blobs.c.digest, blobs.c.size).where(blobs.c.digest.in_(wanted[i : i + page]), *where)
                async with self.db.read(snapshot=False) as conn:
                    out.extend((r.digest, int(r.size)) for r in await conn.execute(q))
            return sorted(out)
        after = ""
        while True:
            q = select(blobs.c.digest, blobs.c.size).where(blobs.c.digest > after, *where).order_by(blobs.c.digest).limit(page)
            # One statement walks the primary key from ``after`` until it has a page of
            # garbage ("no reference" is an index probe per row): O(blobs) in all, any memory.
            async with self.db.read(snapshot=False) as conn:
                rows = (await conn.execute(q)).all()
            out.extend((r.digest, int(r.size)) for r in rows)
            if len(rows) < page:
                return out
            after = rows[-1].digest

    async def blobs_only_referenced_by(self, refs: dict[str, int], cutoff: float, now: float) -> list[tuple[str, int]]:
        """Of ``refs`` (digest -> references held by manifests a dry run would delete), the
        sweepable blobs referenced by nothing else (their reference count equals it; those with
        none left are :meth:`blob_candidates`' already)."""
        count = (
            select(func.count()).select_from(manifest_blobs).where(manifest_blobs.c.digest == blobs.c.digest).scalar_subquery()
        )
        wanted = sorted(refs)
        out: list[tuple[str, int]] = []
        for i in range(0, len(wanted), 1000):
            q = select(blobs.c.digest, blobs.c.size, count.label("refs")).where(
                blobs.c.digest.in_(wanted[i : i + 1000]), *self._garbage_blob(cutoff, now)
            )
            async with self.db.read(snapshot=False) as conn:
                out.extend((r.digest, int(r.size)) for r in await conn.execute(q) if 0 < int(r.refs) <= refs[r.digest])
        return out

    async def reference_counts(self, digests: Iterable[str]) -> dict[str, int]:
        """digest -> manifests referencing it (digests nothing references are left out)."""
        wanted = sorted(set(digests))
        out: dict[str, int] = {}
        for i in range(0, len(wanted), 1000):
            q = (
                select(manifest_blobs.c.digest, func.count())
                .where(manifest_blobs.c.digest.in_(wanted[i : i + 1000]))
                .group_by(manifest_blobs.c.digest)
            )
            async with self.db.read(snapshot=False) as conn:
                out.update((d, int(n)) for d, n in await conn.execute(q))
        return out

    async def known_blobs(self, digests: Sequence[str]) -> set[str]:
        """Which of ``digests`` have a blob row (tombstoned ones included)."""
        async with self.db.read(snapshot=False) as conn:
            return set((await conn.execute(select(blobs.c.digest).where(blobs.c.digest.in_(list(digests))))).scalars())

    # ------------------------------------------------------------------------ uploads
    async def stale_uploads(self, before: float, repository: str | None = None) -> list[StaleUpload]:
        """Upload sessions not touched since ``before`` (in ``repository`` only, if given)."""
        q = select(uploads.c.id, uploads.c.driver_state, uploads.c.updated_at).where(uploads.c.updated_at < before)
        if repository:
            q = q.where(uploads.c.repository_id.in_(select(repositories.c.id).where(repositories.c.name == repository)))
        async with self.db.read() as conn:
            return [StaleUpload(r.id, r.driver_state, r.updated_at) for r in await conn.execute(q)]

    async def forget_upload(self, upload: StaleUpload) -> bool:
        """Delete the session's row unless it was touched since it was listed."""
        async with self.db.write() as conn:
            res = await conn.execute(delete(uploads).where(uploads.c.id == upload.id, uploads.c.updated_at == upload.updated_at))
        return bool(res.rowcount)

    async def upload_session_exists(self, upload_id: str) -> bool:
        async with self.db.read() as conn:
            return (await conn.execute(select(uploads.c.id).where(uploads.c.id == upload_id))).first() is not None

    # ---------------------------------------------------------------------- manifests
    async def delete_manifests_unreachable(
        self,
        ids: Sequence[int],
        cutoff: float,
        *,
        delete_untagged: bool,
        record: Callable[[Connection, list[int]], None] | None = None,
    ) -> list[int]:
        """Delete those of ``ids`` that are still unreachable, re-checked under their row locks
        (:func:`_reachable_now`, with the mark phase's rules for ``delete_untagged``); returns
        the ids deleted.  Rows another transaction holds are skipped (SKIP LOCKED): they are in use.
        ``record(conn, deleted_ids)``: the audit/outbox writes of exactly those deletes, run last
        in the same transaction."""
        async with self.db.write() as conn:
            locked = list(
                (
                    await conn.execute(select(manifests.c.id).where(manifests.c.id.in_(ids)).with_for_update(skip_locked=True))
                ).scalars()
            )
            ok: list[int] = []
            if locked:
                alive = await _reachable_now(conn, locked, cutoff, delete_untagged=delete_untagged)
                ok = [i for i in locked if i not in alive]
            if ok:
                await conn.execute(delete(manifest_blobs).where(manifest_blobs.c.manifest_id.in_(ok)))
                await conn.execute(delete(manifest_children).where(manifest_children.c.manifest_id.in_(ok)))
                await conn.execute(delete(tags).where(tags.c.manifest_id.in_(ok)))
                await conn.execute(delete(manifests).where(manifests.c.id.in_(ok)))
                if record is not None:
                    await conn.run_sync(record, ok)
        return ok

    # -------------------------------------------------------------------------- links
    async def prune_links(self, pairs: Sequence[tuple[int, str]], cutoff: float) -> int:
        """Delete links (repository id, digest) older than ``cutoff`` that no manifest of their
        repository references (re-checked); blobs locked elsewhere are skipped."""
        mb_owner = manifests.alias()
        async with self.db.write() as conn:
            locked = set(
                (
                    await conn.execute(
                        select(blobs.c.digest).where(blobs.c.digest.in_({d for _, d in pairs})).with_for_update(skip_locked=True)
                    )
                ).scalars()
            )
            mine = [p for p in pairs if p[1] in locked]
            if not mine:
                return 0
            res = await conn.execute(
                delete(repository_blobs).where(
                    tuple_(repository_blobs.c.repository_id, repository_blobs.c.digest).in_(mine),
                    repository_blobs.c.created_at < cutoff,
                    ~exists(
                        select(manifest_blobs.c.manifest_id)
                        .select_from(manifest_blobs.join(mb_owner, mb_owner.c.id == manifest_blobs.c.manifest_id))
                        .where(
                            manifest_blobs.c.digest == repository_blobs.c.digest,
                            mb_owner.c.repository_id == repository_blobs.c.repository_id,
                        )
                    ),
                )
            )
            return int(res.rowcount or 0)

    # -------------------------------------------------------------------------- blobs
    async def tombstone(
        self, digests: Sequence[str], cutoff: float, forget: Sequence[str] = ()
    ) -> tuple[float, list[tuple[str, int]]]:
        """One sweep transaction: (delete the rows of ``forget``, whose bytes are gone,) lock
        ``digests`` (SKIP LOCKED: an in-flight put_manifest/claim/link holding a row means the
        blob is in use), re-check with a fresh statement that each is still garbage, set the
        tombstone and delete its links.  Returns (tombstone time, [(digest, size)] tombstoned)."""
        async with self.db.write() as conn:
            now = time.time()
            if forget:
                await conn.execute(delete(blobs).where(blobs.c.digest.in_(forget), blobs.c.deleting_since.is_not(None)))
            locked = list(
                (
                    await conn.execute(
                        select(blobs.c.digest)
                        .where(blobs.c.digest.in_(digests), blobs.c.deleting_since.is_(None))
                        .with_for_update(skip_locked=True)
                    )
                ).scalars()
            )
            tomb: list[tuple[str, int]] = []
            if locked:
                # The re-check sees every commit before our locks.
                tomb = [
                    (r.digest, int(r.size))
                    for r in await conn.execute(
                        update(blobs)
                        .where(
                            blobs.c.digest.in_(locked),
                            blobs.c.deleting_since.is_(None),
                            blobs.c.last_linked_at < cutoff,
                            or_(blobs.c.pending_until.is_(None), blobs.c.pending_until < now),
                            ~exists().where(manifest_blobs.c.digest == blobs.c.digest),
                            ~exists().where(
                                and_(repository_blobs.c.digest == blobs.c.digest, repository_blobs.c.created_at >= cutoff)
                            ),
                        )
                        .values(deleting_since=now)
                        .returning(blobs.c.digest, blobs.c.size)
                    )
                ]
                # Its links go with it (old ones only: the re-check excluded young ones).
                if tomb:
                    await conn.execute(delete(repository_blobs).where(repository_blobs.c.digest.in_([d for d, _ in tomb])))
        return now, tomb

    async def refresh_tombstones(self, digests: Sequence[str]) -> list[tuple[str, int]]:
        """Re-assert the tombstones on ``digests`` (those still tombstoned), dropping their links."""
        async with self.db.write() as conn:
            held = [
                (r.digest, int(r.size))
                for r in await conn.execute(
                    update(blobs)
                    .where(blobs.c.digest.in_(digests), blobs.c.deleting_since.is_not(None))
                    .values(deleting_since=time.time())
                    .returning(blobs.c.digest, blobs.c.size)
                )
            ]
            if held:
                await conn.execute(delete(repository_blobs).where(repository_blobs.c.digest.in_([d for d, _ in held])))
        return held

    async def delete_tombstoned(self, digests: Sequence[str]) -> None:
        """Delete the rows of tombstoned blobs whose bytes are gone."""
        async with self.db.write() as conn:
            await conn.execute(delete(blobs).where(blobs.c.digest.in_(digests), blobs.c.deleting_since.is_not(None)))

    async def tombstoned(self) -> list[str]:
        """Digests left tombstoned (by a collector killed mid-sweep, or one running now)."""
        async with self.db.read() as conn:
            return sorted((await conn.execute(select(blobs.c.digest).where(blobs.c.deleting_since.is_not(None)))).scalars())

    async def tombstone_orphans(self, found: Sequence[tuple[str, int]], now: float) -> set[str]:
        """Insert tombstoned rows for objects found in storage only; returns the digests that
        were inserted.  The insert *is* the check: a row that appeared since the listing (an
        upload claimed the digest) makes it a no-op; ours makes a concurrent claim wait."""
        async with self.db.write() as conn:
            return set(
                (
                    await conn.execute(
                        self.db.insert(blobs)
                        .values(
                            [
                                {
                                    "digest": d,
                                    "size": s,
                                    "created_at": now,
                                    "last_linked_at": now,
                                    "pending_until": None,
                                    "deleting_since": now,
                                }
                                for d, s in found
                            ]
                        )
                        .on_conflict_do_nothing(index_elements=["digest"])
                        .returning(blobs.c.digest)
                    )
                ).scalars()
            )

    # -------------------------------------------------------------------------- runs
    async def record_run(
        self, started: float, *, dry_run: bool, manifests_removed: int, blobs_removed: int, bytes_removed: int, tags_removed: int
    ) -> None:
        async with self.db.write() as conn:
            await conn.execute(
                insert(gc_runs).values(
                    started_at=started,
                    finished_at=time.time(),
                    dry_run=dry_run,
                    manifests_removed=manifests_removed,
                    blobs_removed=blobs_removed,
                    bytes_removed=bytes_removed,
                    tags_removed=tags_removed,
                )
            )

    async def consistency_rows(self) -> ConsistencyRows:
        async with self.db.read() as conn:
            rows = (
                await conn.execute(select(blobs.c.digest, blobs.c.size, blobs.c.deleting_since, blobs.c.quarantined_at))
            ).all()
            refs = (
                await conn.execute(
                    select(manifests.c.repository_id, manifests.c.digest.label("manifest"), manifest_blobs.c.digest).select_from(
                        manifest_blobs.join(manifests, manifests.c.id == manifest_blobs.c.manifest_id)
                    )
                )
            ).all()
            links = {
                (int(r.repository_id), r.digest)
                for r in await conn.execute(select(repository_blobs.c.repository_id, repository_blobs.c.digest))
            }
            kids = (
                await conn.execute(
                    select(manifests.c.repository_id, manifests.c.digest, manifest_children.c.child_digest).select_from(
                        manifest_children.join(manifests, manifests.c.id == manifest_children.c.manifest_id)
                    )
                )
            ).all()
            have_manifests = {
                (int(r.repository_id), r.digest)
                for r in await conn.execute(select(manifests.c.repository_id, manifests.c.digest))
            }
        return ConsistencyRows(
            blobs=[(r.digest, int(r.size), r.deleting_since, r.quarantined_at) for r in rows],
            references=[(int(r.repository_id), r.manifest, r.digest) for r in refs],
            links=links,
            children=[(int(r.repository_id), r.digest, r.child_digest) for r in kids],
            manifests=have_manifests,
        )

    # -------------------------------------------------------------------- repositories
    async def delete_repository(
        self, name: str, *, record: Callable[[Connection], None] | None = None
    ) -> RepositoryDeleted | None:
        """Forget repository ``name`` (tags, manifests, links, upload sessions) in one write
        transaction; None if unknown.  Its blobs are left to the collector.  ``record``: the
        event's audit/outbox writes, run last in the same transaction."""

        def txn(conn: Connection) -> RepositoryDeleted | None:
            repo_id = conn.execute(select(repositories.c.id).where(repositories.c.name == name).with_for_update()).scalar()
            if repo_id is None:
                return None
            mids = select(manifests.c.id).where(manifests.c.repository_id == repo_id)
            pending = conn.execute(select(uploads.c.id, uploads.c.driver_state).where(uploads.c.repository_id == repo_id)).all()
            n_tags = conn.execute(delete(tags).where(tags.c.repository_id == repo_id)).rowcount
            conn.execute(delete(manifest_blobs).where(manifest_blobs.c.manifest_id.in_(mids)))
            conn.execute(delete(manifest_children).where(manifest_children.c.manifest_id.in_(mids)))
            n_manifests = conn.execute(delete(manifests).where(manifests.c.repository_id == repo_id)).rowcount
            n_links = conn.execute(delete(repository_blobs).where(repository_blobs.c.repository_id == repo_id)).rowcount
            conn.execute(delete(uploads).where(uploads.c.repository_id == repo_id))
            conn.execute(delete(repositories).where(repositories.c.id == repo_id))
            if record is not None:
                record(conn)
            return RepositoryDeleted(
                int(n_tags or 0), int(n_manifests or 0), int(n_links or 0), [(r.id, r.driver_state) for r in pending]
            )

        return await self.db.run_write(txn)


async def _reachable_now(conn: Any, ids: list[int], cutoff: float, *, delete_untagged: bool) -> set[int]:
    """Which of ``ids`` the mark phase would keep if it ran now (inside the delete's transaction).

    The mark phase keeps every manifest reachable from a root (a tag, or a manifest younger
    than the grace period; without ``delete_untagged`` also one untagged by a tag delete less
    than the grace period ago, and one no tag delete concerned that has nothing above it:
    :func:`moorage.gc.mark.own_reason`) through index children and subjects (a referrer lives
    while its subject does).  Here the same relation is walked *upwards* from the candidates with fresh
    statements -- to the indexes that list a manifest and to a referrer's subject, in the same
    repository -- and a candidate is kept if a root is above it.  Every manifest the walk relies
    on is locked FOR UPDATE (SKIP LOCKED), so an index or tag pushed concurrently waits for this
    transaction (or the candidate is kept when a row is busy); on SQLite the write transaction
    serialises it anyway.
    """
    parent = manifests.alias()
    up: dict[int, set[int]] = {}  # manifest -> manifests directly above it
    roots: set[int] = set()
    seen: set[int] = set(ids)
    frontier = list(ids)
    for depth in range(64):
        if not frontier:
            break
        if depth:  # candidates are locked by the caller; lock what the walk relies on
            got = set(
                (
                    await conn.execute(
                        select(manifests.c.id).where(manifests.c.id.in_(frontier)).with_for_update(skip_locked=True)
                    )
                ).scalars()
            )
            roots.update(i for i in frontier if i not in got)  # busy (or gone): keep, don't guess
        rows = (
            await conn.execute(
                select(
                    manifests.c.id,
                    manifests.c.repository_id,
                    manifests.c.digest,
                    manifests.c.subject_digest,
                    manifests.c.created_at,
                    manifests.c.untagged_at,
                    exists().where(tags.c.manifest_id == manifests.c.id).label("tagged"),
                ).where(manifests.c.id.in_(frontier))
            )
        ).all()
        walk = []
        never_untagged: set[int] = set()  # no tag delete concerned it: kept if nothing is above it
        for r in rows:
            recent_untag = r.untagged_at is not None and r.untagged_at >= cutoff
            if r.tagged or r.created_at >= cutoff or (not delete_untagged and recent_untag):
                roots.add(int(r.id))
            else:
                walk.append(int(r.id))
                up[int(r.id)] = set()
                if not delete_untagged and r.untagged_at is None:
                    never_untagged.add(int(r.id))
        if walk:
            # Indexes listing a manifest, and a referrer's subject (same repository each).
            subj = manifests.alias()
            for child_id, above_id in (
                await conn.execute(
                    select(manifests.c.id, parent.c.id)
                    .select_from(
                        manifests.join(manifest_children, manifest_children.c.child_digest == manifests.c.digest).join(
                            parent,
                            and_(
                                parent.c.id == manifest_children.c.manifest_id,
                                parent.c.repository_id == manifests.c.repository_id,
                            ),
                        )
                    )
                    .where(manifests.c.id.in_(walk))
                )
            ).tuples():
                up[int(child_id)].add(int(above_id))
            for ref_id, above_id in (
                await conn.execute(
                    select(manifests.c.id, subj.c.id)
                    .select_from(
                        manifests.join(
                            subj,
                            and_(subj.c.repository_id == manifests.c.repository_id, subj.c.digest == manifests.c.subject_digest),
                        )
                    )
                    .where(manifests.c.id.in_(walk))
                )
            ).tuples():
                up[int(ref_id)].add(int(above_id))
        roots.update(mid for mid in never_untagged if not up[mid])
        nxt: list[int] = []
        for mid in walk:
            nxt.extend(i for i in up[mid] if i not in seen)
            seen.update(up[mid])
        frontier = nxt
    else:
        if frontier:  # deeper than any real graph: keep, rather than guess
            roots.update(frontier)
    # A candidate is alive if a root is in its upward closure.
    alive: set[int] = set()
    for cid in ids:
        stack, visited = [cid], set()
        while stack:
            m = stack.pop()
            if m in visited:
                continue
            visited.add(m)
            if m in roots:
                alive.add(cid)
                break
            stack.extend(up.get(m, ()))
    return alive
