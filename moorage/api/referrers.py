"""``GET /v2/<name>/referrers/<digest>``: the OCI 1.1 referrers API."""

from __future__ import annotations

from aiohttp import web

from ..registry import mediatypes as mt
from . import routes as route_names
from .blobs import NAME
from .common import API_HEADERS, json_body, service

routes = web.RouteTableDef()


@routes.get(f"/v2/{NAME}/referrers/{{digest}}", name=route_names.REFERRERS)
async def referrers(request: web.Request) -> web.Response:
    name, digest = request.match_info["name"], request.match_info["digest"]
    artifact_type = request.query.get("artifactType") or None
    found = await service(request).referrers(name, digest, artifact_type)
    descriptors = []
    for r in found:
        d: dict[str, object] = {"mediaType": r.media_type, "digest": r.digest, "size": r.size}
        if r.artifact_type:
            d["artifactType"] = r.artifact_type
        if r.annotations:
            d["annotations"] = r.annotations
        descriptors.append(d)
    headers = dict(API_HEADERS)
    if artifact_type is not None:
        headers["OCI-Filters-Applied"] = "artifactType"
    body = {"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": descriptors}
    return json_body(body, headers=headers, content_type=mt.OCI_INDEX)
