"""Blob storage: one small interface (:mod:`.base`) and its drivers."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .base import BlobStat, BlobStore, PartialAppend, UploadState

if TYPE_CHECKING:
    from ..config import Settings

__all__ = ["BlobStat", "BlobStore", "PartialAppend", "UploadState", "create_blob_store"]


def create_blob_store(settings: Settings) -> BlobStore:
    """The driver named by ``storage.driver``."""
    if settings.storage.driver == "s3":
        from ..extras import require

        require("s3", "storage.driver s3")
        from .s3 import S3BlobStore

        return S3BlobStore(settings.storage.s3)
    from .filesystem import FilesystemBlobStore

    return FilesystemBlobStore(settings.storage_root)
