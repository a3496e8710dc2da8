"""``/api/v1/insight/``: image findings, package and advisory search, pull policies.

::

    GET    /api/v1/insight/images/{name}/{reference}   findings of an image (per platform of an index)
    POST   /api/v1/insight/images/{name}/{reference}   scan now (push right on the repository)
    GET    /api/v1/insight/search?package=NAME[&version=>=1.0,<2.0]
    GET    /api/v1/insight/search?advisory=ID
    GET    /api/v1/insight/status                      vulnerability database state
    GET    /api/v1/insight/policies                    PUT/DELETE /api/v1/insight/policies/{namespace} {block_severity}
    GET    /api/v1/insight/allowlist/{namespace}       PUT/DELETE /api/v1/insight/allowlist/{namespace}/{id} {expires_in_days?, reason?}

Reads answer only for repositories the caller may pull (anonymous callers: public ones);
policies and allow-lists are for administrators.  Authentication as everywhere under
``/api/v1/`` (basic with password or access token, or a bearer token).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from aiohttp import web

from .. import errors
from ..api import apidoc as oa
from ..api import routes as route_names
from ..api.common import AUTHENTICATOR, SETTINGS, json_object, request_principal
from ..api.routes import Rule
from ..api.routing import RouteTable
from ..registry.names import is_valid_name
from ..registry.principal import Principal
from .osv import SEVERITIES
from .policy_admin import PullPolicyAdmin, checked_namespace
from .service import InsightService

INSIGHT = web.AppKey("insight", InsightService)
routes = RouteTable()

# -- OpenAPI: parts of this module's route operations (moorage.api.apidoc) --
_COUNTS = {
    "type": "object",
    "additionalProperties": {"type": "integer"},
    "description": "Findings per severity (" + ", ".join(SEVERITIES) + ").",
}
_STR_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
_SKIPPED = {"type": "array", "items": {"type": "object"}, "description": "Files or layers not inventoried, and why."}
_REPO_NAME = oa.ref("parameters", "name")
_REFERENCE = oa.param("reference", "path", {"type": "string"}, "A tag or a digest.")
_NAMESPACE = oa.param(
    "namespace", "path", {"type": "string", "maxLength": 255}, "Namespace (a repository name prefix; may hold '/')."
)
_ADVISORY = oa.param("advisory", "path", {"type": "string"}, "Advisory id (e.g. ``CVE-2024-1234``, ``GHSA-...``).")
_IMAGE = oa.obj(
    ["digest", "platform", "scanned"],
    digest=oa.STRING,
    platform=oa.STRING,
    scanned=oa.BOOLEAN,
    packages=oa.INTEGER,
    sboms=_STR_MAP,
    counts=_COUNTS,
    worst=oa.STRING,
    findings={"type": "array", "items": {"type": "object"}},
    skipped=_SKIPPED,
)
_SCANNED = oa.obj(
    ["digest", "platform", "packages", "sboms", "counts", "skipped"],
    digest=oa.STRING,
    platform=oa.STRING,
    packages=oa.INTEGER,
    sboms=_STR_MAP,
    counts=_COUNTS,
    skipped=_SKIPPED,
)
_SEARCH_HIT = oa.obj(
    ["repository", "digest", "package"],
    repository=oa.STRING,
    digest=oa.STRING,
    package=oa.STRING,
    ecosystem=oa.STRING,
    version=oa.STRING,
    installed=oa.STRING,
    fixed=oa.nullable(oa.STRING),
    severity=oa.STRING,
)
NAME = r"{name:[^{}]+?}"


def _json(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, dumps=lambda d: json.dumps(d, separators=(",", ":")))


async def _visible(request: web.Request, repositories: Iterable[str], action: str = "pull") -> set[str]:
    """The repositories among ``repositories`` on which the caller has ``action``: the registry's
    one read rule (:meth:`~moorage.auth.authenticator.Authenticator.visible`, which also filters
    ``/v2/_catalog`` and matches the web UI's lists), applied to the caller the credentials name."""
    names = set(repositories)
    settings = request.app[SETTINGS]
    if settings.auth.mode != "token":  # none: everyone; htpasswd: the middleware let in a user, and every user is an admin
        return names
    from ..auth.credentials import reader

    principal = await reader(request)
    if principal is None:
        return names
    return set(await request.app[AUTHENTICATOR].visible(principal, sorted(names), action))


async def _admin(request: web.Request) -> None:
    if request.app[SETTINGS].auth.mode == "token":
        from ..auth.credentials import require_admin

        await require_admin(request)


INSIGHT_IMAGE_DOC = oa.op(
    "insight",
    "getImageFindings",
    "Findings of an image (each platform of an index)",
    {
        "200": oa.json_body(
            oa.obj(
                ["repository", "reference", "digest", "images"],
                repository=oa.STRING,
                reference=oa.STRING,
                digest=oa.STRING,
                images={"type": "array", "items": _IMAGE},
            ),
            "Packages and vulnerability findings; ``scanned: false`` before a scan.",
        )
    },
    description="Needs the pull right on the repository (anonymous: public repositories); otherwise NAME_UNKNOWN.",
    parameters=[_REPO_NAME, _REFERENCE],
    errors=(400, 401, 403, 404, 429, 503),
)


@routes.get(
    f"/api/v1/insight/images/{NAME}/{{reference}}", name=route_names.INSIGHT_IMAGE, rule=Rule.VISIBLE, doc=INSIGHT_IMAGE_DOC
)
async def image_findings(request: web.Request) -> web.Response:
    name, reference = request.match_info["name"], request.match_info["reference"]
    if not is_valid_name(name) or name not in await _visible(request, [name]):
        raise errors.NameUnknown(detail={"name": name[:256]})
    insight = request.app[INSIGHT]
    record = await insight.registry.get_manifest(name, reference)
    images = []
    for digest, platform in await insight.platform_digests(name, record):
        row = await insight.store.get_image(digest)
        images.append(
            {
                "digest": digest,
                "platform": platform,
                "scanned": row is not None,
                **(
                    {
                        "packages": row.package_count,
                        "sboms": row.sboms,
                        "counts": row.counts,
                        "worst": row.worst,
                        "findings": row.findings,
                        "skipped": row.skipped,
                    }
                    if row
                    else {}
                ),
            }
        )
    from .vulndb_status import vulndb_status

    # "vulndb": whether findings can be known at all (no advisories: an empty list means nothing).
    return _json(
        {
            "repository": name,
            "reference": reference,
            "digest": record.digest,
            "images": images,
            "vulndb": await vulndb_status(insight.store),
        }
    )


INSIGHT_SCAN_DOC = oa.op(
    "insight",
    "scanImage",
    "Scan an image now",
    {"200": oa.json_body(oa.obj(["images"], images={"type": "array", "items": _SCANNED}), "Scan results.")},
    description="Needs the push right on the repository (DENIED otherwise).",
    parameters=[_REPO_NAME, _REFERENCE, oa.param("force", "query", {"type": "string"}, "``1``: rescan even if known.")],
    errors=(400, 401, 403, 404, 429, 503),
)


@routes.post(
    f"/api/v1/insight/images/{NAME}/{{reference}}", name=route_names.INSIGHT_SCAN, rule=Rule.VISIBLE, doc=INSIGHT_SCAN_DOC
)
async def scan_image(request: web.Request) -> web.Response:
    name, reference = request.match_info["name"], request.match_info["reference"]
    if not is_valid_name(name) or name not in await _visible(request, [name], "push"):
        raise errors.Denied("scanning needs the push right on the repository")
    from ..extras import has

    if not has("insight"):  # reading findings and the pull policy work without it; scanning does not
        raise errors.Unsupported("scanning needs the 'insight' extra on the server: pip install 'moorage[insight]'")
    results = await request.app[INSIGHT].scan(name, reference, force=request.query.get("force") == "1")
    return _json(
        {
            "images": [
                {
                    "digest": r.digest,
                    "platform": r.platform,
                    "packages": r.package_count,
                    "sboms": r.sboms,
                    "counts": r.counts,
                    "skipped": r.skipped,
                }
                for r in results
            ]
        }
    )


INSIGHT_SEARCH_DOC = oa.op(
    "insight",
    "insightSearch",
    "Images holding a package, or affected by an advisory",
    {
        "200": oa.json_body(
            oa.obj(["results"], results={"type": "array", "items": _SEARCH_HIT}), "Matches in repositories the caller may pull."
        )
    },
    description="Exactly one of ``package`` and ``advisory``.",
    parameters=[
        oa.param("package", "query", {"type": "string"}, "Package name."),
        oa.param("version", "query", {"type": "string"}, "With ``package``: comparisons such as ``>=1.0,<2.0``."),
        oa.param("advisory", "query", {"type": "string"}, "Advisory id."),
    ],
)


@routes.get("/api/v1/insight/search", name=route_names.INSIGHT_SEARCH, rule=Rule.VISIBLE, doc=INSIGHT_SEARCH_DOC)
async def search(request: web.Request) -> web.Response:
    insight = request.app[INSIGHT]
    package, advisory = request.query.get("package"), request.query.get("advisory")
    if bool(package) == bool(advisory):
        raise errors.Unsupported("give exactly one of ?package=NAME or ?advisory=ID", status=400)
    if package:
        if request.query.get("version"):
            from ..extras import has

            if not has("insight"):
                raise errors.Unsupported("version ranges need the 'insight' extra on the server: pip install 'moorage[insight]'")
        try:
            found = await insight.search_package(package[:512], request.query.get("version") or None)
        except ValueError as exc:
            raise errors.Unsupported(str(exc), status=400) from None
    else:
        from .search import search_advisory

        found = await search_advisory(insight, advisory or "")  # by id or alias (a CVE id)
    visible = await _visible(request, {f["repository"] for f in found})
    return _json({"results": [f for f in found if f["repository"] in visible]})


INSIGHT_STATUS_DOC = oa.op(
    "insight",
    "insightStatus",
    "State of the vulnerability database",
    {
        "200": oa.json_body(
            oa.obj(
                ["advisories", "generation", "last_import", "images"],
                advisories=oa.INTEGER,
                generation=oa.INTEGER,
                last_import={"type": "object", "nullable": True},
                images=oa.INTEGER,
            ),
            "Advisory count, import generation, last import, scanned images.",
        )
    },
    description="Needs no credentials.",
    security=[{}, *oa.CREDENTIALS],
    errors=(401, 429, 503),
)


@routes.get("/api/v1/insight/status", name=route_names.INSIGHT_STATUS, rule=Rule.VISIBLE, doc=INSIGHT_STATUS_DOC)
async def status(request: web.Request) -> web.Response:
    from .vulndb_status import vulndb_status

    insight = request.app[INSIGHT]
    return _json({**await insight.status(), "vulndb": await vulndb_status(insight.store)})


INSIGHT_POLICIES_DOC = oa.op(
    "insight",
    "listInsightPolicies",
    "Pull policies by namespace",
    {"200": oa.json_body(oa.obj(["policies"], policies={**_STR_MAP, "description": "namespace -> block_severity"}), "Policies.")},
    description=oa.ADMIN_NOTE,
)


@routes.get("/api/v1/insight/policies", name=route_names.INSIGHT_POLICIES, rule=Rule.ADMIN, doc=INSIGHT_POLICIES_DOC)
async def policies(request: web.Request) -> web.Response:
    await _admin(request)
    return _json({"policies": await request.app[INSIGHT].store.policies()})


async def _policy_admin(request: web.Request) -> tuple[PullPolicyAdmin, Principal]:
    """The pull policy's admin service and the caller as its principal (face ``api``): an
    administrator in token mode (403 otherwise); without auth, and every htpasswd user, may
    administer (as with every ``/api/v1`` route there)."""
    await _admin(request)
    settings = request.app[SETTINGS]
    service = PullPolicyAdmin(request.app[INSIGHT], audited=settings.events.enabled)
    if settings.auth.mode == "token":
        from ..auth.credentials import principal

        return service, await principal(request)
    return service, request_principal(request, "api", admin=True)


INSIGHT_POLICY_PUT_DOC = oa.op(
    "insight",
    "setInsightPolicy",
    "Refuse pulls of images with findings at or above a severity",
    {"200": oa.json_body(oa.obj(["namespace", "block_severity"], namespace=oa.STRING, block_severity=oa.STRING), "Set.")},
    description=oa.ADMIN_NOTE,
    parameters=[_NAMESPACE],
    body=oa.obj(["block_severity"], block_severity={"type": "string", "enum": list(SEVERITIES[1:])}),
    errors=(400, 401, 403, 413, 429, 503),
)


@routes.put(
    "/api/v1/insight/policies/{namespace:[^{}]+}",
    name=route_names.INSIGHT_POLICY_PUT,
    rule=Rule.ADMIN,
    doc=INSIGHT_POLICY_PUT_DOC,
)
async def policy_put(request: web.Request) -> web.Response:
    service, who = await _policy_admin(request)
    ns = request.match_info["namespace"]
    severity = (await json_object(request)).get("block_severity")
    stored = await service.set_policy(who, ns, severity if isinstance(severity, str) else "")
    return _json({"namespace": ns, "block_severity": stored})


INSIGHT_POLICY_DELETE_DOC = oa.op(
    "insight",
    "deleteInsightPolicy",
    "Remove a namespace's policy",
    oa.NO_CONTENT,
    description=oa.ADMIN_NOTE,
    parameters=[_NAMESPACE],
)


@routes.delete(
    "/api/v1/insight/policies/{namespace:[^{}]+}",
    name=route_names.INSIGHT_POLICY_DELETE,
    rule=Rule.ADMIN,
    doc=INSIGHT_POLICY_DELETE_DOC,
)
async def policy_delete(request: web.Request) -> web.Response:
    service, who = await _policy_admin(request)
    await service.remove_policy(who, request.match_info["namespace"])
    return web.Response(status=204)


INSIGHT_ALLOWLIST_DOC = oa.op(
    "insight",
    "getInsightAllowlist",
    "Advisories ignored in a namespace",
    {
        "200": oa.json_body(
            oa.obj(
                ["allowlist"],
                allowlist={
                    "type": "array",
                    "items": oa.obj(["id", "expires_at"], id=oa.STRING, expires_at=oa.nullable(oa.NUMBER)),
                },
            ),
            "Entries.",
        )
    },
    description=oa.ADMIN_NOTE,
    parameters=[_NAMESPACE],
)


@routes.get(
    "/api/v1/insight/allowlist/{namespace:[^{}]+}", name=route_names.INSIGHT_ALLOWLIST, rule=Rule.ADMIN, doc=INSIGHT_ALLOWLIST_DOC
)
async def allowlist(request: web.Request) -> web.Response:
    await _admin(request)
    entries = await request.app[INSIGHT].store.allowlist(checked_namespace(request.match_info["namespace"]))
    return _json({"allowlist": [{"id": k, "expires_at": v} for k, v in sorted(entries.items())]})


INSIGHT_ALLOW_DOC = oa.op(
    "insight",
    "allowAdvisory",
    "Ignore an advisory in a namespace",
    {
        "200": oa.json_body(
            oa.obj(["namespace", "id", "expires_at"], namespace=oa.STRING, id=oa.STRING, expires_at=oa.nullable(oa.NUMBER)),
            "Allowed.",
        )
    },
    description=oa.ADMIN_NOTE,
    parameters=[_NAMESPACE, _ADVISORY],
    body={
        "type": "object",
        "properties": {
            "expires_in_days": {"type": "number", "exclusiveMinimum": True, "minimum": 0, "maximum": 36500},
            "reason": {"type": "string", "maxLength": 1000},
        },
    },
    errors=(400, 401, 403, 413, 429, 503),
)


@routes.put(
    "/api/v1/insight/allowlist/{namespace:[^{}]+?}/{advisory}",
    name=route_names.INSIGHT_ALLOW,
    rule=Rule.ADMIN,
    doc=INSIGHT_ALLOW_DOC,
)
async def allow(request: web.Request) -> web.Response:
    service, who = await _policy_admin(request)
    ns, advisory = request.match_info["namespace"], request.match_info["advisory"]
    body = await json_object(request)
    reason = body.get("reason")
    expires = await service.allow(who, ns, advisory, body.get("expires_in_days"), reason if isinstance(reason, str) else "")
    return _json({"namespace": ns, "id": advisory, "expires_at": expires})


INSIGHT_DISALLOW_DOC = oa.op(
    "insight",
    "disallowAdvisory",
    "Stop ignoring an advisory",
    oa.NO_CONTENT,
    description=oa.ADMIN_NOTE,
    parameters=[_NAMESPACE, _ADVISORY],
    errors=(400, 401, 403, 404, 429, 503),
)


@routes.delete(
    "/api/v1/insight/allowlist/{namespace:[^{}]+?}/{advisory}",
    name=route_names.INSIGHT_DISALLOW,
    rule=Rule.ADMIN,
    doc=INSIGHT_DISALLOW_DOC,
)
async def disallow(request: web.Request) -> web.Response:
    service, who = await _policy_admin(request)
    await service.disallow(who, request.match_info["namespace"], request.match_info["advisory"])
    return web.Response(status=204)
