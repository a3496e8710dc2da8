"""The blob-store interface: a small set of operations every storage driver implements.

Modelled on CNCF Distribution's storage driver, narrowed to what a content-addressed registry
needs.  Blobs are addressed by digest only (never by repository name), so storage is
deduplicated across repositories and no client-supplied string ever becomes a path.

Upload sessions are first-class: a driver keeps the bytes of an unfinished upload under an
upload id and returns an opaque JSON-able ``state`` dict that the caller persists in the
metadata database between requests (so any replica can continue an upload, and uploads
survive restarts).  Hashing is *not* the driver's job: the registry service hashes the stream
while the driver writes it, and only calls :meth:`upload_commit` once the digest matched.
``upload_commit`` must make the blob visible atomically (temporary name, then rename/copy).

Integrity contract (no blob substitution, docs/integrity.md): every :meth:`upload_append` writes to files/objects of its own,
never written by anyone else, and nothing writes to them after the append returned; so the
bytes a session's state lists are exactly the bytes the service hashed, whatever another
(stale or concurrent) request does.  The service allows one append per session at a time
(a claim in the database), and :meth:`upload_commit` never replaces an existing blob.
"""

from __future__ import annotations

import abc
import errno
import functools
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from ..errors import StorageFull, StorageUnavailable

UploadState = dict[str, Any]


@dataclass(frozen=True, slots=True)
class BlobStat:
    size: int


class BlobStore(abc.ABC):
    """Content-addressed blob storage with resumable upload sessions."""

    name: str = "abstract"

    # -- lifecycle --------------------------------------------------------------------------
    async def open(self) -> None:
        """Prepare the store (create directories, connect clients)."""

    async def close(self) -> None:
        """Release resources."""

    # -- blobs ------------------------------------------------------------------------------
    @abc.abstractmethod
    async def stat(self, digest: str) -> BlobStat | None:
        """Size of the blob, or None if it is not stored."""

    @abc.abstractmethod
    def read(self, digest: str, offset: int = 0, length: int | None = None) -> AsyncIterator[bytes]:
        """Stream the blob's bytes from ``offset``, ``length`` bytes (None = to the end)."""

    def local_path(self, digest: str) -> Path | None:
        """A local file holding the blob, for sendfile; None if the driver has none."""
        return None

    async def redirect_url(self, digest: str, method: str = "GET") -> str | None:
        """A URL the client can fetch the blob from directly (presigned), or None."""
        return None

    @abc.abstractmethod
    async def delete(self, digest: str) -> None:
        """Remove the blob; deleting an absent blob is not an error."""

    @abc.abstractmethod
    def list_blobs(self) -> AsyncIterator[str]:
        """Every stored blob's digest (used by garbage collection to find orphans)."""

    # -- upload sessions ---------------------------------------------------------------------
    @abc.abstractmethod
    async def upload_create(self, upload_id: str) -> UploadState:
        """Start an empty upload; returns the driver state to persist."""

    @abc.abstractmethod
    async def upload_append(
        self, upload_id: str, state: UploadState, offset: int, chunks: AsyncIterator[bytes]
    ) -> tuple[UploadState, int]:
        """Append ``chunks`` at ``offset`` (the upload's current committed size).

        Returns the new state and the new size.  If the stream breaks part-way the driver
        must raise :class:`PartialAppend` carrying the state and size that *were* durably
        appended, so the upload can be resumed from there.
        """

    @abc.abstractmethod
    def upload_read(self, upload_id: str, state: UploadState, size: int) -> AsyncIterator[bytes]:
        """Stream the first ``size`` bytes written so far (to re-hash when needed)."""

    @abc.abstractmethod
    async def upload_commit(self, upload_id: str, state: UploadState, size: int, digest: str) -> bool:
        """Move the verified upload to its content address, atomically, and drop the session.

        Never replaces a blob already stored at the address (the upload is then only
        dropped).  Returns True if this call placed the blob, False if it was already there.
        """

    async def upload_drop_append(self, upload_id: str, before: UploadState, after: UploadState) -> None:
        """Delete what an append refused part-way wrote (``after``'s data not in ``before``);
        the session stays as ``before`` describes it."""

    async def quarantine(self, digest: str) -> bool:
        """Move a blob whose bytes do not match its digest out of its content address (kept
        aside for inspection), so a verified re-push can put the right bytes there.  False if
        it was not stored."""
        raise NotImplementedError

    @abc.abstractmethod
    async def upload_abort(self, upload_id: str, state: UploadState) -> None:
        """Throw the upload's data away."""

    def list_upload_ids(self) -> AsyncIterator[str]:
        """Upload sessions with data in storage (to clean up abandoned ones)."""
        raise NotImplementedError

    async def upload_age(self, upload_id: str) -> float | None:
        """Seconds since the upload's data last changed; None if it has none (or unknown)."""
        return None

    async def purge_leftovers(self, older_than: float, session_exists: Callable[[str], Awaitable[bool]]) -> dict[str, int]:
        """Remove storage left behind by interrupted work, untouched for ``older_than`` seconds.

        Upload data whose session the database no longer knows (``session_exists``) is
        removed; drivers add their own leftovers (S3: incomplete multipart uploads).  Sessions
        the database does know are the garbage collector's business (upload expiry).
        """
        removed = 0
        async for upload_id in self.list_upload_ids():
            age = await self.upload_age(upload_id)
            if age is None or age < older_than or await session_exists(upload_id):
                continue
            await self.upload_abort(upload_id, {})
            removed += 1
        return {"orphan_uploads": removed}


class PartialAppend(Exception):
    """An append stopped part-way; ``state``/``size`` describe what was kept."""

    def __init__(self, state: UploadState, size: int, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.state = state
        self.size = size
        self.cause = cause


# -- backend outages --------------------------------------------------------------------------
#: ``classify(exc)``: a short reason if ``exc`` is an outage of the driver's backend, else None.
OutageClassifier = Callable[[BaseException], "str | None"]

#: File-system errors that say the storage itself is failing (not that a path is missing):
#: I/O error, disk or quota full, read-only file system, stale NFS handle.
OUTAGE_ERRNOS = frozenset({errno.EIO, errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.ESTALE})
#: Of those, the ones that say "full" (507, see :class:`~moorage.errors.StorageFull`).
FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
#: Prefix of a classifier's reason that means "full" rather than "away" (e.g. an S3 quota).
FULL_REASON = "full: "

#: The interface's operations whose failures are translated (``open``/``close`` are not: a store
#: that cannot start is a start-up error, told as one line).
_TRANSLATED = (
    "stat",
    "read",
    "redirect_url",
    "delete",
    "list_blobs",
    "upload_create",
    "upload_append",
    "upload_read",
    "upload_commit",
    "upload_drop_append",
    "quarantine",
    "upload_abort",
    "list_upload_ids",
    "upload_age",
    "purge_leftovers",
)

_Store = TypeVar("_Store", bound=type)


def os_outage(exc: BaseException) -> str | None:
    """The filesystem driver's classifier (also for local files any driver touches)."""
    if isinstance(exc, OSError) and exc.errno in OUTAGE_ERRNOS:
        reason = f"{errno.errorcode.get(exc.errno or 0, exc.errno)}: {exc.strerror or exc}"
        return FULL_REASON + reason if exc.errno in FULL_ERRNOS else reason
    return None


def as_outage(exc: BaseException, classify: OutageClassifier, driver: str) -> BaseException:
    """``exc`` as a :class:`StorageUnavailable` (cause chained) if ``classify`` says it is an outage."""
    if isinstance(exc, StorageUnavailable):
        return exc
    reason = classify(exc)
    if reason is None:
        return exc
    if reason.startswith(FULL_REASON):
        unavailable: StorageUnavailable = StorageFull(reason=f"{driver}: {reason.removeprefix(FULL_REASON)}")
    else:
        unavailable = StorageUnavailable(reason=f"{driver}: {reason}")
    unavailable.__cause__ = exc
    return unavailable


def translate_outages(classify: OutageClassifier) -> Callable[[_Store], _Store]:
    """Class decorator for a driver: its interface operations raise :class:`StorageUnavailable`
    for backend outages (and a :class:`PartialAppend` carries one as its cause), so nothing above
    the driver has to know botocore or errno values.  Applied once per driver class, to the
    methods the class itself defines."""

    def wrap_coroutine(fn: Callable[..., Awaitable[Any]], driver: str) -> Callable[..., Awaitable[Any]]:
        @functools.wraps(fn)
        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                return await fn(*args, **kwargs)
            except PartialAppend as partial:
                partial.cause = as_outage(partial.cause, classify, driver)
                raise
            except Exception as exc:
                translated = as_outage(exc, classify, driver)
                if translated is exc:
                    raise
                raise translated from exc

        return wrapper

    def wrap_generator(fn: Callable[..., AsyncIterator[Any]], driver: str) -> Callable[..., AsyncIterator[Any]]:
        @functools.wraps(fn)
        async def wrapper(*args: Any, **kwargs: Any) -> AsyncIterator[Any]:
            try:
                async for item in fn(*args, **kwargs):
                    yield item
            except Exception as exc:
                translated = as_outage(exc, classify, driver)
                if translated is exc:
                    raise
                raise translated from exc

        return wrapper

    def decorate(cls: _Store) -> _Store:
        driver = getattr(cls, "name", cls.__name__)
        for attr in _TRANSLATED:
            fn = cls.__dict__.get(attr)
            if fn is None:
                continue
            if inspect.isasyncgenfunction(fn):
                setattr(cls, attr, wrap_generator(fn, driver))
            elif inspect.iscoroutinefunction(fn):
                setattr(cls, attr, wrap_coroutine(fn, driver))
        return cls

    return decorate
