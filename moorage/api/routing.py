"""Route declarations: each HTTP route is declared once, at its handler, with its name, its access
rule and its OpenAPI operation -- and the app knows exactly what it registered.

A handler module keeps a :class:`RouteTable` and declares its routes on it, as with aiohttp's
``RouteTableDef``, except that ``name=``, ``rule=`` and ``doc=`` are required (keyword-only)::

    routes = RouteTable()

    TAGS_DOC = {"tags": ["v2"], "operationId": "listTags", ...}  # the OpenAPI operation object

    @routes.get(f"/v2/{NAME}/tags/list", name=route_names.TAGS_LIST, rule=Rule.PULL, doc=TAGS_DOC)
    async def tags_list(request): ...

A handler made at setup time (a bound method, a closure over the settings) is declared with
``table.add_route(method, path, handler, name=..., rule=..., doc=...)``.  ``doc=UNDOCUMENTED`` is
for the web UI's HTML pages and static files only; every API route carries its operation.

:func:`add_routes` (the one way routes reach an app: the core in :mod:`moorage.api.app`, every
extension's setup) adds them to the aiohttp router and files each route object with its
declaration in the app's :class:`RouteRegistry` (``app[ROUTE_REGISTRY]``).  From there:

* the auth middlewares (:mod:`moorage.auth.state`, :func:`listed_routes_middleware`) read the
  matched route's rule (:func:`route_rule`).  A route that did not come through here -- added with
  ``app.router.add_get`` directly, even under the name of a declared route -- has no entry and is
  refused (403 ``DENIED``, logged): fail closed;
* ``/api/openapi.json`` (:mod:`moorage.api.openapi`) is the declared operations of the routes this
  app registered, so a mode without a route does not list it.

Route names stay (metrics labels, the access and audit logs use them): the constants of
:mod:`moorage.api.routes`, one name per route whatever ``auth.mode``.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, TypeVar

from aiohttp import hdrs, web
from aiohttp.web_urldispatcher import AbstractRoute

from .. import errors
from .routes import Rule

log = logging.getLogger("moorage.auth")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
H = TypeVar("H", bound=Handler)
#: An OpenAPI 3.0 operation object (``tags``, ``operationId``, ``responses`` ...).
Operation = Mapping[str, Any]


class Undocumented(Enum):
    """The marker of a route with no OpenAPI operation: the web UI's pages and static files."""

    UNDOCUMENTED = "undocumented"


UNDOCUMENTED = Undocumented.UNDOCUMENTED
#: What ``doc=`` takes.
Doc = Operation | Undocumented


@dataclass(frozen=True)
class RouteSpec:
    """One declared route.  ``path_item``: keys of the OpenAPI path item shared by the
    operations of this path (``parameters``); the routes of one path must agree on them."""

    method: str
    path: str
    handler: Handler
    name: str
    rule: Rule
    doc: Doc
    path_item: Mapping[str, Any] = field(default_factory=dict)
    options: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.rule, Rule):
            raise TypeError(f"route {self.name!r}: rule must be a moorage.api.routes.Rule, not {self.rule!r}")
        if not self.name:
            raise ValueError(f"{self.method} {self.path}: a route needs a name")
        if self.doc is UNDOCUMENTED:
            if self.rule is not Rule.SESSION:  # the web UI's pages and static files, nothing else
                raise ValueError(f"route {self.name!r}: only the web UI's routes (SESSION) may be UNDOCUMENTED")
        elif not (isinstance(self.doc, Mapping) and "operationId" in self.doc):
            raise ValueError(f"route {self.name!r}: doc must be an OpenAPI operation (with an operationId) or UNDOCUMENTED")


class RouteTable:
    """Routes declared by one module (or one setup function), not yet on any app."""

    def __init__(self) -> None:
        self._specs: list[RouteSpec] = []

    def __iter__(self) -> Iterator[RouteSpec]:
        return iter(self._specs)

    def __len__(self) -> int:
        return len(self._specs)

    def add_route(
        self,
        method: str,
        path: str,
        handler: Handler,
        *,
        name: str,
        rule: Rule,
        doc: Doc,
        path_item: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> RouteSpec:
        """Declare ``handler`` for ``method path`` (``options``: aiohttp's, e.g. ``allow_head``)."""
        spec = RouteSpec(method.upper(), path, handler, name, rule, doc, dict(path_item or {}), options)
        self._specs.append(spec)
        return spec

    def route(
        self,
        method: str,
        path: str,
        *,
        name: str,
        rule: Rule,
        doc: Doc,
        path_item: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> Callable[[H], H]:
        def declare(handler: H) -> H:
            self.add_route(method, path, handler, name=name, rule=rule, doc=doc, path_item=path_item, **options)
            return handler

        return declare

    def get(
        self, path: str, *, name: str, rule: Rule, doc: Doc, path_item: Mapping[str, Any] | None = None, **options: Any
    ) -> Callable[[H], H]:
        """A GET route; aiohttp adds its HEAD too unless ``allow_head=False`` (same name and rule)."""
        return self.route(hdrs.METH_GET, path, name=name, rule=rule, doc=doc, path_item=path_item, **options)

    def head(
        self, path: str, *, name: str, rule: Rule, doc: Doc, path_item: Mapping[str, Any] | None = None, **options: Any
    ) -> Callable[[H], H]:
        return self.route(hdrs.METH_HEAD, path, name=name, rule=rule, doc=doc, path_item=path_item, **options)

    def post(
        self, path: str, *, name: str, rule: Rule, doc: Doc, path_item: Mapping[str, Any] | None = None, **options: Any
    ) -> Callable[[H], H]:
        return self.route(hdrs.METH_POST, path, name=name, rule=rule, doc=doc, path_item=path_item, **options)

    def put(
        self, path: str, *, name: str, rule: Rule, doc: Doc, path_item: Mapping[str, Any] | None = None, **options: Any
    ) -> Callable[[H], H]:
        return self.route(hdrs.METH_PUT, path, name=name, rule=rule, doc=doc, path_item=path_item, **options)

    def patch(
        self, path: str, *, name: str, rule: Rule, doc: Doc, path_item: Mapping[str, Any] | None = None, **options: Any
    ) -> Callable[[H], H]:
        return self.route(hdrs.METH_PATCH, path, name=name, rule=rule, doc=doc, path_item=path_item, **options)

    def delete(
        self, path: str, *, name: str, rule: Rule, doc: Doc, path_item: Mapping[str, Any] | None = None, **options: Any
    ) -> Callable[[H], H]:
        return self.route(hdrs.METH_DELETE, path, name=name, rule=rule, doc=doc, path_item=path_item, **options)


class RouteRegistry:
    """The routes one app registered through :func:`add_routes`: route object -> declaration.

    Keyed by the route object, not its name: a route slipped in beside the declarations under a
    declared route's name still has no entry (and is refused)."""

    def __init__(self) -> None:
        self._by_route: dict[AbstractRoute, RouteSpec] = {}
        self._specs: list[tuple[str, RouteSpec]] = []
        self._names: dict[str, RouteSpec] = {}
        self._by_rule: dict[Rule, frozenset[str]] = {}

    def add(self, spec: RouteSpec, template: str, *routes: AbstractRoute) -> None:
        """File ``routes`` (the aiohttp routes made for ``spec``; ``template``: its path with
        the variables' regular expressions left out, as OpenAPI writes it)."""
        known = self._names.get(spec.name)
        if known is not None and known.rule is not spec.rule:
            raise ValueError(f"route name {spec.name!r} declared with two rules ({known.rule.value}, {spec.rule.value})")
        self._names.setdefault(spec.name, spec)
        self._specs.append((template, spec))
        self._by_rule.clear()
        for route in routes:
            self._by_route[route] = spec

    def spec_of(self, route: AbstractRoute) -> RouteSpec | None:
        return self._by_route.get(route)

    def specs(self) -> list[RouteSpec]:
        """Every declaration registered, in registration order."""
        return [spec for _, spec in self._specs]

    def templates(self) -> list[tuple[str, RouteSpec]]:
        """(path template, declaration) of every route registered, in registration order."""
        return list(self._specs)

    def names(self, rule: Rule) -> frozenset[str]:
        """The names of the routes registered under ``rule`` (kept once asked: per request)."""
        found = self._by_rule.get(rule)
        if found is None:
            found = self._by_rule[rule] = frozenset(s.name for _, s in self._specs if s.rule is rule)
        return found


#: The app's registry (made by the first :func:`add_routes`).
ROUTE_REGISTRY = web.AppKey("route_registry", RouteRegistry)


def route_registry(app: web.Application) -> RouteRegistry:
    """The app's registry, made on first use (before the app is frozen)."""
    registry = app.get(ROUTE_REGISTRY)
    if registry is None:
        registry = app[ROUTE_REGISTRY] = RouteRegistry()
    return registry


def add_routes(app: web.Application, *tables: Iterable[RouteSpec]) -> None:
    """Register the declared routes on ``app``: on its router, and in its registry with their
    rule and doc.  The only way a route gets an access rule."""
    registry = route_registry(app)
    for table in tables:
        for spec in table:
            options = dict(spec.options)
            allow_head = bool(options.pop("allow_head", True)) and spec.method == hdrs.METH_GET
            resource = app.router.add_resource(spec.path, name=spec.name)
            added = []
            if allow_head:  # as aiohttp's add_get: the HEAD of a GET, same handler and name
                added.append(resource.add_route(hdrs.METH_HEAD, spec.handler, **options))
            added.append(resource.add_route(spec.method, spec.handler, **options))
            info = resource.get_info()
            registry.add(spec, str(info.get("formatter") or info.get("path") or resource.canonical), *added)


def add_static(app: web.Application, prefix: str, directory: Path, *, name: str, rule: Rule, **options: Any) -> None:
    """Serve the files under ``directory`` at ``prefix`` (aiohttp's static resource, its GET and
    HEAD), registered like :func:`add_routes` (static files are never documented)."""
    resource = app.router.add_static(prefix, directory, name=name, **options)
    routes = list(resource)
    get = next(r for r in routes if r.method == hdrs.METH_GET)
    spec = RouteSpec(hdrs.METH_GET, prefix, get.handler, name, rule, UNDOCUMENTED)
    route_registry(app).add(spec, prefix, *routes)


def matched_spec(request: web.Request) -> RouteSpec | None:
    """The declaration of the route that matched ``request`` (None: routing failed, or the route
    was not registered through :func:`add_routes`)."""
    registry = request.app.get(ROUTE_REGISTRY)
    if registry is None:
        return None
    return registry.spec_of(request.match_info.route)


def route_rule(request: web.Request, registry: RouteRegistry | None = None) -> Rule | None:
    """The matched route's rule; None when routing failed (the 404/405 is the answer).
    Raises DENIED for a route that was not declared (registered around :func:`add_routes`).
    ``registry``: the app's, when the caller holds it (the middlewares do: it saves looking up
    ``request.app`` on every request)."""
    match_info = request.match_info
    if match_info.http_exception is not None:
        return None
    if registry is None:
        registry = request.app.get(ROUTE_REGISTRY)
    spec = None if registry is None else registry.spec_of(match_info.route)
    if spec is None:
        route = match_info.route
        log.error(
            "route %r (%s %s) was not declared with an access rule (moorage.api.routing): refused",
            getattr(route, "name", None),
            request.method,
            route.resource.canonical if route.resource is not None else "?",
        )
        raise errors.Denied("this route has no access rule")
    return spec.rule


def listed_routes_middleware(registry: RouteRegistry) -> Any:
    """``auth.mode: none`` (added by the composition root, the auth package is not even loaded):
    everyone may do everything, but an undeclared route is still refused, so the declarations
    stay complete whatever mode the tests run in."""

    @web.middleware
    async def routes_listed(request: web.Request, handler: Handler) -> web.StreamResponse:
        route_rule(request, registry)
        return await handler(request)

    return routes_listed
