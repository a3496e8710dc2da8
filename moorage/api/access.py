"""What each request needs: the (resource type, name, actions) the auth layer must grant.

Derived from the matched route's name, so the auth middleware never parses URLs itself and a
new route cannot silently go unprotected: an unknown route name requires admin.
"""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web


@dataclass(frozen=True, slots=True)
class Access:
    type: str      # "repository" | "registry"
    name: str      # repository name, or "catalog"
    actions: tuple[str, ...]


_PULL = ("pull",)
_PUSH = ("pull", "push")
_DELETE = ("delete",)

_BY_ROUTE: dict[str, tuple[str, ...]] = {
    "blob_head": _PULL, "blob_get": _PULL, "blob_delete": _DELETE,
    "upload_start": _PUSH, "upload_start_noslash": _PUSH, "upload_patch": _PUSH, "upload_put": _PUSH,
    "upload_status": _PUSH, "upload_cancel": _PUSH,
    "manifest_get": _PULL, "manifest_head": _PULL, "manifest_put": _PUSH, "manifest_delete": _DELETE,
    "tags_list": _PULL, "referrers": _PULL,
}


def required_access(request: web.Request) -> list[Access]:
    """Access the request needs; an empty list means "any caller" (e.g. ``GET /v2/``)."""
    route = request.match_info.route
    name = getattr(route, "name", None) or ""
    if name in ("base", "base_noslash", "metrics"):
        return []
    if name == "catalog":
        return [Access("registry", "catalog", ("*",))]
    actions = _BY_ROUTE.get(name)
    repo = request.match_info.get("name")
    if actions is None or repo is None:
        return [Access("registry", "admin", ("*",))]
    needed = [Access("repository", repo, actions)]
    if name.startswith("upload_start") and request.query.get("mount") and request.query.get("from"):
        needed.append(Access("repository", request.query["from"], _PULL))
    return needed
