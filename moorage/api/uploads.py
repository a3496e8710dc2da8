"""Blob uploads: ``POST``/``PATCH``/``PUT``/``GET``/``DELETE`` under ``/v2/<name>/blobs/uploads/``.

Supports every flow of the spec: monolithic ``POST ?digest=``, ``POST`` then ``PUT``, chunked
``PATCH`` with ``Content-Range`` (order enforced, 416 otherwise), the streaming ``PATCH``
without ``Content-Range`` that docker and podman send, status ``GET``, cancel ``DELETE`` and
cross-repository mount.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TypeVar

from aiohttp import web

from ..metadata.store import UploadRecord
from ..registry.service import UploadOutOfOrder
from . import apidoc as oa
from . import routes as route_names
from .blobs import NAME
from .common import API_HEADERS, UPLOAD_RECORD, body_chunks, content_range, has_body, request_principal, service, upload_location
from .routes import Rule
from .routing import RouteTable

routes = RouteTable()

# -- OpenAPI: parts of this module's route operations (moorage.api.apidoc) --
_CONTENT_RANGE = oa.param(
    "Content-Range",
    "header",
    {"type": "string", "pattern": "^\\d+-\\d+$"},
    "Chunk position, inclusive (``start-end``); absent for a streaming upload.",
)
_DIGEST_QUERY = oa.param(
    "digest", "query", {"type": "string", "pattern": oa.DIGEST_PATTERN}, "Digest of the whole blob: completes the upload."
)
_OCTETS = {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}
#: Path-level keys shared by the operations of ``/v2/{name}/blobs/uploads/{upload_id}``.
_UPLOAD_PATH = {"parameters": [oa.NAME, oa.UPLOAD_ID]}
T = TypeVar("T")


def _progress_headers(record: UploadRecord) -> dict[str, str]:
    """Where an upload stands: sent on every upload response, and with a 416 for a misplaced chunk."""
    return {
        "Location": upload_location(record.repository, record.id),
        "Range": f"0-{max(record.size - 1, 0)}",
        "Docker-Upload-UUID": record.id,
        "Blob-Upload-Session-ID": record.id,
    }


def _progress(record: UploadRecord, status: int) -> web.Response:
    return web.Response(status=status, headers={**API_HEADERS, **_progress_headers(record), "Content-Length": "0"})


async def _reporting_progress(call: Awaitable[T]) -> T:
    """Await ``call``; a 416 for an out-of-order chunk carries the upload's current Range."""
    try:
        return await call
    except UploadOutOfOrder as exc:
        exc.headers.update(_progress_headers(exc.record))
        raise


def _owner(request: web.Request) -> str:
    """Whom the per-user cap on open sessions counts this session against."""
    user = request.get("user")
    return str(user)[:64] if user else f"anon:{request.remote or ''}"[:64]


def _created(name: str, digest: str) -> web.Response:
    return web.Response(
        status=201,
        headers={
            **API_HEADERS,
            "Location": f"/v2/{name}/blobs/{digest}",
            "Docker-Content-Digest": digest,
            "Content-Length": "0",
        },
    )


UPLOAD_START_DOC = {
    "tags": ["v2"],
    "operationId": "startUpload",
    "summary": "Start an upload, upload in one go, or mount",
    "description": "Without parameters: opens a session (202 + Location). With ``digest``: the body is the whole blob (201). With ``mount`` and ``from``: links a blob of another repository the caller may pull (201), or opens a session when it cannot (202).",
    "parameters": [
        oa.NAME,
        _DIGEST_QUERY,
        oa.param("mount", "query", {"type": "string", "pattern": oa.DIGEST_PATTERN}, "Digest to mount."),
        oa.param("from", "query", {"type": "string"}, "Repository to mount from."),
    ],
    "requestBody": {"required": False, "content": _OCTETS},
    "responses": {
        "201": oa.empty("Blob created (monolithic upload or mount).", oa.BLOB_CREATED),
        "202": oa.empty("Session opened.", oa.UPLOAD_PROGRESS),
        **oa.errors(400, 404, 413, *oa.WRITE_ERRORS),
    },
}


UPLOAD_START_NOSLASH_DOC = oa.noslash(UPLOAD_START_DOC)


@routes.post(f"/v2/{NAME}/blobs/uploads/", name=route_names.UPLOAD_START, rule=Rule.PUSH, doc=UPLOAD_START_DOC)
@routes.post(f"/v2/{NAME}/blobs/uploads", name=route_names.UPLOAD_START_NOSLASH, rule=Rule.PUSH, doc=UPLOAD_START_NOSLASH_DOC)
async def start_upload(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    svc = service(request)
    mount, source = request.query.get("mount"), request.query.get("from")
    if mount and source and await svc.mount_blob(name, mount, source, request_principal(request)):
        return _created(name, mount)
    digest = request.query.get("digest")
    if digest:
        digest = await svc.put_blob(name, digest, body_chunks(request), _owner(request), request_principal(request))
        return _created(name, digest)
    record = await svc.start_upload(name, _owner(request))
    return _progress(record, 202)


UPLOAD_PATCH_DOC = {
    "tags": ["v2"],
    "operationId": "uploadChunk",
    "summary": "Send a chunk",
    "description": "With Content-Range the chunk must start where the upload stands (416 otherwise); without it the body is appended (docker/podman streaming upload).",
    "parameters": [_CONTENT_RANGE],
    "requestBody": {"required": True, "content": _OCTETS},
    "responses": {"202": oa.empty("Chunk stored.", oa.UPLOAD_PROGRESS), **oa.errors(400, 404, 413, 416, *oa.WRITE_ERRORS)},
}


@routes.patch(
    f"/v2/{NAME}/blobs/uploads/{{upload_id}}",
    name=route_names.UPLOAD_PATCH,
    rule=Rule.PUSH,
    doc=UPLOAD_PATCH_DOC,
    path_item=_UPLOAD_PATH,
)
async def patch_upload(request: web.Request) -> web.Response:
    name, upload_id = request.match_info["name"], request.match_info["upload_id"]
    record = await _reporting_progress(
        service(request).append_upload(
            name,
            upload_id,
            body_chunks(request),
            content_range(request),
            length=request.content_length,
            record=request.get(UPLOAD_RECORD),
        )
    )
    return _progress(record, 202)


UPLOAD_PUT_DOC = {
    "tags": ["v2"],
    "operationId": "finishUpload",
    "summary": "Complete an upload",
    "description": "The (optional) body is a last chunk; the blob is stored only if its digest matches.",
    "parameters": [{**_DIGEST_QUERY, "required": True}, _CONTENT_RANGE],
    "requestBody": {"required": False, "content": _OCTETS},
    "responses": {"201": oa.empty("Blob created.", oa.BLOB_CREATED), **oa.errors(400, 404, 413, 416, *oa.WRITE_ERRORS)},
}


@routes.put(
    f"/v2/{NAME}/blobs/uploads/{{upload_id}}",
    name=route_names.UPLOAD_PUT,
    rule=Rule.PUSH,
    doc=UPLOAD_PUT_DOC,
    path_item=_UPLOAD_PATH,
)
async def finish_upload(request: web.Request) -> web.Response:
    name, upload_id = request.match_info["name"], request.match_info["upload_id"]
    body = body_chunks(request) if has_body(request) else None
    digest = await _reporting_progress(
        service(request).finish_upload(
            name,
            upload_id,
            request.query.get("digest"),
            body,
            content_range(request) if body is not None else None,
            record=request.get(UPLOAD_RECORD),
            by=request_principal(request),
        )
    )
    return _created(name, digest)


UPLOAD_STATUS_DOC = {
    "tags": ["v2"],
    "operationId": "uploadStatus",
    "summary": "Where an upload stands",
    "responses": {"204": oa.empty("Progress in Range.", oa.UPLOAD_PROGRESS), **oa.errors(400, 404, *oa.AUTH_ERRORS)},
}


@routes.get(
    f"/v2/{NAME}/blobs/uploads/{{upload_id}}",
    name=route_names.UPLOAD_STATUS,
    rule=Rule.PUSH,
    doc=UPLOAD_STATUS_DOC,
    path_item=_UPLOAD_PATH,
)
async def upload_status(request: web.Request) -> web.Response:
    record = await service(request).upload_status(request.match_info["name"], request.match_info["upload_id"])
    return _progress(record, 204)


UPLOAD_CANCEL_DOC = {
    "tags": ["v2"],
    "operationId": "cancelUpload",
    "summary": "Cancel an upload",
    "responses": {"204": oa.empty("Cancelled.", oa.API_VERSION), **oa.errors(400, 404, *oa.AUTH_ERRORS)},
}


@routes.delete(
    f"/v2/{NAME}/blobs/uploads/{{upload_id}}",
    name=route_names.UPLOAD_CANCEL,
    rule=Rule.PUSH,
    doc=UPLOAD_CANCEL_DOC,
    path_item=_UPLOAD_PATH,
)
async def cancel_upload(request: web.Request) -> web.Response:
    await service(request).cancel_upload(request.match_info["name"], request.match_info["upload_id"])
    return web.Response(status=204, headers=API_HEADERS)
