"""Issue 8 item 2: ``moorage scrub`` finds same-size substitution that ``gc --check`` cannot see.

The bytes of a stored layer are replaced in storage (the file on disk, or the S3 object) by
garbage of the same size.  ``gc --check`` still finds everything consistent; ``moorage scrub``
reports the blob, quarantines it and exits 1; from then on the blob is unknown to GET/HEAD
(404 BLOB_UNKNOWN), to manifest pushes (MANIFEST_BLOB_UNKNOWN) and to mounts; pushing the
genuine bytes again repairs it.  Scrub is resumable (``--max-blobs`` stops early, the next run
resumes after the last digest) and can be limited to a repository or namespace.
"""

from __future__ import annotations

import asyncio
import json
import os

import requests

from tests.gc_push import _settings, make_image, moorage_cli, push_blob, push_image, sha
from tests.support.registry_proc import RegistryProcess


def overwrite_stored_blob(proc: RegistryProcess, digest: str, data: bytes) -> None:
    """Replace the bytes stored under ``digest`` behind the registry's back (any driver)."""
    from moorage.storage import create_blob_store

    async def go() -> None:
        store = create_blob_store(_settings(proc))
        await store.open()
        try:
            path = store.local_path(digest)
            if path is not None:
                with open(path, "r+b") as fh:  # same inode, same size: only the content changes
                    fh.write(data)
            else:
                await store._client.put_object(Bucket=store.bucket, Key=store._blob_key(digest), Body=data)  # type: ignore[attr-defined]
        finally:
            await store.close()

    asyncio.run(go())


def scrub(proc: RegistryProcess, *args: str) -> tuple[int, dict]:
    res = moorage_cli(proc, "scrub", "--json", *args, check=False)
    assert res.returncode in (0, 1), res.stderr
    return res.returncode, json.loads(res.stdout)


def test_scrub_finds_and_quarantines_same_size_substitution(fresh_moorage: RegistryProcess) -> None:
    url = fresh_moorage.url
    img = make_image("scrub-img", unique=2, size=300_000)
    push_image(url, "scr/app", "v1", img)
    other = os.urandom(50_000)
    push_blob(url, "other/x", other)

    code, out = scrub(fresh_moorage)
    assert code == 0 and out["ok"] and out["checked"] == len(img.blobs) + 1 and out["corrupt"] == []

    victim = img.layers[1]
    garbage = os.urandom(len(victim))
    overwrite_stored_blob(fresh_moorage, sha(victim), garbage)
    assert moorage_cli(fresh_moorage, "gc", "--check", check=False).returncode == 0  # invisible to gc --check

    code, out = scrub(fresh_moorage)
    assert code == 1 and not out["ok"]
    assert [(f["digest"], f["actual"], f["actual_size"]) for f in out["corrupt"]] == [(sha(victim), sha(garbage), len(garbage))]
    # never served again
    for method in ("GET", "HEAD"):
        r = requests.request(method, f"{url}/v2/scr/app/blobs/{sha(victim)}")
        assert r.status_code == 404
    assert requests.get(f"{url}/v2/scr/app/blobs/{sha(victim)}").json()["errors"][0]["code"] == "BLOB_UNKNOWN"
    r = requests.put(
        f"{url}/v2/scr/app/manifests/v2",
        data=img.manifest,
        headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"},
    )
    assert r.status_code == 400 and r.json()["errors"][0]["code"] == "MANIFEST_BLOB_UNKNOWN"
    r = requests.post(f"{url}/v2/third/y/blobs/uploads/", params={"mount": sha(victim), "from": "scr/app"})
    assert r.status_code == 202  # no mount of a quarantined blob: a plain upload session instead
    # the healthy blobs still are
    assert requests.get(f"{url}/v2/scr/app/blobs/{sha(img.layers[0])}").content == img.layers[0]
    assert "quarantined" in moorage_cli(fresh_moorage, "gc", "--check", check=False).stdout
    # a new pass finds nothing new (the quarantined blob is not visited again)
    code, out = scrub(fresh_moorage)
    assert code == 0 and out["corrupt"] == []

    # pushing the genuine bytes again repairs the blob
    push_blob(url, "scr/app", victim)
    assert requests.get(f"{url}/v2/scr/app/blobs/{sha(victim)}").content == victim
    r = requests.put(
        f"{url}/v2/scr/app/manifests/v2",
        data=img.manifest,
        headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"},
    )
    assert r.status_code == 201, r.text
    code, out = scrub(fresh_moorage, "--restart")
    assert code == 0 and out["checked"] == len(img.blobs) + 1
    assert moorage_cli(fresh_moorage, "gc", "--check", check=False).returncode == 0


def test_scrub_is_resumable_scoped_and_rate_limited(fresh_moorage: RegistryProcess) -> None:
    url = fresh_moorage.url
    blobs_a = [os.urandom(20_000 + i) for i in range(5)]
    for b in blobs_a:
        push_blob(url, "ns/a", b)
    push_blob(url, "ns/deeper/b", os.urandom(1000))
    push_blob(url, "nsx/c", os.urandom(1000))

    code, out = scrub(fresh_moorage, "--max-blobs", "2")
    assert code == 0 and out["checked"] == 2 and out["resumed_from"] is None
    code, out = scrub(fresh_moorage, "--rate", "50")
    assert code == 0 and out["resumed_from"] is not None
    assert out["checked"] == 5 and out["pass_checked"] == 7

    code, out = scrub(fresh_moorage, "--repository", "ns/a")
    assert code == 0 and out["checked"] == 5 and out["scope"] == "repo:ns/a"
    code, out = scrub(fresh_moorage, "--namespace", "ns")
    assert code == 0 and out["checked"] == 6  # ns/a and ns/deeper/b, not nsx/c
    bad = moorage_cli(fresh_moorage, "scrub", "--repository", "Not/Valid", check=False)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
