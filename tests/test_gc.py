"""Garbage collection against a live server (any backend of the ``fresh_moorage`` fixture).

Storage is looked at through the server's own BlobStore (``tests.gc_push.stored``), so the same
assertions hold for the filesystem and for S3.
"""

from __future__ import annotations

import threading
import time

import pytest
import requests

from tests.gc_push import (
    blob_bytes,
    check,
    delete_ref,
    gc,
    make_image,
    moorage_cli,
    pull_image,
    push_blob,
    push_image,
    put_orphan,
    sha,
    start_gc_paused,
    stored,
)
from tests.support.cli import stop_group, wait_for_line
from tests.support.refusal import assert_refused
from tests.support.registry_proc import start_moorage


def test_delete_tag_then_gc_removes_unique_layers_keeps_shared(fresh_moorage):
    url = fresh_moorage.url
    base = [blob_bytes("base-0"), blob_bytes("base-1")]
    a = make_image("a", base, unique=2)
    b = make_image("b", base, unique=1)
    other = make_image("other", [a.layers[2]], unique=1)  # shares one of a's unique layers, other repo
    push_image(url, "app", "a", a)
    push_image(url, "app", "b", b)
    push_image(url, "lib/other", "v1", other)

    assert delete_ref(url, "app", "a") == 202
    summary = gc(fresh_moorage, "--grace", "0", "--delete-untagged")
    assert summary["manifests_removed"] == 1

    gone = [sha(a.config), sha(a.layers[3])]
    kept = [sha(x) for x in base] + [sha(a.layers[2])] + [sha(x) for x in b.blobs + other.blobs]
    found = stored(fresh_moorage, gone + kept)
    assert not any(found[d] for d in gone), found
    assert all(found[d] for d in kept), found
    assert summary["blobs_removed"] == 2
    assert summary["bytes_removed"] == len(a.config) + len(a.layers[3])

    pull_image(url, "app", "b", b)
    pull_image(url, "lib/other", "v1", other)
    assert requests.get(f"{url}/v2/app/manifests/{a.digest}").status_code == 404
    # a's layer shared with lib/other stays in storage but app may no longer read it
    assert requests.head(f"{url}/v2/app/blobs/{sha(a.layers[2])}").status_code == 404
    assert check(fresh_moorage) == []


def test_tag_delete_frees_space_with_the_defaults_after_the_grace_period(fresh_moorage):
    """What the UI's delete dialog and docs/gc.md promise: a deleted tag's image goes with a plain
    `moorage gc` once the grace period (shortened here by configuration) has passed; before that
    the summary says what it kept, why, and how to collect it now."""
    url = fresh_moorage.url
    img = make_image("gone", unique=2, size=50_000)
    keep = make_image("stay", unique=1)
    push_image(url, "t", "old", img)
    push_image(url, "t", "new", keep)
    env = {"MOORAGE_GC__GRACE": "12"}  # long enough for the first CLI run below to fall inside it
    assert delete_ref(url, "t", "old") == 202
    deleted = time.monotonic()
    early = gc(fresh_moorage, env=env)
    assert early["manifests_removed"] == 0 and early["bytes_removed"] == 0, early
    (kept,) = [k for k in early["kept"] if k["manifests"]]  # young, or untagged less than the grace ago
    assert kept["manifests"] == 1 and kept["bytes"] >= len(img.config) + 100_000, early["kept"]
    text = kept["text"]
    assert "1 untagged manifest" in text and "12 s grace period" in text and "`--grace 0` to collect now" in text, text
    human = moorage_cli(fresh_moorage, "gc", "--dry-run", "--grace", "3600").stdout  # kept whatever the time
    line = human.split("kept: ", 1)[1].splitlines()[0]
    assert line.startswith("1 untagged manifest") and line.endswith("1 h grace period: `--grace 0` to collect now"), human
    time.sleep(max(0.0, 12.5 - (time.monotonic() - deleted)))  # the grace period passes
    late = gc(fresh_moorage, env=env)
    assert late["manifests_removed"] == 1 and late["blobs_removed"] == 3, late
    assert late["bytes_removed"] == len(img.config) + 100_000
    assert not any(stored(fresh_moorage, [sha(x) for x in img.blobs]).values())
    assert requests.get(f"{url}/v2/t/manifests/{img.digest}").status_code == 404
    pull_image(url, "t", "new", keep)
    assert check(fresh_moorage) == []


def test_digest_pushed_and_moved_tag_manifests_are_kept_without_delete_untagged(fresh_moorage):
    """No tag delete concerned them: pullable by digest until a DELETE by digest or
    `--delete-untagged` (the summary says so)."""
    url = fresh_moorage.url
    img = make_image("solo", unique=2)
    keep = make_image("keep", unique=1)
    old = make_image("moved-away", unique=1)
    push_image(url, "r", img.digest, img)  # pushed by digest only
    push_image(url, "r", "k", keep)
    push_image(url, "r", "m", old)
    push_image(url, "r", "m", keep)  # the tag moved: old is untagged
    summary = gc(fresh_moorage, "--grace", "0")
    assert summary["blobs_removed"] == 0 and summary["manifests_removed"] == 0, summary
    kept = {k["reason"]: k for k in summary["kept"]}
    assert kept["digest_pushed"]["manifests"] == 2 and "--delete-untagged" in kept["digest_pushed"]["text"], summary
    assert all(stored(fresh_moorage, [sha(x) for x in img.blobs + old.blobs]).values())
    assert requests.get(f"{url}/v2/r/manifests/{img.digest}").status_code == 200
    # deleted by digest: its blobs go
    assert delete_ref(url, "r", img.digest) == 202
    summary = gc(fresh_moorage, "--grace", "0")
    assert summary["blobs_removed"] == 3
    assert not any(stored(fresh_moorage, [sha(x) for x in img.blobs]).values())
    # --delete-untagged: the moved tag's old image too
    summary = gc(fresh_moorage, "--grace", "0", "--delete-untagged")
    assert summary["manifests_removed"] == 1 and summary["blobs_removed"] == 2, summary
    assert requests.get(f"{url}/v2/r/manifests/{old.digest}").status_code == 404
    pull_image(url, "r", "k", keep)


def test_dry_run_reports_without_removing(fresh_moorage):
    url = fresh_moorage.url
    img = make_image("dry", unique=1, size=10_000)
    push_image(url, "d", "t", img)
    assert delete_ref(url, "d", img.digest) == 202
    res = moorage_cli(fresh_moorage, "gc", "--grace", "0", "--dry-run")
    assert "would delete" in res.stdout and sha(img.layers[0]) in res.stdout
    assert f"would delete    {sha(img.layers[0])}  10000 bytes\n" in res.stdout, res.stdout  # piped: one line each
    summary = gc(fresh_moorage, "--grace", "0", "--dry-run")
    assert summary["dry_run"] and summary["blobs_removed"] == 2
    assert summary["bytes_removed"] == len(img.config) + 10_000
    assert all(stored(fresh_moorage, [sha(x) for x in img.blobs]).values())
    assert gc(fresh_moorage, "--grace", "0")["bytes_removed"] == summary["bytes_removed"]


def test_grace_protects_fresh_uploads(fresh_moorage):
    url = fresh_moorage.url
    data = blob_bytes("lonely")
    push_blob(url, "g", data)
    assert gc(fresh_moorage)["blobs_removed"] == 0  # default grace: 1 h
    assert gc(fresh_moorage, "--grace", "3600")["blobs_removed"] == 0
    assert stored(fresh_moorage, [sha(data)])[sha(data)]
    assert requests.head(f"{url}/v2/g/blobs/{sha(data)}").status_code == 200
    assert gc(fresh_moorage, "--grace", "0")["blobs_removed"] == 1
    assert not stored(fresh_moorage, [sha(data)])[sha(data)]
    assert requests.head(f"{url}/v2/g/blobs/{sha(data)}").status_code == 404
    # and it can be pushed again afterwards
    push_blob(url, "g", data)
    assert requests.get(f"{url}/v2/g/blobs/{sha(data)}").content == data


def test_orphans_in_storage_are_swept(fresh_moorage):
    digest = put_orphan(fresh_moorage, blob_bytes("orphan"))
    assert stored(fresh_moorage, [digest])[digest]
    dry = gc(fresh_moorage, "--grace", "3600", "--dry-run")
    assert dry["orphans_removed"] == 1
    summary = gc(fresh_moorage, "--grace", "3600")
    assert summary["orphans_removed"] == 1
    assert not stored(fresh_moorage, [digest])[digest]
    assert check(fresh_moorage) == []


def test_stale_upload_sessions_are_aborted(fresh_moorage):
    url = fresh_moorage.url
    r = requests.post(f"{url}/v2/up/blobs/uploads/")
    assert r.status_code == 202
    location = r.headers["Location"]
    assert requests.patch(url + location, data=b"x" * 100).status_code == 202
    assert gc(fresh_moorage, "--grace", "0")["uploads_aborted"] == 0
    assert gc(fresh_moorage, "--grace", "0", "--upload-expiry", "0")["uploads_aborted"] == 1
    assert requests.get(url + location).status_code == 404


def test_referrers_and_index_children_are_kept(fresh_moorage):
    url = fresh_moorage.url
    child = make_image("child", unique=1)
    push_image(url, "idx", child.digest, child)
    index = (
        '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":'
        f'[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{child.digest}","size":{len(child.manifest)}}}]}}'
    ).encode()
    r = requests.put(
        f"{url}/v2/idx/manifests/latest", data=index, headers={"Content-Type": "application/vnd.oci.image.index.v1+json"}
    )
    assert r.status_code == 201, r.text
    from tests.gc_push import Image

    sig = Image(b"{}", [blob_bytes("sig")], subject=child.digest)
    push_image(url, "idx", sig.digest, sig)
    orphan_ref = Image(b'{"x":1}', [blob_bytes("dangling-sig")], subject=sha(b"nothing"))
    push_image(url, "idx", orphan_ref.digest, orphan_ref)

    summary = gc(fresh_moorage, "--grace", "0", "--delete-untagged")
    assert summary["manifests_removed"] == 1  # only the referrer of a manifest that does not exist
    pull_image(url, "idx", child.digest, child)
    pull_image(url, "idx", sig.digest, sig)
    assert requests.get(f"{url}/v2/idx/manifests/{orphan_ref.digest}").status_code == 404
    # untag the index: index, child and the child's referrer all go
    assert delete_ref(url, "idx", "latest") == 202
    summary = gc(fresh_moorage, "--grace", "0", "--delete-untagged")
    assert summary["manifests_removed"] == 3
    assert not any(stored(fresh_moorage, [sha(x) for x in child.blobs + sig.blobs]).values())
    assert check(fresh_moorage) == []


def test_kill9_mid_sweep_then_next_run_finishes(fresh_moorage):
    url = fresh_moorage.url
    keep = make_image("survivor", [blob_bytes("shared-k")], unique=1)
    push_image(url, "k9", "keep", keep)
    doomed = [make_image(f"doomed-{i}", [blob_bytes("shared-k")], unique=2) for i in range(5)]
    for i, img in enumerate(doomed):
        push_image(url, "k9", f"d{i}", img)
        assert delete_ref(url, "k9", img.digest) == 202
    doomed_digests = sorted({sha(b) for img in doomed for b in img.blobs} - {sha(b) for b in keep.blobs})

    proc = start_gc_paused(fresh_moorage, "MOORAGE_GC_TEST_PAUSE_AFTER_TOMBSTONE", "60", "-q")
    try:
        wait_for_line(proc, "pausing", timeout=60)  # the collector is past its tombstones
    finally:
        stop_group(proc)  # kill -9, mid-sweep

    problems = check(fresh_moorage)
    assert problems and all("tombstone" in p for p in problems), problems
    tombstoned = sorted(p.split()[-1] for p in problems)
    # the registry keeps serving what it should
    pull_image(url, "k9", "keep", keep)
    # an upload of a tombstoned blob waits for the tombstone instead of racing the sweep
    victim = next(b for img in doomed for b in img.blobs if sha(b) == tombstoned[0])
    box: dict = {}
    pusher = threading.Thread(
        target=lambda: box.setdefault(
            "status",
            requests.post(f"{url}/v2/k9/blobs/uploads/", params={"digest": sha(victim)}, data=victim, timeout=120).status_code,
        )
    )
    pusher.start()
    pusher.join(timeout=1.5)
    assert pusher.is_alive(), f"upload of a tombstoned blob did not wait: {box}"
    summary = gc(fresh_moorage, "--grace", "0")
    assert summary["tombstones_finished"] >= 1
    pusher.join(timeout=60)
    assert box.get("status") == 201
    assert requests.get(f"{url}/v2/k9/blobs/{sha(victim)}").content == victim
    assert check(fresh_moorage) == []
    assert not any(stored(fresh_moorage, [d for d in doomed_digests if d != sha(victim)]).values())
    pull_image(url, "k9", "keep", keep)
    # a blob of the interrupted sweep can be pushed again
    push_image(url, "k9", "again", doomed[0])
    pull_image(url, "k9", "again", doomed[0])


def test_repository_delete_api(fresh_moorage):
    url = fresh_moorage.url
    shared = [blob_bytes("repo-shared")]
    gone = make_image("gone", shared, unique=1)
    stays = make_image("stays", shared, unique=1)
    push_image(url, "team/gone", "v1", gone)
    push_image(url, "team/stays", "v1", stays)
    r = requests.delete(f"{url}/api/v1/repositories/team/gone")
    assert r.status_code == 202, r.text
    assert r.json()["deleted"]["manifests"] == 1
    assert requests.get(f"{url}/v2/team/gone/tags/list").json()["errors"][0]["code"] == "NAME_UNKNOWN"
    assert requests.delete(f"{url}/api/v1/repositories/team/gone").json()["errors"][0]["code"] == "NAME_UNKNOWN"
    assert "team/gone" not in requests.get(f"{url}/v2/_catalog").json()["repositories"]
    gc(fresh_moorage, "--grace", "0")
    assert not any(stored(fresh_moorage, [sha(gone.config), sha(gone.layers[1])]).values())
    pull_image(url, "team/stays", "v1", stays)


def test_scheduled_gc_inside_the_server(tmp_path, backend):
    name, make_env = backend
    env = {**make_env(), "MOORAGE_GC__INTERVAL": "1", "MOORAGE_GC__GRACE": "0", "MOORAGE_GC__DELETE_UNTAGGED": "true"}
    srv = start_moorage(tmp_path / "srv", env=env)
    srv.backend_env = make_env and env  # type: ignore[attr-defined]
    try:
        img = make_image("sched", unique=1)
        push_image(srv.url, "s", "t", img)
        assert delete_ref(srv.url, "s", "t") == 202
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and any(stored(srv, [sha(b) for b in img.blobs]).values()):
            time.sleep(0.5)
        assert not any(stored(srv, [sha(b) for b in img.blobs]).values())
    finally:
        srv.stop()


@pytest.mark.parametrize("path", ["manifests/x", "blobs/sha256:" + "0" * 64])
def test_deletes_disabled_answer_unsupported(tmp_path, backend, path):
    name, make_env = backend
    srv = start_moorage(tmp_path / "srv", env={**make_env(), "MOORAGE_DELETE_ENABLED": "false"})
    try:
        img = make_image("nodel", unique=1)
        push_image(srv.url, "nd", "x", img)
        for target in (f"{srv.url}/v2/nd/{path}", f"{srv.url}/api/v1/repositories/nd"):
            r = requests.delete(target)
            assert r.status_code == 405, (target, r.status_code, r.text)
            assert r.json()["errors"][0]["code"] == "UNSUPPORTED"
        pull_image(srv.url, "nd", "x", img)
    finally:
        srv.stop()


def test_gc_of_one_repository_leaves_the_others(fresh_moorage):
    url = fresh_moorage.url
    a, b = make_image("scope-a", unique=1), make_image("scope-b", unique=1)
    push_image(url, "scope/a", "t", a)
    push_image(url, "scope/b", "t", b)
    assert delete_ref(url, "scope/a", "t") == 202
    assert delete_ref(url, "scope/b", "t") == 202
    summary = gc(fresh_moorage, "--grace", "0", "--delete-untagged", "--repository", "scope/a")
    assert summary["manifests_removed"] == 1 and summary["blobs_removed"] == 2
    assert not any(stored(fresh_moorage, [sha(x) for x in a.blobs]).values())
    assert all(stored(fresh_moorage, [sha(x) for x in b.blobs]).values())
    assert requests.get(f"{url}/v2/scope/b/manifests/{b.digest}").status_code == 200
    assert gc(fresh_moorage, "--grace", "0", "--delete-untagged", "--repository", "nope/x")["blobs_removed"] == 0
    assert_refused(
        moorage_cli(fresh_moorage, "gc", "--repository", "Bad Name", check=False),
        "Invalid value for --repository: invalid repository name",
    )


def test_repository_delete_requires_admin_with_token_auth(tmp_path, backend):
    name, make_env = backend
    env = {
        **make_env(),
        "MOORAGE_AUTH__MODE": "token",
        "MOORAGE_AUTH__ADMIN_PASSWORD": "s3cret-admin",
        "MOORAGE_AUTH__BCRYPT_ROUNDS": "4",
    }
    srv = start_moorage(tmp_path / "srv", env=env)
    try:
        target = f"{srv.url}/api/v1/repositories/some/repo"
        r = requests.delete(target)
        assert r.status_code == 401 and r.json()["errors"][0]["code"] == "UNAUTHORIZED"
        assert requests.delete(target, auth=("admin", "wrong")).status_code == 401
        r = requests.delete(target, auth=("admin", "s3cret-admin"))
        assert r.status_code == 404 and r.json()["errors"][0]["code"] == "NAME_UNKNOWN"
    finally:
        srv.stop()
