"""``/healthz`` (the process answers) and ``/readyz`` (its database and storage answer).

Unauthenticated (both are declared PUBLIC: the auth middleware lets anyone in)
and cheap: ``/healthz`` touches nothing; ``/readyz`` runs ``SELECT 1`` and one storage probe,
each bounded by :data:`PROBE_TIMEOUT`.  Orchestrators use ``/healthz`` for liveness (restart
when it fails) and ``/readyz`` for readiness (send no traffic while a backend is down).
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from ..errors import BackendUnavailable, DatabaseUnavailable, StorageUnavailable, Unavailable
from . import apidoc as oa
from . import routes as route_names
from .common import AUTHENTICATOR, BLOBS, NOTICES, SETTINGS, json_body, service
from .routes import Rule
from .routing import RouteTable
from .storage_full import full_state

log = logging.getLogger("moorage.api")
routes = RouteTable()

# -- OpenAPI: parts of this module's route operations (moorage.api.apidoc) --
_HEALTH = {"type": "object", "required": ["status"], "properties": {"status": {"type": "string", "enum": ["ok"]}}}
_READY = oa.obj(
    ["status", "checks"],
    status={"type": "string", "enum": ["ok", "unavailable"]},
    checks={
        "type": "object",
        "additionalProperties": {"type": "string"},
        "description": "``database`` and ``storage``: ``ok`` or why not.",
    },
)

#: Seconds each readiness probe may take before it counts as down.
PROBE_TIMEOUT = 5.0
#: A digest no blob has: a lookup proves the storage answers without reading any data.
_PROBE_DIGEST = "sha256:" + "0" * 64


HEALTHZ_DOC = oa.op(
    "operations", "healthz", "Liveness: the process answers", {"200": oa.json_body(_HEALTH, "Alive.")}, security=[{}], errors=()
)


@routes.get("/healthz", name=route_names.HEALTHZ, rule=Rule.PUBLIC, doc=HEALTHZ_DOC)
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


#: Free bytes below which a local file system counts as full for ``/readyz`` (every process sees
#: it, also one that has not refused a write itself yet).
MIN_FREE_BYTES = 1 << 20


def _local_full(request: web.Request) -> str | None:
    """ "storage full" if the file system under the blobs (filesystem driver) or the SQLite
    database has (almost) no space left for this user."""
    settings = request.app[SETTINGS]
    paths: list[tuple[str, str]] = []
    if settings.storage.driver == "filesystem":
        paths.append(("storage", str(settings.storage_root)))
    if settings.is_sqlite:
        db_path = settings.database_url.split(":///", 1)[1].split("?", 1)[0].removeprefix("file:")
        if db_path and db_path != ":memory:":
            paths.append(("database", os.path.dirname(db_path) or "."))
    for what, path in paths:
        try:
            st = os.statvfs(path)
        except OSError:
            continue  # the probes above say what is wrong with the path
        if st.f_bavail * st.f_frsize < MIN_FREE_BYTES:
            return f"{what} full: writes refused, reads work ({st.f_bavail * st.f_frsize} bytes free under {path})"
    return None


async def _identity(request: web.Request) -> dict[str, str]:
    """Directory providers (``auth.ldap``): reported, but not part of readiness -- local users
    (the break-glass administrator) and robots keep working while the directory is down."""
    auth = request.app.get(AUTHENTICATOR)
    out: dict[str, str] = {}
    probes = []
    if getattr(auth, "directory", None) is not None:
        probes.append(("ldap", auth.directory.directory.probe, f"the LDAP server at {auth.directory.directory.url}"))  # type: ignore[union-attr]
    if getattr(auth, "oidc", None) is not None:
        probes.append(("oidc", auth.oidc.client.probe, f"the OpenID provider at {auth.oidc.client.issuer}"))  # type: ignore[union-attr]
    for name, probe, what in probes:
        try:
            async with asyncio.timeout(PROBE_TIMEOUT):
                await probe()
            out[name] = "ok"
        except TimeoutError:
            out[name] = f"{what} does not answer (no answer within {PROBE_TIMEOUT:g} s)"
        except Unavailable as exc:
            out[name] = exc.message[:300]
    return out


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


READYZ_DOC = oa.op(
    "operations",
    "readyz",
    "Readiness: database and storage answer",
    {
        "200": oa.json_body(_READY, "Ready."),
        "503": oa.json_body(_READY, "A backend is down.", {"Retry-After": oa.ref("headers", "Retry-After")}),
    },
    security=[{}],
    errors=(),
)


@routes.get("/readyz", name=route_names.READYZ, rule=Rule.PUBLIC, doc=READYZ_DOC)
async def readyz(request: web.Request) -> web.Response:
    checks: dict[str, str] = {}
    for name, probe in (("database", _database), ("storage", _storage)):
        try:
            await asyncio.wait_for(probe(request), PROBE_TIMEOUT)
            checks[name] = "ok"
        except TimeoutError:
            checks[name] = f"no answer within {PROBE_TIMEOUT:g} s"
        except BackendUnavailable as exc:  # what drivers and the database layer raise for an outage
            checks[name] = " ".join((exc.reason or exc.message).split())[:300]
        except Exception as exc:  # noqa: BLE001 - not an outage but a bug: still "not ready", and logged
            log.warning("readyz: %s probe failed", name, exc_info=True)
            checks[name] = " ".join(f"{type(exc).__name__}: {exc}".split())[:300]
    ready = all(v == "ok" for v in checks.values())
    body: dict[str, object] = {"status": "ok" if ready else "unavailable", "checks": checks}
    # Full storage refuses writes but serves reads: still ready (200), with the reason; so is a
    # registry:2 import running (what is imported is served).
    state = full_state(request)
    full = (state.detail() if state is not None else None) or _local_full(request)
    details = ([full] if full else []) + notices(request.app)
    if details:
        body["detail"] = "; ".join(details)
    if full and ready:
        body["status"] = "degraded"
    identity = await _identity(request)
    if identity:
        body["identity"] = identity
    return json_body(
        body,
        status=200 if ready else 503,
        headers=None if ready else {"Retry-After": "5"},
    )
