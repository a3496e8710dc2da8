"""Operator pages: the audit log, webhooks (list, create, test event, deliveries, retry), the
vulnerability database's status, the cache's upstreams and mirror rules, and running a
garbage collection.

Thin, like the rest of the UI: each handler parses the request, calls the function the API
calls -- the audit read rule (:func:`moorage.events.api.restrict_audit`), the webhook service
(:class:`~moorage.events.webhooks.WebhookService`: it authorizes and audits), the GC service
(:class:`~moorage.gc.service.GCService`) -- with the viewer as a ``ui`` principal, and renders.
"""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web

from .. import errors
from ..api import routes as route_names
from ..api.common import SETTINGS
from ..api.routes import Rule
from ..api.routing import UNDOCUMENTED, RouteTable
from ..events.api import Caller, administered_namespaces, public_entry, restrict_audit
from ..events.webhooks import WebhookService
from ..metadata.events_store import DEAD, DELIVERED, DELIVERING, PENDING, AuditQuery
from .format import clean
from .manage import _field, _refused, _require_admin
from .session import Form, Redirect, UIError, Viewer, check_csrf, resolve_viewer, ui_principal
from .templating import render

routes = RouteTable()
_HOOK = "{hook:[A-Za-z0-9][A-Za-z0-9._-]{0,63}}"
_STATUSES = (PENDING, DELIVERING, DELIVERED, DEAD)
_ACTIONS = ("push", "pull", "delete", "mount")


def _events(request: web.Request) -> Any:
    from ..events.setup import EVENTS_EXT

    ext = request.app.get(EVENTS_EXT)
    if ext is None or ext.webhooks is None:
        raise UIError(404, "Webhooks and the audit log need events.enabled: true.")
    return ext


def _caller(viewer: Viewer) -> Caller:
    """The viewer as the events API sees a caller: administrator, or the namespaces they
    administer (none with a scoped token)."""
    if viewer.may_administer:
        return Caller(viewer.name, True)
    if viewer.principal is None or viewer.scoped or viewer.anonymous:
        return Caller(viewer.name, False)
    return Caller(viewer.name, False, administered_namespaces(viewer.principal))


def _signed_in(viewer: Viewer, next_page: str) -> None:
    if viewer.anonymous and not viewer.may_administer:
        raise Redirect(f"/ui/login?next={next_page}")


def _query_text(request: web.Request, key: str, limit: int = 255) -> str | None:
    raw = request.query.get(key, "")
    if len(raw) > 4 * limit:
        raise UIError(400, f"{key} is too long.")
    value = clean(raw, limit).strip()
    return value or None


def _query_id(request: web.Request, key: str) -> int | None:
    raw = request.query.get(key, "")
    if not raw:
        return None
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 18):
        raise UIError(400, f"{key} must be a number.")
    return int(raw)


# -- audit log ------------------------------------------------------------------------------
@routes.get("/ui/admin/audit", name=route_names.UI_AUDIT, rule=Rule.SESSION, doc=UNDOCUMENTED)
async def audit_page(request: web.Request) -> web.StreamResponse:
    """Newest first, ``ui.page_size`` per page, filtered by actor, action and repository;
    what the viewer may read only (the API's rule)."""
    viewer = await resolve_viewer(request)
    _signed_in(viewer, "/ui/admin/audit")
    ext = _events(request)
    caller = _caller(viewer)
    filters = {k: _query_text(request, k) for k in ("actor", "action", "repository")}
    per_page = request.app[SETTINGS].ui.page_size
    q = AuditQuery(
        actor=filters["actor"],
        action=filters["action"],
        repository=filters["repository"],
        limit=per_page,
        before_id=_query_id(request, "before"),
    )
    restrict_audit(q, caller)
    entries = [public_entry(e) for e in await ext.store.query_audit(q)]
    ctx = {
        "title": "Audit log",
        "entries": entries,
        "filters": {k: v or "" for k, v in filters.items()},
        "next": entries[-1]["id"] if len(entries) == per_page else None,
        "all": caller.admin,
        "namespaces": caller.namespaces,
    }
    return render("audit.html", request, ctx)


# -- webhooks -------------------------------------------------------------------------------
def _may_see_webhooks(caller: Caller) -> None:
    if not caller.admin and not caller.namespaces:
        raise UIError(403, "Administrator or namespace-administrator rights required.")


async def _webhooks_page(
    request: web.Request, viewer: Viewer, *, created: dict[str, Any] | None = None, error: str | None = None, status: int = 200
) -> web.Response:
    ext = _events(request)
    caller = _caller(viewer)
    _may_see_webhooks(caller)
    await ext.endpoints.reload()
    counters = await ext.store.counters()
    backlog = {(e, st): n for e, st, n in counters["backlog"]}
    hooks = []
    for ep in ext.endpoints.all:
        if caller.administers(ep.namespace):
            d = ep.public_dict()
            d["pending"] = backlog.get((ep.name, PENDING), 0) + backlog.get((ep.name, DELIVERING), 0)
            d["dead"] = backlog.get((ep.name, DEAD), 0)
            hooks.append(d)
    rules = request.app[SETTINGS].events.webhooks
    ctx = {
        "title": "Webhooks",
        "hooks": hooks,
        "may_create": caller.admin or rules.namespace_admins,
        "namespaces": caller.namespaces,
        "created": created,
        "error": error,
        "actions": _ACTIONS,
    }
    return render("webhooks.html", request, ctx, status=status)


@routes.get("/ui/admin/webhooks", name=route_names.UI_WEBHOOKS, rule=Rule.SESSION, doc=UNDOCUMENTED)
async def webhooks_page(request: web.Request) -> web.StreamResponse:
    viewer = await resolve_viewer(request)
    _signed_in(viewer, "/ui/admin/webhooks")
    return await _webhooks_page(request, viewer)


def _webhook_data(form: Form) -> dict[str, Any]:
    """The API body of a new webhook from the form (the service validates it)."""
    data: dict[str, Any] = {
        "name": _field(form, "name", 64),
        "url": _field(form, "url", 2000),
        "repositories": [r for r in _field(form, "repositories", 2000).replace(",", " ").split() if r][:50],
        "actions": [a for a in _ACTIONS if _field(form, f"action_{a}") == "1"],
        "format": _field(form, "format", 20) or "distribution",
    }
    secret = form.get("secret", "")
    if isinstance(secret, str) and secret:
        if len(secret) > 1000 or not secret.isprintable():
            raise ValueError("the secret must be printable, at most 1000 characters")
        data["secret"] = secret
    if not data["name"] or not data["url"]:
        raise ValueError("give a name and a URL")
    return data


def _webhooks(request: web.Request) -> WebhookService:
    service: WebhookService = _events(request).webhooks
    return service


@routes.post("/ui/admin/webhooks", name=route_names.UI_WEBHOOKS_POST, rule=Rule.SESSION, doc=UNDOCUMENTED)
async def webhook_create(request: web.Request) -> web.StreamResponse:
    viewer, form = await check_csrf(request)
    _signed_in(viewer, "/ui/admin/webhooks")
    caller = _caller(viewer)
    _may_see_webhooks(caller)
    try:
        body = await _webhooks(request).create(ui_principal(request, viewer), caller.namespaces, _webhook_data(form))
    except ValueError as exc:
        return await _webhooks_page(request, viewer, error=str(exc), status=400)
    except errors.Denied as exc:
        raise UIError(403, exc.message) from None
    except errors.RegistryError as exc:
        return await _webhooks_page(request, viewer, error=exc.message, status=400 if exc.status >= 500 else exc.status)
    return await _webhooks_page(request, viewer, created=body)


async def _visible_hook(request: web.Request, caller: Caller) -> Any:
    ext = _events(request)
    await ext.endpoints.reload()
    ep = ext.endpoints.get(request.match_info["hook"])
    if ep is None or not caller.administers(ep.namespace):
        raise UIError(404, "No such webhook.")
    return ep


@routes.get(f"/ui/admin/webhooks/{_HOOK}", name=route_names.UI_WEBHOOK, rule=Rule.SESSION, doc=UNDOCUMENTED)
async def webhook_page(request: web.Request) -> web.StreamResponse:
    """One webhook and its newest deliveries (status filter, pages by delivery id)."""
    viewer = await resolve_viewer(request)
    _signed_in(viewer, "/ui/admin/webhooks")
    caller = _caller(viewer)
    _may_see_webhooks(caller)
    ep = await _visible_hook(request, caller)
    status = request.query.get("status") or None
    if status is not None and status not in _STATUSES:
        raise UIError(400, "status must be one of pending, delivering, delivered, dead.")
    per_page = request.app[SETTINGS].ui.page_size
    rows = await _events(request).store.deliveries(ep.name, status=status, limit=per_page, before_id=_query_id(request, "before"))
    ctx = {
        "title": f"Webhook {ep.name}",
        "hook": ep.public_dict(),
        "deliveries": [d.public_dict() for d in rows],
        "status": status or "",
        "statuses": _STATUSES,
        "next": rows[-1].id if len(rows) == per_page else None,
        "sent": request.query.get("sent") == "1",
        "now": time.time(),
    }
    return render("webhook.html", request, ctx)


@routes.post(f"/ui/admin/webhooks/{_HOOK}/test", name=route_names.UI_WEBHOOK_TEST, rule=Rule.SESSION, doc=UNDOCUMENTED)
async def webhook_test(request: web.Request) -> web.StreamResponse:
    viewer, _ = await check_csrf(request)
    _signed_in(viewer, "/ui/admin/webhooks")
    caller = _caller(viewer)
    name = request.match_info["hook"]
    try:
        await _webhooks(request).send_test(ui_principal(request, viewer), caller.namespaces, name)
    except errors.NotFound:
        raise UIError(404, "No such webhook.") from None
    except errors.RegistryError as exc:
        raise _refused(exc) from None
    raise Redirect(f"/ui/admin/webhooks/{name}?sent=1")


@routes.post(f"/ui/admin/webhooks/{_HOOK}/delete", name=route_names.UI_WEBHOOK_DELETE, rule=Rule.SESSION, doc=UNDOCUMENTED)
async def webhook_delete(request: web.Request) -> web.StreamResponse:
    viewer, _ = await check_csrf(request)
    _signed_in(viewer, "/ui/admin/webhooks")
    caller = _caller(viewer)
    try:
        await _webhooks(request).delete(ui_principal(request, viewer), caller.namespaces, request.match_info["hook"])
    except errors.NotFound:
        raise UIError(404, "No such webhook.") from None
    except errors.RegistryError as exc:
        raise _refused(exc) from None
    raise Redirect("/ui/admin/webhooks")


@routes.post(
    f"/ui/admin/webhooks/{_HOOK}/deliveries/{{id}}/retry", name=route_names.UI_WEBHOOK_RETRY, rule=Rule.SESSION, doc=UNDOCUMENTED
)
async def webhook_retry(request: web.Request) -> web.StreamResponse:
    viewer, _ = await check_csrf(request)
    _signed_in(viewer, "/ui/admin/webhooks")
    caller = _caller(viewer)
    name, raw = request.match_info["hook"], request.match_info["id"]
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 18):  # '²' is a digit to str.isdigit(), not to int()
        raise UIError(404, "No such delivery.")
    try:
        await _webhooks(request).retry(ui_principal(request, viewer), caller.namespaces, name, int(raw))
    except errors.NotFound as exc:
        raise UIError(404, "No such webhook." if "webhook" in exc.message else "No such dead delivery.") from None
    except errors.RegistryError as exc:
        raise _refused(exc) from None
    raise Redirect(f"/ui/admin/webhooks/{name}")


# -- vulnerability database -----------------------------------------------------------------
@routes.get("/ui/admin/vulndb", name=route_names.UI_VULNDB, rule=Rule.SESSION, doc=UNDOCUMENTED)
async def vulndb_page(request: web.Request) -> web.StreamResponse:
    """Loaded or not, how many advisories, when imported (and how long ago)."""
    viewer = await resolve_viewer(request)
    _require_admin(viewer)
    from ..insight.http import INSIGHT

    insight = request.app.get(INSIGHT)
    status = await insight.status() if insight is not None else None
    last = status.get("last_import") if status else None
    ctx = {
        "title": "Vulnerability database",
        "enabled": insight is not None,
        "status": status,
        "last": last if isinstance(last, dict) else None,
        "age_days": (time.time() - float(last["at"])) / 86400 if isinstance(last, dict) and last.get("at") else None,
    }
    return render("vulndb.html", request, ctx)


# -- pull-through cache and mirror rules ----------------------------------------------------
@routes.get("/ui/admin/cache", name=route_names.UI_CACHE, rule=Rule.SESSION, doc=UNDOCUMENTED)
async def cache_page(request: web.Request) -> web.StreamResponse:
    """Upstreams (without credentials) with their counters; mirror rules with the state of
    their scheduled job."""
    viewer = await resolve_viewer(request)
    _require_admin(viewer)
    from ..api.common import SCHEDULER
    from ..proxy.setup import CACHE

    cache = request.app.get(CACHE)
    upstreams = [up.describe() for up in cache.upstreams] if cache is not None else []
    jobs = request.app[SCHEDULER].jobs
    rules = []
    for rule in request.app[SETTINGS].proxy.mirror_rules:
        state = jobs.get(f"mirror:{rule.name}")
        rules.append(
            {
                "name": rule.name,
                "src": rule.src,
                "dst": rule.dst,
                "interval": rule.interval,
                "tags": rule.tags or "",
                "runs": state.runs if state else 0,
                "running": bool(state and state.running),
                "last_end": state.last_end if state else None,
                "last_success": state.last_success if state else None,
                "last_error": state.last_error if state else None,
            }
        )
    return render("cache.html", request, {"title": "Cache and mirrors", "upstreams": upstreams, "rules": rules})


# -- garbage collection ---------------------------------------------------------------------
def _gc_ctx(request: web.Request, **extra: Any) -> dict[str, Any]:
    settings = request.app[SETTINGS]
    ctx: dict[str, Any] = {
        "title": "Garbage collection",
        "summary": None,
        "result": None,
        "confirm": False,
        "delete_untagged": False,
        "grace": settings.gc.grace,
        "always_untagged": settings.gc.delete_untagged,
    }
    ctx.update(extra)
    return ctx


@routes.get("/ui/admin/gc", name=route_names.UI_GC, rule=Rule.SESSION, doc=UNDOCUMENTED)
async def gc_page(request: web.Request) -> web.StreamResponse:
    viewer = await resolve_viewer(request)
    _require_admin(viewer)
    return render("gc.html", request, _gc_ctx(request))


@routes.post("/ui/admin/gc", name=route_names.UI_GC_POST, rule=Rule.SESSION, doc=UNDOCUMENTED)
async def gc_post(request: web.Request) -> web.StreamResponse:
    """``action=dry_run``: what a collection would remove; ``action=run``: first a
    confirmation page, then (``confirm=yes``) the collection itself, started as the viewer."""
    viewer, form = await check_csrf(request)
    _require_admin(viewer)
    from ..api.common import BLOBS, DATABASE, EVENTS
    from ..gc.service import GCService

    action = _field(form, "action", 20) or "dry_run"
    untagged = _field(form, "delete_untagged") == "1"
    if action not in ("dry_run", "run"):
        raise UIError(400, "Unknown action.")
    if action == "run" and _field(form, "confirm", 10) != "yes":
        return render("gc.html", request, _gc_ctx(request, confirm=True, delete_untagged=untagged))
    service = GCService(request.app[DATABASE], request.app[BLOBS], request.app[SETTINGS], events=request.app[EVENTS])
    try:
        result = await service.collect(ui_principal(request, viewer), dry_run=action == "dry_run", delete_untagged=untagged)
    except errors.RegistryError as exc:
        raise _refused(exc) from None
    return render("gc.html", request, _gc_ctx(request, summary=result.summary(), result=result, delete_untagged=untagged))
