"""The extension protocol: what the core hands a feature while the app is built.

A feature (auth, gc/policies, insight, metrics, proxy, events, ui, the registry:2 import) is a
function ``setup(ctx)`` that receives one :class:`ExtensionContext` and wires itself in through
it: the settings, the core's components (database, metadata store, blob store, registry
service, event bus), the scheduler for its background jobs, the route-scoped middlewares, the
notices ``/readyz`` shows, and the app itself for its routes and lifecycle.  Nothing of the core
is looked up by an ``AppKey`` at setup time, so what an extension depends on is the signature
of this class, not keys spread over modules.  (Handlers still read their own keys from
``request.app``: that is aiohttp's way for request-time state.)

Two slots are filled by the extension that provides them, for the ones set up after it:
``authenticator`` (auth, first) and ``metrics`` (the Prometheus registry).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from aiohttp import web

from ..components import Components
from ..config import Settings
from ..metadata.db import Database
from ..metadata.store import MetadataStore
from ..registry.events import EventBus
from ..registry.service import RegistryService
from ..scheduler import Scheduler
from ..storage import BlobStore
from .scoped import RouteMiddlewares

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry


@dataclass(eq=False)
class ExtensionContext:
    """Everything an extension may use while it is set up (see the module docstring)."""

    app: web.Application
    settings: Settings
    components: Components
    scheduler: Scheduler
    route_middlewares: RouteMiddlewares
    #: What an operator should know while the registry serves (``/readyz`` details).
    notices: list[Callable[[], str | None]]
    #: The authenticator, when authentication is configured (set by the auth extension).
    authenticator: Any = None
    #: The Prometheus registry, when metrics are on (set by the metrics extension).
    metrics: CollectorRegistry | None = None

    @property
    def database(self) -> Database:
        return self.components.database

    @property
    def store(self) -> MetadataStore:
        return self.components.metadata

    @property
    def blobs(self) -> BlobStore:
        return self.components.blobs

    @property
    def registry(self) -> RegistryService:
        return self.components.registry

    @property
    def events(self) -> EventBus:
        return self.components.events


class Extension(Protocol):
    """A feature's setup: ``setup(ctx)`` adds routes, middlewares, jobs and listeners."""

    def __call__(self, ctx: ExtensionContext) -> None: ...
