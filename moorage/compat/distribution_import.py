"""``moorage import-distribution``: bring a ``registry:2`` storage tree into Moorage.

Distribution keeps everything in its storage driver under ``docker/registry/v2``::

    blobs/sha256/<2 hex>/<hex>/data                              every blob, manifests included
    repositories/<name>/_layers/sha256/<hex>/link                 blob readable in <name>
    repositories/<name>/_manifests/revisions/sha256/<hex>/link    manifest present in <name>
    repositories/<name>/_manifests/tags/<tag>/current/link        what <tag> points at now
    repositories/<name>/_uploads/...                              unfinished uploads (ignored)

What is imported, and why only that:

* a repository's blobs = its ``_layers`` links (what Distribution lets it read);
* its manifests = its ``_manifests/revisions`` links (a deleted manifest loses its revision
  link, while its bytes stay in ``blobs/`` until Distribution's GC: those are not imported);
* its tags = tags with a ``current/link`` to an imported manifest (a deleted tag has none).

Every byte is verified against its digest while it is copied (or, with ``link=True``, read
once before the hard link / server-side copy is made), through the same :class:`RegistryService`
and :class:`MetadataStore` paths a push takes, so the index ends up exactly as if the content
had been pushed.  Each step first asks whether its result already exists, so a second run
changes nothing and a run killed half-way resumes where it stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import logging
import os
import re
import stat
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict

from .. import errors
from ..registry.names import validate_name
from ..registry.principal import Principal
from ..registry.service import RegistryService

if TYPE_CHECKING:
    from ..storage.base import BlobStore
    from ..storage.s3 import S3BlobStore

log = logging.getLogger("moorage.import")

V2 = "docker/registry/v2"
CHUNK = 1 << 20
_HEX = re.compile(r"^[0-9a-f]{64}$")
_MANIFEST_LIMIT = 4 << 20
#: Who an import's changes are recorded for (audit entries, webhook events): the operator.
IMPORT = Principal.operator("import")


class DistributionImportError(Exception):
    """The source is not a Distribution storage tree (one clear line for the CLI)."""


# ============================================================================ sources
class Source:
    """Read access to a Distribution tree; paths are relative to ``docker/registry/v2``."""

    description = "source"

    async def open(self) -> None:
        """Connect / check the tree exists."""

    async def close(self) -> None:
        """Release resources."""

    async def list_dir(self, rel: str) -> list[str]:
        """Names of the entries directly under ``rel`` (empty if absent)."""
        raise NotImplementedError

    async def read_small(self, rel: str, limit: int) -> bytes | None:
        """A file's bytes (None if absent; error beyond ``limit``)."""
        raise NotImplementedError

    async def blob_size(self, digest: str) -> int | None:
        raise NotImplementedError

    def read_blob(self, digest: str) -> AsyncIterator[bytes]:
        raise NotImplementedError

    async def repositories(self) -> list[str]:
        """Every repository name (a directory holding ``_manifests``), sorted."""
        found: list[str] = []

        async def walk(prefix: str) -> None:
            for name in sorted(await self.list_dir(f"repositories/{prefix}".rstrip("/"))):
                if name.startswith("_"):
                    continue
                path = f"{prefix}{name}"
                children = await self.list_dir(f"repositories/{path}")
                if "_manifests" in children or "_layers" in children:
                    found.append(path)
                await walk(path + "/")

        await walk("")
        return sorted(found)

    async def links(self, rel: str) -> list[str]:
        """Digests linked under ``rel/sha256/<hex>/link`` whose link names that digest."""
        out: list[str] = []
        for hexd in await self.list_dir(f"{rel}/sha256"):
            if not _HEX.match(hexd):
                continue
            digest = await self.read_link(f"{rel}/sha256/{hexd}/link")
            if digest == f"sha256:{hexd}":
                out.append(digest)
        return sorted(out)

    async def read_link(self, rel: str) -> str | None:
        raw = await self.read_small(rel, 1024)
        if raw is None:
            return None
        text = raw.decode("ascii", "replace").strip()
        algo, _, hexd = text.partition(":")
        return text if algo == "sha256" and _HEX.match(hexd) else None

    async def read_blob_bytes(self, digest: str, limit: int) -> bytes | None:
        return await self.read_small(_blob_data(digest), limit)

    def refusals(self) -> list[str]:
        """Paths refused so far as not regular files inside the tree (none for a bucket)."""
        return []


def _blob_data(digest: str) -> str:
    hexd = digest.split(":", 1)[1]
    return f"blobs/sha256/{hexd[:2]}/{hexd}/data"


class UnsafeSourceFile(Exception):
    """A path in the source tree is not a regular file (or directory) inside the tree: a
    symbolic link, a device, a FIFO... It is refused and reported, never followed."""


#: Flags of every open in a source tree: never follow a symbolic link, never block on a FIFO.
_NOFOLLOW = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK


class FilesystemSource(Source):
    """A ``storage.filesystem.rootdirectory`` (the folder holding ``docker/registry/v2``).

    Everything below the root is read without following symbolic links: each path is opened
    one component at a time relative to its parent's descriptor (``openat`` with
    ``O_NOFOLLOW``), directories must be directories and files regular files.  A tree is
    untrusted input (a tarball restored from elsewhere, a volume another container writes):
    a ``data`` that is a link to ``../../../../auth/token-signing-key.pem`` would otherwise be
    hashed through the link and then stored as the link itself, serving the registry's own
    secrets.  The root itself may be a link (``/var/lib/registry`` -> a mount); it is resolved
    once, when the source is opened.
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.base = self.root / V2
        self.description = str(self.root)
        #: Paths refused as not regular files inside the tree (reported by the importer).
        self.refused: list[str] = []

    async def open(self) -> None:
        self.base = Path(os.path.realpath(self.root)) / V2
        if not self.base.is_dir():
            raise DistributionImportError(f"{self.root}: no {V2} here (give the registry:2 rootdirectory)")

    def path(self, rel: str) -> Path:
        return self.base / rel

    def _open(self, rel: str, *, directory: bool = False) -> int | None:
        """A descriptor of ``rel`` opened component by component without following links;
        None if it does not exist.  Raises :class:`UnsafeSourceFile` for a link or a file of
        the wrong type anywhere on the way."""
        parts = [p for p in rel.split("/") if p]
        if any(p in (".", "..") for p in parts):
            raise UnsafeSourceFile(f"{rel}: not a plain path inside the tree")
        fd = os.open(self.base, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            for i, part in enumerate(parts):
                last = i == len(parts) - 1
                flags = _NOFOLLOW | (os.O_DIRECTORY if not last or directory else 0)
                try:
                    nxt = os.open(part, flags, dir_fd=fd)
                except FileNotFoundError:
                    return None
                except OSError as exc:
                    # ELOOP: the component is a symbolic link (O_NOFOLLOW); ENOTDIR: a link or
                    # a file where a directory belongs; ENXIO: a socket.
                    if exc.errno in (errno.ELOOP, errno.ENOTDIR, errno.ENXIO, errno.EMLINK):
                        raise UnsafeSourceFile(
                            f"{rel}: {'/'.join(parts[: i + 1])} is a link or not a {'file' if last and not directory else 'directory'}"
                        ) from None
                    raise
                os.close(fd)
                fd = nxt
            mode = os.fstat(fd).st_mode
            if not (stat.S_ISDIR(mode) if directory else stat.S_ISREG(mode)):
                raise UnsafeSourceFile(f"{rel}: not a regular {'directory' if directory else 'file'}")
            result, fd = fd, -1
            return result
        finally:
            if fd >= 0:
                os.close(fd)

    def _refuse(self, exc: UnsafeSourceFile) -> None:
        if str(exc) not in self.refused:
            log.warning("import: refused %s", exc)
            self.refused.append(str(exc))

    def refusals(self) -> list[str]:
        return list(self.refused)

    async def list_dir(self, rel: str) -> list[str]:
        def listing() -> list[str]:
            try:
                fd = self._open(rel, directory=True)
            except UnsafeSourceFile as exc:
                self._refuse(exc)
                return []
            if fd is None:
                return []
            try:
                return os.listdir(fd)
            finally:
                os.close(fd)

        return await asyncio.to_thread(listing)

    async def read_small(self, rel: str, limit: int) -> bytes | None:
        def read() -> bytes | None:
            try:
                fd = self._open(rel)
            except UnsafeSourceFile as exc:
                self._refuse(exc)
                return None
            if fd is None:
                return None
            with open(fd, "rb") as fh:
                data = fh.read(limit + 1)
            if len(data) > limit:
                raise DistributionImportError(f"{rel}: larger than {limit} bytes")
            return data

        return await asyncio.to_thread(read)

    def open_blob(self, digest: str) -> int | None:
        """A descriptor of the blob's ``data`` (a regular file inside the tree), or None if it
        is absent or refused (the refusal is reported)."""
        try:
            return self._open(_blob_data(digest))
        except UnsafeSourceFile as exc:
            self._refuse(exc)
            return None

    async def blob_size(self, digest: str) -> int | None:
        def size() -> int | None:
            fd = self.open_blob(digest)
            if fd is None:
                return None
            try:
                return os.fstat(fd).st_size
            finally:
                os.close(fd)

        return await asyncio.to_thread(size)

    async def read_blob(self, digest: str) -> AsyncIterator[bytes]:
        fd = await asyncio.to_thread(self.open_blob, digest)
        if fd is None:
            raise DistributionImportError(f"blob {digest}: its data is missing or not a regular file inside the tree")
        fh = open(fd, "rb")  # noqa: SIM115 - closed below
        try:
            while True:
                chunk = await asyncio.to_thread(fh.read, CHUNK)
                if not chunk:
                    return
                yield chunk
        finally:
            fh.close()


class S3Source(Source):
    """A Distribution S3 bucket (``storage.s3.bucket`` + ``rootdirectory``)."""

    def __init__(
        self,
        bucket: str,
        *,
        prefix: str = "",
        region: str = "us-east-1",
        endpoint_url: str | None = None,
        access_key: str | None = None,
        secret_key: str | None = None,
        path_style: bool = True,
    ) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.region = region
        self.endpoint_url = endpoint_url
        self.access_key = access_key
        self.secret_key = secret_key
        self.path_style = path_style
        self.description = f"s3://{bucket}/{self.prefix}"
        self._client: Any = None
        self._ctx: Any = None

    def key(self, rel: str) -> str:
        return "/".join(p for p in (self.prefix, V2, rel) if p)

    async def open(self) -> None:
        from aiobotocore.config import AioConfig
        from aiobotocore.session import get_session

        kwargs: dict[str, Any] = {
            "region_name": self.region,
            "config": AioConfig(
                s3={"addressing_style": "path" if self.path_style else "auto"},
                signature_version="s3v4",
                retries={"max_attempts": 5, "mode": "standard"},
            ),
        }
        if self.endpoint_url:
            kwargs["endpoint_url"] = self.endpoint_url
        if self.access_key and self.secret_key:
            kwargs["aws_access_key_id"] = self.access_key
            kwargs["aws_secret_access_key"] = self.secret_key
        self._ctx = get_session().create_client("s3", **kwargs)
        self._client = await self._ctx.__aenter__()
        if not await self.list_dir("repositories"):
            await self.close()
            raise DistributionImportError(f"{self.description}: no {V2}/repositories in this bucket")

    async def close(self) -> None:
        if self._ctx is not None:
            await self._ctx.__aexit__(None, None, None)
        self._ctx = self._client = None

    async def list_dir(self, rel: str) -> list[str]:
        prefix = self.key(rel).rstrip("/") + "/"
        names: set[str] = set()
        paginator = self._client.get_paginator("list_objects_v2")
        async for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix, Delimiter="/"):
            for cp in page.get("CommonPrefixes", []) or []:
                names.add(cp["Prefix"][len(prefix) :].rstrip("/"))
            for obj in page.get("Contents", []) or []:
                names.add(obj["Key"][len(prefix) :])
        return sorted(n for n in names if n)

    async def read_small(self, rel: str, limit: int) -> bytes | None:
        from botocore.exceptions import ClientError

        try:
            resp = await self._client.get_object(Bucket=self.bucket, Key=self.key(rel), Range=f"bytes=0-{limit}")
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in {"NoSuchKey", "404", "InvalidRange"}:
                return None
            raise
        async with resp["Body"] as body:
            data: bytes = await body.read()
        if len(data) > limit:
            raise DistributionImportError(f"{rel}: larger than {limit} bytes")
        return data

    async def blob_size(self, digest: str) -> int | None:
        from botocore.exceptions import ClientError

        try:
            head = await self._client.head_object(Bucket=self.bucket, Key=self.key(_blob_data(digest)))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in {"NoSuchKey", "404", "NotFound"}:
                return None
            raise
        return int(head["ContentLength"])

    async def read_blob(self, digest: str) -> AsyncIterator[bytes]:
        resp = await self._client.get_object(Bucket=self.bucket, Key=self.key(_blob_data(digest)))
        async with resp["Body"] as body:
            while True:
                chunk = await body.read(CHUNK)
                if not chunk:
                    return
                yield chunk


# ============================================================================ the import
class ImportSummary(TypedDict):
    """What ``moorage import-distribution --json`` prints."""

    repositories: int
    blobs_copied: int
    blobs_linked: int
    blobs_mounted: int
    blobs_skipped: int
    blobs_missing: int
    refused: int
    bytes: int
    bytes_copied: int
    manifests: int
    manifests_skipped: int
    manifests_failed: int
    tags: int
    tags_skipped: int
    seconds: float
    mb_per_s: float
    blobs_per_s: float
    #: Why blobs were copied when linking was asked for ("" if none was).
    copied_because: str


@dataclass
class ImportStats:
    repositories: int = 0
    blobs_copied: int = 0
    blobs_linked: int = 0  # hard links / server-side copies (bytes not moved by us)
    blobs_mounted: int = 0  # already stored, only linked into another repository
    blobs_skipped: int = 0  # already in the repository
    blobs_missing: int = 0  # linked but absent in the source (Distribution GC'd them)
    bytes_copied: int = 0
    bytes_verified: int = 0
    manifests_imported: int = 0
    manifests_skipped: int = 0
    manifests_failed: int = 0
    tags_imported: int = 0
    tags_skipped: int = 0
    problems: list[str] = field(default_factory=list)
    #: Source paths refused as not regular files inside the tree (symbolic links, FIFOs...).
    refused: list[str] = field(default_factory=list)
    #: Why a hard link was refused (the first reason; the blobs were copied instead).
    copied_because: str = ""
    started: float = field(default_factory=time.monotonic)
    finished: float | None = None

    @property
    def elapsed(self) -> float:
        return max(1e-6, (self.finished or time.monotonic()) - self.started)

    @property
    def changed(self) -> int:
        return self.blobs_copied + self.blobs_linked + self.blobs_mounted + self.manifests_imported + self.tags_imported

    def summary(self) -> ImportSummary:
        blobs = self.blobs_copied + self.blobs_linked
        return {
            "repositories": self.repositories,
            "blobs_copied": self.blobs_copied,
            "blobs_linked": self.blobs_linked,
            "blobs_mounted": self.blobs_mounted,
            "blobs_skipped": self.blobs_skipped,
            "blobs_missing": self.blobs_missing,
            "refused": len(self.refused),
            "bytes": self.bytes_verified,
            "bytes_copied": self.bytes_copied,
            "manifests": self.manifests_imported,
            "manifests_skipped": self.manifests_skipped,
            "manifests_failed": self.manifests_failed,
            "tags": self.tags_imported,
            "tags_skipped": self.tags_skipped,
            "copied_because": self.copied_because,
            "seconds": round(self.elapsed, 3),
            "mb_per_s": round(self.bytes_verified / 1e6 / self.elapsed, 2),
            "blobs_per_s": round(blobs / self.elapsed, 2),
        }


@dataclass
class RepoPlan:
    name: str
    blobs: list[str]
    manifests: list[str]
    tags: dict[str, str]


Progress = Callable[[str, int], None]  # (event, amount): "bytes", "blob", "manifest", "tag"


def _noop(_event: str, _amount: int) -> None:
    return None


def _s3_store(blobs: BlobStore) -> S3BlobStore | None:
    """``blobs`` if it is the S3 driver (a server-side copy is possible), else None; the S3
    module (and the AWS SDK) is imported only then."""
    if blobs.name != "s3":
        return None
    from ..storage.s3 import S3BlobStore

    return blobs if isinstance(blobs, S3BlobStore) else None


class DistributionImporter:
    """Copies one Distribution tree into a Moorage registry (its service, store and blob store)."""

    def __init__(
        self,
        source: Source,
        service: RegistryService,
        *,
        link: bool = False,
        concurrency: int = 4,
        progress: Progress = _noop,
        keep_existing_tags: bool = False,
    ) -> None:
        self.source = source
        #: A tag Moorage already has (pointing elsewhere) stays as it is: the start-up import
        #: runs while clients push, and a push made to Moorage is newer than the registry:2 tree.
        self.keep_existing_tags = keep_existing_tags
        self.service = service
        self.store = service.store
        self.blobs = service.blobs
        self.link = link
        self.concurrency = max(1, concurrency)
        self.progress = progress
        self.stats = ImportStats()
        #: Test hook: exit hard (like kill -9) after this many blob copies.
        crash = os.environ.get("MOORAGE_IMPORT_CRASH_AFTER_BLOBS")
        self._crash_after = int(crash) if crash else None
        self._blob_locks: dict[str, asyncio.Lock] = {}

    # -- planning -------------------------------------------------------------------------
    async def plan(self) -> list[RepoPlan]:
        plans = []
        for name in await self.source.repositories():
            try:
                validate_name(name)
            except errors.RegistryError:
                self.stats.problems.append(f"{name}: not a valid repository name, skipped")
                continue
            blobs = await self.source.links(f"repositories/{name}/_layers")
            manifests = await self.source.links(f"repositories/{name}/_manifests/revisions")
            tags: dict[str, str] = {}
            for tag in sorted(await self.source.list_dir(f"repositories/{name}/_manifests/tags")):
                digest = await self.source.read_link(f"repositories/{name}/_manifests/tags/{tag}/current/link")
                if digest is not None:
                    tags[tag] = digest
            plans.append(RepoPlan(name, blobs, manifests, tags))
        return plans

    async def bytes_to_verify(self, plans: list[RepoPlan]) -> int:
        """Total size of the distinct blobs not yet stored (the progress bar's length)."""
        total = 0
        for digest in sorted({d for p in plans for d in p.blobs}):
            if await self._stored_size(digest) is None:
                total += await self.source.blob_size(digest) or 0
        return total

    # -- running --------------------------------------------------------------------------
    async def run(self, plans: list[RepoPlan] | None = None) -> ImportStats:
        plans = plans if plans is not None else await self.plan()
        self.stats.repositories = len(plans)
        sem = asyncio.Semaphore(self.concurrency)

        async def one(repo: str, digest: str) -> None:
            async with sem:
                await self.import_blob(repo, digest)

        for plan in plans:
            await asyncio.gather(*(one(plan.name, d) for d in plan.blobs))
            await self.import_manifests(plan)
        self.stats.refused = self.source.refusals()
        self.stats.problems.extend(f"refused {why}" for why in self.stats.refused)
        self.stats.finished = time.monotonic()
        return self.stats

    async def _stored_size(self, digest: str) -> int | None:
        size = await self.store.blob_size(digest)
        if size is None:
            return None
        stat = await self.blobs.stat(digest)  # a killed run may have claimed without storing
        return size if stat is not None and stat.size == size else None

    async def import_blob(self, repo: str, digest: str) -> None:
        lock = self._blob_locks.setdefault(digest, asyncio.Lock())
        async with lock:  # repositories sharing a blob: copy once, then link
            if await self.store.blob_size_in_repository(repo, digest) is not None and await self._stored_size(digest) is not None:
                self.stats.blobs_skipped += 1
                self.progress("blob", 1)
                return
            if await self._stored_size(digest) is not None and await self.store.link_blob(repo, digest):
                self.stats.blobs_mounted += 1
                self.progress("blob", 1)
                return
            size = await self.source.blob_size(digest)
            if size is None:
                self.stats.blobs_missing += 1
                self.stats.problems.append(f"{repo}: blob {digest} is linked but its data is missing (or refused)")
                self.progress("blob", 1)
                return
            if self.link and await self._link_blob(repo, digest, size):
                self.stats.blobs_linked += 1
            else:
                await self._copy_blob(repo, digest)
                self.stats.blobs_copied += 1
                self.stats.bytes_copied += size
            self.stats.bytes_verified += size
            self.progress("blob", 1)
            if self._crash_after is not None and self.stats.blobs_copied + self.stats.blobs_linked >= self._crash_after:
                os._exit(137)

    async def _copy_blob(self, repo: str, digest: str) -> None:
        """Stream through the push path: hashed while written, refused on a mismatch."""

        async def body() -> AsyncIterator[bytes]:
            async for chunk in self.source.read_blob(digest):
                self.progress("bytes", len(chunk))
                yield chunk

        try:
            await self.service.put_blob(repo, digest, body(), by=IMPORT)
        except errors.DigestInvalid as exc:
            raise DistributionImportError(
                f"{repo}: blob {digest} does not match its digest in the source ({exc.detail})"
            ) from None

    async def _verify(self, digest: str) -> None:
        hasher = hashlib.sha256()
        async for chunk in self.source.read_blob(digest):
            if len(chunk) >= 1 << 16:
                await asyncio.to_thread(hasher.update, chunk)
            else:
                hasher.update(chunk)
            self.progress("bytes", len(chunk))
        actual = f"sha256:{hasher.hexdigest()}"
        if actual != digest:
            raise DistributionImportError(f"blob {digest} does not match its digest in the source (is {actual})")

    async def _link_blob(self, repo: str, digest: str, size: int) -> bool:
        """Hard link (filesystem to filesystem) or server-side copy (S3 to S3); False = copy instead."""
        dest = self.blobs.local_path(digest)
        if isinstance(self.source, FilesystemSource) and dest is not None:
            if not await self._link_verified_file(self.source, digest, size, dest):
                return False
        elif isinstance(self.source, S3Source) and (s3 := _s3_store(self.blobs)) is not None and size < 5 << 30:
            await self._verify(digest)
            await self.store.claim_blob(digest, size)
            await s3._client.copy_object(
                Bucket=s3.bucket,
                Key=s3._blob_key(digest),
                CopySource={"Bucket": self.source.bucket, "Key": self.source.key(_blob_data(digest))},
            )
        else:
            return False
        if not await self.store.link_blob(repo, digest):
            raise DistributionImportError(f"{repo}: blob {digest} vanished while importing (garbage collection running?)")
        return True

    async def _link_verified_file(self, source: FilesystemSource, digest: str, size: int, dest: Path) -> bool:
        """Hard-link the very file that is hashed: False = copy instead.

        The source's ``data`` is opened once without following links (a regular file inside
        the tree, see :class:`FilesystemSource`); its name is hard-linked to a temporary name
        next to ``dest`` (``link(2)`` does not follow a link either), and that name must be the
        very inode of the open descriptor -- anything swapped in between is refused.  The same
        inode is then hashed, and only then renamed to its address.  A file someone other than
        this user or root could write to later (its owner, or group/other write bits) is copied
        instead: a shared inode would let them change a stored blob.
        """
        fd = await asyncio.to_thread(source.open_blob, digest)
        if fd is None:
            raise DistributionImportError(f"blob {digest}: its data is missing or not a regular file inside the tree")
        tmp = dest.parent / f".import-{uuid.uuid4().hex}"
        try:
            st = os.fstat(fd)
            if st.st_size != size:
                raise DistributionImportError(f"blob {digest} changed size while importing")
            if st.st_uid not in (0, os.geteuid()) or st.st_mode & 0o022:
                log.info("import: %s is writable by another user; copying instead of linking", digest)
                return False

            def hardlink() -> int:
                """0 if linked, else the errno that refused the link."""
                dest.parent.mkdir(parents=True, exist_ok=True)
                try:
                    os.link(source.path(_blob_data(digest)), tmp, follow_symlinks=False)
                except OSError as exc:
                    if exc.errno in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.EACCES):
                        return exc.errno
                    raise
                linked = os.lstat(tmp)
                if not stat.S_ISREG(linked.st_mode) or (linked.st_dev, linked.st_ino) != (st.st_dev, st.st_ino):
                    os.unlink(tmp)
                    raise DistributionImportError(f"blob {digest}: its data was replaced while importing")
                return 0

            refused = await asyncio.to_thread(hardlink)
            if refused:
                self._link_refused(refused, st.st_uid, digest)
                return False
            try:
                await self._hash_fd(fd, digest)
                await self.store.claim_blob(digest, size)
                await asyncio.to_thread(os.replace, tmp, dest)
            except BaseException:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)
                raise
            return True
        finally:
            os.close(fd)

    def _link_refused(self, err: int, owner: int, digest: str) -> None:
        """Say once why blobs are copied instead of linked (then once per blob at debug level)."""
        if self.stats.copied_because:
            log.debug("import: cannot hard-link %s (%s); copying", digest, errno.errorcode.get(err, err))
            return
        if err in (errno.EPERM, errno.EACCES):
            why = (
                f"the registry:2 files belong to uid {owner} and this process runs as uid {os.geteuid()}: the kernel "
                "(fs.protected_hardlinks) lets a process hard-link only files it owns or may write"
            )
        elif err == errno.EXDEV:
            why = "the registry:2 tree and the blob store are on different filesystems"
        else:
            why = "a blob file has too many hard links already"
        self.stats.copied_because = why
        log.warning("import: cannot hard-link blobs: %s; copying them instead (this needs as much free space as the blobs)", why)

    async def _hash_fd(self, fd: int, digest: str) -> None:
        """Hash the open file ``fd`` from its start; refuse it unless it is ``digest``."""
        hasher = hashlib.sha256()
        offset = 0
        while True:
            chunk = await asyncio.to_thread(os.pread, fd, CHUNK, offset)
            if not chunk:
                break
            offset += len(chunk)
            await asyncio.to_thread(hasher.update, chunk)
            self.progress("bytes", len(chunk))
        actual = f"sha256:{hasher.hexdigest()}"
        if actual != digest:
            raise DistributionImportError(f"blob {digest} does not match its digest in the source (is {actual})")

    async def import_manifests(self, plan: RepoPlan) -> None:
        bodies: dict[str, bytes] = {}
        for digest in plan.manifests:
            existing = await self.store.get_manifest(plan.name, digest, by_digest=True)
            if existing is not None:
                self.stats.manifests_skipped += 1
                self.progress("manifest", 1)
                bodies[digest] = b""  # present; its tags may still need importing
                continue
            body = await self.source.read_blob_bytes(digest, _MANIFEST_LIMIT)
            if body is None:
                self._manifest_problem(plan.name, digest, "its data is missing")
                continue
            if f"sha256:{hashlib.sha256(body).hexdigest()}" != digest:
                raise DistributionImportError(f"{plan.name}: manifest {digest} does not match its digest in the source")
            bodies[digest] = body
        # Images before the indexes that list them: retry what failed for missing children
        # while each round makes progress (indexes of indexes need several rounds).
        pending = {d: b for d, b in bodies.items() if b}
        while pending:
            failed: dict[str, tuple[bytes, str]] = {}
            for digest, body in pending.items():
                try:
                    await self.service.put_manifest(plan.name, digest, body, None, IMPORT)
                except errors.ManifestBlobUnknown as exc:
                    failed[digest] = (
                        body,
                        f"references {exc.detail.get('digest') if isinstance(exc.detail, dict) else exc} "
                        "which the repository does not hold",
                    )
                    continue
                except errors.RegistryError as exc:
                    self._manifest_problem(plan.name, digest, str(exc.message if hasattr(exc, "message") else exc))
                    continue
                self.stats.manifests_imported += 1
                self.progress("manifest", 1)
            if len(failed) == len(pending):
                for digest, (_body, why) in failed.items():
                    self._manifest_problem(plan.name, digest, why)
                break
            pending = {d: b for d, (b, _w) in failed.items()}
        for tag, digest in plan.tags.items():
            if digest not in bodies:
                self.stats.problems.append(f"{plan.name}:{tag}: points at {digest}, which is not imported")
                continue
            current = await self.store.get_manifest(plan.name, tag, by_digest=False)
            if current is not None and current.digest == digest:
                self.stats.tags_skipped += 1
                continue
            if current is not None and self.keep_existing_tags:
                self.stats.tags_skipped += 1
                self.stats.problems.append(
                    f"{plan.name}:{tag}: kept the tag pushed to Moorage ({current.digest}); registry:2 had {digest}"
                )
                continue
            body = bodies[digest]
            if not body:  # present before this run: its bytes are in the store
                stored = await self.store.get_manifest(plan.name, digest, by_digest=True)
                if stored is None:
                    raise DistributionImportError(f"{plan.name}: manifest {digest} vanished while importing")
                body = stored.payload
            try:
                await self.service.put_manifest(plan.name, tag, body, None, IMPORT)
            except errors.RegistryError as exc:
                self.stats.problems.append(f"{plan.name}:{tag}: {exc}")
                continue
            self.stats.tags_imported += 1
            self.progress("tag", 1)

    def _manifest_problem(self, repo: str, digest: str, why: str) -> None:
        self.stats.manifests_failed += 1
        self.stats.problems.append(f"{repo}@{digest}: {why}")
