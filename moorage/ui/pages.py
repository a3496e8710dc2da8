"""Browsing: the repository list, a repository's tags, a manifest, sign-in and sign-out.

Handlers parse the request, ask :class:`~moorage.ui.queries.UIQueries` and render a
template; every route is declared SESSION (:mod:`moorage.api.routing`), so the registry's auth middleware
leaves it alone (the UI authenticates for itself, through :mod:`moorage.ui.session`).
"""

from __future__ import annotations

import math
import re
import time
from typing import TYPE_CHECKING, Any

from aiohttp import web

from ..api import routes as route_names
from ..api.common import BLOBS, SETTINGS
from ..api.routes import Rule
from ..api.routing import UNDOCUMENTED, RouteTable
from ..registry.names import is_valid_name
from . import format as fmt
from .queries import MAX_CURSOR, Row, UIQueries
from .session import QUERIES, Redirect, UIError, Viewer, check_csrf, resolve_viewer, sign_in, sign_out
from .templating import render

if TYPE_CHECKING:
    from sqlalchemy import ColumnElement

routes = RouteTable()
NAME = "{name:[a-z0-9][a-z0-9._-]*(?:/[a-z0-9][a-z0-9._-]*)*}"
_HOST_OK = re.compile(r"^[A-Za-z0-9.\-]+(:\d{1,5})?$|^\[[0-9A-Fa-f:.]+\](:\d{1,5})?$")
_SORT_LABELS = {"name": "Name", "pushed": "Last push", "size": "Size"}


def registry_host(request: web.Request) -> str:
    """The name clients use for this registry: the request's Host (validated)."""
    host = request.host or ""
    if _HOST_OK.match(host):
        return host
    return request.app[SETTINGS].addr


def _int(value: str | None, default: int, lo: int, hi: int) -> int:
    try:
        n = int(value or default)
    except ValueError:
        return default
    return max(lo, min(hi, n))


def _repo_name(request: web.Request) -> str:
    name = request.match_info["name"]
    if not is_valid_name(name):
        raise UIError(404, "No such repository.")
    return name


async def visible_repository(request: web.Request, viewer: Viewer, name: str) -> tuple[dict[str, Any], frozenset[str]]:
    """The repository row and the viewer's rights on it; 404 (not 403: nothing leaks) if the
    viewer may not pull it."""
    queries = request.app[QUERIES]
    repo = await queries.repository(name)
    if repo is None:
        raise UIError(404, "No such repository.")
    public = repo["public"]
    if not public and viewer.mode == "token":
        from ..api.common import AUTHENTICATOR

        state = request.app.get(AUTHENTICATOR)
        if state is not None:
            public = bool(await state.store.public_repositories([name]))
    repo["visible_public"] = public
    rights = viewer.rights(name, public=public)
    if "pull" not in rights:
        if viewer.anonymous and viewer.mode != "none":
            raise Redirect(f"/ui/login?next=/ui/repo/{name}")
        raise UIError(404, "No such repository.")
    return repo, rights


# -- repositories -------------------------------------------------------------------------
@routes.get("/", name=route_names.UI_REPOS, rule=Rule.SESSION, doc=UNDOCUMENTED)
async def repositories_page(request: web.Request) -> web.StreamResponse:
    viewer = await resolve_viewer(request)
    if viewer.mode == "htpasswd" and viewer.anonymous:
        raise Redirect("/ui/login")
    settings = request.app[SETTINGS]
    q = fmt.clean(request.query.get("q", ""), 100)
    ns = fmt.clean(request.query.get("ns", ""), 255)
    sort = request.query.get("sort", "name")
    if sort not in _SORT_LABELS:
        sort = "name"
    per_page = settings.ui.page_size
    page = _int(request.query.get("page"), 1, 1, 1_000_000)
    queries = request.app[QUERIES]
    visible = await queries.visible_condition(viewer.visibility())
    # Next/Previous links carry the neighbouring row's key (keyset: a deep page costs what
    # page 2 does); a bare ``page=N`` link still works (an OFFSET).
    after = fmt.clean(request.query.get("after", ""), MAX_CURSOR) or None
    before = fmt.clean(request.query.get("before", ""), MAX_CURSOR) or None
    rows, total = await queries.list_repositories(
        visible,
        query=q,
        namespace=ns,
        sort=sort,
        offset=(page - 1) * per_page,
        limit=per_page,
        after=after,
        before=before if page > 1 else None,
    )
    pages = max(1, math.ceil(total.count / per_page)) if total.exact else None
    ctx = {
        "rows": rows,
        "total": total,
        "page": page,
        "pages": pages,
        "has_next": total.more,
        "next_key": queries.cursor(rows[-1], sort) if rows and total.more else "",
        "prev_key": queries.cursor(rows[0], sort) if rows and page > 2 else "",
        "q": q,
        "ns": ns,
        "sort": sort,
        "sorts": _SORT_LABELS,
        "title": "Repositories",
    }
    if request.headers.get("HX-Request") and request.headers.get("HX-Target") == "repo-results":
        return render("_repo_results.html", request, ctx)
    ctx["namespaces"] = await _namespaces(queries, viewer, visible)
    return render("repositories.html", request, ctx)


#: Namespace lists for the filter, per visibility, for a minute (they change rarely, and
#: grouping 10,000 names per page view costs more than the rest of the page).
_NS_CACHE: dict[str, tuple[float, list[str]]] = {}
NS_CACHE_SECONDS = 60.0


async def _namespaces(queries: UIQueries, viewer: Viewer, visible: ColumnElement[bool]) -> list[str]:
    key = f"{id(queries)}:{viewer.visibility()!r}"
    now = time.monotonic()
    hit = _NS_CACHE.get(key)
    if hit is not None and hit[0] > now:
        return hit[1]
    names = await queries.namespaces_of(visible)
    if len(_NS_CACHE) > 1000:
        _NS_CACHE.clear()
    _NS_CACHE[key] = (now + NS_CACHE_SECONDS, names)
    return names


# -- one repository ------------------------------------------------------------------------
@routes.get(f"/ui/repo/{NAME}", name=route_names.UI_REPO, rule=Rule.SESSION, doc=UNDOCUMENTED)
async def repository_page(request: web.Request) -> web.StreamResponse:
    viewer = await resolve_viewer(request)
    name = _repo_name(request)
    repo, rights = await visible_repository(request, viewer, name)
    queries = request.app[QUERIES]
    tq = fmt.clean(request.query.get("tag", ""), 128)
    page = _int(request.query.get("page"), 1, 1, 1_000_000)
    per_page = request.app[SETTINGS].ui.page_size
    # Next/Previous links carry the neighbouring tag's key (keyset, as the repository list);
    # a bare ``page=N`` link still works (an OFFSET over the index's entries).
    after = fmt.clean(request.query.get("after", ""), MAX_CURSOR) or None
    before = fmt.clean(request.query.get("before", ""), MAX_CURSOR) or None
    rows, total = await queries.tags_page(
        repo["id"],
        query=tq,
        offset=(page - 1) * per_page,
        limit=per_page,
        after=after,
        before=before if page > 1 else None,
    )
    digests = list(dict.fromkeys(r["digest"] for r in rows))
    referrers = await queries.referrers_of(repo["id"], digests)
    vulns = await _vulnerability_badges(request, rows)
    for r in rows:
        r["vulns"] = vulns.get(r["digest"])
        r["platforms"] = fmt.platforms(r["media_type"], r["payload"])
        if r["artifact_type"] in fmt.IMAGE_CONFIG_TYPES:
            r["artifact_type"] = None  # an ordinary image, not an artifact
        r["referrers"] = _group_referrers(referrers.get(r["digest"], []))
        del r["payload"]
    host = registry_host(request)
    first_tag = "latest" if any(r["tag"] == "latest" for r in rows) or not rows else rows[0]["tag"]
    ctx = {
        "title": name,
        "repo": repo,
        "rows": rows,
        "total": total,
        "page": page,
        "pages": max(1, math.ceil(total / per_page)),
        "next_key": queries.tag_cursor(rows[-1]) if rows else "",
        "prev_key": queries.tag_cursor(rows[0]) if rows and page > 2 else "",
        "tag_query": tq,
        "host": host,
        "pull": f"docker pull {host}/{name}:{first_tag}",
        "podman_pull": f"podman pull {host}/{name}:{first_tag}",
        "may_delete": "delete" in rights and request.app[SETTINGS].delete_enabled,
        "may_admin": viewer.admin and viewer.mode == "token",
        "may_delete_repository": viewer.may_administer and request.app[SETTINGS].delete_enabled,
    }
    if request.headers.get("HX-Request") and request.headers.get("HX-Target") == "tag-results":
        return render("_tag_results.html", request, ctx)
    return render("repository.html", request, ctx)


_SEVERITIES = ("CRITICAL", "HIGH", "MEDIUM", "LOW", "UNKNOWN")


async def _vulnerability_badges(request: web.Request, rows: list[Any]) -> dict[str, dict[str, Any]]:
    """Per tag row: worst severity and counts of the image's findings (an index: over its
    platforms), for images that image insight has scanned; nothing when it is off."""
    from ..insight.http import INSIGHT

    insight = request.app.get(INSIGHT)
    if insight is None or not rows:
        return {}
    children: dict[str, list[str]] = {}
    for r in rows:
        doc = fmt.parse_json(r["payload"])
        manifests = doc.get("manifests") if isinstance(doc, dict) else None
        children[r["digest"]] = (
            [str(m["digest"]) for m in manifests if isinstance(m, dict) and isinstance(m.get("digest"), str)]
            if isinstance(manifests, list)
            else [r["digest"]]
        )
    found = await insight.store.summaries(sorted({d for ds in children.values() for d in ds}))
    out: dict[str, dict[str, Any]] = {}
    for digest, ds in children.items():
        scanned = [found[d] for d in ds if d in found]
        if not scanned:
            continue
        counts: dict[str, int] = {}
        for _, c in scanned:
            for sev, n in c.items():
                counts[sev] = counts.get(sev, 0) + n
        worst = next((s for s in _SEVERITIES if counts.get(s)), "")
        label = ", ".join(f"{counts[s]} {s.lower()}" for s in _SEVERITIES if counts.get(s)) or "no known vulnerabilities"
        out[digest] = {"worst": worst.lower() or "none", "label": label}
    return out


def _group_referrers(items: list[dict[str, Any]]) -> list[tuple[str, list[dict[str, Any]]]]:
    groups: dict[str, list[dict[str, Any]]] = {}
    for it in items:
        groups.setdefault(it["artifact_type"] or "unknown", []).append(it)
    return sorted(groups.items())


# -- one manifest --------------------------------------------------------------------------
@routes.get(f"/ui/repo/{NAME}/-/manifest/{{ref}}", name=route_names.UI_MANIFEST, rule=Rule.SESSION, doc=UNDOCUMENTED)
async def manifest_page(request: web.Request) -> web.StreamResponse:
    viewer = await resolve_viewer(request)
    name = _repo_name(request)
    repo, rights = await visible_repository(request, viewer, name)
    ref = request.match_info["ref"]
    if len(ref) > 200 or fmt.clean(ref, 200) != ref:
        raise UIError(404, "No such manifest.")
    queries = request.app[QUERIES]
    digest = ref
    if ":" not in ref:  # a tag
        found = await queries.tag_digest(repo["id"], ref)
        if found is None:
            raise UIError(404, "No such tag.")
        digest = found
    m = await queries.manifest(repo["id"], digest)
    if m is None:
        raise UIError(404, "No such manifest.")
    doc = fmt.parse_json(m["payload"])
    layers: list[dict[str, Any]] = []
    config_desc = None
    config: dict[str, Any] = {}
    entries = (
        fmt.index_entries(doc) if m["media_type"] in fmt.INDEX_TYPES or (isinstance(doc, dict) and "manifests" in doc) else []
    )
    if isinstance(doc, dict) and isinstance(doc.get("layers"), list):
        for i, layer in enumerate(doc["layers"][:1000]):
            if isinstance(layer, dict):
                layers.append(
                    Row(
                        n=i + 1,
                        digest=str(layer.get("digest", "")),
                        media_type=str(layer.get("mediaType", "")),
                        size=layer.get("size") if isinstance(layer.get("size"), int) else None,
                    )
                )
        if isinstance(doc.get("config"), dict):
            config_desc = doc["config"]
            config = await _read_config(request, config_desc)
    referrers = await queries.referrers_of(repo["id"], [m["digest"]])
    from ..insight.http import INSIGHT

    insight = request.app.get(INSIGHT)
    scan = await insight.store.get_image(m["digest"]) if insight is not None else None
    vulndb = None
    if scan is not None and insight is not None:
        from ..insight.vulndb_status import vulndb_status

        vulndb = await vulndb_status(insight.store)
    host = registry_host(request)
    ctx = {
        "title": f"{name}@{fmt.short_digest(m['digest'])}",
        "repo": repo,
        "m": m,
        "ref": ref,
        "layers": layers,
        "entries": entries,
        "config_desc": config_desc,
        "config": fmt.config_view(config),
        "raw": fmt.pretty_json(m["payload"]),
        "host": host,
        "referrers": _group_referrers(referrers.get(m["digest"], [])),
        "pull": f"docker pull {host}/{name}@{m['digest']}",
        "may_delete": "delete" in rights and request.app[SETTINGS].delete_enabled,
        "layers_total": sum(x["size"] or 0 for x in layers),
        "findings": scan.findings[:500] if scan else None,
        "scanned_packages": scan.package_count if scan else 0,
        "vulndb": vulndb,
        "image_config_types": fmt.IMAGE_CONFIG_TYPES,
    }
    return render("manifest.html", request, ctx)


async def _read_config(request: web.Request, desc: dict[str, Any]) -> dict[str, Any]:
    """The image config blob (bounded: configs are small; a huge one is not rendered)."""
    digest, size = desc.get("digest"), desc.get("size")
    if not isinstance(digest, str) or not isinstance(size, int) or size > 2 * 1024 * 1024:
        return {}
    if str(desc.get("mediaType", "")) not in (
        "application/vnd.oci.image.config.v1+json",
        "application/vnd.docker.container.image.v1+json",
    ):
        return {}
    store = request.app[BLOBS]
    chunks: list[bytes] = []
    try:
        async for chunk in store.read(digest, 0, size):
            chunks.append(chunk)
    except Exception:  # noqa: BLE001 - a missing config blob just leaves the section empty
        return {}
    doc = fmt.parse_json(b"".join(chunks))
    return doc if isinstance(doc, dict) else {}


# -- sign-in -------------------------------------------------------------------------------
#: Longest ``next=`` kept after sign-in (a longer one sends the user to ``/``).
MAX_NEXT = 1000


def _safe_next(value: str | None) -> str:
    """Where to go after sign-in: only a path of this site, else ``/``.

    Browsers are lenient where a server is strict: they drop tabs and newlines anywhere in a
    URL, read a backslash as ``/`` and strip leading controls and spaces, so ``/%09/host`` (a
    tab, decoded) or ``/%5Chost`` (a backslash) becomes ``//host`` -- another site.  So:
    printable ASCII only (no whitespace, no controls, no non-ASCII such as U+3000 or U+200B),
    no backslash, one leading ``/`` and not ``//``.
    """
    if (
        value
        and len(value) <= MAX_NEXT
        and value.startswith("/")
        and not value.startswith("//")
        and all("!" <= ch <= "~" and ch != "\\" for ch in value)
    ):
        return value
    return "/"


@routes.get("/ui/login", name=route_names.UI_LOGIN, rule=Rule.SESSION, doc=UNDOCUMENTED)
async def login_page(request: web.Request) -> web.StreamResponse:
    await resolve_viewer(request)
    return render(
        "login.html", request, {"title": "Sign in", "next": _safe_next(request.query.get("next")), "error": None, "username": ""}
    )


@routes.post("/ui/login", name=route_names.UI_LOGIN_POST, rule=Rule.SESSION, doc=UNDOCUMENTED)
async def login_post(request: web.Request) -> web.StreamResponse:
    _, form = await check_csrf(request)
    username = fmt.clean(str(form.get("username", "")), 200)
    password = str(form.get("password", ""))
    nxt = _safe_next(str(form.get("next", "/")))
    try:
        await sign_in(request, username, password)
    except UIError as exc:
        resp = render("login.html", request, {"title": "Sign in", "next": nxt, "error": exc.message, "username": username[:64]})
        resp.set_status(exc.status)
        return resp
    raise Redirect(nxt)


@routes.post("/ui/logout", name=route_names.UI_LOGOUT, rule=Rule.SESSION, doc=UNDOCUMENTED)
async def logout(request: web.Request) -> web.StreamResponse:
    await check_csrf(request)
    await sign_out(request)
    raise Redirect("/")
