"""Middlewares that concern some routes only, run by one app middleware.

Most features watch a handful of routes: the quota the upload routes, the admin audit the
``/api/v1`` changes, the UI its pages.  As global middlewares each would wrap every request --
a manifest GET would pass through all of them to be told "not mine" -- so a feature registers
its middleware here with the route names it applies to, and :func:`dispatch` (appended once,
innermost) runs the chain of the matched route: nothing for a route no feature watches, one
dict lookup to find that out.  The chains are built per route name on first use, in the order
the middlewares were added (the order the extensions were set up).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.typedefs import Middleware

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
#: Whether a middleware applies to the route of this name ("" for a request no route matched).
Applies = Callable[[str], bool]


class RouteMiddlewares:
    """The route-scoped middlewares of one app (``app[ROUTE_MIDDLEWARES]``)."""

    def __init__(self) -> None:
        self._entries: list[tuple[Middleware, Applies]] = []
        self._chains: dict[str, tuple[Middleware, ...]] = {}

    def add(self, middleware: Middleware, applies: Applies) -> None:
        """Run ``middleware`` (an aiohttp ``@web.middleware`` function) on the routes ``applies``
        accepts; added before the app starts (the chains are kept once built)."""
        self._entries.append((middleware, applies))
        self._chains.clear()

    def chain(self, route: str) -> tuple[Middleware, ...]:
        found = self._chains.get(route)
        if found is None:
            found = self._chains[route] = tuple(mw for mw, applies in self._entries if applies(route))
        return found

    def dispatch(self) -> Middleware:
        """The one app middleware that runs them."""
        chains = self._chains
        chain_of = self.chain

        @web.middleware
        async def route_scoped(request: web.Request, handler: Handler) -> web.StreamResponse:
            route = getattr(request.match_info.route, "name", None) or ""
            chain = chains.get(route)
            if chain is None:
                chain = chain_of(route)
            if not chain:
                return await handler(request)
            return await _run(chain, 0, request, handler)

        return route_scoped


async def _run(chain: tuple[Middleware, ...], i: int, request: web.Request, handler: Handler) -> web.StreamResponse:
    if i == len(chain):
        return await handler(request)

    async def inner(req: web.Request) -> web.StreamResponse:
        return await _run(chain, i + 1, req, handler)

    return await chain[i](request, inner)


#: Where the extensions find them.
ROUTE_MIDDLEWARES = web.AppKey("route_middlewares", RouteMiddlewares)
