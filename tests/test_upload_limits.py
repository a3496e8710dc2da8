"""Issue 8 item 6: quotas hold on streamed bytes, refused uploads keep no data, open sessions are capped.

* a PATCH without ``Content-Length`` (chunked transfer) into a namespace with a 1 MiB quota is
  refused (403 DENIED) once the bytes cross the quota -- not after writing 20 MiB -- and what it
  sent is not kept: storage holds nothing for the session, whose size is unchanged;
* a refused completing ``PUT`` (body larger than the quota) discards its session: nothing in
  storage, the session is gone (404 BLOB_UPLOAD_UNKNOWN);
* open sessions per repository and per user (anonymous: per address) are capped, answering 429
  TOOMANYREQUESTS with a message that says which cap; cancelling a session frees a slot.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.gc_push import _settings, sha, sub_cli
from tests.support.backends import EnvFactory
from tests.support.registry_proc import RegistryProcess, start_moorage

MiB = 1 << 20


def upload_bytes_in_storage(proc: RegistryProcess, upload_id: str) -> int:
    """Bytes the server's storage holds for an upload session (any driver)."""
    from moorage.storage import create_blob_store

    async def go() -> int:
        store = create_blob_store(_settings(proc))
        await store.open()
        try:
            if store.name == "filesystem":
                d = Path(store.root) / "uploads" / upload_id  # type: ignore[attr-defined]
                return sum(p.stat().st_size for p in d.iterdir()) if d.is_dir() else 0
            total = 0
            paginator = store._client.get_paginator("list_objects_v2")  # type: ignore[attr-defined]
            async for page in paginator.paginate(Bucket=store.bucket, Prefix=store._upload_prefix(upload_id)):  # type: ignore[attr-defined]
                total += sum(int(o["Size"]) for o in page.get("Contents", ()))
            return total
        finally:
            await store.close()

    return asyncio.run(go())


def _stream(total: int, piece: int = 256 * 1024) -> Iterator[bytes]:
    sent = 0
    while sent < total:
        n = min(piece, total - sent)
        sent += n
        yield os.urandom(n)


def test_chunked_patch_cannot_write_past_quota(fresh_moorage: RegistryProcess) -> None:
    url = fresh_moorage.url
    sub_cli(fresh_moorage, "quota", "set", "qs", str(MiB))
    r = requests.post(f"{url}/v2/qs/app/blobs/uploads/")
    assert r.status_code == 202
    loc, upload_id = url + r.headers["Location"], r.headers["Docker-Upload-UUID"]
    try:
        r = requests.patch(loc, data=_stream(20 * MiB), headers={"Content-Type": "application/octet-stream"}, timeout=120)
        status, body = r.status_code, r.json()
    except requests.ConnectionError:  # the server may close before reading all 20 MiB
        status, body = 403, None
    assert status == 403
    if body is not None:
        assert body["errors"][0]["code"] == "DENIED" and "quota" in body["errors"][0]["message"]
    assert upload_bytes_in_storage(fresh_moorage, upload_id) == 0
    st = requests.get(loc)
    assert st.status_code == 204 and st.headers["Range"] == "0-0"
    # What fits still goes through the same session.
    small = os.urandom(100_000)
    assert requests.patch(loc, data=small, headers={"Content-Type": "application/octet-stream"}).status_code == 202
    assert requests.put(loc, params={"digest": sha(small)}).status_code == 201


def test_refused_put_keeps_no_data(fresh_moorage: RegistryProcess) -> None:
    url = fresh_moorage.url
    sub_cli(fresh_moorage, "quota", "set", "qp", str(MiB))
    data = os.urandom(3 * MiB)
    r = requests.post(f"{url}/v2/qp/app/blobs/uploads/")
    loc, upload_id = url + r.headers["Location"], r.headers["Docker-Upload-UUID"]
    # chunked body: the size shows only as it streams
    r = requests.put(loc, params={"digest": sha(data)}, data=_stream(len(data)), timeout=120)
    assert r.status_code == 403 and r.json()["errors"][0]["code"] == "DENIED"
    assert upload_bytes_in_storage(fresh_moorage, upload_id) == 0
    gone = requests.get(loc)
    assert gone.status_code == 404 and gone.json()["errors"][0]["code"] == "BLOB_UPLOAD_UNKNOWN"
    assert requests.head(f"{url}/v2/qp/app/blobs/{sha(data)}").status_code == 404
    # A session filled by PATCHes within the quota, then refused at the PUT (size known only
    # there for the quota's "bytes not yet counted" rule): discarded as well.
    sub_cli(fresh_moorage, "quota", "set", "qp", str(2 * MiB))
    r = requests.post(f"{url}/v2/qp/app/blobs/uploads/")
    loc, upload_id = url + r.headers["Location"], r.headers["Docker-Upload-UUID"]
    part = os.urandom(MiB + 5)
    assert requests.patch(loc, data=part, headers={"Content-Type": "application/octet-stream"}).status_code == 202
    sub_cli(fresh_moorage, "quota", "set", "qp", str(MiB))
    r = requests.put(loc, params={"digest": sha(part)})
    assert r.status_code == 403
    assert upload_bytes_in_storage(fresh_moorage, upload_id) == 0
    assert requests.get(loc).status_code == 404


@pytest.fixture()
def capped(backend: tuple[str, EnvFactory], tmp_path: Path) -> Iterator[RegistryProcess]:
    name, make_env = backend
    env = {**make_env(), "MOORAGE_UPLOADS__MAX_SESSIONS_PER_REPOSITORY": "5", "MOORAGE_UPLOADS__MAX_SESSIONS_PER_USER": "8"}
    proc = start_moorage(tmp_path / "srv", env=env)
    try:
        yield proc
    finally:
        proc.stop()


def test_open_sessions_are_capped(capped: RegistryProcess) -> None:
    url = capped.url
    s = requests.Session()
    opened = [s.post(f"{url}/v2/cap/a/blobs/uploads/") for _ in range(5)]
    assert [r.status_code for r in opened] == [202] * 5
    r = s.post(f"{url}/v2/cap/a/blobs/uploads/")
    assert r.status_code == 429, r.text
    err = r.json()["errors"][0]
    assert err["code"] == "TOOMANYREQUESTS" and "repository" in err["message"] and "5" in err["message"]
    # a monolithic upload needs a session too
    r = s.post(f"{url}/v2/cap/a/blobs/uploads/", params={"digest": sha(b"x")}, data=b"x")
    assert r.status_code == 429
    # another repository: the per-user (here: per-address) cap of 8 applies
    assert [s.post(f"{url}/v2/cap/b/blobs/uploads/").status_code for _ in range(3)] == [202] * 3
    r = s.post(f"{url}/v2/cap/c/blobs/uploads/")
    assert r.status_code == 429 and "user" in r.json()["errors"][0]["message"]
    # cancelling one frees a slot; completing one too
    assert s.delete(url + opened[0].headers["Location"]).status_code == 204
    r = s.post(f"{url}/v2/cap/c/blobs/uploads/")
    assert r.status_code == 202
    assert s.put(url + opened[1].headers["Location"], params={"digest": sha(b"y")}, data=b"y").status_code == 201
    assert s.post(f"{url}/v2/cap/a/blobs/uploads/", params={"digest": sha(b"z")}, data=b"z").status_code == 201
