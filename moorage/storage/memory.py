"""In-memory driver, for tests only: blobs and upload parts live in a :class:`MemorySpace` (dicts).

It keeps the same contract as the filesystem and S3 drivers (tests/test_storage_drivers.py runs
the one driver suite over all three): every append writes parts of its own that nobody else
writes to, the state lists exactly those parts, a commit never replaces a stored blob of the
right size and sets a wrong-size leftover aside, and reading an absent blob raises
``FileNotFoundError``.  Several store instances over one space behave like replicas over one
bucket.

It is deliberately *not* a ``storage.driver`` choice in the configuration: the metadata database
outlives the process, the blobs would not, and a registry whose database lists blobs that are
gone makes clients skip uploads and then fail to pull.  Tests inject it instead:
``build_components(settings, blobs=MemoryBlobStore())`` (tests/support/inproc.py).
"""

from __future__ import annotations

import asyncio
import secrets
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from .base import BlobStat, BlobStore, PartialAppend, UploadState

CHUNK = 1 << 20


@dataclass
class _Upload:
    parts: dict[str, bytearray] = field(default_factory=dict)
    touched: float = field(default_factory=time.time)


@dataclass
class MemorySpace:
    """The shared "bucket": what several :class:`MemoryBlobStore` instances see alike."""

    blobs: dict[str, bytes] = field(default_factory=dict)
    uploads: dict[str, _Upload] = field(default_factory=dict)
    #: Blobs set aside by :meth:`MemoryBlobStore.quarantine` or a wrong-size commit (for inspection).
    quarantine: dict[str, bytes] = field(default_factory=dict)
    #: Stores may be used from several event loops (threads) at once, e.g. an app in a thread.
    lock: threading.Lock = field(default_factory=threading.Lock)


def _parts(state: UploadState) -> list[dict[str, Any]]:
    return [dict(p) for p in (state or {}).get("parts") or ()]


class MemoryBlobStore(BlobStore):
    name = "memory"

    def __init__(self, space: MemorySpace | None = None) -> None:
        self.space = space if space is not None else MemorySpace()

    # -- blobs ------------------------------------------------------------------------------
    async def stat(self, digest: str) -> BlobStat | None:
        data = self.space.blobs.get(digest)
        return None if data is None else BlobStat(size=len(data))

    async def read(self, digest: str, offset: int = 0, length: int | None = None) -> AsyncIterator[bytes]:
        data = self.space.blobs.get(digest)
        if data is None:
            raise FileNotFoundError(f"blob {digest} is not stored")
        end = len(data) if length is None else min(len(data), offset + length)
        view = memoryview(data)
        for pos in range(offset, end, CHUNK):
            yield bytes(view[pos : min(end, pos + CHUNK)])
            await asyncio.sleep(0)  # let other requests run, like a driver doing I/O would

    async def delete(self, digest: str) -> None:
        with self.space.lock:
            self.space.blobs.pop(digest, None)

    async def quarantine(self, digest: str) -> bool:
        with self.space.lock:
            data = self.space.blobs.pop(digest, None)
            if data is None:
                return False
            self.space.quarantine[f"{digest}-{time.time_ns()}"] = data
            return True

    async def list_blobs(self) -> AsyncIterator[str]:
        with self.space.lock:
            digests = list(self.space.blobs)
        for digest in digests:
            yield digest

    # -- uploads ----------------------------------------------------------------------------
    def _upload(self, upload_id: str) -> _Upload:
        up = self.space.uploads.get(upload_id)
        if up is None:
            raise FileNotFoundError(f"upload {upload_id} has no data")
        return up

    async def upload_create(self, upload_id: str) -> UploadState:
        with self.space.lock:
            self.space.uploads.setdefault(upload_id, _Upload())
        return {"v": 2, "parts": []}

    async def upload_append(
        self, upload_id: str, state: UploadState, offset: int, chunks: AsyncIterator[bytes]
    ) -> tuple[UploadState, int]:
        """Write ``chunks`` into a new part of this call's own (random name, never reused)."""
        parts = _parts(state)
        if sum(int(p["size"]) for p in parts) != offset:
            raise RuntimeError(f"upload {upload_id}: driver state does not hold {offset} bytes")
        name = f"p{len(parts) + 1:05d}-{secrets.token_hex(8)}"
        up = self._upload(upload_id)
        buf = bytearray()
        with self.space.lock:
            up.parts[name] = buf
        try:
            async for chunk in chunks:
                buf += chunk
                up.touched = time.time()
        except BaseException as exc:
            kept = parts + ([{"name": name, "size": len(buf)}] if buf else [])
            raise PartialAppend({"v": 2, "parts": kept}, offset + len(buf), exc) from exc
        if not buf:
            with self.space.lock:
                up.parts.pop(name, None)
            return {"v": 2, "parts": parts}, offset
        return {"v": 2, "parts": parts + [{"name": name, "size": len(buf)}]}, offset + len(buf)

    async def upload_drop_append(self, upload_id: str, before: UploadState, after: UploadState) -> None:
        keep = {str(p["name"]) for p in _parts(before)}
        up = self.space.uploads.get(upload_id)
        if up is None:
            return
        with self.space.lock:
            for part in _parts(after):
                if str(part["name"]) not in keep:
                    up.parts.pop(str(part["name"]), None)

    def _assemble(self, upload_id: str, state: UploadState, size: int) -> bytes:
        up = self._upload(upload_id)
        out = bytearray()
        for part in _parts(state):
            data = up.parts.get(str(part["name"]))
            if data is None or len(data) < int(part["size"]):
                raise RuntimeError(f"upload {upload_id}: part {part['name']} is shorter than its recorded size")
            out += data[: int(part["size"])]
        if len(out) < size:
            raise RuntimeError(f"upload {upload_id}: driver state does not hold {size} bytes")
        return bytes(out[:size])

    async def upload_read(self, upload_id: str, state: UploadState, size: int) -> AsyncIterator[bytes]:
        data = self._assemble(upload_id, state, size)
        for pos in range(0, len(data), CHUNK):
            yield data[pos : pos + CHUNK]

    async def upload_commit(self, upload_id: str, state: UploadState, size: int, digest: str) -> bool:
        """Place the verified bytes at ``digest`` unless a blob of that size is there already;
        a leftover of another size is set aside first (as the filesystem driver does)."""
        if sum(int(p["size"]) for p in _parts(state)) != size:
            raise RuntimeError(f"upload {upload_id}: driver state does not hold {size} bytes")
        data = self._assemble(upload_id, state, size) if size else b""
        with self.space.lock:
            have = self.space.blobs.get(digest)
            placed = False
            if have is None or len(have) != size:
                if have is not None:
                    self.space.quarantine[f"{digest}-{time.time_ns()}-wrong-size"] = have
                self.space.blobs[digest] = data
                placed = True
            self.space.uploads.pop(upload_id, None)
        return placed

    async def upload_abort(self, upload_id: str, state: UploadState) -> None:
        with self.space.lock:
            self.space.uploads.pop(upload_id, None)

    async def upload_age(self, upload_id: str) -> float | None:
        up = self.space.uploads.get(upload_id)
        return None if up is None else max(0.0, time.time() - up.touched)

    async def list_upload_ids(self) -> AsyncIterator[str]:
        with self.space.lock:
            ids = list(self.space.uploads)
        for upload_id in ids:
            yield upload_id
