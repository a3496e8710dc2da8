"""The server extension for issue 5 (listed in ``moorage.composition.default_extensions``).

``setup_gc(app, settings)``:

* adds the quota middleware (:mod:`moorage.api.quota_middleware`; upload requests only, no
  query at all when no quota exists: the quota list is cached, :mod:`.quotas`) -- the same check
  at upload completion (``RegistryService.commit_guard``) for sizes known only then is a core
  hook (:mod:`.policies`);
* adds ``DELETE /api/v1/repositories/{name}`` (admin; :mod:`moorage.api.gc_admin`);
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
import threading
from typing import AsyncIterator

from aiohttp import web

from ..config import Settings

log = logging.getLogger("moorage.gc")


def setup_gc(app: web.Application, settings: Settings) -> None:
    from functools import partial

    from ..api.common import BLOBS, DATABASE
    from ..api.gc_admin import AdminCheck, add_repository_delete
    from ..api.quota_middleware import quota_middleware
    from .quotas import UploadQuotaCheck, book
    from .repositories import delete_repository

    # Immutable tags and the quota check at commit are core hooks (moorage.gc.policies, passed
    # in by the composition root); here the quota check of declared sizes before any byte.
    database = app[DATABASE]
    book(database, ttl=settings.gc.quota_cache_seconds)
    app.middlewares.append(quota_middleware(UploadQuotaCheck(database)))
    token_mode = settings.auth.mode == "token"
    require_admin: AdminCheck | None = None
    if token_mode:  # the auth module's admin check (basic or bearer)
        from ..api.credentials import require_admin as auth_require_admin

        require_admin = auth_require_admin
    add_repository_delete(app.router, partial(delete_repository, database, app[BLOBS]),
                          token_mode=token_mode, require_admin=require_admin)
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
            summary = await _in_thread(settings)
            log.info("gc: %s", summary)
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - a failed run is retried at the next interval
            log.exception("scheduled garbage collection failed")
        finally:
            if fd is not None:
                os.close(fd)


async def _in_thread(settings: Settings) -> dict:
    """One collection on a daemon thread with its own event loop, database engine and store.

    Loading the index of a big registry is CPU work (tens of thousands of rows); on its own
    thread it does not stall the serving loop, and a shutdown mid-run just drops the thread
    (the protocol is kill -9 safe; the next run finishes any tombstones).
    """
    loop = asyncio.get_running_loop()
    done: asyncio.Future[dict] = loop.create_future()

    def deliver(value: dict | None, exc: BaseException | None) -> None:
        if done.cancelled():
            return
        if exc is not None:
            done.set_exception(exc)
        else:
            done.set_result(value or {})

    def work() -> None:
        try:
            value = asyncio.run(_collect(settings))
        except BaseException as exc:  # noqa: BLE001 - handed to the awaiting task
            loop.call_soon_threadsafe(deliver, None, exc)
        else:
            loop.call_soon_threadsafe(deliver, value, None)

    threading.Thread(target=work, name="moorage-gc", daemon=True).start()
    return await done


async def _collect(settings: Settings) -> dict:
    from ..metadata.db import Database
    from ..storage import create_blob_store
    from .collector import Collector, GCOptions

    db = Database(settings.database_url, pool_size=2)
    store = create_blob_store(settings)
    await store.open()
    try:
        opts = GCOptions(grace=settings.gc.grace, delete_untagged=settings.gc.delete_untagged,
                         upload_expiry=settings.gc.upload_expiry)
        return (await Collector(db, store, opts).run()).summary()
    finally:
        await store.close()
        await db.close()
