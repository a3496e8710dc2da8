"""The OCI error registry: every error code defined once, raised as a typed exception.

Handlers and services raise :class:`RegistryError` subclasses; one aiohttp middleware
(``moorage.api.errors``) turns them into the spec's JSON body
``{"errors": [{"code", "message", "detail"}]}`` with the right status.  Nothing else builds
error JSON by hand.
"""

from __future__ import annotations

from typing import Any


class RegistryError(Exception):
    """Base of every error a client can see. Subclasses fix ``code``, ``status`` and a default message."""

    code: str = "UNKNOWN"
    status: int = 500
    message: str = "unknown error"

    def __init__(
        self,
        message: str | None = None,
        detail: Any = None,
        *,
        status: int | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message or self.message)
        if message:
            self.message = message
        self.detail = detail
        if status is not None:
            self.status = status
        self.headers = dict(headers or {})
        #: Further errors reported in the same response (e.g. one per missing blob).
        self.more: list[RegistryError] = []

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.detail is not None:
            body["detail"] = self.detail
        return body


# The codes of OCI Distribution Spec v1.1, "Error Codes" table, plus the Docker V2 extras.  Plain
# classes (not made by a factory) so type checkers know them.


class BlobUnknown(RegistryError):
    code = "BLOB_UNKNOWN"
    status = 404
    message = "blob unknown to registry"


class BlobUploadInvalid(RegistryError):
    code = "BLOB_UPLOAD_INVALID"
    status = 400
    message = "blob upload invalid"


class BlobUploadUnknown(RegistryError):
    code = "BLOB_UPLOAD_UNKNOWN"
    status = 404
    message = "blob upload unknown to registry"


class DigestInvalid(RegistryError):
    code = "DIGEST_INVALID"
    status = 400
    message = "provided digest did not match uploaded content"


class ManifestBlobUnknown(RegistryError):
    code = "MANIFEST_BLOB_UNKNOWN"
    status = 400
    message = "manifest references a manifest or blob unknown to registry"


class ManifestInvalid(RegistryError):
    code = "MANIFEST_INVALID"
    status = 400
    message = "manifest invalid"


class ManifestUnknown(RegistryError):
    code = "MANIFEST_UNKNOWN"
    status = 404
    message = "manifest unknown to registry"


class NameInvalid(RegistryError):
    code = "NAME_INVALID"
    status = 400
    message = "invalid repository name"


class NameUnknown(RegistryError):
    code = "NAME_UNKNOWN"
    status = 404
    message = "repository name not known to registry"


class SizeInvalid(RegistryError):
    code = "SIZE_INVALID"
    status = 400
    message = "provided length did not match content length"


class Unauthorized(RegistryError):
    code = "UNAUTHORIZED"
    status = 401
    message = "authentication required"


class Denied(RegistryError):
    code = "DENIED"
    status = 403
    message = "requested access to the resource is denied"


class Unsupported(RegistryError):
    code = "UNSUPPORTED"
    status = 405
    message = "the operation is unsupported"


class TextUnstorable(Unsupported):
    """A value the database cannot store as text: NUL (PostgreSQL's ``text`` refuses it,
    SQLSTATE 22021), a ``\\u0000`` in JSON (22P05) or a lone surrogate (no UTF-8 at all).

    Raised by the metadata layer's translation (:func:`moorage.metadata.errors.translated`) as
    the safety net behind each service's own validation: bad input is the client's, a 400, never
    a 500.  ``UNSUPPORTED`` with 400 is what the admin API answers for any refused value; the
    value itself is not echoed."""

    status = 400
    message = "a value contains characters the registry cannot store (NUL or invalid Unicode)"


class TooManyRequests(RegistryError):
    code = "TOOMANYREQUESTS"
    status = 429
    message = "too many requests"


class RangeInvalid(RegistryError):
    code = "RANGE_INVALID"
    status = 416
    message = "invalid content range"


class TagInvalid(RegistryError):
    code = "TAG_INVALID"
    status = 400
    message = "manifest tag did not match URI"


class NotFound(RegistryError):
    code = "NOT_FOUND"
    status = 404
    message = "not found"


class Unavailable(RegistryError):
    code = "UNAVAILABLE"
    status = 503
    message = "service unavailable"


class PaginationNumberInvalid(RegistryError):
    code = "PAGINATION_NUMBER_INVALID"
    status = 400
    message = "invalid number of results requested"


class BackendUnavailable(Unavailable):
    """A service the registry depends on is down or overloaded: worth a retry (503 with
    ``Retry-After``), never a 500.  The client sees one generic message; what failed is in the
    exception's ``__cause__`` (chained by whoever translated it) and in the server log."""

    message = "a storage or database service is unavailable; retry"
    #: Seconds a client should wait before retrying (the ``Retry-After`` header).
    retry_after = 5

    def __init__(self, message: str | None = None, detail: Any = None, *, reason: str = "") -> None:
        super().__init__(message, detail, headers={"Retry-After": str(self.retry_after)})
        #: For the log only (never sent): what the driver or database said.
        self.reason = reason

    def __str__(self) -> str:  # logs and command-line messages say what failed; the client body does not
        return f"{self.message}: {self.reason}" if self.reason else self.message


class StorageUnavailable(BackendUnavailable):
    """Raised by blob-storage drivers for an outage of their backend (S3 unreachable, 5xx or
    SlowDown; a filesystem giving EIO, ENOSPC, EROFS), not for a missing blob."""


class DatabaseUnavailable(BackendUnavailable):
    """Raised by the metadata layer when the database cannot be reached or is busy past its
    timeout (lost connection, pool exhausted, SQLite locked or failing I/O)."""


class StorageFullError(BackendUnavailable):
    """The disk or quota under the blobs or the database is full (ENOSPC, EDQUOT, SQLite's
    ``database or disk is full``, PostgreSQL's ``disk_full``, an S3 quota): reads keep working,
    writes are refused until space is freed.

    ``507 Insufficient Storage`` (RFC 4918) says what a retry alone will not fix; the body keeps
    ``UNAVAILABLE`` (Distribution's code for a refusal on the server's side -- the OCI code list
    governs 4xx bodies) with "storage is full" in the message and ``detail.reason``.  A
    5xx is what clients retry at most, never treat as "this image is wrong".
    """

    status = 507
    message = "storage is full: the registry refuses writes until space is freed (reads still work)"
    #: A full disk is not freed in seconds.
    retry_after = 60

    def __init__(self, message: str | None = None, detail: Any = None, *, reason: str = "") -> None:
        super().__init__(message, {"reason": "storage full"} if detail is None else detail, reason=reason)


class StorageFull(StorageFullError, StorageUnavailable):
    """The blob store is full (ENOSPC/EDQUOT, an S3 quota)."""


class DatabaseFull(StorageFullError, DatabaseUnavailable):
    """The metadata database is full (SQLite ``database or disk is full``, PostgreSQL ``disk_full``)."""
