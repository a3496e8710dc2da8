"""Re-hash stored blobs; quarantine the ones whose bytes do not match their digest.

What ``gc --check`` cannot see: a blob whose bytes were replaced by others of the same size
(disk corruption, a restored backup of the wrong file, an attack on the storage).  A scrub
reads every blob of its scope once, in digest order, hashing as it streams (one pass, no
buffering), at most ``rate`` bytes per second so it can run beside a serving registry.

Progress is stored per scope after every batch (``scrub_progress``): an interrupted scrub
resumes after the last digest it finished; a finished one starts a new pass.

A mismatch is verified a second time (so a blob replaced by a legitimate re-push in between is
not condemned), then quarantined in the database first -- from that moment every blob GET/HEAD
and every manifest reference treats it as unknown -- and its bytes are moved out of the content
address (kept under ``quarantine/`` for inspection), so a verified re-push can put the right
bytes back and lift the quarantine.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..metadata import integrity_store as q
from ..metadata.db import Database
from ..registry.digests import Digest, new_hasher
from ..storage import BlobStore

BATCH = 100
_THREAD_HASH_MIN = 64 * 1024


class Progress(Protocol):
    def start(self, blobs: int, nbytes: int) -> None: ...
    def advance(self, nbytes: int, blobs: int = 0) -> None: ...


class _NoProgress:
    def start(self, blobs: int, nbytes: int) -> None:
        pass

    def advance(self, nbytes: int, blobs: int = 0) -> None:
        pass


@dataclass
class Finding:
    digest: str
    size: int
    problem: str  # "corrupt" | "missing"
    actual: str | None = None
    actual_size: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "digest": self.digest,
            "size": self.size,
            "problem": self.problem,
            "actual": self.actual,
            "actual_size": self.actual_size,
        }


@dataclass
class ScrubResult:
    scope: str
    resumed_from: str | None
    checked: int = 0
    checked_bytes: int = 0
    seconds: float = 0.0
    corrupt: list[Finding] = field(default_factory=list)
    missing: list[Finding] = field(default_factory=list)
    #: Totals over the whole pass (including the runs this one resumed).
    pass_checked: int = 0
    pass_corrupt: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.pass_corrupt and not self.missing

    def summary(self) -> dict[str, Any]:
        return {
            "scope": self.scope or "all",
            "resumed_from": self.resumed_from,
            "checked": self.checked,
            "checked_bytes": self.checked_bytes,
            "seconds": round(self.seconds, 3),
            "pass_checked": self.pass_checked,
            "corrupt": [f.to_json() for f in self.pass_corrupt],
            "missing": [f.to_json() for f in self.missing],
            "quarantined": len(self.pass_corrupt),
            "ok": self.ok,
        }


class _RateLimit:
    """At most ``rate`` bytes/s on average since the start (0 = unlimited)."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.t0 = time.monotonic()
        self.n = 0

    async def took(self, n: int) -> None:
        if self.rate <= 0:
            return
        self.n += n
        ahead = self.n / self.rate - (time.monotonic() - self.t0)
        if ahead > 0:
            await asyncio.sleep(ahead)


async def _rehash(store: BlobStore, digest: str, limiter: _RateLimit, progress: Progress) -> tuple[str, int]:
    """(hex digest of the stored bytes, their length); FileNotFoundError if not stored."""
    algorithm = Digest.parse(digest).algorithm
    hasher = new_hasher(algorithm)
    n = 0
    async for chunk in store.read(digest):
        if len(chunk) >= _THREAD_HASH_MIN:
            await asyncio.to_thread(hasher.update, chunk)
        else:
            hasher.update(chunk)
        n += len(chunk)
        progress.advance(len(chunk))
        await limiter.took(len(chunk))
    return hasher.hexdigest(), n


async def scrub(
    db: Database,
    store: BlobStore,
    *,
    repository: str | None = None,
    namespace: str | None = None,
    rate: float = 0.0,
    restart: bool = False,
    progress: Progress | None = None,
    max_blobs: int | None = None,
) -> ScrubResult:
    """One scrub run over the scope (see the module doc); ``max_blobs`` stops early (resumable)."""
    progress = progress or _NoProgress()
    scope = q.scope_key(repository, namespace)
    saved = await q.load_progress(db, scope)
    if saved is None or saved.finished_at is not None or restart:
        saved = q.ScrubProgress(scope, None, time.time(), 0, 0, 0, None)
        await q.save_progress(db, saved)
    result = ScrubResult(scope, saved.last_digest)
    t0 = time.monotonic()
    limiter = _RateLimit(rate)
    total_blobs, total_bytes = await q.count_blobs(db, repository, namespace, saved.last_digest)
    progress.start(total_blobs, total_bytes)
    done = False
    while not done:
        batch = await q.next_blobs(db, repository, namespace, saved.last_digest, BATCH)
        if not batch:
            saved.finished_at = time.time()
            break
        for digest, size in batch:
            if max_blobs is not None and result.checked >= max_blobs:
                done = True
                break
            await _check_one(db, store, digest, size, limiter, progress, result)
            result.checked += 1
            result.checked_bytes += size
            saved.last_digest = digest
            saved.checked += 1
            saved.checked_bytes += size
            progress.advance(0, 1)
        await q.save_progress(db, saved)
    found = await q.quarantined_since(db, saved.started_at)
    saved.corrupt = len(found)
    await q.save_progress(db, saved)
    result.pass_checked = saved.checked
    result.pass_corrupt = [Finding(f.digest, f.size, "corrupt", f.actual, f.actual_size) for f in found]
    result.seconds = time.monotonic() - t0
    return result


async def _check_one(
    db: Database, store: BlobStore, digest: str, size: int, limiter: _RateLimit, progress: Progress, result: ScrubResult
) -> None:
    algorithm, want = digest.split(":", 1)
    try:
        actual, n = await _rehash(store, digest, limiter, progress)
    except FileNotFoundError:
        if await q.is_live(db, digest):  # not deleted by the collector meanwhile
            result.missing.append(Finding(digest, size, "missing"))
        return
    if actual == want and n == size:
        return
    # Read it once more: a blob removed by the collector and pushed again in between is fine.
    try:
        actual, n = await _rehash(store, digest, _RateLimit(0), _NoProgress())
    except FileNotFoundError:
        return
    if actual == want and n == size:
        return
    if await q.quarantine(db, digest, size, f"{algorithm}:{actual}", n):
        await store.quarantine(digest)
        result.corrupt.append(Finding(digest, size, "corrupt", f"{algorithm}:{actual}", n))
