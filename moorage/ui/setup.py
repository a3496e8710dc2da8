"""``setup_ui(app, settings)``: the web UI extension, wired in one place.

Adds the pages (``/``, ``/ui/...``), the static files (``/static/``), a middleware that turns
errors on UI routes into HTML pages and adds security headers, and the push/pull activity
recorder subscribed to the registry's :class:`~moorage.registry.events.EventBus`.
Every route is named ``public_ui_*``: the registry's auth middleware leaves those alone and
the UI authenticates for itself (:mod:`moorage.ui.session`).  ``ui.enabled: false`` adds
nothing at all.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable

from aiohttp import web

from .. import errors
from ..api import routes as route_names
from ..api.extension import ExtensionContext
from ..api.routes import Rule
from ..api.routing import add_routes, add_static
from .activity import ACTIVITY  # noqa: F401 - the key lives with the recorder
from .session import QUERIES, Redirect, UIError, apply_cookies, resolve_viewer
from .templating import STATIC_DIR, render, setup_templates

log = logging.getLogger("moorage.ui")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'; object-src 'none'"
)


def _is_ui(request: web.Request) -> bool:
    name = getattr(request.match_info.route, "name", None) or ""
    return name in route_names.UI_ROUTES


@web.middleware
async def ui_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if not _is_ui(request):
        return await handler(request)
    static = request.match_info.route.name == route_names.UI_STATIC
    started, cpu = time.perf_counter(), time.process_time()
    try:
        resp = await handler(request)
    except Redirect as exc:
        resp = web.Response(status=303, headers={"Location": exc.location})
    except UIError as exc:
        resp = await _error_page(request, exc.status, exc.message)
    except errors.RegistryError as exc:
        resp = await _error_page(request, exc.status, exc.message)
    except web.HTTPException as exc:
        if exc.status >= 400:
            resp = await _error_page(request, exc.status, exc.reason)
        else:
            raise
    if static:
        if request.query.get("v") and resp.status == 200:  # versioned URL: the content never changes
            resp.headers["Cache-Control"] = "public, max-age=31536000, immutable"
    else:
        apply_cookies(request, resp)
        resp.headers.setdefault("Cache-Control", "no-store")
        resp.headers["Content-Security-Policy"] = _CSP
        resp.headers["Referrer-Policy"] = "same-origin"
    # The server's own time for the page (read by benchmarks/bench_ui.py; browsers show it too).
    # app = wall time; cpu = the process's CPU time meanwhile (what the page costs on an idle
    # machine; on a loaded one the wall time also holds the waits for a core).
    resp.headers["Server-Timing"] = (
        f"app;dur={(time.perf_counter() - started) * 1000:.2f}, cpu;dur={(time.process_time() - cpu) * 1000:.2f}"
    )
    resp.headers["X-Content-Type-Options"] = "nosniff"
    resp.headers["X-Frame-Options"] = "DENY"
    return resp


async def _error_page(request: web.Request, status: int, message: str) -> web.Response:
    try:
        await resolve_viewer(request)
    except Exception:  # noqa: BLE001 - the error page must render even if the session lookup fails
        pass
    return render("error.html", request, {"title": f"Error {status}", "status": status, "message": message}, status=status)


def setup_ui(ctx: ExtensionContext) -> None:
    app, settings = ctx.app, ctx.settings
    if not settings.ui.enabled:
        return
    from . import admin, charts, groups, manage, pages
    from .activity import ActivityRecorder
    from .queries import UIQueries

    queries = UIQueries(ctx.database)
    app[QUERIES] = queries
    setup_templates(app)
    recorder = ActivityRecorder(queries, settings.ui.activity_days)
    app[ACTIVITY] = recorder
    ctx.events.subscribe(recorder.on_event, wants=recorder.wants)
    ctx.events.count_pulls(recorder.count_pull)
    app.cleanup_ctx.append(recorder.cleanup_ctx())
    ctx.scheduler.register(recorder.job())
    ctx.route_middlewares.add(ui_middleware, lambda route: route in route_names.UI_ROUTES)
    add_routes(app, *(module.routes for module in (pages, manage, admin, charts, groups)))
    if settings.auth.mode == "token" and settings.auth.oidc is not None:
        from . import oidc

        add_routes(app, oidc.routes)
    add_static(app, "/static/", STATIC_DIR, name=route_names.UI_STATIC, rule=Rule.SESSION, append_version=True)
