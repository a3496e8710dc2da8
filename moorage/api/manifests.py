"""Manifests: ``GET``/``HEAD``/``PUT``/``DELETE /v2/<name>/manifests/<reference>``.

Bytes are served exactly as pushed.  Content negotiation: the stored media type is served
unless the request's ``Accept`` names manifest types and none of them is the stored one
(then 404 MANIFEST_UNKNOWN, as Distribution does for clients that cannot read an index).
"""

from __future__ import annotations

from aiohttp import web

from .. import errors
from ..metadata.store import ManifestRecord
from ..registry import mediatypes as mt
from . import apidoc as oa
from . import routes as route_names
from .blobs import NAME
from .common import API_HEADERS, SETTINGS, publish, read_bounded, reader, request_principal, service
from .routes import Rule
from .routing import RouteTable

routes = RouteTable()

# -- OpenAPI: parts of this module's route operations (moorage.api.apidoc) --
_MANIFEST_CONTENT = {t: {"schema": oa.ref("schemas", "Manifest")} for t in oa.MANIFEST_MEDIA_TYPES}
_MANIFEST_HEADERS = {
    **oa.API_VERSION,
    "Docker-Content-Digest": oa.ref("headers", "Docker-Content-Digest"),
    "ETag": oa.str_header("The digest, quoted."),
}
#: Path-level keys shared by the operations of ``/v2/{name}/manifests/{reference}``.
_MANIFEST_PATH = {"parameters": [oa.NAME, oa.REFERENCE]}


def _acceptable(request: web.Request, media_type: str) -> bool:
    accepted: set[str] = set()
    for header in request.headers.getall("Accept", []):
        for part in header.split(","):
            value = part.split(";")[0].strip().lower()
            if value:
                accepted.add(value)
    if not accepted or "*/*" in accepted or "application/*" in accepted or media_type in accepted:
        return True
    return not (accepted & (mt.MANIFEST_TYPES | mt.DOCKER_SCHEMA1))


def _headers(record: ManifestRecord) -> dict[str, str]:
    return {
        **API_HEADERS,
        "Content-Type": record.media_type,
        "Docker-Content-Digest": record.digest,
        "ETag": f'"{record.digest}"',
    }


async def _lookup(request: web.Request, *, pull: bool = False) -> ManifestRecord:
    """The manifest the request names; ``pull``: a GET (the registry service's pull rule applies)."""
    name, reference = request.match_info["name"], request.match_info["reference"]
    svc = service(request)
    try:
        record = await (svc.serve_manifest if pull else svc.get_manifest)(name, reference, reader(request))
    except errors.TagInvalid:
        # A reference that cannot be a tag names no manifest: 404 MANIFEST_UNKNOWN (what
        # Distribution answers and the conformance suites expect), not a 400 for a read.
        raise errors.ManifestUnknown(detail={"reference": reference[:300]}) from None
    if not _acceptable(request, record.media_type):
        raise errors.ManifestUnknown(
            f"manifest is of type {record.media_type}, which the request's Accept header excludes",
            detail={"reference": reference, "mediaType": record.media_type},
        )
    return record


MANIFEST_GET_DOC = {
    "tags": ["v2"],
    "operationId": "getManifest",
    "summary": "Pull a manifest",
    "description": "The bytes exactly as pushed, with their media type as Content-Type. If the Accept header names manifest types and not the stored one, 404 MANIFEST_UNKNOWN.",
    "parameters": [
        oa.param("Accept", "header", {"type": "string"}, "Manifest media types the client reads."),
        oa.param("If-None-Match", "header", {"type": "string"}, "A quoted digest: 304 if current."),
    ],
    "responses": {
        "200": {"description": "The manifest.", "headers": _MANIFEST_HEADERS, "content": _MANIFEST_CONTENT},
        "304": oa.empty("Not modified (If-None-Match matched).", _MANIFEST_HEADERS),
        **oa.errors(400, 404, *oa.AUTH_ERRORS),
    },
}


@routes.get(
    f"/v2/{NAME}/manifests/{{reference}}",
    name=route_names.MANIFEST_GET,
    rule=Rule.PULL,
    doc=MANIFEST_GET_DOC,
    path_item=_MANIFEST_PATH,
)
async def get_manifest(request: web.Request) -> web.Response:
    record = await _lookup(request, pull=request.method == "GET")  # (aiohttp may route a HEAD here)
    if request.headers.get("If-None-Match") == f'"{record.digest}"':
        return web.Response(status=304, headers=_headers(record))
    reference = request.match_info["reference"]
    await publish(
        request,
        "pull",
        "manifest",
        request.match_info["name"],
        digest=record.digest,
        media_type=record.media_type,
        size=record.size,
        tag=None if ":" in reference else reference,
    )
    return web.Response(body=record.payload, headers=_headers(record))


MANIFEST_HEAD_DOC = {
    "tags": ["v2"],
    "operationId": "headManifest",
    "summary": "Check a manifest exists",
    "parameters": [oa.param("Accept", "header", {"type": "string"}, "Manifest media types the client reads.")],
    "responses": {
        "200": oa.empty("It exists; Content-Type and Content-Length as a GET would send.", _MANIFEST_HEADERS),
        **oa.errors(400, 404, *oa.AUTH_ERRORS, head=True),
    },
}


@routes.head(
    f"/v2/{NAME}/manifests/{{reference}}",
    name=route_names.MANIFEST_HEAD,
    rule=Rule.PULL,
    doc=MANIFEST_HEAD_DOC,
    path_item=_MANIFEST_PATH,
)
async def head_manifest(request: web.Request) -> web.Response:
    record = await _lookup(request)
    headers = _headers(record)
    headers["Content-Length"] = str(record.size)
    return web.Response(headers=headers)


MANIFEST_PUT_DOC = {
    "tags": ["v2"],
    "operationId": "putManifest",
    "summary": "Push a manifest",
    "description": "Under a tag or its digest. Every referenced blob and child manifest must be in the repository (400 MANIFEST_BLOB_UNKNOWN otherwise); a ``subject`` is answered with ``OCI-Subject``.",
    "requestBody": {"required": True, "content": _MANIFEST_CONTENT},
    "responses": {
        "201": oa.empty(
            "Stored.",
            {
                **oa.API_VERSION,
                "Location": oa.str_header("URL of the manifest by digest."),
                "Docker-Content-Digest": oa.ref("headers", "Docker-Content-Digest"),
                "OCI-Subject": oa.str_header("Digest of the subject, when the manifest has one."),
            },
        ),
        **oa.errors(400, 404, 413, *oa.WRITE_ERRORS),
    },
}


@routes.put(
    f"/v2/{NAME}/manifests/{{reference}}",
    name=route_names.MANIFEST_PUT,
    rule=Rule.PUSH,
    doc=MANIFEST_PUT_DOC,
    path_item=_MANIFEST_PATH,
)
async def put_manifest(request: web.Request) -> web.Response:
    name, reference = request.match_info["name"], request.match_info["reference"]
    body = await read_bounded(request, request.app[SETTINGS].max_manifest_bytes)
    result = await service(request).put_manifest(
        name, reference, body, request.headers.get("Content-Type"), request_principal(request)
    )
    headers = {
        **API_HEADERS,
        "Location": f"/v2/{name}/manifests/{result.digest}",
        "Docker-Content-Digest": result.digest,
        "Content-Length": "0",
    }
    if result.subject:
        headers["OCI-Subject"] = result.subject
    return web.Response(status=201, headers=headers)


MANIFEST_DELETE_DOC = {
    "tags": ["v2"],
    "operationId": "deleteManifest",
    "summary": "Delete a manifest or a tag",
    "description": "By digest: the manifest and every tag pointing at it. By tag: only the tag.",
    "responses": {"202": oa.empty("Deleted.", oa.API_VERSION), **oa.errors(400, 404, 405, *oa.AUTH_ERRORS)},
}


@routes.delete(
    f"/v2/{NAME}/manifests/{{reference}}",
    name=route_names.MANIFEST_DELETE,
    rule=Rule.DELETE,
    doc=MANIFEST_DELETE_DOC,
    path_item=_MANIFEST_PATH,
)
async def delete_manifest(request: web.Request) -> web.Response:
    name, reference = request.match_info["name"], request.match_info["reference"]
    await service(request).delete_manifest(name, reference, request_principal(request))
    return web.Response(status=202, headers=API_HEADERS)
