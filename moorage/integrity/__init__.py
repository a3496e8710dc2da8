"""Integrity of stored content: ``moorage scrub`` re-hashes blobs and quarantines
the ones whose bytes no longer match their digest."""
