"""The OpenAPI 3.0 document of Moorage's HTTP API, served at ``GET /api/openapi.json``.

Each route's operation object is declared with the route, next to its handler
(:mod:`moorage.api.routing`; the building blocks in :mod:`moorage.api.apidoc`), so a change to a
route and to its description land in the same diff.  The served document is assembled from the
app's :class:`~moorage.api.routing.RouteRegistry`: the shared ``components`` here, plus the
operations of the routes this app registered -- a path/method is listed exactly when a route for
it is registered in the running configuration (auth mode, extensions on or off), so a client
never reads of an endpoint that answers 404 here.

It is the contract that ``tests/test_fuzz_openapi.py`` fuzzes with Schemathesis: every status
code, header and body a route can answer must be in it, so the document stays honest about what
clients really get (and the fuzzer finds the 500s).

What is described: ``/v2/`` (the OCI Distribution Spec v1.1 API as Moorage implements it, with
the spec's error envelope ``{"errors": [{"code", "message", "detail"}]}`` on every 4xx/5xx), the
token server (``/auth/token``, ``/auth/jwks``), the admin API and the extensions' APIs
(``/api/v1/...``), ``/metrics``, ``/healthz``, ``/readyz``.  Not described: the web UI (``/``,
``/ui/...``, ``/static/...``), HTML pages rather than an API (declared ``UNDOCUMENTED``).

The document is public: it says nothing a reader of the source could not learn.
"""

from __future__ import annotations

import json
import weakref
from functools import lru_cache
from typing import Any

from aiohttp import web
from pydantic import BaseModel

from ..registry import mediatypes as mt
from ..registry.names import TAG_RE
from . import admin_models
from . import apidoc as oa
from . import routes as route_names
from .routes import Rule
from .routing import ROUTE_REGISTRY, UNDOCUMENTED, RouteRegistry, RouteTable

routes = RouteTable()


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
                "digest": {"type": "string", "pattern": oa.DIGEST_PATTERN},
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
        return oa.json_body(oa.ref("schemas", "ErrorEnvelope"), text, oa.API_VERSION)

    responses = {
        "BadRequest": error_resp(
            "Malformed request: NAME_INVALID, TAG_INVALID, DIGEST_INVALID, MANIFEST_INVALID, "
            "SIZE_INVALID, BLOB_UPLOAD_INVALID, MANIFEST_BLOB_UNKNOWN, "
            "PAGINATION_NUMBER_INVALID, ..."
        ),
        "Unauthorized": oa.json_body(
            oa.ref("schemas", "ErrorEnvelope"),
            "UNAUTHORIZED: no or invalid credentials.",
            {**oa.API_VERSION, "WWW-Authenticate": oa.ref("headers", "WWW-Authenticate")},
        ),
        "Denied": error_resp("DENIED: the credentials do not allow this."),
        "NotFound": error_resp("NAME_UNKNOWN, MANIFEST_UNKNOWN, BLOB_UNKNOWN, BLOB_UPLOAD_UNKNOWN, NOT_FOUND."),
        "Unsupported": error_resp("UNSUPPORTED: e.g. deletes are disabled on this registry."),
        "TooLarge": error_resp("The body is larger than this registry accepts (MANIFEST_INVALID, SIZE_INVALID)."),
        "RangeInvalid": oa.json_body(
            oa.ref("schemas", "ErrorEnvelope"),
            "RANGE_INVALID: a chunk out of order or a Range that cannot be satisfied.",
            {**oa.UPLOAD_PROGRESS, "Content-Range": oa.str_header("bytes */SIZE")},
        ),
        "TooManyRequests": oa.json_body(
            oa.ref("schemas", "ErrorEnvelope"),
            "TOOMANYREQUESTS: too many failed logins, or a quota / session limit.",
            {**oa.API_VERSION, "Retry-After": oa.ref("headers", "Retry-After")},
        ),
        "Unavailable": oa.json_body(
            oa.ref("schemas", "ErrorEnvelope"),
            "UNAVAILABLE: a storage or database service is down or busy; retry.",
            {**oa.API_VERSION, "Retry-After": oa.ref("headers", "Retry-After")},
        ),
        "InsufficientStorage": oa.json_body(
            oa.ref("schemas", "ErrorEnvelope"),
            'UNAVAILABLE, message "storage is full ...": the disk or quota under the blobs or the '
            "database is full; writes are refused until space is freed, reads keep working.",
            {**oa.API_VERSION, "Retry-After": oa.ref("headers", "Retry-After")},
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
        responses["Head" + key] = oa.empty(text, headers)
    parameters = {
        "name": oa.param(
            "name",
            "path",
            {"type": "string", "pattern": oa.NAME_PATTERN, "maxLength": 255},
            "Repository name: path components of lower-case letters and digits joined by '.', '_', "
            "'__' or '-'s, separated by '/' (send '/' literally, not as %2F).",
        ),
        "digest": oa.param(
            "digest",
            "path",
            {"type": "string", "pattern": oa.DIGEST_PATTERN},
            "Content digest, ``algorithm:hex`` (sha256 and sha512 are accepted).",
        ),
        "reference": oa.param("reference", "path", {"type": "string"}, f"A tag (``{TAG_RE.pattern}``) or a digest."),
        "upload_id": oa.param("upload_id", "path", {"type": "string"}, "Upload session id, from the Location header."),
        "n": oa.param(
            "n", "query", {"type": "integer", "minimum": 0}, "At most this many results; a Link header points at the next page."
        ),
        "last": oa.param("last", "query", {"type": "string"}, "Answer only names lexically after this one."),
    }
    headers = {
        "Docker-Distribution-API-Version": {
            "description": "Always ``registry/2.0``.",
            "schema": {"type": "string", "enum": ["registry/2.0"]},
        },
        "Docker-Content-Digest": {
            "description": "Digest of the content.",
            "schema": {"type": "string", "pattern": oa.DIGEST_PATTERN},
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


@lru_cache(maxsize=1)
def _frame() -> dict[str, Any]:
    """Everything but the paths (built once; treat it as read-only)."""
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
        "components": _components(),
    }


def paths_of(registry: RouteRegistry) -> dict[str, Any]:
    """The ``paths`` of the routes in ``registry``: each documented route's operation under its
    path template and method, with the path-level keys its declaration shares (``parameters``)."""
    paths: dict[str, dict[str, Any]] = {}
    for template, spec in registry.templates():
        if spec.doc is UNDOCUMENTED:
            continue
        item = paths.setdefault(template, dict(spec.path_item))
        for key, value in spec.path_item.items():
            if item.get(key) != value:
                raise ValueError(f"{template}: the routes of this path declare different {key!r}")
        method = spec.method.lower()
        if method in item:
            raise ValueError(f"{spec.method} {template} declared twice ({spec.name})")
        item[method] = dict(spec.doc)
    return paths


def document_for(app: web.Application) -> dict[str, Any]:
    """The document of what ``app`` registered (call it once the routes are all added)."""
    return {**_frame(), "paths": paths_of(app[ROUTE_REGISTRY])}


#: The served bytes per app (its router is frozen once it serves, so they never change).
_DOCUMENT_BYTES: weakref.WeakKeyDictionary[web.Application, bytes] = weakref.WeakKeyDictionary()


OPENAPI_DOC = oa.op(
    "operations",
    "openapi",
    "This document",
    {"200": oa.json_body({"type": "object"}, "OpenAPI 3.0 document.")},
    security=[{}],
    errors=(),
)


@routes.get("/api/openapi.json", name=route_names.OPENAPI, rule=Rule.PUBLIC, doc=OPENAPI_DOC)
async def openapi_json(request: web.Request) -> web.Response:
    """Public.  Built on the first request (every route is registered by then) and kept for the app."""
    body = _DOCUMENT_BYTES.get(request.app)
    if body is None:
        body = _DOCUMENT_BYTES[request.app] = json.dumps(document_for(request.app), indent=1, sort_keys=False).encode()
    return web.Response(body=body, content_type=oa.JSON)
