"""Walk an image's layers as streams and collect the package databases they leave behind.

Layers are read once, in order, as tar streams (gzip, zstd or uncompressed, detected by magic
bytes); only the few files that hold package metadata are kept, each up to a size limit.  OCI
whiteouts are applied (``.wh.NAME`` removes NAME from lower layers, ``.wh..wh..opq`` empties a
directory), so a package removed by a later layer is gone from the inventory.  A layer's changes
are staged and applied only when the whole layer was read: a hostile layer (bounded decompressed
size, member count and time; paths escaping the root) is skipped with a recorded reason and
changes nothing.  The walk is blocking code: run it on a worker thread (:func:`inventory_image`).
"""

from __future__ import annotations

import asyncio
import gzip
import io
import posixpath
import tarfile
import time
from dataclasses import dataclass, field
from typing import AsyncIterator, Callable

import zstandard

from .packages import (
    OSRelease,
    Package,
    parse_apk_installed,
    parse_dpkg_status,
    parse_npm_package,
    parse_os_release,
    parse_python_metadata,
    parse_rpmdb_sqlite,
)

Parser = Callable[[bytes, str], list[Package]]
OS_RELEASE_PATHS = ("etc/os-release", "usr/lib/os-release")


@dataclass(frozen=True)
class Limits:
    #: Largest package-metadata file read (a dpkg status of 3,000 packages is ~4 MB).
    max_file_bytes: int = 64 << 20
    #: Decompressed bytes per layer (a gzip bomb stops here).
    max_layer_bytes: int = 32 << 30
    max_members: int = 2_000_000
    #: Wall-clock budget for the whole image.
    max_seconds: float = 900.0


@dataclass
class Inventory:
    packages: list[Package] = field(default_factory=list)
    os: OSRelease | None = None
    #: ``{"layer": digest, "path": ..., "reason": ...}`` for everything passed over.
    skipped: list[dict[str, str]] = field(default_factory=list)
    layers_read: int = 0
    bytes_read: int = 0


class LayerRejected(Exception):
    """The layer is hostile or over a limit; nothing of it is used."""


def classify(path: str) -> Parser | None:
    """The parser for a path that holds package metadata, or None."""
    if path == "var/lib/dpkg/status" or (
        path.startswith("var/lib/dpkg/status.d/") and "/" not in path[22:] and not path.endswith(".md5sums")
    ):
        return parse_dpkg_status
    if path == "lib/apk/db/installed":
        return parse_apk_installed
    if path in ("var/lib/rpm/rpmdb.sqlite", "usr/lib/sysimage/rpm/rpmdb.sqlite"):
        return parse_rpmdb_sqlite
    parent, base = posixpath.split(path)
    if base == "METADATA" and parent.endswith(".dist-info"):
        return parse_python_metadata
    if (base == "PKG-INFO" and parent.endswith(".egg-info")) or (path.endswith(".egg-info") and "/site-packages/" in f"/{path}"):
        return parse_python_metadata
    if base == "package.json":
        parts = parent.split("/")
        # node_modules/<name>/package.json or node_modules/@scope/<name>/package.json
        if len(parts) >= 2 and parts[-2] == "node_modules" and not parts[-1].startswith("@"):
            return parse_npm_package
        if len(parts) >= 3 and parts[-3] == "node_modules" and parts[-2].startswith("@"):
            return parse_npm_package
    return None


def _interesting(path: str) -> bool:
    return path in OS_RELEASE_PATHS or classify(path) is not None


def _normalize(name: str) -> str | None:
    """The member's path relative to the root, or None when it escapes it."""
    parts = [p for p in name.replace("\\", "/").split("/") if p not in ("", ".")]
    if any(p == ".." for p in parts):
        return None
    return "/".join(parts)


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
class _Staged:
    adds: dict[str, bytes] = field(default_factory=dict)
    #: Paths removed from lower layers: (path, is_prefix).
    removes: list[tuple[str, bool]] = field(default_factory=list)


class ImageWalker:
    """Feed it the layers bottom-up (:meth:`add_layer`), then read :meth:`inventory`."""

    def __init__(self, limits: Limits = Limits()) -> None:
        self.limits = limits
        self.files: dict[str, bytes] = {}
        self.result = Inventory()
        self.started = time.monotonic()

    def add_layer(self, digest: str, stream: io.RawIOBase | io.BufferedIOBase) -> None:
        try:
            staged = self._read_layer(digest, stream)
        except (LayerRejected, tarfile.TarError, OSError, EOFError, zstandard.ZstdError) as exc:
            self.result.skipped.append({"layer": digest, "reason": f"layer skipped: {exc}"})
            return
        for path, prefix in staged.removes:
            if prefix:
                for p in [p for p in self.files if p.startswith(path + "/")]:
                    del self.files[p]
            else:
                self.files.pop(path, None)
                for p in [p for p in self.files if p.startswith(path + "/")]:
                    del self.files[p]
        self.files.update(staged.adds)
        self.result.layers_read += 1

    def _read_layer(self, digest: str, stream: io.RawIOBase | io.BufferedIOBase) -> _Staged:
        raw = stream if isinstance(stream, io.BufferedReader) else io.BufferedReader(stream, 1 << 20)  # type: ignore[arg-type]
        counting = _Counting(_decompressed(raw), self.limits.max_layer_bytes)
        staged = _Staged()
        members = 0
        with tarfile.open(fileobj=io.BufferedReader(counting, 1 << 20), mode="r|") as tar:
            for member in tar:
                members += 1
                if members > self.limits.max_members:
                    raise LayerRejected(f"more than {self.limits.max_members} entries")
                if members % 256 == 0 and time.monotonic() - self.started > self.limits.max_seconds:
                    raise LayerRejected(f"image took longer than {self.limits.max_seconds:.0f} s")
                path = _normalize(member.name)
                if path is None:
                    self.result.skipped.append({"layer": digest, "path": member.name[:300], "reason": "path escapes the root"})
                    continue
                if not path:
                    continue
                directory, base = posixpath.split(path)
                if base.startswith(".wh."):
                    if base == ".wh..wh..opq":
                        staged.removes.append((directory, True))
                    else:
                        staged.removes.append((posixpath.join(directory, base[4:]), False))
                    continue
                if member.isdir():
                    continue
                staged.adds.pop(path, None)
                if not _interesting(path):
                    if path in self.files:  # replaced by something else in this layer
                        staged.removes.append((path, False))
                    continue
                if not member.isfile():
                    staged.removes.append((path, False))
                    self.result.skipped.append({"layer": digest, "path": path, "reason": "not a regular file (link)"})
                    continue
                if member.size > self.limits.max_file_bytes:
                    staged.removes.append((path, False))
                    self.result.skipped.append(
                        {"layer": digest, "path": path, "reason": f"metadata file of {member.size} bytes is over the limit"}
                    )
                    continue
                fh = tar.extractfile(member)
                staged.adds[path] = fh.read() if fh is not None else b""
        self.result.bytes_read += counting.count
        return staged

    def inventory(self) -> Inventory:
        inv = self.result
        for path in OS_RELEASE_PATHS:
            if path in self.files:
                inv.os = parse_os_release(self.files[path])
                break
        distro = inv.os.id if inv.os else ""
        seen: set[tuple[str, str, str, str]] = set()
        for path in sorted(self.files):
            parser = classify(path)
            if parser is None:
                continue
            try:
                found = parser(self.files[path], path)
            except Exception as exc:  # a malformed database is a finding, not a crash
                inv.skipped.append({"path": path, "reason": f"unreadable: {type(exc).__name__}: {str(exc)[:200]}"})
                continue
            for pkg in found:
                key = (pkg.ecosystem, pkg.name, pkg.version, pkg.path)
                if key in seen:
                    continue
                seen.add(key)
                if distro and pkg.ecosystem in ("Debian", "Alpine", "RPM"):
                    pkg = Package(**{**pkg.__dict__, "distro": distro})
                inv.packages.append(pkg)
        return inv


class AsyncToSyncReader(io.RawIOBase):
    """A blocking file object over an async byte iterator, for code running on a worker thread
    while ``loop`` runs the iterator (any BlobStore driver's ``read()``)."""

    def __init__(self, chunks: AsyncIterator[bytes], loop: asyncio.AbstractEventLoop) -> None:
        self.chunks, self.loop = chunks, loop
        self.buffer = b""
        self.done = False

    def readable(self) -> bool:
        return True

    def readinto(self, b: bytearray | memoryview) -> int:  # type: ignore[override]
        while not self.buffer and not self.done:
            fut = asyncio.run_coroutine_threadsafe(self._next(), self.loop)
            chunk = fut.result()
            if chunk is None:
                self.done = True
            else:
                self.buffer = chunk
        n = min(len(b), len(self.buffer))
        b[:n] = self.buffer[:n]
        self.buffer = self.buffer[n:]
        return n

    async def _next(self) -> bytes | None:
        try:
            return await self.chunks.__anext__()
        except StopAsyncIteration:
            return None
