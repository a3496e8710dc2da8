"""The quota middleware: refuse an upload request that would push a namespace over its storage
quota *before* its body is read, where the size is declared (``Content-Length``, a mount's
source blob, the bytes already in the session).

The rules live with the policy (:mod:`moorage.gc.quotas`, wired by ``moorage.gc.setup``);
this module knows only HTTP: which routes are uploads, where the sizes are, and that a refused
completing ``PUT`` cancels its session.  The policy is asked first whether any quota covers the
repository at all (a cached answer): without one, the request passes untouched.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from typing import Protocol

from aiohttp import web
from aiohttp.typedefs import Middleware

from .. import errors
from ..api import routes as route_names
from ..api.common import STORE, UPLOAD_RECORD, service

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

#: The upload routes the quota is checked on (names from api/uploads.py).
UPLOAD_ROUTES = frozenset(
    {route_names.UPLOAD_START, route_names.UPLOAD_START_NOSLASH, route_names.UPLOAD_PATCH, route_names.UPLOAD_PUT}
)


class UploadQuota(Protocol):
    """What the middleware asks of the quota policy."""

    async def applies(self, repository: str) -> bool:
        """Whether any quota covers ``repository`` (cheap: no query when none exists)."""

    async def check(self, repository: str, added: int, digest: str | None) -> None:
        """Raise ``errors.Denied`` if ``added`` more bytes (blob ``digest``) exceed a quota."""


def quota_middleware(quota: UploadQuota) -> Middleware:
    """Refuse upload requests that would push a namespace over its quota, before the body is read."""

    @web.middleware
    async def check_quota(request: web.Request, handler: Handler) -> web.StreamResponse:
        route = getattr(request.match_info.route, "name", None)
        if route in UPLOAD_ROUTES and await quota.applies(request.match_info.get("name", "")):
            try:
                await _check(request, route, quota)
            except errors.Denied:
                if route == route_names.UPLOAD_PUT:
                    # A refused completion refuses the upload: its data is not kept.
                    with contextlib.suppress(errors.RegistryError):
                        await service(request).cancel_upload(
                            request.match_info.get("name", ""), request.match_info.get("upload_id", "")
                        )
                raise
        return await handler(request)

    return check_quota


async def _check(request: web.Request, route: str, quota: UploadQuota) -> None:
    name = request.match_info.get("name", "")
    store = request.app[STORE]
    length = request.content_length
    digest: str | None = None
    if route in (route_names.UPLOAD_START, route_names.UPLOAD_START_NOSLASH):
        mount, source = request.query.get("mount"), request.query.get("from")
        if mount and source:
            size = await store.blob_size_in_repository(source, mount)
            if size is None:
                return
            added, digest = size, mount
        elif request.query.get("digest"):
            if not length:
                return
            added, digest = length, request.query["digest"]
        else:
            return
    else:
        upload_id = request.match_info.get("upload_id", "")
        record = await store.get_upload(upload_id, name) if _plausible(upload_id) else None
        if record is None:
            return
        request[UPLOAD_RECORD] = record  # the handler continues from this read, not another one
        added = record.size + (length or 0)
        if route == route_names.UPLOAD_PUT:
            digest = request.query.get("digest")
    await quota.check(name, added, digest)


def _plausible(upload_id: str) -> bool:
    return 0 < len(upload_id) <= 64 and all(c.isalnum() or c == "-" for c in upload_id)
