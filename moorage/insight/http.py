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
from ..api import routes as route_names
from ..api.common import AUTHENTICATOR, SETTINGS, request_principal
from ..registry.names import is_valid_name
from ..registry.principal import Principal
from ..registry.safejson import UntrustedJSONError, loads_untrusted
from .policy_admin import PullPolicyAdmin
from .service import InsightService

INSIGHT = web.AppKey("insight", InsightService)
routes = web.RouteTableDef()
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


@routes.get(f"/api/v1/insight/images/{NAME}/{{reference}}", name=route_names.INSIGHT_IMAGE)
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


@routes.post(f"/api/v1/insight/images/{NAME}/{{reference}}", name=route_names.INSIGHT_SCAN)
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


@routes.get("/api/v1/insight/search", name=route_names.INSIGHT_SEARCH)
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


@routes.get("/api/v1/insight/status", name=route_names.INSIGHT_STATUS)
async def status(request: web.Request) -> web.Response:
    from .vulndb_status import vulndb_status

    insight = request.app[INSIGHT]
    return _json({**await insight.status(), "vulndb": await vulndb_status(insight.store)})


@routes.get("/api/v1/insight/policies", name=route_names.INSIGHT_POLICIES)
async def policies(request: web.Request) -> web.Response:
    await _admin(request)
    return _json({"policies": await request.app[INSIGHT].store.policies()})


async def _policy_admin(request: web.Request) -> tuple[PullPolicyAdmin, Principal]:
    """The pull policy's admin service and the caller as its principal (face ``api``): an
    administrator in token mode (403 otherwise); without auth, and every htpasswd user, may
    administer (as with every ``/api/v1`` route there)."""
    settings = request.app[SETTINGS]
    service = PullPolicyAdmin(request.app[INSIGHT], audited=settings.events.enabled)
    if settings.auth.mode == "token":
        from ..auth.credentials import principal, require_admin

        await require_admin(request)
        return service, await principal(request)
    return service, request_principal(request, "api", admin=True)


def _namespace(request: web.Request) -> str:
    ns = request.match_info["namespace"]
    if not is_valid_name(ns):
        raise errors.NameInvalid(detail={"name": ns[:256]})
    return ns


async def _body(request: web.Request) -> dict[str, Any]:
    if request.content_length is not None and request.content_length > 64 * 1024:
        raise errors.SizeInvalid("request body too large", status=413)
    raw = await request.read()  # bounded by the app's client_max_size; cached (the audit log reads it too)
    if len(raw) > 64 * 1024:
        raise errors.SizeInvalid("request body too large", status=413)
    try:
        data = loads_untrusted(raw or b"{}")
    except UntrustedJSONError:
        raise errors.Unsupported("request body is not JSON", status=400) from None
    if not isinstance(data, dict):
        raise errors.Unsupported("request body must be a JSON object", status=400)
    return data


@routes.put("/api/v1/insight/policies/{namespace:[^{}]+}", name=route_names.INSIGHT_POLICY_PUT)
async def policy_put(request: web.Request) -> web.Response:
    service, who = await _policy_admin(request)
    ns = request.match_info["namespace"]
    severity = (await _body(request)).get("block_severity")
    stored = await service.set_policy(who, ns, severity if isinstance(severity, str) else "")
    return _json({"namespace": ns, "block_severity": stored})


@routes.delete("/api/v1/insight/policies/{namespace:[^{}]+}", name=route_names.INSIGHT_POLICY_DELETE)
async def policy_delete(request: web.Request) -> web.Response:
    service, who = await _policy_admin(request)
    await service.remove_policy(who, request.match_info["namespace"])
    return web.Response(status=204)


@routes.get("/api/v1/insight/allowlist/{namespace:[^{}]+}", name=route_names.INSIGHT_ALLOWLIST)
async def allowlist(request: web.Request) -> web.Response:
    await _admin(request)
    entries = await request.app[INSIGHT].store.allowlist(_namespace(request))
    return _json({"allowlist": [{"id": k, "expires_at": v} for k, v in sorted(entries.items())]})


@routes.put("/api/v1/insight/allowlist/{namespace:[^{}]+?}/{advisory}", name=route_names.INSIGHT_ALLOW)
async def allow(request: web.Request) -> web.Response:
    service, who = await _policy_admin(request)
    ns, advisory = request.match_info["namespace"], request.match_info["advisory"]
    body = await _body(request)
    reason = body.get("reason")
    expires = await service.allow(who, ns, advisory, body.get("expires_in_days"), reason if isinstance(reason, str) else "")
    return _json({"namespace": ns, "id": advisory, "expires_at": expires})


@routes.delete("/api/v1/insight/allowlist/{namespace:[^{}]+?}/{advisory}", name=route_names.INSIGHT_DISALLOW)
async def disallow(request: web.Request) -> web.Response:
    service, who = await _policy_admin(request)
    await service.disallow(who, request.match_info["namespace"], request.match_info["advisory"])
    return web.Response(status=204)
