"""The OpenAPI 3.0 document of Moorage's HTTP API, served at ``GET /api/openapi.json``.

Written as data here, next to the route modules it describes, so that a change to a route and
to its description land in the same diff.  It is the contract that ``tests/test_fuzz_openapi.py``
fuzzes with Schemathesis: every status code, header and body a route can answer must be in it,
so the document stays honest about what clients really get (and the fuzzer finds the 500s).

What is described:

* ``/v2/`` -- the OCI Distribution Spec v1.1 API as Moorage implements it (pull, push, content
  discovery, content management, referrers), with the spec's error envelope
  ``{"errors": [{"code", "message", "detail"}]}`` on every 4xx/5xx;
* ``/auth/token`` and ``/auth/jwks`` -- the Docker Registry token server (``auth.mode: token``);
* ``/api/v1/`` -- the admin API (users, grants, access tokens, visibility, repository delete);
* ``/api/v1/insight/``, ``/api/v1/webhooks``, ``/api/v1/audit``, ``/api/v1/proxy``, ``/api/v1/mirror`` --
  the extensions' admin APIs (the last two only exist when proxy upstreams / mirror rules are set);
* ``/metrics``, ``/healthz``, ``/readyz`` -- Prometheus text exposition and health probes.

Not described: the web UI (``/``, ``/ui/...``, ``/static/...``), HTML pages rather than an API.

The document is built once per process (it depends on nothing but the code) and is public:
it says nothing a reader of the source could not learn.
"""

from __future__ import annotations

import json
import weakref
from functools import lru_cache
from typing import Any

from aiohttp import web
from pydantic import BaseModel

from ..registry import mediatypes as mt
from ..registry.names import NAME_RE, TAG_RE
from . import admin_models
from . import routes as route_names

routes = web.RouteTableDef()

JSON = "application/json"
#: Regular expressions of the spec (anchored, as OpenAPI ``pattern`` is a search, not a match).
NAME_PATTERN = f"^{NAME_RE.pattern}$"
TAG_PATTERN = f"^{TAG_RE.pattern}$"
DIGEST_PATTERN = r"^[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$"
MANIFEST_MEDIA_TYPES = sorted(mt.MANIFEST_TYPES)
ERROR_CODES = [
    "BLOB_UNKNOWN",
    "BLOB_UPLOAD_INVALID",
    "BLOB_UPLOAD_UNKNOWN",
    "DIGEST_INVALID",
    "MANIFEST_BLOB_UNKNOWN",
    "MANIFEST_INVALID",
    "MANIFEST_UNKNOWN",
    "NAME_INVALID",
    "NAME_UNKNOWN",
    "SIZE_INVALID",
    "UNAUTHORIZED",
    "DENIED",
    "UNSUPPORTED",
    "TOOMANYREQUESTS",
    "RANGE_INVALID",
    "TAG_INVALID",
    "NOT_FOUND",
    "UNAVAILABLE",
    "PAGINATION_NUMBER_INVALID",
    "UNKNOWN",
]


# ----------------------------------------------------------------------------- building blocks
def _ref(kind: str, name: str) -> dict[str, str]:
    return {"$ref": f"#/components/{kind}/{name}"}


def _str_header(description: str, **schema: Any) -> dict[str, Any]:
    return {"description": description, "schema": {"type": "string", **schema}}


def _json(
    schema: dict[str, Any], description: str, headers: dict[str, Any] | None = None, media_type: str = JSON
) -> dict[str, Any]:
    resp: dict[str, Any] = {"description": description, "content": {media_type: {"schema": schema}}}
    if headers:
        resp["headers"] = headers
    return resp


def _empty(description: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    resp: dict[str, Any] = {"description": description}
    if headers:
        resp["headers"] = headers
    return resp


def _errors(*statuses: int, head: bool = False) -> dict[str, Any]:
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
        out[str(status)] = _ref("responses", ("Head" if head else "") + names[status])
    return out


#: What every request that needs a credential may meet (auth on) or a backend outage.
_AUTH_ERRORS = (401, 403, 429, 503)
#: ... and, for what writes, a full disk or quota (507, docs/integrity.md "Storage full").
_WRITE_ERRORS = (*_AUTH_ERRORS, 507)


def _param(name: str, where: str, schema: dict[str, Any], description: str, required: bool = False) -> dict[str, Any]:
    return {"name": name, "in": where, "required": required or where == "path", "description": description, "schema": schema}


_NAME = _ref("parameters", "name")
_DIGEST = _ref("parameters", "digest")
_REFERENCE = _ref("parameters", "reference")
_UPLOAD_ID = _ref("parameters", "upload_id")
_N = _ref("parameters", "n")
_LAST = _ref("parameters", "last")

_API_VERSION = {"Docker-Distribution-API-Version": _ref("headers", "Docker-Distribution-API-Version")}
_UPLOAD_PROGRESS = {
    **_API_VERSION,
    "Location": _str_header("Where to send the next request of this upload (relative URL)."),
    "Range": _str_header("Bytes received so far, inclusive: ``0-<size-1>`` (``0-0`` for none).", pattern=r"^0-\d+$"),
    "Docker-Upload-UUID": _str_header("The upload session id."),
    "Blob-Upload-Session-ID": _str_header("The upload session id (OCI name of Docker-Upload-UUID)."),
}
_BLOB_CREATED = {
    **_API_VERSION,
    "Location": _str_header("URL of the blob."),
    "Docker-Content-Digest": _ref("headers", "Docker-Content-Digest"),
}


def model_schema(model: type[BaseModel]) -> dict[str, Any]:
    """A pydantic model's JSON schema (draft 2020-12) in OpenAPI 3.0's dialect: ``null`` in an
    ``anyOf`` becomes ``nullable``, numeric ``exclusiveMinimum``/``Maximum`` the boolean form,
    ``examples`` one ``example``; ``title`` goes (the component name says it)."""
    schema: dict[str, Any] = _oas30(model.model_json_schema(mode="validation"))
    return schema


def _oas30(node: Any) -> Any:
    if isinstance(node, list):
        return [_oas30(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: _oas30(v) for k, v in node.items() if k != "title"}
    any_of = out.get("anyOf")
    if isinstance(any_of, list) and {"type": "null"} in any_of:
        rest = [s for s in any_of if s != {"type": "null"}]
        del out["anyOf"]
        out = {**rest[0], **out} if len(rest) == 1 else {**out, "anyOf": rest}
        out["nullable"] = True
    for exclusive, bound in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        value = out.get(exclusive)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            out[bound], out[exclusive] = value, True
    if isinstance(out.get("examples"), list) and out["examples"]:
        out["example"] = out.pop("examples")[0]
    return out


def _components() -> dict[str, Any]:
    error = {
        "type": "object",
        "required": ["code", "message"],
        "properties": {
            "code": {
                "type": "string",
                "enum": ERROR_CODES,
                "description": "One of the codes of the OCI Distribution Spec's error table (plus UNKNOWN).",
            },
            "message": {"type": "string"},
            "detail": {"description": "Free-form, code-specific details (any JSON value)."},
        },
    }
    schemas: dict[str, Any] = {
        "Error": error,
        "ErrorEnvelope": {
            "type": "object",
            "required": ["errors"],
            "properties": {"errors": {"type": "array", "minItems": 1, "items": {"$ref": "#/components/schemas/Error"}}},
            "description": "The OCI Distribution Spec error body.",
        },
        "Descriptor": {
            "type": "object",
            "required": ["mediaType", "digest", "size"],
            "properties": {
                "mediaType": {"type": "string"},
                "digest": {"type": "string", "pattern": DIGEST_PATTERN},
                "size": {"type": "integer", "minimum": 0},
                "artifactType": {"type": "string"},
                "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
                "urls": {"type": "array", "items": {"type": "string"}},
                "platform": {"type": "object"},
            },
        },
        "Manifest": {
            "type": "object",
            "description": "An OCI image manifest or index, or a Docker v2 schema 2 manifest or manifest "
            "list. Served byte for byte as pushed.",
            "required": ["schemaVersion"],
            "properties": {
                "schemaVersion": {"type": "integer"},
                "mediaType": {"type": "string"},
                "artifactType": {"type": "string"},
                "config": {"$ref": "#/components/schemas/Descriptor"},
                "layers": {"type": "array", "items": {"$ref": "#/components/schemas/Descriptor"}},
                "manifests": {"type": "array", "items": {"$ref": "#/components/schemas/Descriptor"}},
                "subject": {"$ref": "#/components/schemas/Descriptor"},
                "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
            },
        },
        "ReferrersIndex": {
            "type": "object",
            "required": ["schemaVersion", "mediaType", "manifests"],
            "properties": {
                "schemaVersion": {"type": "integer", "enum": [2]},
                "mediaType": {"type": "string", "enum": [mt.OCI_INDEX]},
                "manifests": {"type": "array", "items": {"$ref": "#/components/schemas/Descriptor"}},
            },
        },
        "Catalog": {
            "type": "object",
            "required": ["repositories"],
            "properties": {"repositories": {"type": "array", "items": {"type": "string"}}},
        },
        "TagList": {
            "type": "object",
            "required": ["name", "tags"],
            "properties": {"name": {"type": "string"}, "tags": {"type": "array", "items": {"type": "string"}}},
        },
        "Token": {
            "type": "object",
            "required": ["token", "access_token", "expires_in", "issued_at"],
            "properties": {
                "token": {"type": "string", "description": "A signed JWT (ES256) for the registry."},
                "access_token": {"type": "string", "description": "The same JWT (OAuth2 name)."},
                "expires_in": {"type": "integer", "description": "Lifetime in seconds."},
                "issued_at": {"type": "string", "description": "RFC 3339 time of issue."},
                "refresh_token": {"type": "string", "description": "With offline_token=true / access_type=offline."},
                "scope": {"type": "string", "description": "(POST) the granted scopes, space-separated."},
            },
        },
        "JWKS": {
            "type": "object",
            "required": ["keys"],
            "properties": {"keys": {"type": "array", "items": {"type": "object"}}},
        },
        "User": {
            "type": "object",
            "required": ["name", "admin", "robot", "created_at"],
            "properties": {
                "name": {"type": "string"},
                "admin": {"type": "boolean"},
                "robot": {"type": "boolean"},
                "created_at": {"type": "number"},
                "password": {"type": "string", "description": "Only when generated by the server (shown once)."},
                "may_administer": {"type": "boolean"},
                "grants": {"type": "array", "items": {"$ref": "#/components/schemas/Grant"}},
            },
        },
        "Grant": {
            "type": "object",
            "required": ["user", "pattern", "actions"],
            "properties": {
                "user": {"type": "string"},
                "pattern": {"type": "string"},
                "actions": {"type": "array", "items": {"type": "string"}},
            },
        },
        "GroupGrant": {
            "type": "object",
            "required": ["group", "pattern", "actions"],
            "properties": {
                "group": {"type": "string"},
                "pattern": {"type": "string"},
                "actions": {"type": "array", "items": {"type": "string"}},
            },
        },
        "AccessToken": {
            "type": "object",
            "required": ["id", "user", "name", "scope", "expires_at", "revoked_at", "created_at"],
            "properties": {
                "id": {"type": "string"},
                "user": {"type": "string"},
                "name": {"type": "string"},
                "scope": {"type": "array", "nullable": True, "items": {"type": "string"}},
                "expires_at": {"type": "number", "nullable": True},
                "revoked_at": {"type": "number", "nullable": True},
                "last_used_at": {"type": "number", "nullable": True},
                "created_at": {"type": "number"},
                "parent_id": {
                    "type": "string",
                    "nullable": True,
                    "description": "The access token this one was made with (revoking that one revokes this).",
                },
                "token": {"type": "string", "description": "The secret (``mrg_...``), only in the creation answer."},
            },
        },
        "NamedVisibility": {
            "type": "object",
            "required": ["name", "public"],
            "properties": {"name": {"type": "string"}, "public": {"type": "boolean"}, "created_at": {"type": "number"}},
        },
        # the admin API's request bodies: the very models the handlers validate with
        **{model.__name__: model_schema(model) for model in admin_models.MODELS},
    }

    def error_resp(text: str) -> dict[str, Any]:
        return _json(_ref("schemas", "ErrorEnvelope"), text, _API_VERSION)

    responses = {
        "BadRequest": error_resp(
            "Malformed request: NAME_INVALID, TAG_INVALID, DIGEST_INVALID, MANIFEST_INVALID, "
            "SIZE_INVALID, BLOB_UPLOAD_INVALID, MANIFEST_BLOB_UNKNOWN, "
            "PAGINATION_NUMBER_INVALID, ..."
        ),
        "Unauthorized": _json(
            _ref("schemas", "ErrorEnvelope"),
            "UNAUTHORIZED: no or invalid credentials.",
            {**_API_VERSION, "WWW-Authenticate": _ref("headers", "WWW-Authenticate")},
        ),
        "Denied": error_resp("DENIED: the credentials do not allow this."),
        "NotFound": error_resp("NAME_UNKNOWN, MANIFEST_UNKNOWN, BLOB_UNKNOWN, BLOB_UPLOAD_UNKNOWN, NOT_FOUND."),
        "Unsupported": error_resp("UNSUPPORTED: e.g. deletes are disabled on this registry."),
        "TooLarge": error_resp("The body is larger than this registry accepts (MANIFEST_INVALID, SIZE_INVALID)."),
        "RangeInvalid": _json(
            _ref("schemas", "ErrorEnvelope"),
            "RANGE_INVALID: a chunk out of order or a Range that cannot be satisfied.",
            {**_UPLOAD_PROGRESS, "Content-Range": _str_header("bytes */SIZE")},
        ),
        "TooManyRequests": _json(
            _ref("schemas", "ErrorEnvelope"),
            "TOOMANYREQUESTS: too many failed logins, or a quota / session limit.",
            {**_API_VERSION, "Retry-After": _ref("headers", "Retry-After")},
        ),
        "Unavailable": _json(
            _ref("schemas", "ErrorEnvelope"),
            "UNAVAILABLE: a storage or database service is down or busy; retry.",
            {**_API_VERSION, "Retry-After": _ref("headers", "Retry-After")},
        ),
        "InsufficientStorage": _json(
            _ref("schemas", "ErrorEnvelope"),
            'UNAVAILABLE, message "storage is full ...": the disk or quota under the blobs or the '
            "database is full; writes are refused until space is freed, reads keep working.",
            {**_API_VERSION, "Retry-After": _ref("headers", "Retry-After")},
        ),
    }
    for key, text in (
        ("BadRequest", "Malformed request (no body: HEAD)."),
        ("Unauthorized", "No or invalid credentials (no body: HEAD)."),
        ("Denied", "The credentials do not allow this (no body: HEAD)."),
        ("NotFound", "Unknown repository, manifest or blob (no body: HEAD)."),
        ("Unsupported", "Not supported here (no body: HEAD)."),
        ("TooManyRequests", "Too many requests (no body: HEAD)."),
        ("Unavailable", "A backend is down; retry (no body: HEAD)."),
    ):
        headers = dict(responses[key].get("headers", {}))
        responses["Head" + key] = _empty(text, headers)
    parameters = {
        "name": _param(
            "name",
            "path",
            {"type": "string", "pattern": NAME_PATTERN, "maxLength": 255},
            "Repository name: path components of lower-case letters and digits joined by '.', '_', "
            "'__' or '-'s, separated by '/' (send '/' literally, not as %2F).",
        ),
        "digest": _param(
            "digest",
            "path",
            {"type": "string", "pattern": DIGEST_PATTERN},
            "Content digest, ``algorithm:hex`` (sha256 and sha512 are accepted).",
        ),
        "reference": _param("reference", "path", {"type": "string"}, f"A tag (``{TAG_RE.pattern}``) or a digest."),
        "upload_id": _param("upload_id", "path", {"type": "string"}, "Upload session id, from the Location header."),
        "n": _param(
            "n", "query", {"type": "integer", "minimum": 0}, "At most this many results; a Link header points at the next page."
        ),
        "last": _param("last", "query", {"type": "string"}, "Answer only names lexically after this one."),
    }
    headers = {
        "Docker-Distribution-API-Version": {
            "description": "Always ``registry/2.0``.",
            "schema": {"type": "string", "enum": ["registry/2.0"]},
        },
        "Docker-Content-Digest": {
            "description": "Digest of the content.",
            "schema": {"type": "string", "pattern": DIGEST_PATTERN},
        },
        "WWW-Authenticate": {
            "description": "How to authenticate: ``Bearer realm=...,service=...,scope=...`` "
            "(token mode) or ``Basic realm=...`` (htpasswd mode).",
            "schema": {"type": "string"},
        },
        "Retry-After": {"description": "Seconds to wait before retrying.", "schema": {"type": "string"}},
        "Link": {"description": 'RFC 5988 link to the next page: ``<URL>; rel="next"``.', "schema": {"type": "string"}},
    }
    security = {
        "bearer": {
            "type": "http",
            "scheme": "bearer",
            "bearerFormat": "JWT",
            "description": "``auth.mode: token``: a JWT from ``/auth/token`` whose ``access`` claim covers "
            "the request (the 401's ``WWW-Authenticate`` names realm, service and scope). "
            "``/api/v1/`` also takes a token for the admin's own account.",
        },
        "basic": {
            "type": "http",
            "scheme": "basic",
            "description": "``auth.mode: htpasswd`` on ``/v2/``; in token mode on ``/auth/token`` and "
            "``/api/v1/`` (a password or an access token ``mrg_...`` as the password).",
        },
    }
    return {"schemas": schemas, "responses": responses, "parameters": parameters, "headers": headers, "securitySchemes": security}


# ----------------------------------------------------------------------------- /v2/
def _v2_paths() -> dict[str, Any]:
    manifest_content = {t: {"schema": _ref("schemas", "Manifest")} for t in MANIFEST_MEDIA_TYPES}
    manifest_headers = {
        **_API_VERSION,
        "Docker-Content-Digest": _ref("headers", "Docker-Content-Digest"),
        "ETag": _str_header("The digest, quoted."),
    }
    blob_headers = {
        **_API_VERSION,
        "Docker-Content-Digest": _ref("headers", "Docker-Content-Digest"),
        "ETag": _str_header("The digest, quoted."),
        "Accept-Ranges": _str_header("``bytes``"),
        "Content-Length": {"description": "Blob size.", "schema": {"type": "integer", "minimum": 0}},
    }
    content_range = _param(
        "Content-Range",
        "header",
        {"type": "string", "pattern": r"^\d+-\d+$"},
        "Chunk position, inclusive (``start-end``); absent for a streaming upload.",
    )
    digest_query = _param(
        "digest", "query", {"type": "string", "pattern": DIGEST_PATTERN}, "Digest of the whole blob: completes the upload."
    )
    octets = {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}
    return {
        "/v2/": {
            "get": {
                "tags": ["v2"],
                "operationId": "apiVersionCheck",
                "summary": "API version check",
                "description": "200 when the caller may use the API; with auth, 401 and a WWW-Authenticate challenge "
                "tell clients how to log in.",
                "responses": {
                    "200": _json({"type": "object"}, "The registry speaks OCI Distribution v2.", _API_VERSION),
                    **_errors(401, 429, 503),
                },
            }
        },
        "/v2/_catalog": {
            "get": {
                "tags": ["v2"],
                "operationId": "listRepositories",
                "summary": "List repositories",
                "description": "Lexically sorted, from the metadata index; at most 10,000 names without ``n``. "
                "With token auth only the repositories the caller may pull are listed.",
                "parameters": [_N, _LAST],
                "responses": {
                    "200": _json(
                        _ref("schemas", "Catalog"), "Repository names.", {**_API_VERSION, "Link": _ref("headers", "Link")}
                    ),
                    **_errors(400, *_AUTH_ERRORS),
                },
            }
        },
        "/v2/{name}/tags/list": {
            "get": {
                "tags": ["v2"],
                "operationId": "listTags",
                "summary": "List tags",
                "parameters": [_NAME, _N, _LAST],
                "responses": {
                    "200": _json(
                        _ref("schemas", "TagList"),
                        "Tags of the repository, lexically sorted.",
                        {**_API_VERSION, "Link": _ref("headers", "Link")},
                    ),
                    **_errors(400, 404, *_AUTH_ERRORS),
                },
            }
        },
        "/v2/{name}/manifests/{reference}": {
            "parameters": [_NAME, _REFERENCE],
            "get": {
                "tags": ["v2"],
                "operationId": "getManifest",
                "summary": "Pull a manifest",
                "description": "The bytes exactly as pushed, with their media type as Content-Type. If the Accept "
                "header names manifest types and not the stored one, 404 MANIFEST_UNKNOWN.",
                "parameters": [
                    _param("Accept", "header", {"type": "string"}, "Manifest media types the client reads."),
                    _param("If-None-Match", "header", {"type": "string"}, "A quoted digest: 304 if current."),
                ],
                "responses": {
                    "200": {"description": "The manifest.", "headers": manifest_headers, "content": manifest_content},
                    "304": _empty("Not modified (If-None-Match matched).", manifest_headers),
                    **_errors(400, 404, *_AUTH_ERRORS),
                },
            },
            "head": {
                "tags": ["v2"],
                "operationId": "headManifest",
                "summary": "Check a manifest exists",
                "parameters": [_param("Accept", "header", {"type": "string"}, "Manifest media types the client reads.")],
                "responses": {
                    "200": _empty("It exists; Content-Type and Content-Length as a GET would send.", manifest_headers),
                    **_errors(400, 404, *_AUTH_ERRORS, head=True),
                },
            },
            "put": {
                "tags": ["v2"],
                "operationId": "putManifest",
                "summary": "Push a manifest",
                "description": "Under a tag or its digest. Every referenced blob and child manifest must be in the "
                "repository (400 MANIFEST_BLOB_UNKNOWN otherwise); a ``subject`` is answered with "
                "``OCI-Subject``.",
                "requestBody": {"required": True, "content": manifest_content},
                "responses": {
                    "201": _empty(
                        "Stored.",
                        {
                            **_API_VERSION,
                            "Location": _str_header("URL of the manifest by digest."),
                            "Docker-Content-Digest": _ref("headers", "Docker-Content-Digest"),
                            "OCI-Subject": _str_header("Digest of the subject, when the manifest has one."),
                        },
                    ),
                    **_errors(400, 404, 413, *_WRITE_ERRORS),
                },
            },
            "delete": {
                "tags": ["v2"],
                "operationId": "deleteManifest",
                "summary": "Delete a manifest or a tag",
                "description": "By digest: the manifest and every tag pointing at it. By tag: only the tag.",
                "responses": {"202": _empty("Deleted.", _API_VERSION), **_errors(400, 404, 405, *_AUTH_ERRORS)},
            },
        },
        "/v2/{name}/blobs/{digest}": {
            "parameters": [_NAME, _DIGEST],
            "get": {
                "tags": ["v2"],
                "operationId": "getBlob",
                "summary": "Pull a blob",
                "parameters": [_param("Range", "header", {"type": "string"}, "``bytes=start-end``: 206 with that part.")],
                "responses": {
                    "200": {"description": "The blob.", "headers": blob_headers, "content": octets},
                    "206": {
                        "description": "Part of the blob.",
                        "content": octets,
                        "headers": {**blob_headers, "Content-Range": _str_header("``bytes start-end/size``")},
                    },
                    "307": _empty(
                        "Fetch it from this (presigned) URL instead (``storage.redirect``).",
                        {
                            **_API_VERSION,
                            "Location": _str_header("Where the blob is."),
                            "Docker-Content-Digest": _ref("headers", "Docker-Content-Digest"),
                        },
                    ),
                    **_errors(400, 404, 416, *_AUTH_ERRORS),
                },
            },
            "head": {
                "tags": ["v2"],
                "operationId": "headBlob",
                "summary": "Check a blob exists in the repository",
                "responses": {"200": _empty("It exists.", blob_headers), **_errors(400, 404, *_AUTH_ERRORS, head=True)},
            },
            "delete": {
                "tags": ["v2"],
                "operationId": "deleteBlob",
                "summary": "Unlink a blob from the repository",
                "responses": {
                    "202": _empty("Unlinked (the bytes go at the next garbage collection).", _API_VERSION),
                    **_errors(400, 404, 405, *_AUTH_ERRORS),
                },
            },
        },
        "/v2/{name}/blobs/uploads/": {
            "post": {
                "tags": ["v2"],
                "operationId": "startUpload",
                "summary": "Start an upload, upload in one go, or mount",
                "description": "Without parameters: opens a session (202 + Location). With ``digest``: the body is the "
                "whole blob (201). With ``mount`` and ``from``: links a blob of another repository the "
                "caller may pull (201), or opens a session when it cannot (202).",
                "parameters": [
                    _NAME,
                    digest_query,
                    _param("mount", "query", {"type": "string", "pattern": DIGEST_PATTERN}, "Digest to mount."),
                    _param("from", "query", {"type": "string"}, "Repository to mount from."),
                ],
                "requestBody": {"required": False, "content": octets},
                "responses": {
                    "201": _empty("Blob created (monolithic upload or mount).", _BLOB_CREATED),
                    "202": _empty("Session opened.", _UPLOAD_PROGRESS),
                    **_errors(400, 404, 413, *_WRITE_ERRORS),
                },
            }
        },
        "/v2/{name}/blobs/uploads/{upload_id}": {
            "parameters": [_NAME, _UPLOAD_ID],
            "patch": {
                "tags": ["v2"],
                "operationId": "uploadChunk",
                "summary": "Send a chunk",
                "description": "With Content-Range the chunk must start where the upload stands (416 otherwise); "
                "without it the body is appended (docker/podman streaming upload).",
                "parameters": [content_range],
                "requestBody": {"required": True, "content": octets},
                "responses": {"202": _empty("Chunk stored.", _UPLOAD_PROGRESS), **_errors(400, 404, 413, 416, *_WRITE_ERRORS)},
            },
            "put": {
                "tags": ["v2"],
                "operationId": "finishUpload",
                "summary": "Complete an upload",
                "description": "The (optional) body is a last chunk; the blob is stored only if its digest matches.",
                "parameters": [{**digest_query, "required": True}, content_range],
                "requestBody": {"required": False, "content": octets},
                "responses": {"201": _empty("Blob created.", _BLOB_CREATED), **_errors(400, 404, 413, 416, *_WRITE_ERRORS)},
            },
            "get": {
                "tags": ["v2"],
                "operationId": "uploadStatus",
                "summary": "Where an upload stands",
                "responses": {"204": _empty("Progress in Range.", _UPLOAD_PROGRESS), **_errors(400, 404, *_AUTH_ERRORS)},
            },
            "delete": {
                "tags": ["v2"],
                "operationId": "cancelUpload",
                "summary": "Cancel an upload",
                "responses": {"204": _empty("Cancelled.", _API_VERSION), **_errors(400, 404, *_AUTH_ERRORS)},
            },
        },
        "/v2/{name}/referrers/{digest}": {
            "get": {
                "tags": ["v2"],
                "operationId": "listReferrers",
                "summary": "Manifests whose subject is this digest",
                "parameters": [
                    _NAME,
                    _DIGEST,
                    _param("artifactType", "query", {"type": "string"}, "Only referrers of this artifact type."),
                ],
                "responses": {
                    "200": _json(
                        _ref("schemas", "ReferrersIndex"),
                        "An OCI image index of descriptors.",
                        {**_API_VERSION, "OCI-Filters-Applied": _str_header("``artifactType`` when filtered.")},
                        media_type=mt.OCI_INDEX,
                    ),
                    **_errors(400, 404, *_AUTH_ERRORS),
                },
            }
        },
    }


# ----------------------------------------------------------------------------- auth and admin
def _admin_paths() -> dict[str, Any]:
    def op(
        op_id: str,
        summary: str,
        responses: dict[str, Any],
        *,
        parameters: list[Any] | None = None,
        body: dict[str, Any] | None = None,
        errors: tuple[int, ...] = (400, 401, 403, 429, 503),
    ) -> dict[str, Any]:
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

    def obj(key: str, schema: dict[str, Any]) -> dict[str, Any]:
        return {"type": "object", "required": [key], "properties": {key: {"type": "array", "items": schema}}}

    user_param = _param("name", "path", {"type": "string"}, "User name.")
    token_id = _param("id", "path", {"type": "string"}, "Access token id.")
    no_content = {"204": _empty("Done.")}
    return {
        "/api/v1/me": {"get": op("getMe", "Who am I", {"200": _json(_ref("schemas", "User"), "The caller.")})},
        "/api/v1/me/tokens": {
            "get": op(
                "listMyTokens", "My access tokens", {"200": _json(obj("tokens", _ref("schemas", "AccessToken")), "Tokens.")}
            ),
            "post": op(
                "createMyToken",
                "Create an access token for myself",
                {"201": _json(_ref("schemas", "AccessToken"), "Created; ``token`` is the secret, shown once.")},
                body=_ref("schemas", "TokenCreate"),
                errors=(400, 401, 403, 404, 413, 429, 503),
            ),
        },
        "/api/v1/me/tokens/{id}": {
            "delete": op(
                "revokeMyToken",
                "Revoke one of my tokens",
                no_content,
                parameters=[token_id],
                errors=(400, 401, 403, 404, 429, 503),
            )
        },
        "/api/v1/repositories": {
            "get": op(
                "adminListRepositories",
                "Repositories with their visibility",
                {"200": _json(obj("repositories", _ref("schemas", "NamedVisibility")), "Repositories.")},
                parameters=[_param("n", "query", {"type": "integer", "minimum": 1, "maximum": 10000}, "Page size (100)."), _LAST],
            )
        },
        "/api/v1/repositories/{name}": {
            "delete": op(
                "deleteRepository",
                "Delete a repository (tags, manifests, links, uploads; blobs go at the next GC)",
                {
                    "202": _json(
                        {
                            "type": "object",
                            "required": ["repository", "deleted"],
                            "properties": {"repository": {"type": "string"}, "deleted": {"type": "object"}},
                        },
                        "Deleted.",
                        _API_VERSION,
                    )
                },
                parameters=[_NAME],
                errors=(400, 401, 403, 404, 405, 429, 503),
            )
        },
        "/api/v1/users": {
            "get": op("listUsers", "Users", {"200": _json(obj("users", _ref("schemas", "User")), "Users.")}),
            "post": op(
                "createUser",
                "Create a user",
                {"201": _json(_ref("schemas", "User"), "Created (``password`` when generated).")},
                body=_ref("schemas", "UserCreate"),
                errors=(400, 401, 403, 413, 429, 503),
            ),
        },
        "/api/v1/users/{name}": {
            "get": op(
                "getUser",
                "A user and their grants",
                {"200": _json(_ref("schemas", "User"), "The user.")},
                parameters=[user_param],
                errors=(400, 401, 403, 404, 429, 503),
            ),
            "delete": op(
                "deleteUser", "Delete a user", no_content, parameters=[user_param], errors=(400, 401, 403, 404, 429, 503)
            ),
        },
        "/api/v1/users/{name}/password": {
            "put": op(
                "setPassword",
                "Set a user's password",
                no_content,
                parameters=[user_param],
                body=_ref("schemas", "PasswordSet"),
                errors=(400, 401, 403, 404, 413, 429, 503),
            )
        },
        "/api/v1/grants": {
            "get": op(
                "listGrants",
                "Grants",
                {"200": _json(obj("grants", _ref("schemas", "Grant")), "Grants.")},
                parameters=[_param("user", "query", {"type": "string"}, "Only this user's.")],
            ),
            "post": op(
                "addGrant",
                "Grant a user actions on a repository pattern",
                {"201": _json(_ref("schemas", "Grant"), "Granted.")},
                body=_ref("schemas", "GrantCreate"),
                errors=(400, 401, 403, 404, 413, 429, 503),
            ),
            "delete": op(
                "revokeGrant",
                "Revoke a grant",
                no_content,
                errors=(400, 401, 403, 404, 429, 503),
                parameters=[
                    _param("user", "query", {"type": "string"}, "User.", required=True),
                    _param("pattern", "query", {"type": "string"}, "Pattern.", required=True),
                ],
            ),
        },
        "/api/v1/group-grants": {
            "get": op(
                "listGroupGrants",
                "Grants to directory groups",
                {"200": _json(obj("grants", _ref("schemas", "GroupGrant")), "Group grants.")},
                parameters=[_param("group", "query", {"type": "string"}, "Only this group's.")],
            ),
            "post": op(
                "addGroupGrant",
                "Grant every member of a directory group actions on a repository pattern",
                {"201": _json(_ref("schemas", "GroupGrant"), "Granted.")},
                body=_ref("schemas", "GroupGrantCreate"),
                errors=(400, 401, 403, 413, 429, 503),
            ),
            "delete": op(
                "revokeGroupGrant",
                "Revoke a group grant",
                no_content,
                errors=(400, 401, 403, 404, 429, 503),
                parameters=[
                    _param("group", "query", {"type": "string"}, "Group.", required=True),
                    _param("pattern", "query", {"type": "string"}, "Pattern.", required=True),
                ],
            ),
        },
        "/api/v1/tokens": {
            "get": op(
                "listTokens",
                "Access tokens",
                {"200": _json(obj("tokens", _ref("schemas", "AccessToken")), "Tokens.")},
                parameters=[_param("user", "query", {"type": "string"}, "Only this user's.")],
            ),
            "post": op(
                "createToken",
                "Create an access token for a user",
                {"201": _json(_ref("schemas", "AccessToken"), "Created; ``token`` is the secret, shown once.")},
                body=_ref("schemas", "AdminTokenCreate"),
                errors=(400, 401, 403, 404, 413, 429, 503),
            ),
        },
        "/api/v1/tokens/{id}": {
            "delete": op(
                "revokeToken", "Revoke an access token", no_content, parameters=[token_id], errors=(400, 401, 403, 404, 429, 503)
            )
        },
        "/api/v1/namespaces": {
            "get": op(
                "listNamespaces",
                "Namespaces",
                {"200": _json(obj("namespaces", _ref("schemas", "NamedVisibility")), "Namespaces.")},
            ),
            "post": op(
                "createNamespace",
                "Create a namespace",
                {"201": _json(_ref("schemas", "NamedVisibility"), "Created.")},
                body=_ref("schemas", "NamespaceCreate"),
                errors=(400, 401, 403, 413, 429, 503),
            ),
        },
        "/api/v1/visibility": {
            "put": op(
                "setVisibility",
                "Make a repository or namespace public or private",
                {
                    "200": _json(
                        {
                            "type": "object",
                            "required": ["public"],
                            "properties": {
                                "repository": {"type": "string"},
                                "namespace": {"type": "string"},
                                "public": {"type": "boolean"},
                            },
                        },
                        "Done.",
                    )
                },
                body=_ref("schemas", "VisibilitySet"),
                errors=(400, 401, 403, 413, 429, 503),
            )
        },
    }


def _auth_paths() -> dict[str, Any]:
    scope = _param(
        "scope",
        "query",
        {"type": "array", "items": {"type": "string"}},
        "``repository:NAME:pull,push`` or ``registry:catalog:*`` (repeatable).",
    )
    scope["explode"] = True
    token_ok = _json(
        _ref("schemas", "Token"),
        "A token (only the actions actually granted are in it).",
        {"Cache-Control": _str_header("``no-store``")},
    )
    return {
        "/auth/token": {
            "get": {
                "tags": ["auth"],
                "operationId": "getToken",
                "summary": "Docker token flow",
                "description": "Basic credentials (password, or an access token as the password), or none for an "
                "anonymous token (public repositories).",
                "security": [{"basic": []}, {}],
                "parameters": [
                    _param("service", "query", {"type": "string"}, "Must be the configured service."),
                    scope,
                    _param(
                        "offline_token", "query", {"type": "string", "enum": ["true", "false"]}, "``true``: also a refresh token."
                    ),
                ],
                "responses": {"200": token_ok, **_errors(400, 401, 429, 503)},
            },
            "post": {
                "tags": ["auth"],
                "operationId": "postToken",
                "summary": "OAuth2 token flow (docker, containerd)",
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/x-www-form-urlencoded": {
                            "schema": {
                                "type": "object",
                                "required": ["grant_type"],
                                "properties": {
                                    "grant_type": {"type": "string", "enum": ["password", "refresh_token"]},
                                    "username": {"type": "string"},
                                    "password": {"type": "string"},
                                    "refresh_token": {"type": "string"},
                                    "service": {"type": "string"},
                                    "scope": {"type": "string", "description": "Space-separated scopes."},
                                    "client_id": {"type": "string"},
                                    "access_type": {"type": "string", "enum": ["online", "offline"]},
                                },
                            }
                        }
                    },
                },
                "responses": {"200": token_ok, **_errors(400, 401, 413, 429, 503)},
            },
        },
        "/auth/jwks": {
            "get": {
                "tags": ["auth"],
                "operationId": "getJwks",
                "summary": "Public keys that verify Moorage tokens",
                "responses": {"200": _json(_ref("schemas", "JWKS"), "JSON Web Key Set.")},
            }
        },
        "/metrics": {
            "get": {
                "tags": ["operations"],
                "operationId": "metrics",
                "summary": "Prometheus metrics",
                "description": "Per-route request counts, latencies and bytes. In token mode any valid bearer token.",
                "responses": {
                    "200": {
                        "description": "Prometheus text exposition.",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    },
                    **_errors(401, 429),
                },
            }
        },
        "/api/openapi.json": {
            "get": {
                "tags": ["operations"],
                "operationId": "openapi",
                "summary": "This document",
                "security": [{}],
                "responses": {"200": _json({"type": "object"}, "OpenAPI 3.0 document.")},
            }
        },
    }


# ----------------------------------------------------------------------------- extensions
def _extension_paths() -> dict[str, Any]:
    """Insight, webhooks and audit, the pull-through cache / mirror status, health probes.

    Who may call each is its rule in :data:`moorage.api.routes.RULES`; credentials as for the admin
    API: basic with a password or access token, or a bearer token.  Errors use the same envelope as ``/v2/``; a bad
    parameter or body is a 400 (``UNSUPPORTED``, ``NAME_INVALID`` or ``PAGINATION_NUMBER_INVALID``)."""
    from ..insight.osv import SEVERITIES

    creds: list[dict[str, list[str]]] = [{"basic": []}, {"bearer": []}]

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
        out: dict[str, Any] = {
            "tags": [tag],
            "operationId": op_id,
            "summary": summary,
            "security": security or creds,
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
        return {"type": "object", "required": required, "properties": props}

    string, number, integer, boolean = {"type": "string"}, {"type": "number"}, {"type": "integer"}, {"type": "boolean"}

    def nullable(schema: dict[str, Any]) -> dict[str, Any]:
        return {**schema, "nullable": True}

    counts = {
        "type": "object",
        "additionalProperties": {"type": "integer"},
        "description": "Findings per severity (" + ", ".join(SEVERITIES) + ").",
    }
    str_map = {"type": "object", "additionalProperties": {"type": "string"}}
    skipped = {"type": "array", "items": {"type": "object"}, "description": "Files or layers not inventoried, and why."}
    repo_name = _ref("parameters", "name")
    reference = _param("reference", "path", {"type": "string"}, "A tag or a digest.")
    namespace = _param(
        "namespace", "path", {"type": "string", "maxLength": 255}, "Namespace (a repository name prefix; may hold '/')."
    )
    advisory = _param("advisory", "path", {"type": "string"}, "Advisory id (e.g. ``CVE-2024-1234``, ``GHSA-...``).")
    hook = _param("name", "path", {"type": "string"}, "Webhook name.")
    limit = _param("limit", "query", {"type": "integer", "minimum": 1, "maximum": 1000}, "Page size (default 100).")
    before = _param("before", "query", {"type": "integer", "minimum": 0}, "Only ids below this one (paging).")
    no_content = {"204": _empty("Done.")}
    admin_note = "Administrators only (``auth.mode: token``); with ``htpasswd`` any authenticated user, with ``none`` anyone."

    image = obj(
        ["digest", "platform", "scanned"],
        digest=string,
        platform=string,
        scanned=boolean,
        packages=integer,
        sboms=str_map,
        counts=counts,
        worst=string,
        findings={"type": "array", "items": {"type": "object"}},
        skipped=skipped,
    )
    scanned = obj(
        ["digest", "platform", "packages", "sboms", "counts", "skipped"],
        digest=string,
        platform=string,
        packages=integer,
        sboms=str_map,
        counts=counts,
        skipped=skipped,
    )
    search_hit = obj(
        ["repository", "digest", "package"],
        repository=string,
        digest=string,
        package=string,
        ecosystem=string,
        version=string,
        installed=string,
        fixed=nullable(string),
        severity=string,
    )
    webhook = obj(
        [
            "name",
            "url",
            "format",
            "actions",
            "repositories",
            "targets",
            "timeout",
            "max_attempts",
            "origin",
            "namespace",
            "created_by",
            "secret_set",
        ],
        name=string,
        url=string,
        format={"type": "string", "enum": ["distribution", "cloudevents"]},
        actions={"type": "array", "items": string},
        repositories={"type": "array", "items": string},
        targets={"type": "array", "items": string},
        timeout=number,
        max_attempts=integer,
        origin={"type": "string", "description": "``config`` (config file, read-only) or ``api``."},
        namespace=nullable(string),
        created_by=nullable(string),
        secret_set=boolean,
        secret={"type": "string", "description": "Only in the creation answer, when generated (shown once)."},
    )
    webhook_body = {
        "type": "object",
        "required": ["name", "url"],
        "additionalProperties": False,
        "properties": {
            "name": {"type": "string", "minLength": 1, "maxLength": 64, "pattern": r"^[A-Za-z0-9][A-Za-z0-9._-]*$"},
            "url": {"type": "string", "maxLength": 2048, "pattern": r"^https?://[^\s]+$"},
            "secret": {"type": "string", "description": "HMAC-SHA256 key of X-Moorage-Signature; absent = generated."},
            "format": {"type": "string", "enum": ["distribution", "cloudevents"]},
            "actions": {"type": "array", "minItems": 1, "items": {"type": "string", "enum": ["push", "pull", "delete", "mount"]}},
            "repositories": {
                "type": "array",
                "minItems": 1,
                "items": {"type": "string", "maxLength": 255},
                "description": "Repository patterns (``*`` matches any run of characters).",
            },
            "targets": {"type": "array", "minItems": 1, "items": {"type": "string", "enum": ["manifest", "tag", "blob"]}},
            "timeout": {"type": "number", "exclusiveMinimum": True, "minimum": 0, "maximum": 300},
            "max_attempts": {"type": "integer", "minimum": 1, "maximum": 1000},
        },
    }
    delivery = obj(
        [
            "id",
            "endpoint",
            "repository",
            "event_id",
            "action",
            "status",
            "attempts",
            "next_attempt_at",
            "last_status",
            "last_error",
            "created_at",
            "finished_at",
        ],
        id=integer,
        endpoint=string,
        repository=string,
        event_id=string,
        action=string,
        status={"type": "string", "enum": ["pending", "delivering", "delivered", "dead"]},
        attempts=integer,
        next_attempt_at=nullable(number),
        last_status=nullable(integer),
        last_error=nullable(string),
        created_at=number,
        finished_at=nullable(number),
    )
    audit_entry = obj(
        ["id", "time", "timestamp", "actor", "action", "repository", "target", "client_ip", "user_agent", "detail"],
        id=integer,
        time={"type": "string", "description": "RFC 3339."},
        timestamp=number,
        actor=nullable(string),
        action=string,
        repository=nullable(string),
        target=nullable(string),
        client_ip=nullable(string),
        user_agent=nullable(string),
        detail={"nullable": True},
        face={**nullable(string), "description": "Through which face: api, ui, cli, v2 ... (null on older entries)."},
        outcome={**nullable(string), "description": "ok or denied (null on older entries)."},
        summary={
            **string,
            "description": "What the entry records, in one line for people: a push's repo:tag and short digest, "
            "whose access token, what a garbage collection removed.",
        },
    )
    rule = obj(
        [
            "name",
            "src",
            "dst",
            "interval",
            "runs",
            "running",
            "last_start",
            "last_end",
            "last_status",
            "last_error",
            "last_summary",
        ],
        name=string,
        src=string,
        dst=string,
        interval=integer,
        tags=nullable(string),
        platforms={"type": "array", "items": string},
        runs=integer,
        running=boolean,
        last_start=nullable(number),
        last_end=nullable(number),
        last_status=nullable({"type": "string", "enum": ["ok", "error"]}),
        last_error=nullable(string),
        last_summary=nullable({"type": "object", "additionalProperties": {"type": "integer"}}),
    )
    upstream = obj(
        ["name", "url", "namespace", "tag_ttl", "authenticated", "stats"],
        name=string,
        url=string,
        namespace=string,
        tag_ttl=integer,
        authenticated=boolean,
        stats={"type": "object", "additionalProperties": {"type": "integer"}},
    )

    def time_q(key: str, text: str) -> dict[str, Any]:
        return _param(key, "query", {"type": "string"}, text)

    health = {"type": "object", "required": ["status"], "properties": {"status": {"type": "string", "enum": ["ok"]}}}
    ready = obj(
        ["status", "checks"],
        status={"type": "string", "enum": ["ok", "unavailable"]},
        checks={
            "type": "object",
            "additionalProperties": {"type": "string"},
            "description": "``database`` and ``storage``: ``ok`` or why not.",
        },
    )
    return {
        "/api/v1/insight/images/{name}/{reference}": {
            "get": op(
                "insight",
                "getImageFindings",
                "Findings of an image (each platform of an index)",
                {
                    "200": _json(
                        obj(
                            ["repository", "reference", "digest", "images"],
                            repository=string,
                            reference=string,
                            digest=string,
                            images={"type": "array", "items": image},
                        ),
                        "Packages and vulnerability findings; ``scanned: false`` before a scan.",
                    )
                },
                description="Needs the pull right on the repository (anonymous: public repositories); otherwise NAME_UNKNOWN.",
                parameters=[repo_name, reference],
                errors=(400, 401, 403, 404, 429, 503),
            ),
            "post": op(
                "insight",
                "scanImage",
                "Scan an image now",
                {"200": _json(obj(["images"], images={"type": "array", "items": scanned}), "Scan results.")},
                description="Needs the push right on the repository (DENIED otherwise).",
                parameters=[repo_name, reference, _param("force", "query", {"type": "string"}, "``1``: rescan even if known.")],
                errors=(400, 401, 403, 404, 429, 503),
            ),
        },
        "/api/v1/insight/search": {
            "get": op(
                "insight",
                "insightSearch",
                "Images holding a package, or affected by an advisory",
                {
                    "200": _json(
                        obj(["results"], results={"type": "array", "items": search_hit}),
                        "Matches in repositories the caller may pull.",
                    )
                },
                description="Exactly one of ``package`` and ``advisory``.",
                parameters=[
                    _param("package", "query", {"type": "string"}, "Package name."),
                    _param("version", "query", {"type": "string"}, "With ``package``: comparisons such as ``>=1.0,<2.0``."),
                    _param("advisory", "query", {"type": "string"}, "Advisory id."),
                ],
            )
        },
        "/api/v1/insight/status": {
            "get": op(
                "insight",
                "insightStatus",
                "State of the vulnerability database",
                {
                    "200": _json(
                        obj(
                            ["advisories", "generation", "last_import", "images"],
                            advisories=integer,
                            generation=integer,
                            last_import={"type": "object", "nullable": True},
                            images=integer,
                        ),
                        "Advisory count, import generation, last import, scanned images.",
                    )
                },
                description="Needs no credentials.",
                security=[{}, *creds],
                errors=(401, 429, 503),
            )
        },
        "/api/v1/insight/policies": {
            "get": op(
                "insight",
                "listInsightPolicies",
                "Pull policies by namespace",
                {
                    "200": _json(
                        obj(["policies"], policies={**str_map, "description": "namespace -> block_severity"}), "Policies."
                    )
                },
                description=admin_note,
            )
        },
        "/api/v1/insight/policies/{namespace}": {
            "put": op(
                "insight",
                "setInsightPolicy",
                "Refuse pulls of images with findings at or above a severity",
                {"200": _json(obj(["namespace", "block_severity"], namespace=string, block_severity=string), "Set.")},
                description=admin_note,
                parameters=[namespace],
                body=obj(["block_severity"], block_severity={"type": "string", "enum": list(SEVERITIES[1:])}),
                errors=(400, 401, 403, 413, 429, 503),
            ),
            "delete": op(
                "insight",
                "deleteInsightPolicy",
                "Remove a namespace's policy",
                no_content,
                description=admin_note,
                parameters=[namespace],
            ),
        },
        "/api/v1/insight/allowlist/{namespace}": {
            "get": op(
                "insight",
                "getInsightAllowlist",
                "Advisories ignored in a namespace",
                {
                    "200": _json(
                        obj(
                            ["allowlist"],
                            allowlist={
                                "type": "array",
                                "items": obj(["id", "expires_at"], id=string, expires_at=nullable(number)),
                            },
                        ),
                        "Entries.",
                    )
                },
                description=admin_note,
                parameters=[namespace],
            )
        },
        "/api/v1/insight/allowlist/{namespace}/{advisory}": {
            "put": op(
                "insight",
                "allowAdvisory",
                "Ignore an advisory in a namespace",
                {
                    "200": _json(
                        obj(["namespace", "id", "expires_at"], namespace=string, id=string, expires_at=nullable(number)),
                        "Allowed.",
                    )
                },
                description=admin_note,
                parameters=[namespace, advisory],
                body={
                    "type": "object",
                    "properties": {
                        "expires_in_days": {"type": "number", "exclusiveMinimum": True, "minimum": 0, "maximum": 36500},
                        "reason": {"type": "string", "maxLength": 1000},
                    },
                },
                errors=(400, 401, 403, 413, 429, 503),
            ),
            "delete": op(
                "insight",
                "disallowAdvisory",
                "Stop ignoring an advisory",
                no_content,
                description=admin_note,
                parameters=[namespace, advisory],
                errors=(400, 401, 403, 404, 429, 503),
            ),
        },
        "/api/v1/webhooks": {
            "get": op(
                "events",
                "listWebhooks",
                "Webhooks the caller administers",
                {"200": _json(obj(["webhooks"], webhooks={"type": "array", "items": webhook}), "Webhooks.")},
                description="Administrators see all; namespace administrators those of their namespaces.",
            ),
            "post": op(
                "events",
                "addWebhook",
                "Add a webhook",
                {"201": _json(webhook, "Created (``secret`` when generated, shown once).")},
                description="A namespace administrator's repository patterns must all lie in one namespace they administer.",
                body=webhook_body,
                errors=(400, 401, 403, 413, 429, 503),
            ),
        },
        "/api/v1/webhooks/{name}": {
            "get": op(
                "events",
                "getWebhook",
                "A webhook",
                {"200": _json(webhook, "The webhook.")},
                parameters=[hook],
                errors=(400, 401, 403, 404, 429, 503),
            ),
            "delete": op(
                "events",
                "deleteWebhook",
                "Delete a webhook (not one from the config file: 400)",
                no_content,
                parameters=[hook],
                errors=(400, 401, 403, 404, 429, 503),
            ),
        },
        "/api/v1/webhooks/{name}/deliveries": {
            "get": op(
                "events",
                "listDeliveries",
                "Deliveries of a webhook, newest first",
                {
                    "200": _json(
                        obj(["webhook", "deliveries"], webhook=string, deliveries={"type": "array", "items": delivery}),
                        "Deliveries.",
                    )
                },
                parameters=[
                    hook,
                    _param(
                        "status",
                        "query",
                        {"type": "string", "enum": ["pending", "delivering", "delivered", "dead"]},
                        "Only these.",
                    ),
                    limit,
                    before,
                ],
                errors=(400, 401, 403, 404, 429, 503),
            )
        },
        "/api/v1/webhooks/{name}/deliveries/{id}/retry": {
            "post": op(
                "events",
                "retryDelivery",
                "Put a dead delivery back in the queue",
                {"202": _json(obj(["id", "status"], id=integer, status={"type": "string", "enum": ["pending"]}), "Queued.")},
                parameters=[hook, _param("id", "path", {"type": "string"}, "Delivery id.")],
                errors=(400, 401, 403, 404, 429, 503),
            )
        },
        "/api/v1/audit": {
            "get": op(
                "events",
                "queryAudit",
                "Audit log, newest first",
                {
                    "200": _json(
                        obj(
                            ["entries", "next"],
                            entries={"type": "array", "items": audit_entry},
                            next={"type": "integer", "nullable": True, "description": "``before`` of the next page, or null."},
                        ),
                        "Entries.",
                    )
                },
                description="Administrators read everything; namespace administrators their namespaces' entries and "
                "their own; other users their own.",
                parameters=[
                    _param("actor", "query", {"type": "string", "maxLength": 255}, "User name."),
                    _param(
                        "repository", "query", {"type": "string", "maxLength": 255}, "Exact name, or a prefix ending in ``*``."
                    ),
                    _param("action", "query", {"type": "string", "maxLength": 255}, "Action."),
                    time_q("since", "RFC 3339 time or a duration back from now (e.g. ``1h``)."),
                    time_q("until", "RFC 3339 time or a duration back from now."),
                    limit,
                    before,
                ],
            )
        },
        "/api/v1/proxy": {
            "get": op(
                "proxy",
                "proxyStatus",
                "Pull-through cache upstreams and their counters",
                {"200": _json(obj(["upstreams"], upstreams={"type": "array", "items": upstream}), "Upstreams.")},
                description="Only when ``proxy.upstreams`` is configured (404 otherwise). " + admin_note,
                errors=(401, 403, 404, 429, 503),
            )
        },
        "/api/v1/mirror": {
            "get": op(
                "proxy",
                "mirrorStatus",
                "Scheduled mirror rules and their last runs",
                {
                    "200": _json(
                        obj(
                            ["runner", "rules"],
                            runner={"type": "boolean", "description": "Whether this process runs the rules."},
                            rules={"type": "array", "items": rule},
                        ),
                        "Rules.",
                    )
                },
                description="Only when ``proxy.mirror_rules`` is configured (404 otherwise). " + admin_note,
                errors=(401, 403, 404, 429, 503),
            )
        },
        "/api/v1/mirror/{rule}/run": {
            "post": op(
                "proxy",
                "runMirrorRule",
                "Run a mirror rule now",
                {"202": _json(rule, "Woken up; the run proceeds in the background.")},
                description="503 when another worker or replica is the scheduler's leader (it runs the rules). " + admin_note,
                parameters=[_param("rule", "path", {"type": "string"}, "Rule name.")],
                errors=(401, 403, 404, 429, 503),
            )
        },
        "/healthz": {
            "get": op(
                "operations",
                "healthz",
                "Liveness: the process answers",
                {"200": _json(health, "Alive.")},
                security=[{}],
                errors=(),
            )
        },
        "/readyz": {
            "get": op(
                "operations",
                "readyz",
                "Readiness: database and storage answer",
                {
                    "200": _json(ready, "Ready."),
                    "503": _json(ready, "A backend is down.", {"Retry-After": _ref("headers", "Retry-After")}),
                },
                security=[{}],
                errors=(),
            )
        },
    }


#: Routes registered under a second spelling (without the trailing slash clients omit).
_ALIASES = {"/v2": "/v2/", "/v2/{name}/blobs/uploads": "/v2/{name}/blobs/uploads/"}


def _with_aliases(paths: dict[str, Any]) -> dict[str, Any]:
    """Each alias listed as its own path (an operationId must be unique: suffixed)."""
    out = dict(paths)
    for alias, original in _ALIASES.items():
        out[alias] = {
            method: {**op, "operationId": op["operationId"] + "NoSlash"} if isinstance(op, dict) and "operationId" in op else op
            for method, op in paths[original].items()
        }
    return out


@lru_cache(maxsize=1)
def document() -> dict[str, Any]:
    """The whole OpenAPI 3.0.3 document (built once; treat it as read-only)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        ver = version("moorage")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        ver = "0"
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "Moorage container registry API",
            "version": ver,
            "description": (
                "The OCI Distribution Spec v1.1 API (``/v2/``), the Docker token server (``/auth/``), the admin API "
                "(``/api/v1/``) and metrics.\n\n"
                "Authentication depends on ``auth.mode``: ``none`` (nothing needed), ``htpasswd`` (HTTP basic on "
                "every ``/v2/`` request), ``token`` (``/v2/`` needs a bearer JWT from ``/auth/token``; a 401 carries "
                "``WWW-Authenticate: Bearer realm=...,service=...,scope=...`` naming exactly what to ask for). "
                'Errors are always ``{"errors": [{"code", "message", "detail"}]}`` with a code from the '
                "OCI error table."
            ),
            "license": {"name": "Apache-2.0"},
        },
        "tags": [
            {"name": "v2", "description": "OCI Distribution Spec v1.1"},
            {"name": "auth", "description": "Token server (auth.mode: token)"},
            {"name": "admin", "description": "Admin API (auth.mode: token)"},
            {"name": "insight", "description": "Image findings, package search, pull policies"},
            {"name": "events", "description": "Webhooks and the audit log"},
            {"name": "proxy", "description": "Pull-through cache and mirror rules (when configured)"},
            {"name": "operations", "description": "Metrics, health probes and this document"},
        ],
        "security": [{}, {"bearer": []}, {"basic": []}],
        "paths": _with_aliases({**_v2_paths(), **_auth_paths(), **_admin_paths(), **_extension_paths()}),
        "components": _components(),
    }


_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")


def registered(router: web.UrlDispatcher) -> set[tuple[str, str]]:
    """(method, path template) of every route the running app has (aiohttp's implicit HEAD
    of a GET included; the regular expressions of path variables left out)."""
    found: set[tuple[str, str]] = set()
    for route in router.routes():
        resource = route.resource
        if resource is None:
            continue
        info = resource.get_info()
        path = info.get("formatter") or info.get("path") or resource.canonical
        found.add((route.method.lower(), str(path)))
    return found


def document_for(router: web.UrlDispatcher) -> dict[str, Any]:
    """The document restricted to what this app answers: a path/method is listed only when a
    route for it is registered in the running configuration (auth mode, extensions on or off),
    so a client never reads of an endpoint that answers 404 here."""
    have = registered(router)
    paths: dict[str, Any] = {}
    for path, item in document()["paths"].items():
        kept = {k: v for k, v in item.items() if k not in _METHODS or (k, path) in have}
        if any(k in _METHODS for k in kept):
            paths[path] = kept
    return {**document(), "paths": paths}


#: The served bytes per app (its router is frozen once it serves, so they never change).
_DOCUMENT_BYTES: weakref.WeakKeyDictionary[web.Application, bytes] = weakref.WeakKeyDictionary()


@routes.get("/api/openapi.json", name=route_names.OPENAPI)
async def openapi_json(request: web.Request) -> web.Response:
    """Public (:data:`moorage.api.routes.RULES`).  Built on the first request (the router is
    complete and frozen by then) and kept for the app."""
    body = _DOCUMENT_BYTES.get(request.app)
    if body is None:
        body = _DOCUMENT_BYTES[request.app] = json.dumps(document_for(request.app.router), indent=1, sort_keys=False).encode()
    return web.Response(body=body, content_type=JSON)
