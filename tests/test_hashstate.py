"""Resumable SHA-256 (moorage.registry.hashstate) and its use across replicas by the service."""

from __future__ import annotations

import hashlib
import os
import random
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from moorage.metadata.db import Database
from moorage.metadata.store import MetadataStore
from moorage.registry import hashstate
from moorage.registry.service import RegistryService
from moorage.storage.filesystem import FilesystemBlobStore
from tests.support.require import required

# Skipped on a machine without libcrypto's SHA256_* -- but not in CI (tests/support/require.py):
# there the tests run and fail, since replicas then silently fall back to re-hashing from S3.
pytestmark = pytest.mark.skipif(not hashstate.AVAILABLE and not required(), reason="libcrypto SHA256_* not available")


def test_matches_hashlib_across_save_restore_and_copy() -> None:
    rng = random.Random(7)
    for trial in range(200):
        data = rng.randbytes(rng.randint(0, 3000))
        h = hashstate.ResumableSHA256()
        pos = 0
        while pos < len(data):
            n = rng.randint(0, 200)
            h.update(data[pos : pos + n])
            pos += n
            if rng.random() < 0.5:
                h = hashstate.ResumableSHA256.restore(h.state())
            if rng.random() < 0.3:
                h = h.copy()
        assert h.length == len(data)
        assert h.hexdigest() == hashlib.sha256(data).hexdigest(), trial
        assert h.hexdigest() == h.hexdigest()  # digest() does not consume the state


def test_restore_rejects_garbage() -> None:
    for bad in ("", "nope", "sha256-openssl-v1:AAAA", "sha256-openssl-v1:" + "A" * 160):
        with pytest.raises(ValueError):
            hashstate.ResumableSHA256.restore(bad)


async def _body(data: bytes, size: int = 1 << 16) -> AsyncIterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


async def test_upload_finished_on_another_replica_is_not_rehashed(tmp_path: Path) -> None:
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'm.db'}")
    await db.migrate()
    store = MetadataStore(db)
    blobs_a, blobs_b = FilesystemBlobStore(tmp_path / "s"), FilesystemBlobStore(tmp_path / "s")
    await blobs_a.open()
    a, b = RegistryService(store, blobs_a), RegistryService(store, blobs_b)

    async def no_reread(*_a: object, **_k: object) -> AsyncIterator[bytes]:
        raise AssertionError("re-read the upload from storage")
        yield b""  # pragma: no cover

    blobs_b.upload_read = no_reread  # type: ignore[method-assign]
    data = os.urandom(300_000)
    try:
        rec = await a.start_upload("x/y")
        await a.append_upload("x/y", rec.id, _body(data[:100_001]))
        await b.append_upload("x/y", rec.id, _body(data[100_001:200_000]))  # B resumes A's state
        await a.append_upload("x/y", rec.id, _body(data[200_000:]))  # A's cache is stale
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        assert await b.finish_upload("x/y", rec.id, digest, None) == digest
        assert await store.blob_size_in_repository("x/y", digest) == len(data)
    finally:
        await db.close()
