"""The mark phase of the collector: pure functions over a snapshot of the index.

No database, no storage, no clock: everything comes in as an :class:`IndexSnapshot` (read by
:meth:`moorage.metadata.gc_store.GCStore.snapshot`) and a :class:`MarkScope`, so the rules
of what survives are unit-tested on hand-built graphs (``tests/test_gc_mark.py``).  What is
marked here is only a *candidate*: the sweep re-checks each one under row locks with fresh
statements (``GCStore.tombstone``, ``GCStore.delete_manifests_unreachable``), because pushes
commit between the snapshot and the sweep.

Rules (the why is in ``docs/gc.md``):

* roots are the tags (minus those retention removes in this run) and every manifest younger
  than the grace period (a push in progress tags it last); without ``delete_untagged`` also
  every manifest untagged by a tag delete less than the grace period ago and every untagged
  manifest no tag delete concerned (``untagged_at`` unset: pushed by digest, or its tag moved
  elsewhere) that no index lists and that refers to no subject -- so a tag delete frees its
  image (and an index's children, and its referrers) once the grace period has passed, while a
  digest-pushed manifest stays pullable; ``delete_untagged`` collects every unreachable one;
* a kept manifest keeps the manifests its index lists (same repository) and its referrers
  (manifests whose ``subject`` is it, same repository);
* a blob survives while a kept manifest references it, while a link to it is younger than the
  grace period, while it was linked less than the grace period ago, while an upload holds a
  lease on it, or while a collector is already deleting it (tombstoned: not ours to sweep).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field

from ..metadata.records import IndexSnapshot, ManifestNode


@dataclass(frozen=True)
class MarkScope:
    """What one run collects."""

    #: Now (seconds since the epoch): leases (``pending_until``) are compared with it.
    now: float
    #: Seconds an unreferenced blob, link or manifest is protected after it was written.
    grace: float
    #: Also mark untagged manifests that no root reaches (else every manifest is kept).
    delete_untagged: bool = False
    #: Collect this repository only (its id in the snapshot); None: the whole registry.
    repository_id: int | None = None
    #: (repository id, tag name) of tags removed in this run (retention): not roots.
    removed_tags: frozenset[tuple[int, str]] = frozenset()

    @property
    def cutoff(self) -> float:
        return self.now - self.grace

    def in_scope(self, repository_id: int) -> bool:
        return self.repository_id is None or repository_id == self.repository_id


@dataclass
class Marked:
    """The candidates of one run, sorted."""

    #: Untagged manifests nothing reaches (see the module's rules).
    manifests: list[ManifestNode] = field(default_factory=list)
    #: (digest, size) of blobs to sweep.
    blobs: list[tuple[str, int]] = field(default_factory=list)
    #: (repository id, digest) links to prune: old, and no manifest of that repository uses the blob.
    links: list[tuple[int, str]] = field(default_factory=list)

    @property
    def swept(self) -> set[str]:
        return {d for d, _ in self.blobs}


def reachable(snap: IndexSnapshot, roots: Iterable[int]) -> set[int]:
    """Manifest ids reachable from ``roots`` through index children and referrers (same
    repository each).  Cycles and self-references terminate (each manifest is visited once)."""
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


def with_parent(snap: IndexSnapshot) -> set[int]:
    """Manifests listed by an index of their repository, or whose subject is a manifest there
    (they live and go with what is above them)."""
    by_key = {(m.repository_id, m.digest): m.id for m in snap.manifests.values()}
    out: set[int] = set()
    for pid, digests in snap.children.items():
        p = snap.manifests.get(pid)
        if p is not None:
            out.update(c for c in (by_key.get((p.repository_id, d)) for d in digests) if c is not None)
    out.update(m.id for m in snap.manifests.values() if m.subject and (m.repository_id, m.subject) in by_key)
    return out


#: Why an untagged manifest is a root of its own (:func:`own_reason`).
YOUNG, RECENTLY_UNTAGGED, DIGEST_PUSHED = "young", "recently_untagged", "digest_pushed"


def own_reason(m: ManifestNode, scope: MarkScope, parented: Collection[int]) -> str | None:
    """Why ``m`` (untagged) is kept for itself, or None if only what is above it can keep it."""
    if m.created_at >= scope.cutoff:
        return YOUNG
    if scope.delete_untagged:
        return None
    if m.untagged_at is not None:
        return RECENTLY_UNTAGGED if m.untagged_at >= scope.cutoff else None
    return None if m.id in parented else DIGEST_PUSHED


def _tag_roots(snap: IndexSnapshot, scope: MarkScope) -> set[int]:
    roots = {t.manifest_id for t in snap.tags if (t.repository_id, t.name) not in scope.removed_tags}
    return roots | {m.id for m in snap.manifests.values() if not scope.in_scope(m.repository_id)}


def mark_manifests(snap: IndexSnapshot, scope: MarkScope) -> list[ManifestNode]:
    """Manifests to delete: those no root reaches (see the module's rules).

    Out-of-scope manifests are roots, so a one-repository run never deletes elsewhere."""
    parented = with_parent(snap) if not scope.delete_untagged else set()
    roots = _tag_roots(snap, scope) | {m.id for m in snap.manifests.values() if own_reason(m, scope, parented)}
    kept = reachable(snap, roots)
    doomed = (m for m in snap.manifests.values() if m.id not in kept)
    if not scope.delete_untagged:  # only what a tag delete let go (not, say, a cycle of referrers)
        let_go = reachable(snap, [m.id for m in snap.manifests.values() if m.untagged_at is not None])
        doomed = (m for m in doomed if m.id in let_go)
    return sorted(doomed, key=lambda m: m.id)


@dataclass(frozen=True)
class Kept:
    """Untagged manifests (or unreferenced blobs) a run kept, one reason each, and the bytes
    collecting them would free."""

    reason: str  # young | recently_untagged | digest_pushed | young_blobs
    manifests: int
    blobs: int
    bytes: int


def explain_kept(
    snap: IndexSnapshot,
    scope: MarkScope,
    doomed_manifests: Collection[int],
    candidates: Collection[str],
    *,
    young_blobs: bool = True,
) -> list[Kept]:
    """What this run keeps that no tag keeps, grouped by why (the summary's "kept" lines).

    A manifest counts in the first group whose root reaches it (young, then recently untagged,
    then pushed by digest); its bytes are its own size plus the blobs that no tag-reached
    manifest (nor an earlier group) references.  Blobs no manifest references that the sweep
    keeps because a link, upload or lease is younger than the grace period are the last group
    (``young_blobs=False``: left out, for a batch snapshot that holds only referenced blobs)."""
    parented = with_parent(snap) if not scope.delete_untagged else set()
    by_tag = reachable(snap, _tag_roots(snap, scope))
    rest = {i for i in snap.manifests if i not in by_tag and i not in doomed_manifests}
    covered: set[str] = {d for mid in by_tag for d in snap.mblobs.get(mid, ())}
    out: list[Kept] = []
    for reason in (YOUNG, RECENTLY_UNTAGGED, DIGEST_PUSHED):
        roots = [i for i in rest if own_reason(snap.manifests[i], scope, parented) == reason]
        group = reachable(snap, roots) & rest
        if not group:
            continue
        rest -= group
        digests = {d for mid in group for d in snap.mblobs.get(mid, ())} - covered
        covered |= digests
        size = sum(snap.manifests[i].size for i in group) + sum(snap.blobs[d].size for d in digests if d in snap.blobs)
        out.append(Kept(reason, len(group), len(digests), size))
    if not young_blobs:
        return out
    referenced = {d for mid, ds in snap.mblobs.items() if mid not in doomed_manifests for d in ds}
    swept = set(candidates)
    young = [
        b.size
        for d, b in snap.blobs.items()
        if b.deleting_since is None and d not in referenced and d not in swept and scope.repository_id is None
    ]
    if young:
        out.append(Kept("young_blobs", 0, len(young), sum(young)))
    return out


def mark_blobs(
    snap: IndexSnapshot, scope: MarkScope, doomed_manifests: Collection[int] = ()
) -> tuple[list[tuple[str, int]], list[tuple[int, str]]]:
    """(blobs to sweep, links to prune), given the manifests this run deletes."""
    cutoff = scope.cutoff
    repo_id = scope.repository_id
    referenced: set[str] = set()
    referenced_in: set[tuple[int, str]] = set()
    scoped_digests: set[str] = set()
    for mid, digests in snap.mblobs.items():
        m = snap.manifests.get(mid)
        if m is None:
            continue
        if mid in doomed_manifests:
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
        elif (rid, digest) not in referenced_in and digest in referenced and scope.in_scope(rid):
            prune.append((rid, digest))
        if repo_id is not None and rid == repo_id:
            scoped_digests.add(digest)
    candidates = [
        (d, b.size)
        for d, b in snap.blobs.items()
        if b.deleting_since is None
        and d not in referenced
        and d not in young_link
        and b.last_linked_at < cutoff
        and (b.pending_until is None or b.pending_until < scope.now)
        and (repo_id is None or d in scoped_digests)
    ]
    candidates.sort()
    return candidates, prune


def mark(snap: IndexSnapshot, scope: MarkScope) -> Marked:
    """Both marks as one run plans them (before any re-check): what a dry run reports."""
    manifests = mark_manifests(snap, scope)
    blobs, links = mark_blobs(snap, scope, {m.id for m in manifests})
    return Marked(manifests, blobs, links)


# ------------------------------------------------------------------ bounded memory (issue 24)
# The collector does not load the whole index: every rule about *manifests* stays inside one
# repository (index children and referrers are looked up in the manifest's own repository,
# retention ranks a repository's tags), so it marks repository batch by repository batch
# (:func:`mark_batch`, one read snapshot for all batches) and keeps only what a batch condemns.
# The rule about *blobs* is global (a blob lives while any kept manifest anywhere references
# it); it is asked of the database with set operations (``GCStore.blob_candidates``), given
# how many references each condemned manifest holds (``BatchMarks.doomed_refs``).


@dataclass
class BatchMarks:
    """What the mark phase keeps from one batch of repositories (proportional to garbage)."""

    #: Untagged manifests nothing reaches (only with ``delete_untagged``).
    manifests: list[ManifestNode] = field(default_factory=list)
    #: Links older than the grace period that no surviving manifest *of their repository*
    #: references; pruned only if some surviving manifest elsewhere still references the
    #: blob (else the blob goes with its links) -- the caller asks the database that.
    links: list[tuple[int, str]] = field(default_factory=list)
    #: digest -> how many of ``manifests`` reference it.
    doomed_refs: Counter[str] = field(default_factory=Counter)
    #: One-repository run: the digests the repository held (linked, or referenced by its
    #: condemned manifests); only those may be swept.
    scoped: set[str] = field(default_factory=set)

    def add(self, other: BatchMarks) -> None:
        self.manifests.extend(other.manifests)
        self.links.extend(other.links)
        self.doomed_refs.update(other.doomed_refs)
        self.scoped |= other.scoped


def mark_batch(snap: IndexSnapshot, scope: MarkScope) -> BatchMarks:
    """The marks of the repositories in ``snap`` (a batch: whole repositories, no blob rows).

    Same rules as :func:`mark_manifests` and :func:`mark_blobs`; what needs the rest of the
    registry (is this blob referenced elsewhere?) is left to the caller as counts."""
    doomed = mark_manifests(snap, scope)
    doomed_ids = {m.id for m in doomed}
    repo_id = scope.repository_id
    out = BatchMarks(manifests=doomed)
    referenced_in: set[tuple[int, str]] = set()
    for mid, digests in snap.mblobs.items():
        m = snap.manifests.get(mid)
        if m is None:
            continue
        if mid in doomed_ids:
            out.doomed_refs.update(set(digests))
            if repo_id is not None and m.repository_id == repo_id:
                out.scoped.update(digests)
            continue
        referenced_in.update((m.repository_id, d) for d in digests)
    cutoff = scope.cutoff
    for rid, digest, created in snap.links:
        if created < cutoff and (rid, digest) not in referenced_in and scope.in_scope(rid):
            out.links.append((rid, digest))
        if repo_id is not None and rid == repo_id:
            out.scoped.add(digest)
    return out


def merge_kept(parts: Iterable[Kept]) -> list[Kept]:
    """The kept groups of several batches as one list, in reason order (a blob shared by
    repositories of two batches is counted in each)."""
    order = {r: i for i, r in enumerate((YOUNG, RECENTLY_UNTAGGED, DIGEST_PUSHED, "young_blobs"))}
    totals: dict[str, list[int]] = {}
    for k in parts:
        t = totals.setdefault(k.reason, [0, 0, 0])
        t[0] += k.manifests
        t[1] += k.blobs
        t[2] += k.bytes
    return [Kept(r, *totals[r]) for r in sorted(totals, key=lambda r: order.get(r, len(order)))]
