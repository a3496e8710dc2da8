"""HTTP side of issue 5: ``DELETE /api/v1/repositories/{name}`` and the quota middleware.

Repository delete removes the repository's tags, manifests, links and upload sessions in one
write transaction; the blobs that only it used are reclaimed by the next ``moorage gc`` (the
same sweep as everything else, so the delete itself never races a push of a shared layer).
Admin only: with ``auth.mode: token`` the auth module's admin check (basic or bearer) runs
in the handler; with ``htpasswd`` the auth middleware has authenticated the caller (every
htpasswd user is an administrator there); with ``none`` anyone may.  ``delete_enabled: false``
turns it off (405 UNSUPPORTED) like every other delete.
"""

from __future__ import annotations

import contextlib
import json
from contextvars import ContextVar
from typing import Any, Awaitable, Callable

from aiohttp import web
from sqlalchemy import delete, select

from ..api.common import API_HEADERS, BLOBS, SETTINGS
from ..metadata.db import Database
from ..metadata.tables import manifest_blobs, manifest_children, manifests, repositories, repository_blobs, tags, uploads
from ..registry import errors
from ..registry.names import validate_name
from ..storage import BlobStore
from . import quotas

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
#: What the quota middleware found for the request it checked (per request task): False when no
#: quota applies to the repository, so the check on streamed bytes (``setup.quota_headroom``)
#: needs no query of its own on the usual, quota-less push.
QUOTA_APPLIES: ContextVar[bool | None] = ContextVar("moorage_quota_applies", default=None)
_UPLOAD_ROUTES = {"upload_start", "upload_start_noslash", "upload_patch", "upload_put"}


async def delete_repository(db: Database, blob_store: BlobStore, name: str) -> dict[str, int] | None:
    """Forget repository ``name``; None if unknown.  Blobs are left to the garbage collector."""
    async with db.write() as conn:
        repo_id = (await conn.execute(select(repositories.c.id).where(repositories.c.name == name).with_for_update())).scalar()
        if repo_id is None:
            return None
        mids = select(manifests.c.id).where(manifests.c.repository_id == repo_id)
        pending = (await conn.execute(select(uploads.c.id, uploads.c.driver_state).where(uploads.c.repository_id == repo_id))).all()
        n_tags = (await conn.execute(delete(tags).where(tags.c.repository_id == repo_id))).rowcount
        await conn.execute(delete(manifest_blobs).where(manifest_blobs.c.manifest_id.in_(mids)))
        await conn.execute(delete(manifest_children).where(manifest_children.c.manifest_id.in_(mids)))
        n_manifests = (await conn.execute(delete(manifests).where(manifests.c.repository_id == repo_id))).rowcount
        n_links = (await conn.execute(delete(repository_blobs).where(repository_blobs.c.repository_id == repo_id))).rowcount
        await conn.execute(delete(uploads).where(uploads.c.repository_id == repo_id))
        await conn.execute(delete(repositories).where(repositories.c.id == repo_id))
    for row in pending:
        try:
            await blob_store.upload_abort(row.id, json.loads(row.driver_state))
        except Exception:  # noqa: BLE001 - leftovers of an aborted upload are harmless
            pass
    return {"tags": int(n_tags or 0), "manifests": int(n_manifests or 0), "links": int(n_links or 0), "uploads": len(pending)}


def repository_delete_handler(db_key: Any, token_mode: bool) -> Handler:
    async def handler(request: web.Request) -> web.Response:
        if token_mode:
            from ..api.credentials import require_admin as _admin  # the auth module's admin check

            await _admin(request)
        if not request.app[SETTINGS].delete_enabled:
            raise errors.Unsupported("deletes are disabled on this registry")
        name = request.match_info["name"]
        validate_name(name)
        result = await delete_repository(request.app[db_key], request.app[BLOBS], name)
        if result is None:
            raise errors.NameUnknown(detail={"name": name})
        return web.json_response({"repository": name, "deleted": result}, status=202, headers=API_HEADERS)

    return handler


def quota_middleware(db_key: Any, store_key: Any) -> Any:
    """Refuse upload requests that would push a namespace over its quota, before the body is read."""

    @web.middleware
    async def check_quota(request: web.Request, handler: Handler) -> web.StreamResponse:
        route = getattr(request.match_info.route, "name", None)
        if route in _UPLOAD_ROUTES:
            try:
                await _check(request, route, request.app[db_key], request.app[store_key])
            except errors.Denied:
                if route == "upload_put":
                    # A refused completion refuses the upload: its data is not kept (issue 8).
                    from ..api.common import service

                    with contextlib.suppress(errors.RegistryError):
                        await service(request).cancel_upload(request.match_info.get("name", ""),
                                                             request.match_info.get("upload_id", ""))
                raise
        return await handler(request)

    return check_quota


async def _check(request: web.Request, route: str, db: Database, store: Any) -> None:
    name = request.match_info.get("name", "")
    found = bool(await quotas.applicable(db, name))
    QUOTA_APPLIES.set(found)
    if not found:
        return
    length = request.content_length
    digest: str | None = None
    if route.startswith("upload_start"):
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
        record = await store.get_upload(request.match_info.get("upload_id", ""), name) \
            if _plausible(request.match_info.get("upload_id", "")) else None
        if record is None:
            return
        added = record.size + (length or 0)
        if route == "upload_put":
            digest = request.query.get("digest")
    await quotas.check_push(db, name, added, digest)


def _plausible(upload_id: str) -> bool:
    return 0 < len(upload_id) <= 64 and all(c.isalnum() or c == "-" for c in upload_id)
