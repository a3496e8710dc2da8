"""Walk an image's layers as streams and collect the package databases they leave behind.

Layers are read once, in order, as tar streams (gzip, zstd or uncompressed, detected by magic
bytes).  Package databases are parsed *while they stream past* (dpkg status and apk installed
line by line, rpmdb.sqlite spooled to a temporary file on disk); only the parsed package records
are kept, never the files, and what is kept is charged against a byte budget per image
(:attr:`Limits.max_image_bytes`; the service also shares a budget between the scans of a process).
Files parsed whole (``package.json``, ``os-release``, Python ``METADATA`` headers) have a small
per-file cap.  Beyond a cap a file is passed over with a recorded reason, never held.

OCI whiteouts (``.wh.NAME`` removes NAME from lower layers, ``.wh..wh..opq`` empties a directory)
are applied through an index (directory -> kept paths below it), so a whiteout costs a dictionary
lookup plus the entries it really removes, not a scan of everything kept.  A layer's changes are
applied as it is read and rolled back if the layer turns out hostile (bounded decompressed size,
member count, header size, time; paths escaping the root): such a layer is skipped with a
recorded reason and changes nothing.  The time budget covers the whole image: reading, parsing
and whiteouts.  The walk is blocking code: run it on a worker thread (:class:`AsyncToSyncReader`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import gzip
import io
import posixpath
import tarfile
import tempfile
import time
import zlib
from collections.abc import AsyncIterator, Callable, Generator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import zstandard

from .packages import (
    OSRelease,
    Package,
    clean_text,
    iter_apk_installed,
    iter_dpkg_status,
    iter_lines,
    iter_rpmdb_sqlite,
    parse_npm_package,
    parse_os_release,
    parse_python_metadata,
)

if TYPE_CHECKING:
    from ..config import InsightSettings

OS_RELEASE_PATHS = ("etc/os-release", "usr/lib/os-release")
#: Kinds of file the walker parses (see :func:`classify`).
DPKG, APK, RPMDB, PYTHON, NPM_JSON, OS_RELEASE = "dpkg", "apk", "rpmdb", "python", "npm", "os-release"
#: An os-release file is a few hundred bytes.
MAX_OS_RELEASE_BYTES = 64 * 1024
#: Largest pax extended header or GNU long name/link accepted (tarfile reads them whole).
MAX_TAR_HEADER_BYTES = 1 << 20
#: Reasons listed per image; beyond it they are counted (a layer of a million symlinks named
#: ``package.json`` must not become a million-entry list in memory and in the database).
MAX_SKIPPED = 1000
#: Estimated bytes of one kept package record besides its strings (object, dict slots, str headers).
PACKAGE_OVERHEAD = 512
_CHUNK = 64 * 1024


@dataclass(frozen=True)
class Limits:
    """Bounds of one image scan.  Every byte the scan keeps is counted; see docs/integrity.md,
    "Scanner bounds"."""

    #: Largest package database read (streamed, or spooled to disk for rpmdb.sqlite; a dpkg status
    #: of 3,000 packages is ~4 MB).  A larger file is passed over with a reason.
    max_file_bytes: int = 64 << 20
    #: Largest file parsed whole in memory (``package.json``, Python ``METADATA`` headers); real ones
    #: are a few KiB.  A larger ``package.json`` is passed over with a reason.
    max_buffered_bytes: int = 1 << 20
    #: What one image's scan keeps: parsed package records and the whiteout index (an estimate;
    #: ~16 MiB is 25,000+ packages).  Beyond it files are passed over with a reason.
    max_image_bytes: int = 16 << 20
    #: What all scans of one process keep together (shared by concurrent scans; a scan waits for
    #: room within its time budget, else it is cut with a reason).
    max_process_bytes: int = 64 << 20
    #: Decompressed bytes per layer (a gzip bomb stops here).
    max_layer_bytes: int = 32 << 30
    max_members: int = 2_000_000
    #: Longest path kept (longer ones are never package databases Moorage reads).
    max_path_chars: int = 4096
    #: Wall-clock budget for the whole image: waiting for memory, reading, parsing, whiteouts.
    max_seconds: float = 900.0

    @classmethod
    def from_settings(cls, cfg: InsightSettings) -> Limits:
        return cls(
            max_file_bytes=cfg.max_file_bytes,
            max_buffered_bytes=cfg.max_buffered_bytes,
            max_image_bytes=cfg.max_image_bytes,
            max_process_bytes=cfg.max_process_bytes,
            max_layer_bytes=cfg.max_layer_bytes,
            max_seconds=cfg.max_seconds,
        )


@dataclass
class Inventory:
    packages: list[Package] = field(default_factory=list)
    os: OSRelease | None = None
    #: ``{"layer": digest, "path": ..., "reason": ...}`` for everything passed over.
    skipped: list[dict[str, str]] = field(default_factory=list)
    layers_read: int = 0
    bytes_read: int = 0
    #: Estimated bytes the walk kept at its end (charged against the image and process budgets).
    kept_bytes: int = 0
    #: Reasons past :data:`MAX_SKIPPED`, counted only.
    more_skipped: int = 0

    def skip(self, entry: dict[str, str]) -> None:
        """Record something passed over (the first :data:`MAX_SKIPPED`; the rest are counted).
        Values are cleaned: paths and media types come from the image."""
        if len(self.skipped) < MAX_SKIPPED:
            self.skipped.append({k: clean_text(v, 500) for k, v in entry.items()})
        else:
            self.more_skipped += 1

    def close(self) -> None:
        """Add the count of unlisted reasons (once, when the inventory is complete)."""
        if self.more_skipped:
            self.skipped.append({"reason": f"{self.more_skipped} more entries passed over (not listed)"})
            self.more_skipped = 0


class LayerRejected(Exception):
    """The layer is hostile or over a limit; nothing of it is used."""


def classify(path: str) -> str | None:
    """The kind of package metadata a path holds, or None."""
    if path in OS_RELEASE_PATHS:
        return OS_RELEASE
    if path == "var/lib/dpkg/status" or (
        path.startswith("var/lib/dpkg/status.d/") and "/" not in path[22:] and not path.endswith(".md5sums")
    ):
        return DPKG
    if path == "lib/apk/db/installed":
        return APK
    if path in ("var/lib/rpm/rpmdb.sqlite", "usr/lib/sysimage/rpm/rpmdb.sqlite"):
        return RPMDB
    parent, base = posixpath.split(path)
    if base == "METADATA" and parent.endswith(".dist-info"):
        return PYTHON
    if (base == "PKG-INFO" and parent.endswith(".egg-info")) or (path.endswith(".egg-info") and "/site-packages/" in f"/{path}"):
        return PYTHON
    if base == "package.json":
        parts = parent.split("/")
        # node_modules/<name>/package.json or node_modules/@scope/<name>/package.json
        if len(parts) >= 2 and parts[-2] == "node_modules" and not parts[-1].startswith("@"):
            return NPM_JSON
        if len(parts) >= 3 and parts[-3] == "node_modules" and parts[-2].startswith("@"):
            return NPM_JSON
    return None


def _normalize(name: str) -> str | None:
    """The member's path relative to the root, or None when it escapes it."""
    parts = [p for p in name.replace("\\", "/").split("/") if p not in ("", ".")]
    if any(p == ".." for p in parts):
        return None
    return "/".join(parts)


def _ancestors(path: str) -> Iterator[str]:
    """``""``, ``a``, ``a/b`` for ``a/b/c``: the directories whose whiteouts reach ``path``."""
    yield ""
    i = path.find("/")
    while i >= 0:
        yield path[:i]
        i = path.find("/", i + 1)


def package_cost(pkg: Package) -> int:
    """Estimated bytes a kept package record holds."""
    return PACKAGE_OVERHEAD + sum(len(v) for v in pkg.__dict__.values())


class _BoundedTarInfo(tarfile.TarInfo):
    """tarfile reads a pax extended header or a GNU long name whole: a member claiming a 2 GiB
    header would be read into memory.  Refuse headers over :data:`MAX_TAR_HEADER_BYTES`."""

    def _proc_pax(self, tar: tarfile.TarFile) -> tarfile.TarInfo:
        if self.size > MAX_TAR_HEADER_BYTES:
            raise tarfile.HeaderError(f"pax header of {self.size} bytes is over {MAX_TAR_HEADER_BYTES}")
        return super()._proc_pax(tar)  # type: ignore[misc,no-any-return]

    def _proc_gnulong(self, tar: tarfile.TarFile) -> tarfile.TarInfo:
        if self.size > MAX_TAR_HEADER_BYTES:
            raise tarfile.HeaderError(f"GNU long name of {self.size} bytes is over {MAX_TAR_HEADER_BYTES}")
        return super()._proc_gnulong(tar)  # type: ignore[misc,no-any-return]


class _Counting(io.RawIOBase):
    """Counts decompressed bytes and stops a layer at ``limit``."""

    def __init__(self, inner: io.BufferedIOBase | io.RawIOBase, limit: int) -> None:
        self.inner, self.limit, self.count = inner, limit, 0

    def readable(self) -> bool:
        return True

    def readinto(self, b: bytearray | memoryview) -> int:  # type: ignore[override]
        data = self.inner.read(len(b))
        if not data:
            return 0
        self.count += len(data)
        if self.count > self.limit:
            raise LayerRejected(f"layer decompresses to more than {self.limit} bytes")
        b[: len(data)] = data
        return len(data)


def _decompressed(raw: io.BufferedReader) -> io.BufferedIOBase | io.RawIOBase:
    head = raw.peek(4)[:4]
    if head[:2] == b"\x1f\x8b":
        return gzip.GzipFile(fileobj=raw, mode="rb")
    if head == b"\x28\xb5\x2f\xfd":
        return zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True)  # type: ignore[return-value]
    return raw


@dataclass
class _Entry:
    """What is kept of one file: its packages (or its os-release) and what that costs."""

    packages: tuple[Package, ...] = ()
    os: OSRelease | None = None
    cost: int = 0


class _Cut(Exception):
    """A file could not be kept whole (budget); the reason is recorded by the caller."""


class ImageWalker:
    """Feed it the layers bottom-up (:meth:`add_layer`), then read :meth:`inventory`.

    ``keep_bytes`` is what this walk may keep (the service passes what it reserved from the
    process budget); ``deadline`` is the image's, on ``clock`` (the service starts it before it
    waits for memory, so waiting counts too)."""

    def __init__(
        self,
        limits: Limits = Limits(),
        *,
        keep_bytes: int | None = None,
        deadline: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limits = limits
        self.clock = clock
        self.keep_cap = limits.max_image_bytes if keep_bytes is None else keep_bytes
        self.deadline = clock() + limits.max_seconds if deadline is None else deadline
        self.kept = 0
        self.files: dict[str, _Entry] = {}
        #: Directory ("" for the root) -> kept paths below it: the whiteout index.
        self._under: dict[str, set[str]] = {}
        self.result = Inventory()
        #: Operations done (members read, chunks parsed, index entries touched): the tests' measure
        #: that work grows with the input, not with input x kept files.
        self.work = 0
        self._cut_reported = False

    # ------------------------------------------------------------------------ the budget
    def expired(self) -> bool:
        return self.clock() > self.deadline

    def _time_reason(self) -> str:
        return f"time budget of {self.limits.max_seconds:g} s for the image exceeded"

    def _check_time(self) -> None:
        if self.expired():
            raise LayerRejected(self._time_reason())

    # ------------------------------------------------------------------------- the index
    def _insert(self, path: str, entry: _Entry) -> None:
        self.files[path] = entry
        for d in _ancestors(path):
            self._under.setdefault(d, set()).add(path)
            self.work += 1
        self.kept += entry.cost

    def _remove(self, path: str, undo: list[tuple[str, _Entry]]) -> None:
        self.work += 1
        entry = self.files.pop(path, None)
        if entry is None:
            return
        for d in _ancestors(path):
            below = self._under.get(d)
            if below is not None:
                below.discard(path)
                if not below:
                    del self._under[d]
            self.work += 1
        self.kept -= entry.cost
        undo.append((path, entry))

    def _remove_below(self, directory: str, undo: list[tuple[str, _Entry]]) -> None:
        self.work += 1
        below = self._under.get(directory)
        if not below:
            return
        for i, path in enumerate(list(below)):
            if i % 1024 == 1023:
                self._check_time()
            self._remove(path, undo)

    # ---------------------------------------------------------------------------- layers
    def add_layer(self, digest: str, stream: io.RawIOBase | io.BufferedIOBase) -> None:
        if self.expired():
            self.result.skip({"layer": digest, "reason": f"layer not read: {self._time_reason()}"})
            return
        undo: list[tuple[str, _Entry]] = []
        staged: dict[str, _Entry] = {}
        try:
            self._read_layer(digest, stream, staged, undo)
        except (
            LayerRejected,
            tarfile.TarError,
            OSError,
            EOFError,
            zstandard.ZstdError,
            zlib.error,
            ValueError,
        ) as exc:
            for entry in staged.values():
                self.kept -= entry.cost
            for path, entry in reversed(undo):  # the layer changes nothing
                if path not in self.files:
                    self._insert(path, entry)
            self.result.skip({"layer": digest, "reason": f"layer skipped: {str(exc)[:300]}"})
            return
        for path, entry in staged.items():
            self.kept -= entry.cost  # charged while staged; _insert charges it again
            self._remove(path, undo)
            self._insert(path, entry)
        self.result.layers_read += 1

    def _read_layer(
        self, digest: str, stream: io.RawIOBase | io.BufferedIOBase, staged: dict[str, _Entry], undo: list[tuple[str, _Entry]]
    ) -> None:
        raw = stream if isinstance(stream, io.BufferedReader) else io.BufferedReader(stream, 1 << 20)
        counting = _Counting(_decompressed(raw), self.limits.max_layer_bytes)
        members = 0
        try:
            with tarfile.open(fileobj=io.BufferedReader(counting, 1 << 20), mode="r|", tarinfo=_BoundedTarInfo) as tar:
                for member in tar:
                    members += 1
                    self.work += 1
                    if members > self.limits.max_members:
                        raise LayerRejected(f"more than {self.limits.max_members} entries")
                    self._check_time()
                    self._member(digest, tar, member, staged, undo)
        finally:
            self.result.bytes_read += counting.count

    def _member(
        self,
        digest: str,
        tar: tarfile.TarFile,
        member: tarfile.TarInfo,
        staged: dict[str, _Entry],
        undo: list[tuple[str, _Entry]],
    ) -> None:
        path = _normalize(member.name)
        if path is None:
            self.result.skip({"layer": digest, "path": member.name[:300], "reason": "path escapes the root"})
            return
        if not path or len(path) > self.limits.max_path_chars:
            return  # nothing kept is that long, so nothing such a path names (or whites out) is kept
        directory, base = posixpath.split(path)
        if base.startswith(".wh."):
            # Whiteouts reach only lower layers: what this layer stages is not in self.files yet.
            if base == ".wh..wh..opq":
                self._remove_below(directory, undo)
            else:
                target = posixpath.join(directory, base[4:])
                self._remove(target, undo)
                self._remove_below(target, undo)
            return
        if member.isdir():
            return
        old = staged.pop(path, None)
        if old is not None:
            self.kept -= old.cost
        # Anything else at ``path`` replaces what lower layers had there (a file, or a directory).
        self._remove(path, undo)
        self._remove_below(path, undo)
        kind = classify(path)
        if kind is None:
            return
        if not member.isfile():
            self._skip(digest, path, "not a regular file (link)")
            return
        if member.size > self.limits.max_file_bytes:
            self._skip(digest, path, f"metadata file of {member.size} bytes is over the limit")
            return
        fh = tar.extractfile(member)
        if fh is None:
            return
        entry = self._parse(digest, kind, path, fh, member.size)
        if entry is not None:
            staged[path] = entry

    def _skip(self, digest: str, path: str, reason: str) -> None:
        self.result.skip({"layer": digest, "path": path[:300], "reason": reason})

    def _budget_reason(self) -> str:
        return f"scanner memory budget of {self.keep_cap} bytes for the image is used up; packages not recorded"

    def _parse(self, digest: str, kind: str, path: str, fh: Any, size: int) -> _Entry | None:
        """Parse one metadata file as it streams past; what is kept is charged as it is found."""
        base_cost = 256 + len(path) * (2 + path.count("/"))
        if self.kept + base_cost > self.keep_cap:
            self._skip(digest, path, self._budget_reason())
            return None
        if kind == OS_RELEASE:
            if size > MAX_OS_RELEASE_BYTES:
                self._skip(digest, path, f"os-release of {size} bytes is over the {MAX_OS_RELEASE_BYTES}-byte limit")
                return None
            entry = _Entry(os=parse_os_release(fh.read(MAX_OS_RELEASE_BYTES)), cost=base_cost + 1024)
            self.kept += entry.cost
            return entry
        if kind == NPM_JSON and size > self.limits.max_buffered_bytes:
            self._skip(
                digest,
                path,
                f"JSON metadata file of {size} bytes is over the {self.limits.max_buffered_bytes}-byte limit "
                "for files parsed whole",
            )
            return None
        entry = _Entry(cost=base_cost)
        self.kept += base_cost
        found: list[Package] = []
        packages = self._packages(kind, path, fh)
        try:
            for pkg in packages:
                cost = package_cost(pkg)
                if self.kept + cost > self.keep_cap:
                    raise _Cut()
                self.kept += cost
                entry.cost += cost
                found.append(pkg)
        except _Cut:
            self._skip(digest, path, f"cut after {len(found)} packages: {self._budget_reason()}")
        except (TimeoutError, concurrent.futures.TimeoutError):
            self.kept -= entry.cost
            raise LayerRejected(self._time_reason()) from None
        except (ValueError, UnicodeError, RecursionError, LookupError, TypeError) as exc:
            # a malformed database is a finding, not a crash; what was parsed before is kept
            self._skip(digest, path, f"unreadable: {type(exc).__name__}: {str(exc)[:200]}")
        except BaseException:  # the layer ends here (truncated, over a limit): nothing of this file stays charged
            self.kept -= entry.cost
            raise
        finally:
            packages.close()  # an rpm database's connection and temporary file go now, not at GC
        entry.packages = tuple(found)
        return entry

    def _chunks(self, fh: Any, limit: int | None = None) -> Iterator[bytes]:
        """The member's bytes in chunks (up to ``limit``), the time budget checked on each."""
        left = limit
        while left is None or left > 0:
            self._check_time()
            chunk = fh.read(_CHUNK if left is None else min(_CHUNK, left))
            if not chunk:
                return
            self.work += 1
            if left is not None:
                left -= len(chunk)
            yield chunk

    def _packages(self, kind: str, path: str, fh: Any) -> Generator[Package, None, None]:
        if kind == DPKG:
            yield from iter_dpkg_status(iter_lines(self._chunks(fh)), path)
        elif kind == APK:
            yield from iter_apk_installed(iter_lines(self._chunks(fh)), path)
        elif kind == PYTHON:
            # The headers are at the top; a long description below them is not read.
            yield from parse_python_metadata(b"".join(self._chunks(fh, self.limits.max_buffered_bytes)), path)
        elif kind == NPM_JSON:
            yield from parse_npm_package(b"".join(self._chunks(fh, self.limits.max_buffered_bytes)), path)
        elif kind == RPMDB:
            with tempfile.TemporaryDirectory(prefix="moorage-rpmdb-") as tmp:  # SQLite reads a file, on disk
                db = Path(tmp) / "rpmdb.sqlite"
                with db.open("wb") as out:
                    for chunk in self._chunks(fh):
                        out.write(chunk)
                yield from iter_rpmdb_sqlite(db, path, self.expired)

    # ------------------------------------------------------------------------- the result
    def inventory(self) -> Inventory:
        inv = self.result
        for path in OS_RELEASE_PATHS:
            entry = self.files.get(path)
            if entry is not None and entry.os is not None:
                inv.os = entry.os
                break
        distro = inv.os.id if inv.os else ""
        seen: set[tuple[str, str, str, str]] = set()
        for path in sorted(self.files):
            for pkg in self.files[path].packages:
                key = (pkg.ecosystem, pkg.name, pkg.version, pkg.path)
                if key in seen:
                    continue
                seen.add(key)
                if distro and pkg.ecosystem in ("Debian", "Alpine", "RPM"):
                    pkg = Package(**{**pkg.__dict__, "distro": distro})
                inv.packages.append(pkg)
        inv.kept_bytes = self.kept
        inv.close()
        return inv


class AsyncToSyncReader(io.RawIOBase):
    """A blocking file object over an async byte iterator, for code running on a worker thread
    while ``loop`` runs the iterator (any BlobStore driver's ``read()``).  A read waits at most
    until ``deadline`` (``time.monotonic``): a stalled blob store cannot hold the scan thread."""

    def __init__(self, chunks: AsyncIterator[bytes], loop: asyncio.AbstractEventLoop, deadline: float | None = None) -> None:
        self.chunks, self.loop, self.deadline = chunks, loop, deadline
        self.buffer = b""
        self.offset = 0
        self.done = False

    def readable(self) -> bool:
        return True

    def readinto(self, b: bytearray | memoryview) -> int:  # type: ignore[override]
        while self.offset >= len(self.buffer) and not self.done:
            fut = asyncio.run_coroutine_threadsafe(self._next(), self.loop)
            timeout = None if self.deadline is None else max(0.0, self.deadline - time.monotonic())
            try:
                chunk = fut.result(timeout)
            except concurrent.futures.TimeoutError:
                fut.cancel()
                raise LayerRejected("time budget for the image exceeded while reading the layer") from None
            if chunk is None:
                self.done = True
            else:
                self.buffer, self.offset = chunk, 0
        n = min(len(b), len(self.buffer) - self.offset)
        b[:n] = self.buffer[self.offset : self.offset + n]
        self.offset += n
        return n

    async def _next(self) -> bytes | None:
        try:
            return await self.chunks.__anext__()
        except StopAsyncIteration:
            return None
