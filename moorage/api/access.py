"""What each request needs: the (resource type, name, actions) the auth layer must grant.

Derived from the matched route's declared rule (:mod:`moorage.api.routing`), so the auth middleware never
parses URLs itself.
"""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from .routes import REPOSITORY_ACTIONS, UPLOAD_START, UPLOAD_START_NOSLASH, Rule


@dataclass(frozen=True, slots=True)
class Access:
    type: str  # "repository" | "registry"
    name: str  # repository name, or "catalog"
    actions: tuple[str, ...]


def required_access(request: web.Request, rule: Rule) -> list[Access]:
    """Access a registry-scoped route (:data:`moorage.api.routes.REGISTRY_SCOPED`) needs, from its
    declared rule; an empty list means "any caller" (``GET /v2/``).
    Anything else asks for ``registry:admin:*``, which no token is ever issued for."""
    name = getattr(request.match_info.route, "name", None) or ""
    if rule is Rule.REGISTRY:
        return []
    if rule is Rule.CATALOG:
        return [Access("registry", "catalog", ("*",))]
    actions = REPOSITORY_ACTIONS.get(rule)
    repo = request.match_info.get("name")
    if actions is None or repo is None:
        return [Access("registry", "admin", ("*",))]
    needed = [Access("repository", repo, actions)]
    if name in (UPLOAD_START, UPLOAD_START_NOSLASH) and request.query.get("mount") and request.query.get("from"):
        needed.append(Access("repository", request.query["from"], REPOSITORY_ACTIONS[Rule.PULL]))
    return needed
