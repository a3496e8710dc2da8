"""Filesystem driver: blobs under ``<root>/blobs/<algo>/<2 hex>/<hex>``, uploads under ``<root>/uploads/<id>``.

Crash safety: an upload's bytes live in ``uploads/<id>/data`` until the registry has verified
the digest; :meth:`upload_commit` fsyncs the file, renames it to its content address (atomic on
one filesystem) and fsyncs the directory.  A kill -9 at any point leaves either no blob or the
whole verified blob — never a partial one under a digest name.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import ctypes
import errno
import os
import shutil
from pathlib import Path
from typing import AsyncIterator

from .base import BlobStat, BlobStore, PartialAppend, UploadState

CHUNK = 1 << 20


def _blob_rel(digest: str) -> Path:
    algo, hexpart = digest.split(":", 1)
    # Digest.parse() has validated both parts before any driver call; re-check so that a bug
    # elsewhere can never turn into a path outside the root.
    if not (algo.isalnum() and hexpart.isalnum()):
        raise ValueError(f"refusing unsafe digest {digest!r}")
    return Path("blobs") / algo / hexpart[:2] / hexpart


def _safe_upload_id(upload_id: str) -> str:
    if not upload_id or not all(c.isalnum() or c == "-" for c in upload_id):
        raise ValueError(f"refusing unsafe upload id {upload_id!r}")
    return upload_id


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class FilesystemBlobStore(BlobStore):
    name = "filesystem"

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).resolve()

    async def open(self) -> None:
        for sub in ("blobs", "uploads"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)

    # -- blobs ------------------------------------------------------------------------------
    def _blob_path(self, digest: str) -> Path:
        return self.root / _blob_rel(digest)

    async def stat(self, digest: str) -> BlobStat | None:
        try:
            st = await asyncio.to_thread(os.stat, self._blob_path(digest))
        except FileNotFoundError:
            return None
        return BlobStat(size=st.st_size)

    def local_path(self, digest: str) -> Path | None:
        return self._blob_path(digest)

    async def read(self, digest: str, offset: int = 0, length: int | None = None) -> AsyncIterator[bytes]:
        async for chunk in _read_file(self._blob_path(digest), offset, length):
            yield chunk

    async def delete(self, digest: str) -> None:
        path = self._blob_path(digest)
        try:
            await asyncio.to_thread(os.unlink, path)
        except FileNotFoundError:
            pass

    async def list_blobs(self) -> AsyncIterator[str]:
        def walk() -> list[str]:
            out: list[str] = []
            base = self.root / "blobs"
            if not base.is_dir():
                return out
            for algo in os.listdir(base):
                for prefix in os.listdir(base / algo):
                    for name in os.listdir(base / algo / prefix):
                        if not name.startswith("."):
                            out.append(f"{algo}:{name}")
            return out

        for digest in await asyncio.to_thread(walk):
            yield digest

    # -- uploads ----------------------------------------------------------------------------
    def _upload_file(self, upload_id: str) -> Path:
        return self.root / "uploads" / _safe_upload_id(upload_id) / "data"

    async def upload_create(self, upload_id: str) -> UploadState:
        path = self._upload_file(upload_id)

        def create() -> None:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch()

        await asyncio.to_thread(create)
        return {}

    async def upload_append(
        self, upload_id: str, state: UploadState, offset: int, chunks: AsyncIterator[bytes]
    ) -> tuple[UploadState, int]:
        path = self._upload_file(upload_id)

        def open_at() -> int:
            fd = os.open(path, os.O_WRONLY)
            # Bytes past the committed offset are leftovers of an interrupted request.
            os.ftruncate(fd, offset)
            os.lseek(fd, offset, os.SEEK_SET)
            return fd

        # Writes go to a bounded pool while the event loop receives (and the service hashes)
        # the next chunk.  One write per upload is in flight at a time, so they land in order;
        # the fd is closed only once the last write has finished, even on cancellation.
        try:
            fd = await asyncio.to_thread(open_at)
        except FileNotFoundError:
            raise FileNotFoundError(f"upload {upload_id} has no data file") from None
        writer = _Writeback(fd, offset)
        inflight: concurrent.futures.Future[None] | None = None
        try:
            async for chunk in chunks:
                if inflight is not None:
                    await asyncio.wrap_future(inflight)
                inflight = _WRITE_POOL.submit(writer.write, chunk)
            if inflight is not None:
                await asyncio.wrap_future(inflight)
        except BaseException as exc:
            # Report only what is on disk, and only once no write is in flight any more: a
            # late write landing after the client resumed could clobber the resumed bytes.
            if inflight is not None:
                with contextlib.suppress(BaseException):
                    await asyncio.wrap_future(inflight)
            raise PartialAppend(state, writer.pos, exc) from exc
        finally:
            if inflight is None or inflight.done():
                os.close(fd)
            else:
                inflight.add_done_callback(lambda _f: os.close(fd))
        size = writer.pos
        return state, size

    async def upload_read(self, upload_id: str, state: UploadState, size: int) -> AsyncIterator[bytes]:
        async for chunk in _read_file(self._upload_file(upload_id), 0, size):
            yield chunk

    async def upload_commit(self, upload_id: str, state: UploadState, size: int, digest: str) -> None:
        src = self._upload_file(upload_id)
        dst = self._blob_path(digest)

        def commit() -> None:
            fd = os.open(src, os.O_RDWR)
            try:
                os.ftruncate(fd, size)
                os.fsync(fd)
            finally:
                os.close(fd)
            dst.parent.mkdir(parents=True, exist_ok=True)
            # Concurrent pushes of one blob: both renames carry identical verified bytes, so
            # whichever lands last simply replaces the other atomically.
            os.replace(src, dst)
            _fsync_dir(dst.parent)
            shutil.rmtree(src.parent, ignore_errors=True)

        await asyncio.to_thread(commit)

    async def upload_abort(self, upload_id: str, state: UploadState) -> None:
        await asyncio.to_thread(shutil.rmtree, self.root / "uploads" / _safe_upload_id(upload_id), True)

    async def upload_age(self, upload_id: str) -> float | None:
        import time

        try:
            st = await asyncio.to_thread(os.stat, self.root / "uploads" / _safe_upload_id(upload_id))
        except (FileNotFoundError, ValueError):
            return None
        newest = st.st_mtime
        try:
            newest = max(newest, (await asyncio.to_thread(os.stat, self._upload_file(upload_id))).st_mtime)
        except FileNotFoundError:
            pass
        return max(0.0, time.time() - newest)

    async def list_upload_ids(self) -> AsyncIterator[str]:
        try:
            names = await asyncio.to_thread(os.listdir, self.root / "uploads")
        except FileNotFoundError:
            return
        for name in names:
            yield name


#: Upload writes of all requests share these threads (bounded however many uploads run).
_WRITE_POOL = concurrent.futures.ThreadPoolExecutor(max_workers=16, thread_name_prefix="moorage-write")

#: Ask the kernel to start writing an upload's pages to disk every this many bytes, so the
#: fsync at commit finds little left to flush (it was ~0.4 s for 256 MiB here otherwise).
WRITEBACK_EVERY = 8 << 20
_SYNC_FILE_RANGE_WRITE = 2

try:
    _sync_file_range = ctypes.CDLL(None, use_errno=True).sync_file_range
    _sync_file_range.argtypes = (ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint)
except (OSError, AttributeError):  # pragma: no cover - not Linux/glibc
    _sync_file_range = None  # type: ignore[assignment]


class _Writeback:
    """Sequential writes to ``fd`` that start asynchronous writeback behind themselves."""

    __slots__ = ("fd", "pos", "flushed")

    def __init__(self, fd: int, pos: int) -> None:
        self.fd, self.pos, self.flushed = fd, pos, pos

    def write(self, data: bytes) -> None:
        _write_all(self.fd, data)
        self.pos += len(data)
        if _sync_file_range is not None and self.pos - self.flushed >= WRITEBACK_EVERY:
            # Non-blocking hint (SYNC_FILE_RANGE_WRITE only); durability still comes from the
            # fsync in upload_commit.  Errors are irrelevant here and ignored.
            _sync_file_range(self.fd, self.flushed, self.pos - self.flushed, _SYNC_FILE_RANGE_WRITE)
            self.flushed = self.pos


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            n = os.write(fd, view)
        except OSError as exc:  # pragma: no cover - disk full etc.
            if exc.errno == errno.EINTR:
                continue
            raise
        view = view[n:]


async def _read_file(path: Path, offset: int, length: int | None) -> AsyncIterator[bytes]:
    fh = await asyncio.to_thread(open, path, "rb")
    try:
        await asyncio.to_thread(fh.seek, offset)
        remaining = length
        while remaining is None or remaining > 0:
            n = CHUNK if remaining is None else min(CHUNK, remaining)
            data = await asyncio.to_thread(fh.read, n)
            if not data:
                break
            if remaining is not None:
                remaining -= len(data)
            yield data
    finally:
        fh.close()
