"""The building blocks of the OpenAPI operations each route declares (:mod:`moorage.api.routing`).

A handler module writes its routes' operation objects next to its handlers with these helpers;
:mod:`moorage.api.openapi` assembles the served document from the operations of the routes an app
registered, plus the shared ``components`` (schemas, parameters, responses, headers) that the
``$ref`` here point at.  Imports nothing of the package but the media types and name grammar, so
any handler module may import it.
"""

from __future__ import annotations

from typing import Any

from ..registry import mediatypes as mt
from ..registry.names import NAME_RE, TAG_RE

JSON = "application/json"
#: Regular expressions of the spec (anchored, as OpenAPI ``pattern`` is a search, not a match).
NAME_PATTERN = f"^{NAME_RE.pattern}$"
TAG_PATTERN = f"^{TAG_RE.pattern}$"
DIGEST_PATTERN = r"^[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$"
MANIFEST_MEDIA_TYPES = sorted(mt.MANIFEST_TYPES)


def ref(kind: str, name: str) -> dict[str, str]:
    return {"$ref": f"#/components/{kind}/{name}"}


def str_header(description: str, **schema: Any) -> dict[str, Any]:
    return {"description": description, "schema": {"type": "string", **schema}}


def json_body(
    schema: dict[str, Any], description: str, headers: dict[str, Any] | None = None, media_type: str = JSON
) -> dict[str, Any]:
    resp: dict[str, Any] = {"description": description, "content": {media_type: {"schema": schema}}}
    if headers:
        resp["headers"] = headers
    return resp


def empty(description: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    resp: dict[str, Any] = {"description": description}
    if headers:
        resp["headers"] = headers
    return resp


def errors(*statuses: int, head: bool = False) -> dict[str, Any]:
    """Error responses by status; a HEAD answer has the status and headers but no body."""
    names = {
        400: "BadRequest",
        401: "Unauthorized",
        403: "Denied",
        404: "NotFound",
        405: "Unsupported",
        413: "TooLarge",
        416: "RangeInvalid",
        429: "TooManyRequests",
        503: "Unavailable",
        507: "InsufficientStorage",
    }
    out: dict[str, Any] = {}
    for status in statuses:
        out[str(status)] = ref("responses", ("Head" if head else "") + names[status])
    return out


#: What every request that needs a credential may meet (auth on) or a backend outage.
AUTH_ERRORS = (401, 403, 429, 503)
#: ... and, for what writes, a full disk or quota (507, docs/integrity.md "Storage full").
WRITE_ERRORS = (*AUTH_ERRORS, 507)


def param(name: str, where: str, schema: dict[str, Any], description: str, required: bool = False) -> dict[str, Any]:
    return {"name": name, "in": where, "required": required or where == "path", "description": description, "schema": schema}


NAME = ref("parameters", "name")
DIGEST = ref("parameters", "digest")
REFERENCE = ref("parameters", "reference")
UPLOAD_ID = ref("parameters", "upload_id")
N = ref("parameters", "n")
LAST = ref("parameters", "last")

API_VERSION = {"Docker-Distribution-API-Version": ref("headers", "Docker-Distribution-API-Version")}
UPLOAD_PROGRESS = {
    **API_VERSION,
    "Location": str_header("Where to send the next request of this upload (relative URL)."),
    "Range": str_header("Bytes received so far, inclusive: ``0-<size-1>`` (``0-0`` for none).", pattern=r"^0-\d+$"),
    "Docker-Upload-UUID": str_header("The upload session id."),
    "Blob-Upload-Session-ID": str_header("The upload session id (OCI name of Docker-Upload-UUID)."),
}
BLOB_CREATED = {
    **API_VERSION,
    "Location": str_header("URL of the blob."),
    "Docker-Content-Digest": ref("headers", "Docker-Content-Digest"),
}


#: (``errors`` is also the name of the helpers' keyword argument below.)
_errors = errors


def noslash(op: dict[str, Any]) -> dict[str, Any]:
    """The operation of a route's second spelling (``/v2``, ``.../blobs/uploads`` without the
    trailing slash clients omit): the same, with its own operationId (they must be unique)."""
    return {**op, "operationId": op["operationId"] + "NoSlash"}


# -- the admin API (/api/v1/ users, grants, tokens ...) -------------------------------------------
#: Credentials of the admin and extension APIs: basic (password or access token) or a bearer token.
CREDENTIALS: list[dict[str, list[str]]] = [{"basic": []}, {"bearer": []}]
NO_CONTENT = {"204": empty("Done.")}


def admin_op(
    op_id: str,
    summary: str,
    responses: dict[str, Any],
    *,
    parameters: list[Any] | None = None,
    body: dict[str, Any] | None = None,
    errors: tuple[int, ...] = (400, 401, 403, 429, 503),
) -> dict[str, Any]:
    """An operation of the admin API (tag ``admin``; the request body, when any, required)."""
    out: dict[str, Any] = {
        "tags": ["admin"],
        "operationId": op_id,
        "summary": summary,
        "security": [{"basic": []}, {"bearer": []}],
        "responses": {**responses, **_errors(*errors)},
    }
    if parameters:
        out["parameters"] = parameters
    if body is not None:
        out["requestBody"] = {"required": True, "content": {JSON: {"schema": body}}}
    return out


def array_of(key: str, schema: dict[str, Any]) -> dict[str, Any]:
    """``{key: [schema, ...]}``: the admin API's list answers."""
    return {"type": "object", "required": [key], "properties": {key: {"type": "array", "items": schema}}}


# -- the extensions' APIs (insight, events, proxy, health) ------------------------------------------
#: Who the ADMIN rule lets through, per mode.
ADMIN_NOTE = "Administrators only (``auth.mode: token``); with ``htpasswd`` any authenticated user, with ``none`` anyone."
STRING: dict[str, Any] = {"type": "string"}
NUMBER: dict[str, Any] = {"type": "number"}
INTEGER: dict[str, Any] = {"type": "integer"}
BOOLEAN: dict[str, Any] = {"type": "boolean"}
LIMIT = param("limit", "query", {"type": "integer", "minimum": 1, "maximum": 1000}, "Page size (default 100).")
BEFORE = param("before", "query", {"type": "integer", "minimum": 0}, "Only ids below this one (paging).")


def op(
    tag: str,
    op_id: str,
    summary: str,
    responses: dict[str, Any],
    *,
    description: str = "",
    parameters: list[Any] | None = None,
    body: dict[str, Any] | None = None,
    errors: tuple[int, ...] = (400, 401, 403, 429, 503),
    security: list[dict[str, list[str]]] | None = None,
) -> dict[str, Any]:
    """An operation of an extension's API (the request body, when any, optional).

    Errors use the same envelope as ``/v2/``; a bad parameter or body is a 400 (``UNSUPPORTED``,
    ``NAME_INVALID`` or ``PAGINATION_NUMBER_INVALID``)."""
    out: dict[str, Any] = {
        "tags": [tag],
        "operationId": op_id,
        "summary": summary,
        "security": security or CREDENTIALS,
        "responses": {**responses, **_errors(*errors)},
    }
    if description:
        out["description"] = description
    if parameters:
        out["parameters"] = parameters
    if body is not None:
        out["requestBody"] = {"required": False, "content": {JSON: {"schema": body}}}
    return out


def obj(required: list[str], **props: Any) -> dict[str, Any]:
    """An object schema with these properties."""
    return {"type": "object", "required": required, "properties": props}


def nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {**schema, "nullable": True}
