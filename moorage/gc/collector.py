"""The online garbage collector: mark from tags, sweep what nothing reaches — while the registry serves.

One run (:meth:`Collector.run`), in this order (the why of every step is in ``docs/gc.md``):

1. **finish** blobs tombstoned by an earlier run that was killed mid-sweep;
2. **abort** upload sessions idle for longer than ``upload_expiry``;
3. **retention**: remove the tags the retention policies select;
4. **mark**: load the index (tags, manifests, references, blobs, links) and walk from every tag
   through index children and referrers (a referrer is kept when its subject is kept); manifests
   not reached are deleted (each one re-checked under a row lock in its delete transaction):
   by default those a tag delete left untagged more than the grace period ago (and what only
   they reach), with ``delete_untagged`` every one older than the grace period (rules:
   :mod:`.mark`); what is kept that no tag keeps is counted by reason (``GCResult.kept``);
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
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any, Protocol, TypeVar

from ..errors import RegistryError
from ..metadata.db import Database
from ..metadata.gc_store import GCStore, RetentionRule
from ..metadata.records import ManifestNode
from ..metadata.store import TOMBSTONE_STALE, MetadataStore
from ..registry.digests import Digest
from ..registry.principal import Principal
from ..registry.service import COLLECTOR, RETENTION, RegistryService
from ..storage import BlobStore
from . import retention
from .mark import BatchMarks, Kept, MarkScope, explain_kept, mark_batch, merge_kept
from .patterns import repo_matches

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

#: Test hook: seconds to sleep right after the first batch of manifest deletes commits (so a
#: test can SIGKILL the collector between two batches: tests/test_gc_events.py).
PAUSE_AFTER_MANIFEST_BATCH_ENV = "MOORAGE_GC_TEST_PAUSE_AFTER_MANIFEST_BATCH"

T = TypeVar("T")


def _chunks(items: Sequence[T], n: int) -> Iterator[Sequence[T]]:
    for i in range(0, len(items), n):
        yield items[i : i + n]


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
    #: Repositories marked per batch (the mark phase's memory is one batch: issue 24).
    mark_batch: int = 5000
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
    #: What no tag keeps but this run kept, by reason (:func:`.mark.explain_kept`).
    kept: list[Kept] = field(default_factory=list)
    #: The run's grace period and mode (the "kept" lines name them).
    grace: float = 0.0
    delete_untagged: bool = False

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
            "kept": [
                {"reason": k.reason, "manifests": k.manifests, "blobs": k.blobs, "bytes": k.bytes, "text": self.kept_line(k)}
                for k in self.kept
            ],
        }

    def kept_line(self, k: Kept) -> str:
        """One sentence: what was kept, why, and what would collect it."""
        from .patterns import human

        what = ", ".join(
            p
            for p in (
                f"{k.manifests} untagged manifest{'s' if k.manifests != 1 else ''}" if k.manifests else "",
                f"{k.blobs} unreferenced blob{'s' if k.blobs != 1 else ''}" if not k.manifests else "",
                human(k.bytes),
            )
            if p
        )
        grace = _duration(self.grace)
        if k.reason == "young":
            return f"{what} younger than the {grace} grace period: `--grace 0` to collect now"
        if k.reason == "recently_untagged":
            return f"{what} whose tag was deleted less than the {grace} grace period ago: `--grace 0` to collect now"
        if k.reason == "digest_pushed":
            return (
                f"{what} pushed by digest or left by a tag that moved (still pullable by digest): "
                "`--delete-untagged` to collect them"
            )
        return f"{what} uploaded or linked less than the {grace} grace period ago (a push may still reference them)"


def _duration(seconds: float) -> str:
    """``3600`` -> ``1 h``, ``600`` -> ``10 min``, ``45`` -> ``45 s``."""
    s = int(seconds)
    if s and s % 3600 == 0:
        return f"{s // 3600} h"
    if s and s % 60 == 0:
        return f"{s // 60} min"
    return f"{seconds:g} s"


class Collector:
    """One collection over ``db`` and ``blob_store``.

    Its deletes of tags (retention) and manifests are registry changes: made through
    ``registry`` (:meth:`~moorage.registry.service.RegistryService.expire_tags`,
    :meth:`~moorage.registry.service.RegistryService.collect_manifests`), so each batch's
    transaction also holds the audit entries and webhook outbox rows of what it deleted, with
    ``by`` as the actor (``gc``; ``retention`` for the tags) and its face (how the run was
    started).  Without ``registry`` (tests, tools) a service without an event bus is used:
    nothing is recorded.  Blob deletes are storage housekeeping, not registry events
    (Distribution sends none either; docs/events.md).
    """

    def __init__(
        self,
        db: Database,
        blob_store: BlobStore,
        options: GCOptions | None = None,
        progress: Progress | None = None,
        *,
        registry: RegistryService | None = None,
        by: Principal = COLLECTOR,
    ) -> None:
        self.db = db
        self.gc_store = GCStore(db)
        self.blob_store = blob_store
        self.opt = options or GCOptions()
        self.progress = progress or NullProgress()
        self.registry = registry or RegistryService(MetadataStore(db), blob_store)
        self.by = by
        self._paused = False
        self._paused_manifests = False

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

        self.progress.phase("marking")
        repo_id: int | None = None
        if opt.repository is not None:
            repo_id = await self.gc_store.repository_id(opt.repository)
            if repo_id is None:
                res.seconds = time.monotonic() - t0
                return res
        scope = MarkScope(now=started, grace=opt.grace, delete_untagged=opt.delete_untagged, repository_id=repo_id)
        policies = await retention.list_policies(self.db) if opt.apply_retention else []

        # -- mark, a batch of repositories at a time in one read snapshot (bounded memory):
        # retention's tags, untagged manifests nothing reaches, link candidates.
        doomed_tags: list[retention.TagInfo] = []
        marks = BatchMarks()
        names: dict[int, str] = {}  # repositories of condemned manifests (for the report)
        kept_parts: list[Kept] = []  # why untagged manifests stay, per batch (the summary's "kept")
        # Repositories with nothing to mark (every manifest tagged, every link's blob referenced
        # there, no retention rule able to remove a tag) are left in the database (skip_clean).
        rules: list[RetentionRule] = [
            (partial(repo_matches, p.pattern), p.keep_last, None if p.expire_days is None else started - p.expire_days * 86400)
            for p in policies
        ]
        batches = self.gc_store.index_batches(repo_id, self.opt.mark_batch, skip_clean=True, retention_rules=rules)
        async for snap in batches:
            batch_scope = scope
            if policies:
                planned = retention.plan(policies, [t for t in snap.tags if scope.in_scope(t.repository_id)], started)
                doomed_tags.extend(planned)
                batch_scope = replace(scope, removed_tags=frozenset((t.repository_id, t.name) for t in planned))
            found = mark_batch(snap, batch_scope)
            kept_parts += explain_kept(snap, batch_scope, {m.id for m in found.manifests}, (), young_blobs=False)
            names.update((m.repository_id, snap.repos.get(m.repository_id, "?")) for m in found.manifests)
            marks.add(found)
            del snap
        t = lap("mark_index", t)

        # -- retention ---------------------------------------------------------------
        res.tags = [(t.repository, t.name) for t in doomed_tags]
        if doomed_tags and not opt.dry_run:
            self.progress.phase("applying retention", len(doomed_tags))
            removed = await self.registry.expire_tags(doomed_tags, replace(self.by, name=RETENTION.name))
            res.skipped += len(doomed_tags) - removed
            self.progress.advance(len(doomed_tags))
        t = lap("retention", t)

        # -- delete untagged manifests -------------------------------------------------
        doomed_manifests = marks.manifests
        if doomed_manifests and not opt.dry_run:
            await self._test_wait_before_manifest_delete()
            deleted = await self._delete_manifests(doomed_manifests, cutoff, names)
            res.skipped += len(doomed_manifests) - len(deleted)
            doomed_manifests = deleted
        res.manifests = [(names.get(m.repository_id, "?"), m.digest, m.size) for m in doomed_manifests]
        t = lap("manifests", t)

        # -- mark blobs, in the database: after the deletes, a manifest the re-check kept
        # still protects its blobs; a dry run discounts the references of the condemned.
        candidates, prune = await self._mark_blobs(marks, scope)
        del marks
        res.kept = merge_kept(kept_parts)
        res.grace, res.delete_untagged = opt.grace, opt.delete_untagged
        t = lap("mark", t)

        if opt.dry_run:
            res.links_removed = len(prune)
            res.blobs = candidates
            if repo_id is None:
                res.orphans = await self._orphans(stat=True)
        else:
            await self._test_pause_before_sweep(candidates)
            res.links_removed = await self._prune_links(prune, cutoff)
            t = lap("prune_links", t)
            res.blobs, skipped = await self._sweep(candidates, cutoff)
            res.skipped += skipped
            t = lap("sweep", t)
            if repo_id is None:
                orphans = await self._orphans(stat=True)
                res.orphans = await self._sweep_orphans(orphans)
            t = lap("orphans", t)
        res.seconds = time.monotonic() - t0
        await self._record(started, res)
        return res

    async def _mark_blobs(self, marks: BatchMarks, scope: MarkScope) -> tuple[list[tuple[str, int]], list[tuple[int, str]]]:
        """(blobs to sweep, links to prune): the global half of the mark, asked of the database.

        A blob is a candidate if nothing references it (or, in a dry run, only manifests this
        run would delete); a link candidate is pruned only if a surviving manifest somewhere
        still references its blob (else the blob goes, with its links)."""
        dry = self.opt.dry_run
        discount: dict[str, int] = dict(marks.doomed_refs) if dry else {}
        among = marks.scoped if scope.repository_id is not None else None
        candidates = await self.gc_store.blob_candidates(scope.cutoff, scope.now, among=among)
        if discount:
            only = {d: n for d, n in discount.items() if among is None or d in among}
            candidates = sorted(candidates + await self.gc_store.blobs_only_referenced_by(only, scope.cutoff, scope.now))
        prune: list[tuple[int, str]] = []
        if marks.links:
            counts = await self.gc_store.reference_counts(d for _, d in marks.links)
            prune = [(rid, d) for rid, d in marks.links if counts.get(d, 0) > discount.get(d, 0)]
        return candidates, prune

    # ---------------------------------------------------------------------- manifests
    async def _delete_manifests(self, doomed: list[ManifestNode], cutoff: float, names: dict[int, str]) -> list[ManifestNode]:
        """Delete untagged, unreferenced manifests; each re-checked under its row lock, and
        recorded (audit entry, event) in its batch's transaction.

        Passes repeat so an index deleted in one pass frees its children for the next.
        """
        self.progress.phase("deleting untagged manifests", len(doomed))
        by_id = {m.id: m for m in doomed}
        pending = sorted(by_id)
        deleted: list[ManifestNode] = []
        for _ in range(16):
            progress = 0
            left: list[int] = []
            for batch in _chunks(pending, self.opt.batch_size):
                ok = await self.registry.collect_manifests(
                    [by_id[i] for i in batch], names, cutoff, delete_untagged=self.opt.delete_untagged, by=self.by
                )
                await self._test_pause_after_manifests(len(ok))
                okset = set(ok)
                deleted.extend(by_id[i] for i in ok)
                left.extend(i for i in batch if i not in okset)
                progress += len(ok)
                self.progress.advance(len(ok))
            pending = left
            if not progress or not pending:
                break
        return deleted

    # -------------------------------------------------------------------------- links
    async def _prune_links(self, prune: list[tuple[int, str]], cutoff: float) -> int:
        if not prune:
            return 0
        self.progress.phase("pruning unused repository links", len(prune))
        removed = 0
        for batch in _chunks(sorted(prune), self.opt.batch_size):
            removed += await self.gc_store.prune_links(batch, cutoff)
            self.progress.advance(len(batch))
        return removed

    # -------------------------------------------------------------------------- blobs
    async def _sweep(self, candidates: list[tuple[str, int]], cutoff: float) -> tuple[list[tuple[str, int]], int]:
        self.progress.phase("sweeping blobs", len(candidates))
        removed: list[tuple[str, int]] = []
        skipped = 0
        forget: list[str] = []  # bytes gone, rows to delete (in the next transaction: one commit less per batch)
        for batch in _chunks(candidates, self.opt.batch_size):
            # lock (SKIP LOCKED), re-check with fresh statements, tombstone, drop the links
            now, tomb = await self.gc_store.tombstone([d for d, _ in batch], cutoff, forget)
            forget = []
            skipped += len(batch) - len(tomb)
            if tomb:
                await self._test_pause()
                held = await self._destroy([d for d, _ in tomb], tombstoned=(now, tomb), delete_rows=False)
                removed.extend(held)
                forget = [d for d, _ in held]
            self.progress.advance(len(batch))
        if forget:
            await self.gc_store.delete_tombstoned(forget)
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

    async def _test_pause_after_manifests(self, deleted: int) -> None:
        pause = os.environ.get(PAUSE_AFTER_MANIFEST_BATCH_ENV)
        if pause and deleted and not self._paused_manifests:
            self._paused_manifests = True
            print(
                f"gc: {deleted} manifest(s) deleted, pausing {pause}s ({PAUSE_AFTER_MANIFEST_BATCH_ENV})",
                file=sys.stderr,
                flush=True,
            )
            await asyncio.sleep(float(pause))

    async def _test_pause(self) -> None:
        pause = os.environ.get(PAUSE_ENV)
        if pause and not self._paused:
            self._paused = True
            print(f"gc: tombstones set, pausing {pause}s ({PAUSE_ENV})", file=sys.stderr, flush=True)
            await asyncio.sleep(float(pause))

    async def _test_pause_before_sweep(self, candidates: list[tuple[str, int]]) -> None:
        pause = os.environ.get(PAUSE_BEFORE_SWEEP_ENV)
        if pause:
            print(
                f"gc: marked, pausing before sweep ({PAUSE_BEFORE_SWEEP_ENV}); candidates: " + " ".join(d for d, _ in candidates),
                file=sys.stderr,
                flush=True,
            )
            try:
                await asyncio.wait_for(asyncio.to_thread(sys.stdin.readline), float(pause))
            except TimeoutError:
                pass

    async def _destroy(
        self, digests: Sequence[str], tombstoned: tuple[float, list[tuple[str, int]]] | None = None, delete_rows: bool = True
    ) -> list[tuple[str, int]]:
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
            held = await self.gc_store.refresh_tombstones(digests)
        await self._delete_storage([d for d, _ in held])
        if held and delete_rows:
            await self.gc_store.delete_tombstoned([d for d, _ in held])
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
        digests = await self.gc_store.tombstoned()
        if not digests:
            return []
        self.progress.phase("finishing an interrupted sweep", len(digests))
        done: list[tuple[str, int]] = []
        for batch in _chunks(digests, self.opt.batch_size):
            done.extend(await self._destroy(batch))
            self.progress.advance(len(batch))
        return done

    # ------------------------------------------------------------------------ orphans
    async def _orphans(self, *, stat: bool) -> list[tuple[str, int]]:
        """Objects in storage without a blob row, checked against the index a page at a time."""
        self.progress.phase("listing storage")
        found: list[str] = []
        page: list[str] = []

        async def check() -> None:
            known = await self.gc_store.known_blobs(page)
            found.extend(d for d in page if d not in known)
            page.clear()

        async for digest in self.blob_store.list_blobs():
            try:
                Digest.parse(digest)
            except RegistryError:
                continue
            page.append(digest)
            if len(page) >= 1000:
                await check()
        if page:
            await check()
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
            # The insert *is* the check: a row that appeared since the listing (an upload
            # claimed the digest) makes it a no-op; ours makes a concurrent claim wait.
            mine = await self.gc_store.tombstone_orphans(batch, now)
            removed.extend(await self._destroy([d for d, _ in batch if d in mine]))
            self.progress.advance(len(batch))
        sizes = dict(orphans)
        return [(d, sizes.get(d, s)) for d, s in removed]

    # ------------------------------------------------------------------------ uploads
    async def _stale_uploads(self, now: float) -> int:
        rows = await self.gc_store.stale_uploads(now - self.opt.upload_expiry, self.opt.repository)
        if self.opt.dry_run or not rows:
            return len(rows)
        import json

        self.progress.phase("aborting stale uploads", len(rows))
        aborted = 0
        for r in rows:
            if await self.gc_store.forget_upload(r):
                aborted += 1
                try:
                    await self.blob_store.upload_abort(r.id, json.loads(r.driver_state))
                except Exception:  # noqa: BLE001 - storage leftovers are harmless; next run retries nothing
                    pass
            self.progress.advance()
        return aborted

    async def _record(self, started: float, res: GCResult) -> None:
        try:
            await self.gc_store.record_run(
                started,
                dry_run=res.dry_run,
                manifests_removed=len(res.manifests),
                blobs_removed=len(res.blobs) + len(res.orphans),
                bytes_removed=res.bytes_removed,
                tags_removed=len(res.tags),
            )
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
    rows = await GCStore(db).consistency_rows()
    live = {}
    for digest, size, deleting_since, quarantined_at in rows.blobs:
        if deleting_since is not None:
            problems.append(f"tombstone left on {digest}")
            continue
        if quarantined_at is not None:  # moorage scrub found its bytes corrupt
            problems.append(f"blob {digest} is quarantined (stored bytes did not match the digest; push it again)")
            continue
        live[digest] = size
    for digest, size in live.items():
        st = await blob_store.stat(digest)
        if st is None:
            problems.append(f"blob {digest} has a row but no bytes in storage")
        elif st.size != size:
            problems.append(f"blob {digest}: row says {size} bytes, storage has {st.size}")
    for repo_id, manifest, digest in rows.references:
        if digest not in live:
            problems.append(f"manifest {manifest} references missing blob {digest}")
        elif (repo_id, digest) not in rows.links:
            problems.append(f"manifest {manifest} references {digest}, not linked in its repository")
    for repo_id, index, child in rows.children:
        if (repo_id, child) not in rows.manifests:
            problems.append(f"index {index} references missing manifest {child}")
    return problems
