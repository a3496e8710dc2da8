"""Blob-store driver contract, written once and run against every driver (filesystem, S3 on Ceph RGW,
and the in-memory driver the in-process app fixture uses: tests/support/inproc.py).

The S3 variant uses a small ``part_size`` (the 5 MiB S3 minimum) so that part boundaries, the
carried-over tail and the server-side composition at commit are all exercised with little data.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import AsyncIterator, Iterable
from pathlib import Path

import pytest

from moorage.config import S3Storage
from moorage.storage import BlobStore, PartialAppend
from moorage.storage.filesystem import FilesystemBlobStore
from moorage.storage.memory import MemoryBlobStore, MemorySpace

MiB = 1 << 20
PART = 5 * MiB


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _data(n: int, seed: int = 0) -> bytes:
    out = bytearray()
    block = hashlib.sha256(f"seed{seed}".encode()).digest()
    while len(out) < n:
        block = hashlib.sha256(block).digest()
        out += block * 64
    return bytes(out[:n])


async def _chunks(data: bytes, size: int = MiB) -> AsyncIterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


async def _collect(it: AsyncIterator[bytes]) -> bytes:
    return b"".join([c async for c in it])


class Driver:
    """Makes store instances sharing one storage location (like replicas)."""

    def __init__(self, kind: str, make) -> None:  # type: ignore[no-untyped-def]
        self.kind = kind
        self._make = make
        self.opened: list[BlobStore] = []

    async def new(self) -> BlobStore:
        store = self._make()
        await store.open()
        self.opened.append(store)
        return store

    async def close(self) -> None:
        for s in self.opened:
            await s.close()


@pytest.fixture(params=["filesystem", "memory", pytest.param("s3", marks=pytest.mark.services)])
async def driver(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Driver]:
    if request.param == "filesystem":
        d = Driver("filesystem", lambda: FilesystemBlobStore(tmp_path / "storage"))
    elif request.param == "memory":
        space = MemorySpace()  # one space, several instances: like replicas over one bucket
        d = Driver("memory", lambda: MemoryBlobStore(space))
    else:
        rgw = request.getfixturevalue("rgw")
        cfg = S3Storage(
            bucket=f"drv-{uuid.uuid4().hex[:12]}",
            prefix="reg/x",
            endpoint_url=rgw.endpoint_url,
            access_key=rgw.access_key,
            secret_key=rgw.secret_key,
            region=rgw.region,
            part_size=PART,
        )
        from moorage.storage.s3 import S3BlobStore

        d = Driver("s3", lambda: S3BlobStore(cfg))
    try:
        yield d
    finally:
        await d.close()


async def _upload(store: BlobStore, pieces: Iterable[bytes], upload_id: str | None = None) -> tuple[str, dict, int]:
    upload_id = upload_id or str(uuid.uuid4())
    state = await store.upload_create(upload_id)
    size = 0
    for piece in pieces:
        state, size = await store.upload_append(upload_id, state, size, _chunks(piece))
    return upload_id, state, size


async def test_small_blob_round_trip(driver: Driver) -> None:
    store = await driver.new()
    data = b"hello, moorage"
    uid, state, size = await _upload(store, [data])
    assert size == len(data)
    assert await _collect(store.upload_read(uid, state, size)) == data
    await store.upload_commit(uid, state, size, _digest(data))
    assert (await store.stat(_digest(data))).size == len(data)
    assert await _collect(store.read(_digest(data))) == data
    assert uid not in [u async for u in store.list_upload_ids()]


async def test_empty_blob(driver: Driver) -> None:
    store = await driver.new()
    uid, state, size = await _upload(store, [])
    assert size == 0
    d = _digest(b"")
    await store.upload_commit(uid, state, 0, d)
    assert (await store.stat(d)).size == 0
    assert await _collect(store.read(d)) == b""


@pytest.mark.parametrize(
    "pieces",
    [
        [2 * PART + 123],  # one request: two full parts and a tail
        [PART - 1, 1, 3, PART, PART + 7],  # tails carried over requests, exact boundaries
        [100, 200, 300],  # tail only, rewritten by every append
        [PART],  # exactly one part, no tail
    ],
    ids=["one-request", "boundaries", "tail-only", "one-part"],
)
async def test_chunked_upload_across_instances(driver: Driver, pieces: list[int]) -> None:
    """Each append runs on a fresh store instance (a different replica) from the persisted state."""
    data = _data(sum(pieces), seed=len(pieces))
    uid = str(uuid.uuid4())
    state = await (await driver.new()).upload_create(uid)
    size = 0
    pos = 0
    for n in pieces:
        store = await driver.new()
        state, size = await store.upload_append(uid, state, size, _chunks(data[pos : pos + n], 700_000))
        pos += n
        assert size == pos
        # JSON round trip: the state is what the database keeps
        import json

        state = json.loads(json.dumps(state))
        assert await _collect((await driver.new()).upload_read(uid, state, size)) == data[:pos]
    store = await driver.new()
    await store.upload_commit(uid, state, size, _digest(data))
    got = await _collect(store.read(_digest(data)))
    assert hashlib.sha256(got).hexdigest() == hashlib.sha256(data).hexdigest()
    assert [u async for u in store.list_upload_ids()] == []


async def test_range_reads(driver: Driver) -> None:
    store = await driver.new()
    data = _data(PART + 1000, seed=7)
    uid, state, size = await _upload(store, [data[: PART // 2], data[PART // 2 :]])
    d = _digest(data)
    await store.upload_commit(uid, state, size, d)
    for off, ln in [(0, 10), (5, None), (PART - 3, 6), (len(data) - 1, 1), (len(data) - 10, None), (0, len(data))]:
        expect = data[off:] if ln is None else data[off : off + ln]
        assert await _collect(store.read(d, off, ln)) == expect, (off, ln)


async def test_abort(driver: Driver) -> None:
    store = await driver.new()
    uid, state, size = await _upload(store, [_data(PART + 5)])
    assert uid in [u async for u in store.list_upload_ids()]
    await store.upload_abort(uid, state)
    assert uid not in [u async for u in store.list_upload_ids()]
    await store.upload_abort(uid, state)  # idempotent


async def test_interrupted_append_keeps_durable_prefix(driver: Driver) -> None:
    store = await driver.new()
    uid = str(uuid.uuid4())
    state = await store.upload_create(uid)
    data = _data(PART + 300_000, seed=3)

    async def broken() -> AsyncIterator[bytes]:
        yield data[:PART]
        yield data[PART : PART + 300_000]
        raise ConnectionResetError("client went away")

    with pytest.raises(PartialAppend) as ei:
        await store.upload_append(uid, state, 0, broken())
    state, size = ei.value.state, ei.value.size
    assert 0 < size <= len(data)
    kept = await _collect((await driver.new()).upload_read(uid, state, size))
    assert kept == data[:size]
    # resume from there on another instance
    store2 = await driver.new()
    state, size = await store2.upload_append(uid, state, size, _chunks(data[size:]))
    assert size == len(data)
    await store2.upload_commit(uid, state, size, _digest(data))
    assert await _collect(store.read(_digest(data))) == data


async def test_list_and_delete(driver: Driver) -> None:
    store = await driver.new()
    digests = []
    for i in range(3):
        data = f"blob {i}".encode()
        uid, state, size = await _upload(store, [data])
        await store.upload_commit(uid, state, size, _digest(data))
        digests.append(_digest(data))
    assert sorted([d async for d in store.list_blobs()]) == sorted(digests)
    await store.delete(digests[0])
    await store.delete(digests[0])  # absent: no error
    assert await store.stat(digests[0]) is None
    assert sorted([d async for d in store.list_blobs()]) == sorted(digests[1:])
    with pytest.raises(FileNotFoundError):
        await _collect(store.read(digests[0]))


async def test_concurrent_commits_of_one_digest(driver: Driver) -> None:
    import asyncio

    store = await driver.new()
    data = _data(PART + 10, seed=11)
    ups = [await _upload(store, [data]) for _ in range(2)]
    await asyncio.gather(*(store.upload_commit(u, s, n, _digest(data)) for u, s, n in ups))
    assert await _collect(store.read(_digest(data))) == data


async def test_s3_specifics(driver: Driver) -> None:
    """Presigned redirect, prefix isolation, and stale multipart-upload cleanup."""
    if driver.kind != "s3":
        store = await driver.new()
        assert await store.redirect_url(_digest(b"x")) is None
        return
    import urllib.request

    store = await driver.new()
    data = b"presigned!"
    uid, state, size = await _upload(store, [data])
    await store.upload_commit(uid, state, size, _digest(data))
    url = await store.redirect_url(_digest(data))
    assert url and "/reg/x/blobs/sha256/" in url
    with urllib.request.urlopen(url, timeout=10) as resp:
        assert resp.read() == data
    client = store._client  # type: ignore[attr-defined]
    key = store._key("blobs/sha256/zz/left-behind")  # type: ignore[attr-defined]
    mpu = await client.create_multipart_upload(Bucket=store.bucket, Key=key)  # type: ignore[attr-defined]
    assert await store.abort_stale_multipart_uploads(3600) == 0  # type: ignore[attr-defined]
    assert await store.abort_stale_multipart_uploads(-60) >= 1  # type: ignore[attr-defined]
    left = await client.list_multipart_uploads(Bucket=store.bucket)  # type: ignore[attr-defined]
    assert mpu["UploadId"] not in [u["UploadId"] for u in left.get("Uploads", ())]


async def test_purge_leftovers(driver: Driver) -> None:
    store = await driver.new()
    known, _, _ = await _upload(store, [b"still wanted"])
    orphan, _, _ = await _upload(store, [b"nobody knows me"])

    async def session_exists(upload_id: str) -> bool:
        return upload_id == known

    # nothing is old enough yet
    assert (await store.purge_leftovers(3600, session_exists))["orphan_uploads"] == 0
    assert (await store.upload_age(orphan)) is not None
    result = await store.purge_leftovers(-1, session_exists)
    assert result["orphan_uploads"] == 1
    ids = [u async for u in store.list_upload_ids()]
    assert known in ids and orphan not in ids


def test_purge_uploads_cli(tmp_path: Path) -> None:
    from tests.support.cli import run_moorage

    def moorage(*args: str):  # type: ignore[no-untyped-def]
        return run_moorage(*args, "--data", tmp_path, clean_env=True)

    # A data directory that holds no registry is refused (nothing to compare the uploads with) ...
    cp = moorage("purge-uploads", "--older-than", "0")
    assert cp.returncode != 0 and "no registry" in cp.stderr, cp.stderr[-2000:]
    assert not (tmp_path / "moorage.db").exists()
    # ... and a registry's is purged.
    assert moorage("migrate").returncode == 0
    cp = moorage("purge-uploads", "--older-than", "0")
    assert cp.returncode == 0, cp.stderr[-2000:]
    assert "orphan_uploads=0" in cp.stdout


# -- integrity contract (issue 8) -----------------------------------------------------------
async def test_commit_never_replaces_an_existing_blob(driver: Driver) -> None:
    """A second commit under a stored digest (a re-push, or a bug upstream) leaves the stored
    bytes alone and drops its upload."""
    store = await driver.new()
    data, other = _data(70_000, seed=21), _data(70_000, seed=22)
    uid, state, size = await _upload(store, [data])
    assert await store.upload_commit(uid, state, size, _digest(data)) is True
    uid2, state2, size2 = await _upload(store, [other])
    assert await store.upload_commit(uid2, state2, size2, _digest(data)) is False
    assert await _collect(store.read(_digest(data))) == data
    assert uid2 not in [u async for u in store.list_upload_ids()]


async def test_an_append_writes_only_objects_of_its_own(driver: Driver) -> None:
    """Two appends racing from the same state (what the service's claim prevents, and what a
    writer that lost its claim would do): each writes only its own objects, so the state the
    winner returned -- and the blob committed from it -- hold exactly the winner's bytes, whatever
    the loser writes before or after the commit."""
    import asyncio

    store = await driver.new()
    head, genuine, evil = _data(3000, seed=31), _data(4000, seed=32), _data(4000, seed=33)
    uid, state, size = await _upload(store, [head])
    go_on = asyncio.Event()

    async def held() -> AsyncIterator[bytes]:
        yield evil[:1000]
        await go_on.wait()
        yield evil[1000:]

    stale = asyncio.ensure_future(store.upload_append(uid, state, size, held()))
    await asyncio.sleep(0.2)
    state2, size2 = await store.upload_append(uid, state, size, _chunks(genuine))
    assert await _collect(store.upload_read(uid, state2, size2)) == head + genuine
    go_on.set()
    try:
        await stale  # finishes or fails; either way it must not touch state2's data
    except Exception:  # noqa: BLE001
        pass
    assert await _collect(store.upload_read(uid, state2, size2)) == head + genuine
    await store.upload_commit(uid, state2, size2, _digest(head + genuine))
    assert await _collect(store.read(_digest(head + genuine))) == head + genuine


async def test_commit_sets_aside_wrong_size_leftover(driver: Driver) -> None:
    """Bytes of another size under the address (restored backup, other tools) are not the blob:
    the verified upload takes the address (the leftover is kept aside under quarantine/)."""
    store = await driver.new()
    data = _data(50_000, seed=41)
    junk = _data(123, seed=42)
    uid, state, size = await _upload(store, [junk])
    await store.upload_commit(uid, state, size, _digest(data))  # a leftover: wrong bytes, wrong size
    uid, state, size = await _upload(store, [data])
    assert await store.upload_commit(uid, state, size, _digest(data)) is True
    assert await _collect(store.read(_digest(data))) == data


async def test_filesystem_never_serves_a_link_at_a_blob_address(tmp_path: Path) -> None:
    """A symbolic link at a content address (planted by hand, or by an import of a hostile
    tree) is neither stat-ed nor read as a blob: following it would serve whatever it names."""
    secret = tmp_path / "secret.pem"
    secret.write_bytes(b"private key")
    store = FilesystemBlobStore(tmp_path / "store")
    await store.open()
    digest = "sha256:" + hashlib.sha256(b"private key").hexdigest()
    path = store.local_path(digest)
    assert path is not None
    path.parent.mkdir(parents=True, exist_ok=True)
    path.symlink_to(secret)
    assert await store.stat(digest) is None
    with pytest.raises(FileNotFoundError):
        async for _chunk in store.read(digest):
            pass
