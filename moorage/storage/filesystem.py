"""Filesystem driver: blobs under ``<root>/blobs/<algo>/<2 hex>/<hex>``, uploads under ``<root>/uploads/<id>``.

Crash safety: an upload's bytes live in part files ``uploads/<id>/p<nnnnn>-<token>`` (one per
request that wrote to the session, named at random and created ``O_EXCL``, so no other request
can write into them) until the registry has verified the digest; :meth:`upload_commit` fsyncs
the bytes, hard-links them to their content address only if that name is free (atomic on one
filesystem; an existing blob is never replaced) and fsyncs the directory.  A kill -9 at any
point leaves either no blob or the whole verified blob — never a partial one under a digest name.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import ctypes
import errno
import logging
import os
import secrets
import shutil
import stat
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, BinaryIO

from .base import BlobStat, BlobStore, PartialAppend, UploadState, os_outage, translate_outages

CHUNK = 1 << 20
log = logging.getLogger("moorage.storage")


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


def _safe_part(name: object) -> str:
    text = str(name)
    if not text or not all(c.isalnum() or c == "-" for c in text):
        raise ValueError(f"refusing unsafe part name {text!r}")
    return text


def _parts(state: UploadState, size: int) -> list[dict[str, Any]]:
    """The session's part files; sessions started before parts existed have one ``data`` file."""
    parts = (state or {}).get("parts")
    if parts is None:
        return [{"name": "data", "size": size}] if size else []
    return [dict(p) for p in parts]


def _concatenate(dst: Path, sources: list[tuple[Path, int]]) -> None:
    """Write the first ``n`` bytes of each source to the new file ``dst`` (kernel-side copy)."""
    out = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        pos = 0
        for path, n in sources:
            src = os.open(path, os.O_RDONLY)
            try:
                done = 0
                while done < n:
                    try:
                        got = os.copy_file_range(src, out, n - done, done, pos)
                    except OSError as exc:
                        if exc.errno not in (errno.EXDEV, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL):
                            raise
                        got = _copy_plain(src, out, n - done, done, pos)
                    if got == 0:
                        raise RuntimeError(f"upload part {path.name} is shorter than its recorded size")
                    done += got
                    pos += got
            finally:
                os.close(src)
    finally:
        os.close(out)


def _copy_plain(src: int, out: int, n: int, src_pos: int, dst_pos: int) -> int:
    data = os.pread(src, min(n, CHUNK), src_pos)
    if data:
        os.pwrite(out, data, dst_pos)
    return len(data)


def _link_if_absent(src: Path, dst: Path) -> bool:
    """Give ``src`` the name ``dst`` unless ``dst`` exists; True if this call placed it."""
    try:
        os.link(src, dst)
        return True
    except FileExistsError:
        return False
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK):
            raise
    # A filesystem without hard links: rename, checked first (a concurrent commit of the same
    # digest carries the same verified bytes, so losing that tiny race replaces like with like).
    if dst.exists():
        return False
    os.rename(src, dst)
    return True


def _set_aside(root: Path, path: Path, digest: str) -> None:
    import time

    algo, hexpart = digest.split(":", 1)
    aside = root / "quarantine" / algo / f"{hexpart}-{int(time.time())}-wrong-size"
    aside.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        os.rename(path, aside)


def _remove_upload_dir(updir: Path, parts: list[dict[str, Any]], *extra: str) -> None:
    """Remove a committed session's directory: its known files, then the directory (cheaper
    than ``rmtree``'s walk); anything else in it (a loser's part) falls back to ``rmtree``."""
    try:
        for name in {*(_safe_part(p["name"]) for p in parts), *extra}:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(updir / name)
        os.rmdir(updir)
    except FileNotFoundError:
        pass
    except OSError:
        shutil.rmtree(updir, ignore_errors=True)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@translate_outages(os_outage)
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
            st = await asyncio.to_thread(os.lstat, self._blob_path(digest))
        except FileNotFoundError:
            return None
        if not stat.S_ISREG(st.st_mode):
            # Only ever a regular file placed by an upload or import: a symbolic link here
            # (planted by hand, or by an older import) is never served.
            log.error("blob %s is not a regular file in %s; not serving it", digest, self.root)
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

    async def quarantine(self, digest: str) -> bool:
        """Move the blob to ``quarantine/<algo>/<hex>-<time>`` (kept for inspection)."""
        import time

        algo, hexpart = _blob_rel(digest).parts[1], _blob_rel(digest).name
        dst = self.root / "quarantine" / algo / f"{hexpart}-{int(time.time())}"

        def move() -> bool:
            dst.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.rename(self._blob_path(digest), dst)
            except FileNotFoundError:
                return False
            _fsync_dir(self._blob_path(digest).parent)
            return True

        return await asyncio.to_thread(move)

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
    def _upload_dir(self, upload_id: str) -> Path:
        return self.root / "uploads" / _safe_upload_id(upload_id)

    async def upload_create(self, upload_id: str) -> UploadState:
        # The session's directory is made by its first write (as the S3 driver puts nothing
        # in the bucket before the first byte): a POST costs no thread hop.
        self._upload_dir(upload_id)
        return {"v": 2, "parts": []}

    async def upload_append(
        self, upload_id: str, state: UploadState, offset: int, chunks: AsyncIterator[bytes]
    ) -> tuple[UploadState, int]:
        """Write ``chunks`` to a new part file of this request's own (``O_EXCL``, random name).

        No other request ever opens it, and once it is listed in the session's state (after the
        service's compare-and-set) nothing writes to it any more: the bytes that were hashed
        are the bytes that stay.
        """
        parts = _parts(state, offset)
        if sum(int(p["size"]) for p in parts) != offset:
            raise RuntimeError(f"upload {upload_id}: driver state does not hold {offset} bytes")
        name = f"p{len(parts) + 1:05d}-{secrets.token_hex(8)}"
        path = self._upload_dir(upload_id) / name
        # Writes go to a bounded pool while the event loop receives (and the service hashes)
        # the next chunk.  One write per upload is in flight at a time, so they land in order;
        # the part file is created by the first write (one thread hop for a small body, not
        # two; an empty body creates none) and closed only once the last write has finished,
        # even on cancellation.
        writer = _Writeback(path)
        inflight: concurrent.futures.Future[None] | None = None
        try:
            async for chunk in chunks:
                if inflight is not None:
                    await asyncio.wrap_future(inflight)
                inflight = _WRITE_POOL.submit(writer.write, chunk)
            if inflight is not None:
                await asyncio.wrap_future(inflight)
        except BaseException as exc:
            # Report only what is on disk, and only once no write is in flight any more.
            if inflight is not None:
                # Only waited for (so writer.pos is final); its failure, if any, is ``exc`` or
                # follows from it, and ``exc`` is what gets reported.
                with contextlib.suppress(BaseException):
                    await asyncio.wrap_future(inflight)
            kept = parts + ([{"name": name, "size": writer.pos}] if writer.pos else [])
            raise PartialAppend({"v": 2, "parts": kept}, offset + writer.pos, exc) from exc
        finally:
            if inflight is None or inflight.done():
                writer.close()
            else:
                inflight.add_done_callback(lambda _f: writer.close())
        if not writer.pos:
            if writer.fd is not None or writer.opened:
                with contextlib.suppress(OSError):  # an empty part file: harmless, removed with the upload
                    os.unlink(path)
            return {"v": 2, "parts": parts}, offset
        return {"v": 2, "parts": parts + [{"name": name, "size": writer.pos}]}, offset + writer.pos

    async def upload_drop_append(self, upload_id: str, before: UploadState, after: UploadState) -> None:
        keep = {str(p["name"]) for p in (before or {}).get("parts") or ()}
        for part in (after or {}).get("parts") or ():
            if str(part["name"]) not in keep:
                # Unlisted part files are never read and go with the upload directory.
                with contextlib.suppress(OSError, ValueError):
                    await asyncio.to_thread(os.unlink, self._upload_dir(upload_id) / _safe_part(part["name"]))

    async def upload_read(self, upload_id: str, state: UploadState, size: int) -> AsyncIterator[bytes]:
        remaining = size
        for part in _parts(state, size):
            if remaining <= 0:
                break
            n = min(int(part["size"]), remaining)
            async for chunk in _read_file(self._upload_dir(upload_id) / _safe_part(part["name"]), 0, n):
                yield chunk
            remaining -= n

    async def upload_commit(self, upload_id: str, state: UploadState, size: int, digest: str) -> bool:
        """Hard-link the verified bytes to their content address, only if nothing is there yet.

        One part of exactly ``size`` bytes is linked as it is (no copy); several parts are first
        concatenated in the kernel (``copy_file_range``) into a new file of this call's own.
        ``link(2)`` fails if the address exists, so an existing blob is never replaced (a
        re-push of stored content then only drops its upload).  A file of another size under
        the address is not this blob (no commit of ours made it) and is set aside under
        ``quarantine/`` first.  Returns True if this call placed the blob.
        """
        updir = self._upload_dir(upload_id)
        parts = _parts(state, size)
        if sum(int(p["size"]) for p in parts) != size:
            raise RuntimeError(f"upload {upload_id}: driver state does not hold {size} bytes")
        dst = self._blob_path(digest)

        def commit() -> bool:
            dst.parent.mkdir(parents=True, exist_ok=True)
            try:
                have = os.stat(dst).st_size
            except FileNotFoundError:
                have = None
            if have == size:
                _remove_upload_dir(updir, parts)
                return False
            if have is not None:
                # Bytes of the wrong size under the address (a leftover no commit of ours made:
                # restored backup, other tools): certainly not this blob; set them aside.
                _set_aside(self.root, dst, digest)
            if len(parts) == 1 and os.stat(updir / _safe_part(parts[0]["name"])).st_size == size:
                src = updir / _safe_part(parts[0]["name"])
            else:
                src = updir / f"assembled-{secrets.token_hex(8)}"
                if not parts:  # an empty blob: no write ever made the directory
                    updir.mkdir(mode=0o700, exist_ok=True)
                _concatenate(src, [(updir / _safe_part(p["name"]), int(p["size"])) for p in parts])
            fd = os.open(src, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            placed = _link_if_absent(src, dst)
            if placed:
                _fsync_dir(dst.parent)
            _remove_upload_dir(updir, parts, src.name)
            return placed

        return await asyncio.to_thread(commit)

    async def upload_abort(self, upload_id: str, state: UploadState) -> None:
        await asyncio.to_thread(shutil.rmtree, self.root / "uploads" / _safe_upload_id(upload_id), True)

    async def upload_age(self, upload_id: str) -> float | None:
        import time

        def newest() -> float | None:
            try:
                updir = self._upload_dir(upload_id)
                found = os.stat(updir).st_mtime
                for entry in os.scandir(updir):
                    with contextlib.suppress(FileNotFoundError):
                        found = max(found, entry.stat().st_mtime)
                return found
            except (FileNotFoundError, NotADirectoryError, ValueError):
                return None

        found = await asyncio.to_thread(newest)
        return None if found is None else max(0.0, time.time() - found)

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
    """Sequential writes to a new file (created ``O_EXCL`` by the first write) that start
    asynchronous writeback behind themselves."""

    __slots__ = ("path", "fd", "opened", "pos", "flushed")

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd: int | None = None
        self.opened = False
        self.pos = self.flushed = 0

    def write(self, data: bytes) -> None:
        if self.fd is None:
            if self.opened:
                raise RuntimeError("write after close")
            try:
                self.fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileNotFoundError:  # the session's first bytes: its directory comes now
                with contextlib.suppress(FileExistsError):
                    os.mkdir(self.path.parent, 0o700)
                self.fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            self.opened = True
        _write_all(self.fd, data)
        self.pos += len(data)
        if _sync_file_range is not None and self.pos - self.flushed >= WRITEBACK_EVERY:
            # Non-blocking hint (SYNC_FILE_RANGE_WRITE only); durability still comes from the
            # fsync in upload_commit.  Errors are irrelevant here and ignored.
            _sync_file_range(self.fd, self.flushed, self.pos - self.flushed, _SYNC_FILE_RANGE_WRITE)
            self.flushed = self.pos

    def close(self) -> None:
        if self.fd is not None:
            fd, self.fd = self.fd, None
            os.close(fd)


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


def open_regular(path: Path) -> BinaryIO:
    """``path`` opened for reading, refusing a symbolic link (``ELOOP``) or anything that is
    not a regular file as absent: stored blobs are never links."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENXIO):
            raise FileNotFoundError(errno.ENOENT, "not a regular file", str(path)) from None
        raise
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise FileNotFoundError(errno.ENOENT, "not a regular file", str(path))
    return open(fd, "rb")


async def _read_file(path: Path, offset: int, length: int | None) -> AsyncIterator[bytes]:
    fh = await asyncio.to_thread(open_regular, path)
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
