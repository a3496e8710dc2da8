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
from . import routes as route_names
from .blobs import NAME
from .common import API_HEADERS, SETTINGS, publish, read_bounded, request_principal, service

routes = web.RouteTableDef()


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
        record = await (svc.serve_manifest if pull else svc.get_manifest)(name, reference)
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


@routes.get(f"/v2/{NAME}/manifests/{{reference}}", name=route_names.MANIFEST_GET)
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


@routes.route("HEAD", f"/v2/{NAME}/manifests/{{reference}}", name=route_names.MANIFEST_HEAD)
async def head_manifest(request: web.Request) -> web.Response:
    record = await _lookup(request)
    headers = _headers(record)
    headers["Content-Length"] = str(record.size)
    return web.Response(headers=headers)


@routes.put(f"/v2/{NAME}/manifests/{{reference}}", name=route_names.MANIFEST_PUT)
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


@routes.delete(f"/v2/{NAME}/manifests/{{reference}}", name=route_names.MANIFEST_DELETE)
async def delete_manifest(request: web.Request) -> web.Response:
    name, reference = request.match_info["name"], request.match_info["reference"]
    await service(request).delete_manifest(name, reference, request_principal(request))
    return web.Response(status=202, headers=API_HEADERS)
