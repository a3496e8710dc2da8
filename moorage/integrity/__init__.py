"""Integrity of stored content (issue 8): ``moorage scrub`` re-hashes blobs and quarantines
the ones whose bytes no longer match their digest."""
