"""``/healthz`` (the process answers) and ``/readyz`` (its database and storage answer).

Unauthenticated (both are PUBLIC in :mod:`moorage.api.routes`: the auth middleware lets anyone in)
and cheap: ``/healthz`` touches nothing; ``/readyz`` runs ``SELECT 1`` and one storage probe,
each bounded by :data:`PROBE_TIMEOUT`.  Orchestrators use ``/healthz`` for liveness (restart
when it fails) and ``/readyz`` for readiness (send no traffic while a backend is down).
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any, Mapping

from aiohttp import web

from ..registry.errors import BackendUnavailable, DatabaseUnavailable, StorageUnavailable
from .common import BLOBS, NOTICES, SETTINGS, json_body, service
from . import routes as route_names

log = logging.getLogger("moorage.api")
routes = web.RouteTableDef()

#: Seconds each readiness probe may take before it counts as down.
PROBE_TIMEOUT = 5.0
#: A digest no blob has: a lookup proves the storage answers without reading any data.
_PROBE_DIGEST = "sha256:" + "0" * 64


@routes.get("/healthz", name=route_names.HEALTHZ)
async def healthz(request: web.Request) -> web.Response:
    return json_body({"status": "ok"})


async def _database(request: web.Request) -> None:
    settings = request.app[SETTINGS]
    if settings.is_sqlite:
        # Open SQLite connections keep working on a file that was deleted or replaced; the
        # next process (or connection) would not find it, so look at the path too.
        path = settings.database_url.split(":///", 1)[1].split("?", 1)[0].removeprefix("file:")
        if path and path != ":memory:" and not os.path.isfile(path):
            raise DatabaseUnavailable(reason=f"{path} is not a database file")
    await service(request).store.db.ping()


async def _storage(request: web.Request) -> None:
    settings = request.app[SETTINGS]
    if settings.storage.driver == "filesystem":
        blobs = settings.storage_root / "blobs"
        if not blobs.is_dir() or not os.access(blobs, os.W_OK | os.X_OK):
            raise StorageUnavailable(reason=f"{blobs} is not a writable directory")
        return
    await request.app[BLOBS].stat(_PROBE_DIGEST)


def notices(app: Mapping[Any, Any]) -> list[str]:
    """The current lines of the extensions' notices (:data:`~moorage.api.common.NOTICES`)."""
    out = []
    for note in app.get(NOTICES, ()):
        try:
            line = note()
        except Exception:  # noqa: BLE001 - a broken notice must not break readiness
            log.warning("readyz: a notice failed", exc_info=True)
            continue
        if line:
            out.append(line)
    return out


@routes.get("/readyz", name=route_names.READYZ)
async def readyz(request: web.Request) -> web.Response:
    checks: dict[str, str] = {}
    for name, probe in (("database", _database), ("storage", _storage)):
        try:
            await asyncio.wait_for(probe(request), PROBE_TIMEOUT)
            checks[name] = "ok"
        except asyncio.TimeoutError:
            checks[name] = f"no answer within {PROBE_TIMEOUT:g} s"
        except BackendUnavailable as exc:  # what drivers and the database layer raise for an outage
            checks[name] = " ".join((exc.reason or exc.message).split())[:300]
        except Exception as exc:  # noqa: BLE001 - not an outage but a bug: still "not ready", and logged
            log.warning("readyz: %s probe failed", name, exc_info=True)
            checks[name] = " ".join(f"{type(exc).__name__}: {exc}".split())[:300]
    ready = all(v == "ok" for v in checks.values())
    body: dict[str, object] = {"status": "ok" if ready else "unavailable", "checks": checks}
    notes = notices(request.app)
    if notes:  # e.g. a registry:2 import running: ready (what is imported is served), but say so
        body["detail"] = "; ".join(notes)
    return json_body(
        body,
        status=200 if ready else 503,
        headers=None if ready else {"Retry-After": "5"},
    )
