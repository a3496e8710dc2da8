"""The online garbage collector: mark from tags, sweep what nothing reaches — while the registry serves.

One run (:meth:`Collector.run`), in this order (the why of every step is in ``docs/gc.md``):

1. **finish** blobs tombstoned by an earlier run that was killed mid-sweep;
2. **abort** upload sessions idle for longer than ``upload_expiry``;
3. **retention**: remove the tags the retention policies select;
4. **mark**: load the index (tags, manifests, references, blobs, links) and walk from every tag
   through index children and referrers (a referrer is kept when its subject is kept); with
   ``delete_untagged``, every manifest not reached and older than the grace period is deleted
   (each one re-checked under a row lock in its delete transaction);
5. **prune links** (``repository_blobs``) older than the grace period whose blob no manifest of
   that repository references;
6. **sweep blobs** no manifest references, with no link younger than the grace period and no
   upload lease: per batch, one write transaction locks the rows, *re-checks* all of that with
   fresh statements, sets the tombstone (``deleting_since``) and deletes the links; then the
   bytes are deleted from storage; then the rows;
7. **orphans**: objects in storage without a database row (a crash between storage and
   database) get a tombstone row first (so a concurrent upload of the same digest waits), then
   go the same way.

``dry_run`` stops after the mark phase and reports what would go (and how many bytes).
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, Protocol, Sequence, TypeVar

from sqlalchemy import and_, delete, exists, insert, or_, select, tuple_, update
from sqlalchemy.orm import aliased

from ..metadata.db import Database
from ..metadata.store import TOMBSTONE_STALE
from ..metadata.tables import (
    blobs,
    gc_runs,
    manifest_blobs,
    manifest_children,
    manifests,
    repositories,
    repository_blobs,
    tags,
    uploads,
)
from ..registry.digests import Digest
from ..registry.errors import RegistryError
from ..storage import BlobStore
from . import retention

#: Test hook: seconds to sleep right after the first tombstone transaction commits (so a test
#: can SIGKILL the collector mid-sweep).
PAUSE_ENV = "MOORAGE_GC_TEST_PAUSE_AFTER_TOMBSTONE"
#: Test hook: after the mark phase, before links are pruned and blobs swept, print the sweep
#: candidates to stderr and wait (at most this many seconds) for a line on stdin, so a test
#: can put a request exactly between mark and sweep (tests/test_gc_race.py).
PAUSE_BEFORE_SWEEP_ENV = "MOORAGE_GC_TEST_PAUSE_BEFORE_SWEEP"
#: Test hook: a file path; after the mark phase and before deleting untagged manifests the
#: collector waits (at most 120 s) until it exists (so a test can push while it is marked).
WAIT_BEFORE_MANIFEST_DELETE_ENV = "MOORAGE_GC_TEST_WAIT_BEFORE_MANIFEST_DELETE"

T = TypeVar("T")


def _chunks(items: Sequence[T], n: int) -> Iterator[Sequence[T]]:
    for i in range(0, len(items), n):
        yield items[i:i + n]


class Progress(Protocol):
    def phase(self, name: str, total: int | None = None) -> None: ...
    def advance(self, n: int = 1) -> None: ...


class NullProgress:
    def phase(self, name: str, total: int | None = None) -> None:
        pass

    def advance(self, n: int = 1) -> None:
        pass


@dataclass
class GCOptions:
    grace: float = 3600.0
    dry_run: bool = False
    delete_untagged: bool = False
    #: Collect only this repository (its tags, manifests and the blobs it held).
    repository: str | None = None
    #: Upload sessions idle for longer than this are aborted.
    upload_expiry: float = 86400.0
    apply_retention: bool = True
    batch_size: int = 500
    delete_concurrency: int = 16


@dataclass
class GCResult:
    dry_run: bool
    tags: list[tuple[str, str]] = field(default_factory=list)
    manifests: list[tuple[str, str, int]] = field(default_factory=list)
    blobs: list[tuple[str, int]] = field(default_factory=list)
    orphans: list[tuple[str, int]] = field(default_factory=list)
    links_removed: int = 0
    uploads_aborted: int = 0
    tombstones_finished: int = 0
    #: Candidates a concurrent push/tag saved (the re-check under lock said "keep").
    skipped: int = 0
    seconds: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def bytes_removed(self) -> int:
        return sum(s for _, s in self.blobs) + sum(s for _, s in self.orphans)

    def summary(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "tags_removed": len(self.tags),
            "manifests_removed": len(self.manifests),
            "blobs_removed": len(self.blobs) + len(self.orphans),
            "orphans_removed": len(self.orphans),
            "bytes_removed": self.bytes_removed,
            "links_removed": self.links_removed,
            "uploads_aborted": self.uploads_aborted,
            "tombstones_finished": self.tombstones_finished,
            "skipped_concurrent": self.skipped,
            "seconds": round(self.seconds, 3),
        }


@dataclass(slots=True)
class _Manifest:
    id: int
    repository_id: int
    digest: str
    subject: str | None
    created_at: float
    size: int


@dataclass(slots=True)
class _Blob:
    size: int
    last_linked_at: float
    pending_until: float | None
    deleting_since: float | None


@dataclass
class _Snapshot:
    repos: dict[int, str]
    tags: list[retention.TagInfo]
    manifests: dict[int, _Manifest]
    children: dict[int, list[str]]
    mblobs: dict[int, list[str]]
    blobs: dict[str, _Blob]
    links: list[tuple[int, str, float]]


class Collector:
    def __init__(self, db: Database, blob_store: BlobStore, options: GCOptions | None = None,
                 progress: Progress | None = None) -> None:
        self.db = db
        self.blob_store = blob_store
        self.opt = options or GCOptions()
        self.progress = progress or NullProgress()
        self._paused = False

    # ------------------------------------------------------------------------------ run
    async def run(self) -> GCResult:
        opt = self.opt
        res = GCResult(dry_run=opt.dry_run)
        t0 = time.monotonic()
        started = time.time()
        cutoff = started - opt.grace

        def lap(name: str, since: float) -> float:
            now = time.monotonic()
            res.timings[name] = round(now - since, 3)
            return now

        t = t0
        if not opt.dry_run:
            res.tombstones_finished = len(await self._finish_tombstones())
        t = lap("finish_tombstones", t)
        res.uploads_aborted = await self._stale_uploads(started)
        t = lap("uploads", t)

        self.progress.phase("reading the index")
        snap = await self._snapshot()
        t = lap("snapshot", t)
        repo_id = next((i for i, n in snap.repos.items() if n == opt.repository), None) if opt.repository else None
        if opt.repository is not None and repo_id is None:
            res.seconds = time.monotonic() - t0
            return res

        def in_scope(rid: int) -> bool:
            return repo_id is None or rid == repo_id

        # -- retention ---------------------------------------------------------------
        doomed_tags: list[retention.TagInfo] = []
        if opt.apply_retention:
            policies = await retention.list_policies(self.db)
            if policies:
                doomed_tags = retention.plan(policies, [t for t in snap.tags if in_scope(t.repository_id)], started)
        res.tags = [(t.repository, t.name) for t in doomed_tags]
        if doomed_tags and not opt.dry_run:
            self.progress.phase("applying retention", len(doomed_tags))
            removed = await retention.remove_tags(self.db, doomed_tags)
            res.skipped += len(doomed_tags) - removed
            self.progress.advance(len(doomed_tags))
        t = lap("retention", t)

        # -- mark manifests ------------------------------------------------------------
        gone_tags = {(t.repository_id, t.name) for t in doomed_tags}
        doomed_manifests: list[_Manifest] = []
        if opt.delete_untagged:
            roots = {t.manifest_id for t in snap.tags if (t.repository_id, t.name) not in gone_tags}
            roots |= {m.id for m in snap.manifests.values() if m.created_at >= cutoff or not in_scope(m.repository_id)}
            kept = self._reach(snap, roots)
            doomed_manifests = [m for m in snap.manifests.values() if m.id not in kept]
        doomed_ids = {m.id for m in doomed_manifests}
        if doomed_manifests and not opt.dry_run:
            await self._test_wait_before_manifest_delete()
            deleted = await self._delete_manifests(doomed_manifests, cutoff)
            res.skipped += len(doomed_manifests) - len(deleted)
            doomed_manifests = deleted
        res.manifests = [(snap.repos.get(m.repository_id, "?"), m.digest, m.size) for m in doomed_manifests]
        t = lap("manifests", t)

        # -- mark blobs ---------------------------------------------------------------
        referenced: set[str] = set()
        referenced_in: set[tuple[int, str]] = set()
        scoped_digests: set[str] = set()
        for mid, digests in snap.mblobs.items():
            m = snap.manifests.get(mid)
            if m is None:
                continue
            if mid in doomed_ids:
                if repo_id is not None and m.repository_id == repo_id:
                    scoped_digests.update(digests)
                continue
            referenced.update(digests)
            referenced_in.update((m.repository_id, d) for d in digests)
        young_link: set[str] = set()
        prune: list[tuple[int, str]] = []
        for rid, digest, created in snap.links:
            if created >= cutoff:
                young_link.add(digest)
            elif (rid, digest) not in referenced_in and digest in referenced and in_scope(rid):
                prune.append((rid, digest))
            if repo_id is not None and rid == repo_id:
                scoped_digests.add(digest)
        candidates = [
            (d, b.size) for d, b in snap.blobs.items()
            if b.deleting_since is None and d not in referenced and d not in young_link
            and b.last_linked_at < cutoff and (b.pending_until is None or b.pending_until < started)
            and (repo_id is None or d in scoped_digests)
        ]
        candidates.sort()
        t = lap("mark", t)

        if opt.dry_run:
            res.links_removed = len(prune)
            res.blobs = candidates
            if repo_id is None:
                res.orphans = await self._orphans(set(snap.blobs), stat=True)
        else:
            await self._test_pause_before_sweep(candidates)
            res.links_removed = await self._prune_links(prune, cutoff)
            t = lap("prune_links", t)
            res.blobs, skipped = await self._sweep(candidates, cutoff)
            res.skipped += skipped
            t = lap("sweep", t)
            if repo_id is None:
                known = set(snap.blobs)
                orphans = await self._orphans(known, stat=True)
                res.orphans = await self._sweep_orphans(orphans)
            t = lap("orphans", t)
        res.seconds = time.monotonic() - t0
        await self._record(started, res)
        return res

    # ------------------------------------------------------------------------ snapshot
    async def _snapshot(self) -> _Snapshot:
        async with self.db.read() as conn:
            repos = {int(r.id): r.name for r in await conn.execute(select(repositories.c.id, repositories.c.name))}
            tag_rows = (await conn.execute(select(tags.c.repository_id, tags.c.name, tags.c.manifest_id, tags.c.updated_at))).all()
            mans = {
                int(r.id): _Manifest(int(r.id), int(r.repository_id), r.digest, r.subject_digest, float(r.created_at), int(r.size))
                for r in await conn.execute(select(manifests.c.id, manifests.c.repository_id, manifests.c.digest,
                                                   manifests.c.subject_digest, manifests.c.created_at, manifests.c.size))
            }
            children: dict[int, list[str]] = {}
            for r in await conn.execute(select(manifest_children.c.manifest_id, manifest_children.c.child_digest)):
                children.setdefault(int(r.manifest_id), []).append(r.child_digest)
            mblobs: dict[int, list[str]] = {}
            for r in await conn.execute(select(manifest_blobs.c.manifest_id, manifest_blobs.c.digest)):
                mblobs.setdefault(int(r.manifest_id), []).append(r.digest)
            blob_rows = {
                r.digest: _Blob(int(r.size), float(r.last_linked_at), r.pending_until, r.deleting_since)
                for r in await conn.execute(select(blobs.c.digest, blobs.c.size, blobs.c.last_linked_at,
                                                   blobs.c.pending_until, blobs.c.deleting_since))
            }
            links = [(int(r.repository_id), r.digest, float(r.created_at))
                     for r in await conn.execute(select(repository_blobs.c.repository_id, repository_blobs.c.digest,
                                                        repository_blobs.c.created_at))]
        tag_infos = [retention.TagInfo(int(r.repository_id), repos.get(int(r.repository_id), "?"), r.name,
                                       int(r.manifest_id), float(r.updated_at)) for r in tag_rows]
        return _Snapshot(repos, tag_infos, mans, children, mblobs, blob_rows, links)

    @staticmethod
    def _reach(snap: _Snapshot, roots: Iterable[int]) -> set[int]:
        by_key = {(m.repository_id, m.digest): m.id for m in snap.manifests.values()}
        referrers: dict[tuple[int, str], list[int]] = {}
        for m in snap.manifests.values():
            if m.subject:
                referrers.setdefault((m.repository_id, m.subject), []).append(m.id)
        kept: set[int] = set()
        stack = [r for r in roots if r in snap.manifests]
        while stack:
            mid = stack.pop()
            if mid in kept:
                continue
            kept.add(mid)
            m = snap.manifests[mid]
            for child in snap.children.get(mid, ()):
                cid = by_key.get((m.repository_id, child))
                if cid is not None and cid not in kept:
                    stack.append(cid)
            stack.extend(r for r in referrers.get((m.repository_id, m.digest), ()) if r not in kept)
        return kept

    # ---------------------------------------------------------------------- manifests
    async def _delete_manifests(self, doomed: list[_Manifest], cutoff: float) -> list[_Manifest]:
        """Delete untagged, unreferenced manifests; each re-checked under its row lock.

        Passes repeat so an index deleted in one pass frees its children for the next.
        """
        self.progress.phase("deleting untagged manifests", len(doomed))
        by_id = {m.id: m for m in doomed}
        pending = sorted(by_id)
        deleted: list[_Manifest] = []
        for _ in range(16):
            progress = 0
            left: list[int] = []
            for batch in _chunks(pending, self.opt.batch_size):
                async with self.db.write() as conn:
                    locked = list((await conn.execute(
                        select(manifests.c.id).where(manifests.c.id.in_(batch))
                        .with_for_update(skip_locked=True)
                    )).scalars())
                    ok: list[int] = []
                    if locked:
                        alive = await self._reachable_now(conn, locked, cutoff)
                        ok = [i for i in locked if i not in alive]
                    if ok:
                        await conn.execute(delete(manifest_blobs).where(manifest_blobs.c.manifest_id.in_(ok)))
                        await conn.execute(delete(manifest_children).where(manifest_children.c.manifest_id.in_(ok)))
                        await conn.execute(delete(tags).where(tags.c.manifest_id.in_(ok)))
                        await conn.execute(delete(manifests).where(manifests.c.id.in_(ok)))
                okset = set(ok)
                deleted.extend(by_id[i] for i in ok)
                left.extend(i for i in batch if i not in okset)
                progress += len(ok)
                self.progress.advance(len(ok))
            pending = left
            if not progress or not pending:
                break
        return deleted

    async def _reachable_now(self, conn: Any, ids: list[int], cutoff: float) -> set[int]:
        """Which of ``ids`` the mark phase would keep if it ran now (inside the delete's transaction).

        The mark phase keeps every manifest reachable from a root (a tag, or a manifest
        younger than the grace period) through index children and subjects (a referrer lives
        while its subject does).  Here the same relation is walked *upwards* from the
        candidates with fresh statements -- to the indexes that list a manifest and to a
        referrer's subject, in the same repository -- and a candidate is kept if a root is
        above it.  Every manifest the walk relies on is locked FOR UPDATE (SKIP LOCKED), so an
        index or tag pushed concurrently waits for this transaction (or the candidate is kept
        when a row is busy); on SQLite the write transaction serialises it anyway.
        """
        parent = aliased(manifests)
        up: dict[int, set[int]] = {}        # manifest -> manifests directly above it
        roots: set[int] = set()
        seen: set[int] = set(ids)
        frontier = list(ids)
        for depth in range(64):
            if not frontier:
                break
            if depth:  # candidates are locked by the caller; lock what the walk relies on
                got = set((await conn.execute(
                    select(manifests.c.id).where(manifests.c.id.in_(frontier)).with_for_update(skip_locked=True)
                )).scalars())
                roots.update(i for i in frontier if i not in got)  # busy (or gone): keep, don't guess
            rows = (await conn.execute(
                select(manifests.c.id, manifests.c.repository_id, manifests.c.digest, manifests.c.subject_digest,
                       manifests.c.created_at, exists().where(tags.c.manifest_id == manifests.c.id).label("tagged"))
                .where(manifests.c.id.in_(frontier))
            )).all()
            walk = []
            for r in rows:
                if r.tagged or r.created_at >= cutoff:
                    roots.add(int(r.id))
                else:
                    walk.append(int(r.id))
                    up[int(r.id)] = set()
            if walk:
                # Indexes listing a manifest, and a referrer's subject (same repository each).
                subj = aliased(manifests)
                for child_id, above_id in (await conn.execute(
                    select(manifests.c.id, parent.c.id)
                    .select_from(manifests
                                 .join(manifest_children, manifest_children.c.child_digest == manifests.c.digest)
                                 .join(parent, and_(parent.c.id == manifest_children.c.manifest_id,
                                                    parent.c.repository_id == manifests.c.repository_id)))
                    .where(manifests.c.id.in_(walk))
                )).tuples():
                    up[int(child_id)].add(int(above_id))
                for ref_id, above_id in (await conn.execute(
                    select(manifests.c.id, subj.c.id)
                    .select_from(manifests.join(subj, and_(subj.c.repository_id == manifests.c.repository_id,
                                                           subj.c.digest == manifests.c.subject_digest)))
                    .where(manifests.c.id.in_(walk))
                )).tuples():
                    up[int(ref_id)].add(int(above_id))
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

    # -------------------------------------------------------------------------- links
    async def _prune_links(self, prune: list[tuple[int, str]], cutoff: float) -> int:
        if not prune:
            return 0
        self.progress.phase("pruning unused repository links", len(prune))
        removed = 0
        mb_owner = aliased(manifests)
        for batch in _chunks(sorted(prune), self.opt.batch_size):
            async with self.db.write() as conn:
                locked = set((await conn.execute(
                    select(blobs.c.digest).where(blobs.c.digest.in_({d for _, d in batch}))
                    .with_for_update(skip_locked=True)
                )).scalars())
                pairs = [p for p in batch if p[1] in locked]
                if pairs:
                    res = await conn.execute(delete(repository_blobs).where(
                        tuple_(repository_blobs.c.repository_id, repository_blobs.c.digest).in_(pairs),
                        repository_blobs.c.created_at < cutoff,
                        ~exists(select(manifest_blobs.c.manifest_id)
                                .select_from(manifest_blobs.join(mb_owner, mb_owner.c.id == manifest_blobs.c.manifest_id))
                                .where(manifest_blobs.c.digest == repository_blobs.c.digest,
                                       mb_owner.c.repository_id == repository_blobs.c.repository_id)),
                    ))
                    removed += int(res.rowcount or 0)
            self.progress.advance(len(batch))
        return removed

    # -------------------------------------------------------------------------- blobs
    async def _sweep(self, candidates: list[tuple[str, int]], cutoff: float) -> tuple[list[tuple[str, int]], int]:
        self.progress.phase("sweeping blobs", len(candidates))
        removed: list[tuple[str, int]] = []
        skipped = 0
        forget: list[str] = []  # bytes gone, rows to delete (in the next transaction: one commit less per batch)
        for batch in _chunks(candidates, self.opt.batch_size):
            digests = [d for d, _ in batch]
            async with self.db.write() as conn:
                now = time.time()
                if forget:
                    await conn.execute(delete(blobs).where(blobs.c.digest.in_(forget), blobs.c.deleting_since.is_not(None)))
                    forget = []
                # 1. lock: SKIP LOCKED, so an in-flight put_manifest/claim/link holding a row
                #    makes us skip that blob (it is being used) instead of waiting or deadlocking.
                locked = list((await conn.execute(
                    select(blobs.c.digest).where(blobs.c.digest.in_(digests), blobs.c.deleting_since.is_(None))
                    .with_for_update(skip_locked=True)
                )).scalars())
                tomb: list[tuple[str, int]] = []
                if locked:
                    # 2. re-check with a fresh statement (sees every commit before our locks) and tombstone.
                    tomb = [(r.digest, int(r.size)) for r in await conn.execute(
                        update(blobs).where(
                            blobs.c.digest.in_(locked),
                            blobs.c.deleting_since.is_(None),
                            blobs.c.last_linked_at < cutoff,
                            or_(blobs.c.pending_until.is_(None), blobs.c.pending_until < now),
                            ~exists().where(manifest_blobs.c.digest == blobs.c.digest),
                            ~exists().where(and_(repository_blobs.c.digest == blobs.c.digest,
                                                 repository_blobs.c.created_at >= cutoff)),
                        ).values(deleting_since=now).returning(blobs.c.digest, blobs.c.size)
                    )]
                    # 3. its links go with it (old ones only: the re-check excluded young ones).
                    if tomb:
                        await conn.execute(delete(repository_blobs).where(repository_blobs.c.digest.in_([d for d, _ in tomb])))
            skipped += len(batch) - len(tomb)
            if tomb:
                await self._test_pause()
                held = await self._destroy([d for d, _ in tomb], tombstoned=(now, tomb), delete_rows=False)
                removed.extend(held)
                forget = [d for d, _ in held]
            self.progress.advance(len(batch))
        if forget:
            async with self.db.write() as conn:
                await conn.execute(delete(blobs).where(blobs.c.digest.in_(forget), blobs.c.deleting_since.is_not(None)))
        return removed, skipped

    async def _test_wait_before_manifest_delete(self) -> None:
        path = os.environ.get(WAIT_BEFORE_MANIFEST_DELETE_ENV)
        if not path:
            return
        print(f"gc: manifests marked, waiting for {path} ({WAIT_BEFORE_MANIFEST_DELETE_ENV})", file=sys.stderr, flush=True)
        for _ in range(1200):
            if os.path.exists(path):
                return
            await asyncio.sleep(0.1)

    async def _test_pause(self) -> None:
        pause = os.environ.get(PAUSE_ENV)
        if pause and not self._paused:
            self._paused = True
            print(f"gc: tombstones set, pausing {pause}s ({PAUSE_ENV})", file=sys.stderr, flush=True)
            await asyncio.sleep(float(pause))

    async def _test_pause_before_sweep(self, candidates: list[tuple[str, int]]) -> None:
        pause = os.environ.get(PAUSE_BEFORE_SWEEP_ENV)
        if pause:
            print(f"gc: marked, pausing before sweep ({PAUSE_BEFORE_SWEEP_ENV}); candidates: "
                  + " ".join(d for d, _ in candidates), file=sys.stderr, flush=True)
            try:
                await asyncio.wait_for(asyncio.to_thread(sys.stdin.readline), float(pause))
            except asyncio.TimeoutError:
                pass

    async def _destroy(self, digests: Sequence[str], tombstoned: tuple[float, list[tuple[str, int]]] | None = None,
                       delete_rows: bool = True) -> list[tuple[str, int]]:
        """Delete tombstoned blobs: (refresh the tombstones,) delete the bytes, delete the rows.

        The refresh re-asserts ownership right before the storage delete: a tombstone that
        went stale meanwhile (and was cleared by an upload, see ``claim_blob``) is no longer
        there and that blob is left alone.  Tombstones this run set moments ago
        (``tombstoned``: when, which) are far from stale and skip the refresh.
        """
        if not digests:
            return []
        if tombstoned is not None and time.time() - tombstoned[0] < TOMBSTONE_STALE / 10:
            held = tombstoned[1]
        else:
            async with self.db.write() as conn:
                held = [(r.digest, int(r.size)) for r in await conn.execute(
                    update(blobs).where(blobs.c.digest.in_(digests), blobs.c.deleting_since.is_not(None))
                    .values(deleting_since=time.time()).returning(blobs.c.digest, blobs.c.size)
                )]
                if held:
                    await conn.execute(delete(repository_blobs).where(repository_blobs.c.digest.in_([d for d, _ in held])))
        await self._delete_storage([d for d, _ in held])
        if held and delete_rows:
            async with self.db.write() as conn:
                await conn.execute(delete(blobs).where(blobs.c.digest.in_([d for d, _ in held]),
                                                       blobs.c.deleting_since.is_not(None)))
        return held

    async def _delete_storage(self, digests: Sequence[str]) -> None:
        if not digests:
            return
        paths = [self.blob_store.local_path(d) for d in digests]
        if all(p is not None for p in paths):
            # Local files: one thread hop for the whole batch instead of one per file.
            def unlink_all() -> None:
                for p in paths:
                    try:
                        os.unlink(p)  # type: ignore[arg-type]
                    except FileNotFoundError:
                        pass

            await asyncio.to_thread(unlink_all)
            return
        sem = asyncio.Semaphore(self.opt.delete_concurrency)

        async def one(d: str) -> None:
            async with sem:
                await self.blob_store.delete(d)

        await asyncio.gather(*(one(d) for d in digests))

    async def _finish_tombstones(self) -> list[tuple[str, int]]:
        async with self.db.read() as conn:
            digests = sorted((await conn.execute(select(blobs.c.digest).where(blobs.c.deleting_since.is_not(None)))).scalars())
        if not digests:
            return []
        self.progress.phase("finishing an interrupted sweep", len(digests))
        done: list[tuple[str, int]] = []
        for batch in _chunks(digests, self.opt.batch_size):
            done.extend(await self._destroy(batch))
            self.progress.advance(len(batch))
        return done

    # ------------------------------------------------------------------------ orphans
    async def _orphans(self, known: set[str], *, stat: bool) -> list[tuple[str, int]]:
        self.progress.phase("listing storage")
        found: list[str] = []
        async for digest in self.blob_store.list_blobs():
            if digest in known:
                continue
            try:
                Digest.parse(digest)
            except RegistryError:
                continue
            found.append(digest)
        out: list[tuple[str, int]] = []
        for d in sorted(found):
            st = await self.blob_store.stat(d) if stat else None
            out.append((d, st.size if st else 0))
        return out

    async def _sweep_orphans(self, orphans: list[tuple[str, int]]) -> list[tuple[str, int]]:
        if not orphans:
            return []
        self.progress.phase("sweeping orphaned storage objects", len(orphans))
        removed: list[tuple[str, int]] = []
        for batch in _chunks(orphans, self.opt.batch_size):
            now = time.time()
            async with self.db.write() as conn:
                # The insert *is* the check: a row that appeared since the listing (an upload
                # claimed the digest) makes it a no-op; ours makes a concurrent claim wait.
                mine = set((await conn.execute(
                    self.db.insert(blobs).values([
                        {"digest": d, "size": s, "created_at": now, "last_linked_at": now,
                         "pending_until": None, "deleting_since": now} for d, s in batch
                    ]).on_conflict_do_nothing(index_elements=["digest"]).returning(blobs.c.digest)
                )).scalars())
            removed.extend(await self._destroy([d for d, _ in batch if d in mine]))
            self.progress.advance(len(batch))
        sizes = dict(orphans)
        return [(d, sizes.get(d, s)) for d, s in removed]

    # ------------------------------------------------------------------------ uploads
    async def _stale_uploads(self, now: float) -> int:
        q = select(uploads.c.id, uploads.c.driver_state, uploads.c.updated_at, uploads.c.repository_id).where(
            uploads.c.updated_at < now - self.opt.upload_expiry)
        if self.opt.repository:
            q = q.where(uploads.c.repository_id.in_(select(repositories.c.id).where(repositories.c.name == self.opt.repository)))
        async with self.db.read() as conn:
            rows = (await conn.execute(q)).all()
        if self.opt.dry_run or not rows:
            return len(rows)
        import json

        self.progress.phase("aborting stale uploads", len(rows))
        aborted = 0
        for r in rows:
            async with self.db.write() as conn:
                res = await conn.execute(delete(uploads).where(uploads.c.id == r.id, uploads.c.updated_at == r.updated_at))
            if res.rowcount:
                aborted += 1
                try:
                    await self.blob_store.upload_abort(r.id, json.loads(r.driver_state))
                except Exception:  # noqa: BLE001 - storage leftovers are harmless; next run retries nothing
                    pass
            self.progress.advance()
        return aborted

    async def _record(self, started: float, res: GCResult) -> None:
        try:
            async with self.db.write() as conn:
                await conn.execute(insert(gc_runs).values(
                    started_at=started, finished_at=time.time(), dry_run=res.dry_run,
                    manifests_removed=len(res.manifests), blobs_removed=len(res.blobs) + len(res.orphans),
                    bytes_removed=res.bytes_removed, tags_removed=len(res.tags),
                ))
        except Exception:  # noqa: BLE001 - bookkeeping must never fail a collection
            pass


# ---------------------------------------------------------------------------- checking
async def check_consistency(db: Database, blob_store: BlobStore) -> list[str]:
    """Problems in the registry's index vs storage (empty list = consistent).

    * every blob row without a tombstone has its bytes in storage (and the right size);
    * every blob a manifest references has a live row and a link in the manifest's repository;
    * every index child exists in the same repository;
    * no tombstone is left.
    """
    problems: list[str] = []
    async with db.read() as conn:
        rows = (await conn.execute(select(blobs.c.digest, blobs.c.size, blobs.c.deleting_since, blobs.c.quarantined_at))).all()
        refs = (await conn.execute(
            select(manifests.c.repository_id, manifests.c.digest.label("manifest"), manifest_blobs.c.digest)
            .select_from(manifest_blobs.join(manifests, manifests.c.id == manifest_blobs.c.manifest_id))
        )).all()
        links = {(int(r.repository_id), r.digest) for r in await conn.execute(
            select(repository_blobs.c.repository_id, repository_blobs.c.digest))}
        kids = (await conn.execute(
            select(manifests.c.repository_id, manifests.c.digest, manifest_children.c.child_digest)
            .select_from(manifest_children.join(manifests, manifests.c.id == manifest_children.c.manifest_id))
        )).all()
        have_manifests = {(int(r.repository_id), r.digest) for r in await conn.execute(
            select(manifests.c.repository_id, manifests.c.digest))}
    live = {}
    for r in rows:
        if r.deleting_since is not None:
            problems.append(f"tombstone left on {r.digest}")
            continue
        if r.quarantined_at is not None:  # moorage scrub found its bytes corrupt
            problems.append(f"blob {r.digest} is quarantined (stored bytes did not match the digest; push it again)")
            continue
        live[r.digest] = int(r.size)
    for digest, size in live.items():
        st = await blob_store.stat(digest)
        if st is None:
            problems.append(f"blob {digest} has a row but no bytes in storage")
        elif st.size != size:
            problems.append(f"blob {digest}: row says {size} bytes, storage has {st.size}")
    for r in refs:
        if r.digest not in live:
            problems.append(f"manifest {r.manifest} references missing blob {r.digest}")
        elif (int(r.repository_id), r.digest) not in links:
            problems.append(f"manifest {r.manifest} references {r.digest}, not linked in its repository")
    for r in kids:
        if (int(r.repository_id), r.child_digest) not in have_manifests:
            problems.append(f"index {r.digest} references missing manifest {r.child_digest}")
    return problems
