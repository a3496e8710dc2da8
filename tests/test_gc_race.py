"""GC vs manifest PUT, interleaved deterministically with the collector's pause hooks.

docs/gc.md promises: GC is safe while pushes run; a manifest PUT that references a blob either
keeps the blob alive, or fails with MANIFEST_BLOB_UNKNOWN -- it never succeeds and then loses
the blob.  The stress test (tests/test_gc_stress.py) only makes the bad interleaving likely;
these tests force it:

* ``MOORAGE_GC_TEST_PAUSE_BEFORE_SWEEP`` stops ``moorage gc`` after the mark phase (the blob is
  a sweep candidate: unreferenced, its link older than the grace period) and before the sweep;
  the test PUTs a manifest referencing the blob, then lets the collector go on.  The sweep's
  re-check under the row lock must see the new reference and keep the blob.
* ``MOORAGE_GC_TEST_PAUSE_AFTER_TOMBSTONE`` stops it right after the blob was tombstoned (before
  its bytes go); a manifest PUT referencing it now must be refused (MANIFEST_BLOB_UNKNOWN), and
  once the sweep is over the blob can be pushed again and the manifest accepted.
"""

from __future__ import annotations

import json
import subprocess

import requests

from tests.gc_push import (
    blob_bytes,
    check,
    gc,
    make_image,
    pull_image,
    push_blob,
    push_manifest,
    sha,
    start_gc_paused,
    stored,
)
from tests.support.cli import stop_group, wait_for_line

PAUSE_BEFORE_SWEEP = "MOORAGE_GC_TEST_PAUSE_BEFORE_SWEEP"
PAUSE_AFTER_TOMBSTONE = "MOORAGE_GC_TEST_PAUSE_AFTER_TOMBSTONE"


def _start_gc(proc, hook: str, *args: str) -> subprocess.Popen[str]:  # noqa: ANN001
    return start_gc_paused(proc, hook, "120", "--json", *args)


def _wait_for_pause(gcp: subprocess.Popen[str]) -> str:
    """The collector's "pausing" line (bounded: it is printed within seconds, or gc died)."""
    return wait_for_line(gcp, "pausing", timeout=90)


def _kill(gcp: subprocess.Popen[str]) -> None:
    stop_group(gcp)


def test_manifest_put_between_mark_and_sweep_keeps_its_blobs(fresh_moorage):
    url = fresh_moorage.url
    img = make_image("race-mark-sweep", unique=2)
    for b in img.blobs:  # uploaded, linked, referenced by nothing yet: garbage with --grace 0
        push_blob(url, "race/app", b)
    bystander = blob_bytes("race-really-garbage")
    push_blob(url, "race/app", bystander)

    gcp = _start_gc(fresh_moorage, PAUSE_BEFORE_SWEEP)
    try:
        line = _wait_for_pause(gcp)
        marked = set(line.split("candidates:", 1)[1].split())
        # the interleaving really is the dangerous one: the mark phase chose these blobs
        assert {sha(b) for b in img.blobs} | {sha(bystander)} <= marked, line
        r = push_manifest(url, "race/app", "v1", img.manifest)
        assert r.status_code == 201, r.text
        out, err = gcp.communicate(input="\n", timeout=120)
    finally:
        _kill(gcp)
    assert gcp.returncode == 0, err[-2000:]
    summary = json.loads(out)
    # the re-check saved exactly the referenced blobs; the unreferenced one went
    assert summary["skipped_concurrent"] == len(img.blobs), summary
    assert summary["blobs_removed"] == 1, summary
    assert all(stored(fresh_moorage, [sha(b) for b in img.blobs]).values())
    assert not stored(fresh_moorage, [sha(bystander)])[sha(bystander)]
    pull_image(url, "race/app", "v1", img)
    assert check(fresh_moorage) == []
    # and a later collection, with nothing racing, keeps it too
    assert gc(fresh_moorage, "--grace", "0", "--delete-untagged")["blobs_removed"] == 0
    pull_image(url, "race/app", "v1", img)


def test_manifest_put_of_a_tombstoned_blob_is_refused_then_repushable(fresh_moorage):
    url = fresh_moorage.url
    img = make_image("race-tombstone", unique=1)
    for b in img.blobs:
        push_blob(url, "race/tomb", b)

    gcp = _start_gc(fresh_moorage, PAUSE_AFTER_TOMBSTONE)
    try:
        _wait_for_pause(gcp)
        # the blobs are tombstoned, their bytes not yet deleted: the PUT must not succeed
        r = push_manifest(url, "race/tomb", "v1", img.manifest)
        assert r.status_code == 400, r.text
        assert {e["code"] for e in r.json()["errors"]} == {"MANIFEST_BLOB_UNKNOWN"}, r.text
        assert {e["detail"]["digest"] for e in r.json()["errors"]} == {sha(b) for b in img.blobs}
        assert requests.get(f"{url}/v2/race/tomb/manifests/v1", timeout=30).status_code == 404
    finally:
        _kill(gcp)  # killed mid-sweep: the next run finishes it
    assert gc(fresh_moorage, "--grace", "0")["tombstones_finished"] == len(img.blobs)
    assert not any(stored(fresh_moorage, [sha(b) for b in img.blobs]).values())
    for b in img.blobs:
        push_blob(url, "race/tomb", b)
    assert push_manifest(url, "race/tomb", "v1", img.manifest).status_code == 201
    pull_image(url, "race/tomb", "v1", img)
    assert check(fresh_moorage) == []
