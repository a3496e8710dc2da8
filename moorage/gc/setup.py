"""The server extension for issue 5 (listed in ``moorage.api.app.default_extensions``).

``setup_gc(app, settings)``:

* adds the quota middleware (upload requests only; one tiny query when no quota exists) and the
  same check at upload completion (``RegistryService.commit_guard``) for sizes known only then;
* adds ``DELETE /api/v1/repositories/{name}`` (admin);
* with ``gc.interval > 0``, runs the collector inside the server every ``gc.interval`` seconds
  (grace ``gc.grace``, ``gc.delete_untagged``).  With several workers (or replicas on one
  data directory) only the one holding ``<data>/gc.lock`` collects; concurrent collectors are
  safe anyway (docs/gc.md), just wasteful.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
from typing import AsyncIterator

from aiohttp import web

from ..config import Settings
from .api import quota_middleware, repository_delete_handler

log = logging.getLogger("moorage.gc")


def setup_gc(app: web.Application, settings: Settings) -> None:
    from ..api.app import DATABASE, STORE
    from ..api.blobs import NAME

    app.middlewares.append(quota_middleware(DATABASE, STORE))
    # ... and at completion, for pushes whose size was unknown before (chunked bodies).
    from ..api.common import SERVICE
    from . import quotas

    db = app[DATABASE]

    async def quota_guard(repository: str, digest: str, size: int) -> None:
        await quotas.check_push(db, repository, size, digest)

    app[SERVICE].commit_guard = quota_guard
    token_mode = settings.auth.mode == "token"
    # In token mode the auth middleware skips "api_v1_*" routes (they authenticate themselves,
    # and so does this one); otherwise the auth middleware (if any) authenticates the caller.
    route_name = "api_v1_repository_delete" if token_mode else "gc_repository_delete"
    app.router.add_delete(f"/api/v1/repositories/{NAME}", repository_delete_handler(DATABASE, token_mode), name=route_name)
    if settings.gc.interval > 0:
        app.cleanup_ctx.append(_scheduler(settings))


def _scheduler(settings: Settings):  # type: ignore[no-untyped-def]
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        task = asyncio.create_task(_loop(app, settings))
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    return ctx


async def _loop(app: web.Application, settings: Settings) -> None:
    from ..api.app import DATABASE
    from ..api.common import BLOBS
    from .collector import Collector, GCOptions

    lock_path = settings.data / "gc.lock"
    while True:
        await asyncio.sleep(settings.gc.interval)
        fd = None
        try:
            lock_path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue
            opts = GCOptions(grace=settings.gc.grace, delete_untagged=settings.gc.delete_untagged,
                             upload_expiry=settings.gc.upload_expiry)
            result = await Collector(app[DATABASE], app[BLOBS], opts).run()
            log.info("gc: %s", result.summary())
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - a failed run is retried at the next interval
            log.exception("scheduled garbage collection failed")
        finally:
            if fd is not None:
                os.close(fd)
