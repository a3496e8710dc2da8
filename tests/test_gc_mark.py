"""The collector's mark phase (``moorage.gc.mark``) on hand-built snapshots: no database, no storage.

What survives a run: everything a tag reaches through index children and referrers (same
repository), blobs a kept manifest references, and whatever the grace period, an upload's lease
or a young link still protects; untagged manifests go only with ``delete_untagged``.  The
sweep re-checks every candidate under row locks (tests/test_gc_race.py); these tests pin the
plan itself, including a property test that nothing reachable from a tag is ever swept.
"""

from __future__ import annotations

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from moorage.gc.mark import Kept, MarkScope, explain_kept, mark, reachable, with_parent
from moorage.metadata.records import BlobState, IndexSnapshot, ManifestNode, TagInfo

NOW = 1_000_000.0
GRACE = 3600.0
OLD = NOW - 10 * GRACE  # older than the grace period
YOUNG = NOW - GRACE / 2  # inside it


class Graph:
    """A tiny builder for snapshots: manifests by name, blobs by name, one or more repositories."""

    def __init__(self) -> None:
        self.snap = IndexSnapshot()
        self.ids = itertools.count(1)
        self.by_name: dict[str, ManifestNode] = {}

    def repo(self, name: str) -> int:
        for rid, n in self.snap.repos.items():
            if n == name:
                return rid
        rid = len(self.snap.repos) + 1
        self.snap.repos[rid] = name
        return rid

    def blob(
        self,
        digest: str,
        *,
        linked_at: float = OLD,
        pending_until: float | None = None,
        deleting_since: float | None = None,
        size: int = 10,
    ) -> str:
        self.snap.blobs[digest] = BlobState(size, linked_at, pending_until, deleting_since)
        return digest

    def link(self, repo: str, digest: str, at: float = OLD) -> None:
        self.snap.links.append((self.repo(repo), digest, at))

    def manifest(
        self,
        name: str,
        repo: str = "r",
        *,
        blobs: tuple[str, ...] = (),
        children: tuple[str, ...] = (),
        subject: str | None = None,
        created: float = OLD,
        untagged_at: float | None = None,
    ) -> ManifestNode:
        rid = self.repo(repo)
        node = ManifestNode(
            next(self.ids), rid, f"sha256:{name}", f"sha256:{subject}" if subject else None, created, 100, untagged_at
        )
        self.snap.manifests[node.id] = node
        self.by_name[name] = node
        for b in blobs:
            if b not in self.snap.blobs:
                self.blob(b)
            self.snap.mblobs.setdefault(node.id, []).append(b)
            self.link(repo, b)
        if children:
            self.snap.children[node.id] = [f"sha256:{c}" for c in children]
        return node

    def tag(self, name: str, manifest: str, repo: str = "r") -> None:
        m = self.by_name[manifest]
        self.snap.tags.append(TagInfo(m.repository_id, self.snap.repos[m.repository_id], name, m.id, OLD))


def scope(**kw: object) -> MarkScope:
    return MarkScope(now=NOW, grace=GRACE, **kw)  # type: ignore[arg-type]


def names(g: Graph, nodes: list[ManifestNode]) -> set[str]:
    return {n for n, m in g.by_name.items() if m in nodes}


def test_tagged_image_keeps_its_blobs_and_an_unreferenced_old_blob_goes() -> None:
    g = Graph()
    g.manifest("img", blobs=("config", "layer"))
    g.tag("latest", "img")
    g.blob("stray")
    g.link("r", "stray")
    marked = mark(g.snap, scope(delete_untagged=True))
    assert marked.swept == {"stray"}
    assert marked.manifests == []


def test_index_keeps_its_children_and_their_blobs() -> None:
    g = Graph()
    g.manifest("amd64", blobs=("c1", "l1"))
    g.manifest("arm64", blobs=("c2", "l2"))
    g.manifest("index", children=("amd64", "arm64"))
    g.tag("v1", "index")
    marked = mark(g.snap, scope(delete_untagged=True))
    assert marked.manifests == [] and marked.swept == set()


def test_index_child_in_another_repository_is_not_kept() -> None:
    g = Graph()
    g.manifest("child", "other", blobs=("l",))
    g.manifest("index", "r", children=("child",))
    g.tag("v1", "index", "r")
    marked = mark(g.snap, scope(delete_untagged=True))
    assert names(g, marked.manifests) == {"child"}
    assert marked.swept == {"l"}


def test_referrer_lives_while_its_subject_does() -> None:
    g = Graph()
    g.manifest("img", blobs=("layer",))
    g.manifest("sig", blobs=("sigblob",), subject="img")
    g.manifest("sbom-of-sig", blobs=("sbom",), subject="sig")  # a referrer of a referrer
    g.tag("latest", "img")
    marked = mark(g.snap, scope(delete_untagged=True))
    assert marked.manifests == [] and marked.swept == set()


def test_referrer_of_an_untagged_subject_goes_with_it() -> None:
    g = Graph()
    g.manifest("img", blobs=("layer",))
    g.manifest("sig", blobs=("sigblob",), subject="img")
    marked = mark(g.snap, scope(delete_untagged=True))
    assert names(g, marked.manifests) == {"img", "sig"}
    assert marked.swept == {"layer", "sigblob"}


def test_a_referrer_does_not_keep_its_subject() -> None:
    g = Graph()
    g.manifest("img", blobs=("layer",))
    g.manifest("sig", subject="img")
    g.tag("sig-tag", "sig")
    marked = mark(g.snap, scope(delete_untagged=True))
    assert names(g, marked.manifests) == {"img"}


def test_untagged_manifests_are_kept_unless_delete_untagged() -> None:
    g = Graph()
    g.manifest("old-untagged", blobs=("l",))
    kept = mark(g.snap, scope(delete_untagged=False))
    assert kept.manifests == [] and kept.swept == set()
    gone = mark(g.snap, scope(delete_untagged=True))
    assert names(g, gone.manifests) == {"old-untagged"} and gone.swept == {"l"}


def test_a_tag_delete_frees_the_image_after_the_grace_period_by_default() -> None:
    """untagged_at (a tag delete) older than the grace: the image goes without delete_untagged,
    with its index children and its referrers; a younger one and a digest-pushed one stay, and
    explain_kept says why."""
    g = Graph()
    g.manifest("amd64", blobs=("c1", "l1"))
    g.manifest("index", children=("amd64",), untagged_at=OLD)
    g.manifest("sig", blobs=("sigblob",), subject="index")
    g.manifest("recent", blobs=("rl",), untagged_at=YOUNG)
    g.manifest("by-digest", blobs=("dl",))
    g.manifest("tagged", blobs=("shared",))
    g.tag("v1", "tagged")
    g.manifest("was-tagged", blobs=("shared", "own"), untagged_at=OLD)
    sc = scope()
    marked = mark(g.snap, sc)
    assert names(g, marked.manifests) == {"amd64", "index", "sig", "was-tagged"}
    assert marked.swept == {"c1", "l1", "sigblob", "own"}  # "shared" stays with the tagged image
    kept = explain_kept(g.snap, sc, {m.id for m in marked.manifests}, marked.swept)
    assert kept == [Kept("recently_untagged", 1, 1, 100 + 10), Kept("digest_pushed", 1, 1, 100 + 10)]
    every = mark(g.snap, scope(delete_untagged=True))
    assert names(g, every.manifests) == {"amd64", "index", "sig", "was-tagged", "recent", "by-digest"}


def test_explain_kept_counts_young_manifests_and_blobs() -> None:
    g = Graph()
    g.manifest("young", blobs=("yl",), created=YOUNG)
    g.blob("uploading", linked_at=YOUNG, size=7)
    sc = scope(delete_untagged=True)
    marked = mark(g.snap, sc)
    assert marked.manifests == [] and marked.swept == set()
    assert explain_kept(g.snap, sc, set(), set()) == [Kept("young", 1, 1, 110), Kept("young_blobs", 0, 1, 7)]


def test_grace_period_protects_young_manifests_blobs_and_links() -> None:
    g = Graph()
    g.manifest("young-untagged", blobs=("yl",), created=YOUNG)
    g.blob("just-uploaded", linked_at=YOUNG)  # no manifest yet: a push in progress
    g.blob("old-but-young-link")
    g.link("r", "old-but-young-link", at=YOUNG)
    g.blob("leased", pending_until=NOW + 60)  # an upload is committing it
    g.blob("lease-expired", pending_until=NOW - 1)
    g.blob("being-deleted", deleting_since=NOW - 5)  # another collector's tombstone
    marked = mark(g.snap, scope(delete_untagged=True))
    assert marked.manifests == []
    assert marked.swept == {"lease-expired"}


def test_retention_removed_tag_is_no_root() -> None:
    g = Graph()
    g.manifest("img", blobs=("l",))
    g.tag("old", "img")
    rid = g.by_name["img"].repository_id
    marked = mark(g.snap, scope(delete_untagged=True, removed_tags=frozenset({(rid, "old")})))
    assert names(g, marked.manifests) == {"img"} and marked.swept == {"l"}


def test_shared_blob_survives_while_any_manifest_uses_it() -> None:
    g = Graph()
    g.manifest("a", "r1", blobs=("base", "a-top"))
    g.manifest("b", "r2", blobs=("base", "b-top"))
    g.tag("v", "a", "r1")
    marked = mark(g.snap, scope(delete_untagged=True))
    assert names(g, marked.manifests) == {"b"}
    assert marked.swept == {"b-top"}  # "base" is still used by r1
    # r2's old link to "base" is pruned (no manifest of r2 uses it any more) -- once b is gone
    assert (g.repo("r2"), "base") in marked.links


def test_cycles_and_self_references_terminate_and_keep_what_a_tag_reaches() -> None:
    g = Graph()
    g.manifest("x", children=("y",), blobs=("bx",))
    g.manifest("y", children=("x", "y"), blobs=("by",))  # a cycle and a self-reference
    g.manifest("self-ref", subject="self-ref", blobs=("bs",))  # its own referrer, untagged
    g.tag("t", "x")
    marked = mark(g.snap, scope(delete_untagged=True))
    assert names(g, marked.manifests) == {"self-ref"}
    assert marked.swept == {"bs"}


def test_one_repository_run_touches_nothing_elsewhere() -> None:
    g = Graph()
    g.manifest("here", "mine", blobs=("mine-only",))
    g.manifest("there", "theirs", blobs=("theirs-only",))
    marked = mark(g.snap, scope(delete_untagged=True, repository_id=g.repo("mine")))
    assert names(g, marked.manifests) == {"here"}
    assert marked.swept == {"mine-only"}


# ------------------------------------------------------------------------------ property
@st.composite
def graphs(draw: st.DrawFn) -> tuple[IndexSnapshot, float]:
    """Random registries: manifests in two repositories with random children (cycles and
    self-references allowed, some across repositories), subjects, blobs (shared), tags, ages."""
    g = Graph()
    n = draw(st.integers(1, 12))
    blob_names = [f"b{i}" for i in range(draw(st.integers(1, 10)))]
    for b in blob_names:
        g.blob(
            b,
            linked_at=draw(st.sampled_from([OLD, YOUNG])),
            pending_until=draw(st.sampled_from([None, NOW - 1, NOW + 1])),
            deleting_since=draw(st.sampled_from([None, None, None, NOW])),
        )
    names_ = [f"m{i}" for i in range(n)]
    for name in names_:
        g.manifest(
            name,
            draw(st.sampled_from(["r1", "r2"])),
            blobs=tuple(draw(st.lists(st.sampled_from(blob_names), max_size=4, unique=True))),
            created=draw(st.sampled_from([OLD, OLD, YOUNG])),
        )
    for name in names_:
        m = g.by_name[name]
        kids = draw(st.lists(st.sampled_from(names_), max_size=3))
        if kids:
            g.snap.children[m.id] = [f"sha256:{k}" for k in kids]
        if draw(st.booleans()):
            m.subject = f"sha256:{draw(st.sampled_from(names_))}"
    for i, name in enumerate(draw(st.lists(st.sampled_from(names_), max_size=4))):
        g.tag(f"t{i}", name)
    for b in draw(st.lists(st.sampled_from(blob_names), max_size=3)):  # links without manifests
        g.link(draw(st.sampled_from(["r1", "r2"])), b, at=draw(st.sampled_from([OLD, YOUNG])))
    return g.snap, draw(st.sampled_from([0.0, GRACE]))


@settings(max_examples=400, deadline=None)
@given(graphs(), st.booleans())
def test_nothing_reachable_from_a_tag_is_ever_swept(case: tuple[IndexSnapshot, float], delete_untagged: bool) -> None:
    snap, grace = case
    marked = mark(snap, MarkScope(now=NOW, grace=grace, delete_untagged=delete_untagged))
    live = reachable(snap, {t.manifest_id for t in snap.tags})
    doomed = {m.id for m in marked.manifests}
    assert not live & doomed, "a manifest a tag reaches was marked for deletion"
    live_blobs = {d for mid in live for d in snap.mblobs.get(mid, ())}
    assert not live_blobs & marked.swept, "a blob a tag reaches was marked for the sweep"
    # Every candidate is really garbage by the rules: unreferenced by any kept manifest,
    # older than the grace period, not leased, not tombstoned.
    kept_refs = {d for mid, ds in snap.mblobs.items() if mid not in doomed for d in ds}
    for digest in marked.swept:
        b = snap.blobs[digest]
        assert digest not in kept_refs
        assert b.last_linked_at < NOW - grace and b.deleting_since is None
        assert b.pending_until is None or b.pending_until < NOW
    if not delete_untagged:
        assert marked.manifests == []


@settings(max_examples=300, deadline=None)
@given(graphs(), st.data())
def test_default_mode_collects_only_what_a_tag_delete_let_go(case: tuple[IndexSnapshot, float], data: st.DataObject) -> None:
    """Without delete_untagged: a doomed manifest is below a manifest a tag delete left untagged
    more than the grace period ago, and no tag, young manifest, recent tag delete or parentless
    digest push reaches it."""
    snap, grace = case
    for m in snap.manifests.values():
        m.untagged_at = data.draw(st.sampled_from([None, None, OLD, YOUNG]))
    sc = MarkScope(now=NOW, grace=grace)
    doomed = {m.id for m in mark(snap, sc).manifests}
    cutoff = NOW - grace
    let_go = reachable(snap, [m.id for m in snap.manifests.values() if m.untagged_at is not None and m.untagged_at < cutoff])
    assert doomed <= let_go
    parents = with_parent(snap)
    protected = {t.manifest_id for t in snap.tags} | {
        m.id
        for m in snap.manifests.values()
        if m.created_at >= cutoff
        or (m.untagged_at is not None and m.untagged_at >= cutoff)
        or (m.untagged_at is None and m.id not in parents)
    }
    assert not doomed & reachable(snap, protected)
