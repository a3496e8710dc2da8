"""The composition root: which extensions run and which policies the core consults.

The one place that knows every package: it builds the components (:mod:`moorage.components`)
with the policies' hooks and hands the app (:mod:`moorage.api.app`) the list of extensions.
Nothing imports this module but the server, the CLI, the benchmarks and the tests.
"""

from __future__ import annotations

from aiohttp import web

from .api.app import Extension, create_app
from .api.extension import ExtensionContext
from .components import Components, Policies, build_components
from .config import Settings
from .metadata.db import Database
from .storage import BlobStore


def policies(database: Database) -> Policies:
    """Immutable tags (checked in the tag-move transaction) and quotas (checked at commit)."""
    from .gc.policies import policy_hooks

    return policy_hooks(database)


def default_extensions(settings: Settings) -> list[Extension]:
    """Auth first (its middleware guards what the others add), metrics before the extensions that
    register collectors with it.

    An extension that the settings turn off is not even imported (``auth.mode: none`` leaves out
    JWT and the cryptography library: ~9 MiB of a server's memory).
    """
    from .compat.auto_import import setup_distribution_import
    from .events.setup import setup_events
    from .gc.setup import setup_gc
    from .insight.setup import setup_insight
    from .metrics import setup_metrics
    from .proxy.setup import setup_proxy
    from .ui.setup import setup_ui

    extensions: list[Extension] = [
        setup_gc,
        setup_insight,
        setup_metrics,
        setup_proxy,
        setup_events,
        setup_ui,
        setup_distribution_import,  # a registry:2 tree in the data directory: imported on start
    ]
    if settings.auth.mode != "none":
        from .auth.setup import setup_auth

        extensions.insert(0, setup_auth)
    else:
        extensions.insert(0, open_access)
    return extensions


def open_access(ctx: ExtensionContext) -> None:
    """``auth.mode: none``: everyone may do everything, but a route registered around
    :mod:`moorage.api.routing` (no declared rule) is still refused (fail closed, whatever the mode)."""
    from .api.routing import listed_routes_middleware, route_registry

    ctx.app.middlewares.append(listed_routes_middleware(route_registry(ctx.app)))


def components_for(settings: Settings, *, pool_size: int | None = None, blobs: BlobStore | None = None) -> Components:
    return build_components(settings, policies=policies, pool_size=pool_size, blobs=blobs)


def build_app(
    settings: Settings, extensions: list[Extension] | None = None, *, blobs: BlobStore | None = None
) -> web.Application:
    """The whole server application for ``settings`` (``blobs``: a store instead of the configured
    driver, for the tests' in-process app)."""
    exts = default_extensions(settings) if extensions is None else extensions
    return create_app(components_for(settings, blobs=blobs), exts)
