"""Repository delete: the index rows go in one transaction (``GCStore.delete_repository``),
the upload sessions' leftovers in storage are aborted after it; blobs are left to the
collector (so a delete never races a push of a shared layer)."""

from __future__ import annotations

import json

from ..metadata.db import Database
from ..metadata.gc_store import GCStore
from ..storage import BlobStore


async def delete_repository(db: Database, blob_store: BlobStore, name: str) -> dict[str, int] | None:
    """Forget repository ``name``; None if unknown.  Blobs are left to the garbage collector."""
    deleted = await GCStore(db).delete_repository(name)
    if deleted is None:
        return None
    for upload_id, driver_state in deleted.pending:
        try:
            await blob_store.upload_abort(upload_id, json.loads(driver_state))
        except Exception:  # noqa: BLE001 - leftovers of an aborted upload are harmless
            pass
    return {"tags": deleted.tags, "manifests": deleted.manifests, "links": deleted.links, "uploads": len(deleted.pending)}
