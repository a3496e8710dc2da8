"""``GET /v2/<name>/referrers/<digest>``: the OCI 1.1 referrers API."""

from __future__ import annotations

from aiohttp import web

from ..registry import mediatypes as mt
from . import apidoc as oa
from . import routes as route_names
from .blobs import NAME
from .common import API_HEADERS, json_body, reader, service
from .routes import Rule
from .routing import RouteTable

routes = RouteTable()

REFERRERS_DOC = {
    "tags": ["v2"],
    "operationId": "listReferrers",
    "summary": "Manifests whose subject is this digest",
    "parameters": [
        oa.NAME,
        oa.DIGEST,
        oa.param("artifactType", "query", {"type": "string"}, "Only referrers of this artifact type."),
    ],
    "responses": {
        "200": oa.json_body(
            oa.ref("schemas", "ReferrersIndex"),
            "An OCI image index of descriptors.",
            {**oa.API_VERSION, "OCI-Filters-Applied": oa.str_header("``artifactType`` when filtered.")},
            media_type=mt.OCI_INDEX,
        ),
        **oa.errors(400, 404, *oa.AUTH_ERRORS),
    },
}


@routes.get(f"/v2/{NAME}/referrers/{{digest}}", name=route_names.REFERRERS, rule=Rule.PULL, doc=REFERRERS_DOC)
async def referrers(request: web.Request) -> web.Response:
    name, digest = request.match_info["name"], request.match_info["digest"]
    artifact_type = request.query.get("artifactType") or None
    found = await service(request).referrers(name, digest, artifact_type, reader(request))
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
