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


def _error(code: str, status: int, message: str) -> type[RegistryError]:
    return type(code.title().replace("_", "") + "Error", (RegistryError,), {"code": code, "status": status, "message": message})


# The codes of OCI Distribution Spec v1.1, "Error Codes" table, plus the Docker V2 extras.
BlobUnknown = _error("BLOB_UNKNOWN", 404, "blob unknown to registry")
BlobUploadInvalid = _error("BLOB_UPLOAD_INVALID", 400, "blob upload invalid")
BlobUploadUnknown = _error("BLOB_UPLOAD_UNKNOWN", 404, "blob upload unknown to registry")
DigestInvalid = _error("DIGEST_INVALID", 400, "provided digest did not match uploaded content")
ManifestBlobUnknown = _error("MANIFEST_BLOB_UNKNOWN", 400, "manifest references a manifest or blob unknown to registry")
ManifestInvalid = _error("MANIFEST_INVALID", 400, "manifest invalid")
ManifestUnknown = _error("MANIFEST_UNKNOWN", 404, "manifest unknown to registry")
NameInvalid = _error("NAME_INVALID", 400, "invalid repository name")
NameUnknown = _error("NAME_UNKNOWN", 404, "repository name not known to registry")
SizeInvalid = _error("SIZE_INVALID", 400, "provided length did not match content length")
Unauthorized = _error("UNAUTHORIZED", 401, "authentication required")
Denied = _error("DENIED", 403, "requested access to the resource is denied")
Unsupported = _error("UNSUPPORTED", 405, "the operation is unsupported")
TooManyRequests = _error("TOOMANYREQUESTS", 429, "too many requests")
RangeInvalid = _error("RANGE_INVALID", 416, "invalid content range")
TagInvalid = _error("TAG_INVALID", 400, "manifest tag did not match URI")
NotFound = _error("NOT_FOUND", 404, "not found")
Unavailable = _error("UNAVAILABLE", 503, "service unavailable")
PaginationNumberInvalid = _error("PAGINATION_NUMBER_INVALID", 400, "invalid number of results requested")
