"""Issue 8 item 20: the collector's last check before deleting an untagged manifest follows the
same reachability as its mark phase.

A signature S (a referrer, untagged) of an image X is doomed in the mark phase when X is
untagged and unreachable.  If, between the mark phase and the delete, an index I is pushed and
tagged that lists X, then X is reachable again -- and so is S, whose subject X now is.  The
collector stops deterministically after marking (``MOORAGE_GC_TEST_WAIT_BEFORE_MANIFEST_DELETE``
names a file it waits for), the test pushes I, then lets it go on.
"""

from __future__ import annotations

from pathlib import Path

import requests

from tests.gc_push import Image, blob_bytes, check, delete_ref, make_image, pull_image, push_image, start_gc_paused
from tests.support.cli import stop_group, wait_for_line

OCI_INDEX = "application/vnd.oci.image.index.v1+json"


def test_referrer_of_subject_reachable_through_index_pushed_during_gc(fresh_moorage, tmp_path: Path) -> None:
    url = fresh_moorage.url
    x = make_image("reach-x", unique=1)
    push_image(url, "sig", "x", x)
    s = Image(b'{"sig":1}', [blob_bytes("reach-sig")], subject=x.digest)
    push_image(url, "sig", s.digest, s)
    assert delete_ref(url, "sig", "x") == 202  # X and S are now unreachable

    go = tmp_path / "go"
    proc = start_gc_paused(
        fresh_moorage, "MOORAGE_GC_TEST_WAIT_BEFORE_MANIFEST_DELETE", str(go), "--delete-untagged", "-q", "--json"
    )
    try:
        wait_for_line(proc, "waiting for", timeout=60)  # the collector stopped after marking
        # The mark phase is done (X and S doomed); now X becomes reachable through a tagged index.
        index = (
            '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":'
            f'[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{x.digest}","size":{len(x.manifest)}}}]}}'
        ).encode()
        r = requests.put(f"{url}/v2/sig/manifests/idx", data=index, headers={"Content-Type": OCI_INDEX}, timeout=60)
        assert r.status_code == 201, r.text
        go.touch()
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
    finally:
        stop_group(proc)
    pull_image(url, "sig", x.digest, x)
    pull_image(url, "sig", s.digest, s)  # the signature of a reachable image survives
    refs = requests.get(f"{url}/v2/sig/referrers/{x.digest}", timeout=30).json()
    assert [m["digest"] for m in refs["manifests"]] == [s.digest]
    assert check(fresh_moorage) == []
