"""Charts: storage per namespace (stacked by repository) and push/pull activity per hour.

The page is a table first (readable without JavaScript, and by screen readers); Chart.js
draws the same numbers from the JSON endpoints.  Only repositories the viewer may see count.
"""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web

from ..api import routes as route_names
from ..api.routes import Rule
from ..api.routing import UNDOCUMENTED, RouteTable
from .session import QUERIES, Redirect, Viewer, resolve_viewer
from .templating import render

routes = RouteTable()
#: Namespaces shown in the storage chart, and repositories stacked per namespace.
TOP_NAMESPACES = 12
TOP_REPOS = 8


async def _viewer(request: web.Request) -> Viewer:
    viewer = await resolve_viewer(request)
    if viewer.mode == "htpasswd" and viewer.anonymous:
        raise Redirect("/ui/login?next=/ui/stats")
    return viewer


async def storage_data(request: web.Request, viewer: Viewer) -> dict[str, Any]:
    """``{labels: [namespace...], datasets: [{label: repo-or-"other", data: [...]}], totals}``.

    Repositories without a namespace are grouped under ``(top level)``.  Per namespace the
    largest ``TOP_REPOS`` repositories get their own segment, the rest one "other" segment;
    segments are stacked by rank (a dataset per rank) so that the chart stays readable.
    """
    from .activity import ACTIVITY

    recorder = request.app.get(ACTIVITY)
    if recorder is not None:  # the figures of what was pushed or deleted since the last flush
        await recorder.refresh_dirty()
    queries = request.app[QUERIES]
    visible = await queries.visible_condition(viewer.visibility())
    by_ns: dict[str, list[tuple[str, int]]] = {}
    for name, size in await queries.storage_by_repository(visible):
        ns = name.split("/", 1)[0] if "/" in name else "(top level)"
        by_ns.setdefault(ns, []).append((name, size))
    totals = sorted(((sum(s for _, s in repos), ns) for ns, repos in by_ns.items()), reverse=True)[:TOP_NAMESPACES]
    labels = [ns for _, ns in totals]
    ranks: list[dict[str, Any]] = []
    for i, ns in enumerate(labels):
        repos = sorted(by_ns[ns], key=lambda r: -r[1])
        segs = repos[:TOP_REPOS]
        rest = sum(s for _, s in repos[TOP_REPOS:])
        if rest:
            segs = segs + [(f"{ns}: {len(repos) - TOP_REPOS} more", rest)]
        for rank, (repo, size) in enumerate(segs):
            while len(ranks) <= rank:
                ranks.append({"data": [0] * len(labels), "names": [""] * len(labels)})
            ranks[rank]["data"][i] = size
            ranks[rank]["names"][i] = repo
    return {"labels": labels, "ranks": ranks, "totals": [t for t, _ in totals]}


async def activity_data(request: web.Request, viewer: Viewer, hours: int = 7 * 24) -> dict[str, Any]:
    from .activity import ACTIVITY

    recorder = request.app.get(ACTIVITY)
    if recorder is not None:
        await recorder.flush_counts()
    queries = request.app[QUERIES]
    visible = await queries.visible_condition(viewer.visibility())
    now_bucket = int(time.time() // 3600)
    start = now_bucket - hours + 1
    rows = {b: (p, q) for b, p, q in await queries.activity(visible, start)}
    buckets = list(range(start, now_bucket + 1))
    return {
        "hours": [b * 3600 for b in buckets],
        "pushes": [rows.get(b, (0, 0))[0] for b in buckets],
        "pulls": [rows.get(b, (0, 0))[1] for b in buckets],
    }


@routes.get("/ui/stats", name=route_names.UI_STATS, rule=Rule.SESSION, doc=UNDOCUMENTED)
async def stats_page(request: web.Request) -> web.StreamResponse:
    viewer = await _viewer(request)
    storage = await storage_data(request, viewer)
    activity = await activity_data(request, viewer)
    days: dict[int, list[int]] = {}
    for t, p, q in zip(activity["hours"], activity["pushes"], activity["pulls"], strict=False):
        d = days.setdefault(t // 86400 * 86400, [0, 0])
        d[0] += p
        d[1] += q
    return render(
        "stats.html",
        request,
        {
            "title": "Statistics",
            "storage": storage,
            "days": sorted(days.items()),
            "total_pushes": sum(activity["pushes"]),
            "total_pulls": sum(activity["pulls"]),
        },
    )


@routes.get("/ui/stats/storage.json", name=route_names.UI_STATS_STORAGE, rule=Rule.SESSION, doc=UNDOCUMENTED)
async def storage_json(request: web.Request) -> web.StreamResponse:
    return web.json_response(await storage_data(request, await _viewer(request)))


@routes.get("/ui/stats/activity.json", name=route_names.UI_STATS_ACTIVITY, rule=Rule.SESSION, doc=UNDOCUMENTED)
async def activity_json(request: web.Request) -> web.StreamResponse:
    return web.json_response(await activity_data(request, await _viewer(request)))
