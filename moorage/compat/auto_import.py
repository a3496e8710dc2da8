"""``moorage serve`` on a registry:2 volume: its images are brought in on start, in the background.

Why: swapping the ``registry:2`` image for Moorage on the same volume (its ``config.yml``
points ``storage.filesystem.rootdirectory`` at ``/var/lib/registry``, which becomes Moorage's
data directory) must not show an empty registry.  So when the data directory holds a
Distribution tree (``docker/registry/v2``) that this database has not imported yet, the
server imports it with :class:`~.distribution_import.DistributionImporter` -- the same code as
``moorage import-distribution --link``: every digest verified, blobs hard-linked where the
filesystem allows (copied otherwise), the Distribution tree only read, so a rollback to
``registry:2`` still finds everything as it was.

How it behaves:

* the server answers at once; what is imported is served as it arrives (repository by
  repository, through the same service calls as a push); a tag pushed to Moorage meanwhile
  is newer than the tree's and is kept (logged);
* one process imports (a leader-only job of the scheduler; a new leader resumes an import
  whose leader died: every step checks what is already there);
* progress goes to the log (every :data:`LOG_EVERY` seconds), to the database row of
  :mod:`moorage.metadata.import_store` (every process reads it: ``/readyz`` stays ready and
  says "importing N of M ...", the UI shows it as a banner);
* the row is marked ``done`` at the end, so a second start imports nothing.  Pushes made to
  ``registry:2`` after that are brought in with ``moorage import-distribution``.

Only the filesystem driver is looked at (an S3 bucket is imported with
``moorage import-distribution --from-s3``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from pathlib import Path

from ..api.extension import ExtensionContext
from ..config import Settings
from ..metadata.db import Database
from ..registry.service import RegistryService
from ..scheduler import Job

log = logging.getLogger("moorage.import")

#: Seconds between progress lines in the log (and progress writes to the database).
LOG_EVERY = 5.0
SAVE_EVERY = 1.0
#: Seconds between the non-importing processes' reads of the progress row.
REFRESH_EVERY = 2.0
#: Blobs imported at once (the server keeps serving meanwhile).
CONCURRENCY = 2
#: Test hook: seconds to wait after each repository (so a test sees the import under way).
PAUSE_ENV = "MOORAGE_TEST_IMPORT_PAUSE"
#: Seconds between the leader's looks at the job once it ran: nothing at all once done (or
#: given up on a bad tree until the next start); after an outage (database, disk) it retries.
RETRY_EVERY = 60.0


def distribution_tree(settings: Settings) -> Path | None:
    """The data directory if it holds a registry:2 tree (``docker/registry/v2/repositories``)."""
    from .distribution_import import V2

    if settings.storage.driver != "filesystem":
        return None
    root = settings.data
    return root if (root / V2 / "repositories").is_dir() else None


class ImportProgress:
    """What this process knows of the import: updated live by the importing process, read
    from the database row by the others."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.state = "pending"  # pending | scanning | running | done | failed
        self.done = 0
        self.total = 0
        self.detail = ""
        self.importing_here = False
        self.given_up = False

    def notice(self) -> str | None:
        """The line of ``/readyz`` and the UI banner (None once done)."""
        if self.state in ("pending", "scanning"):
            return f"registry:2 storage found in {self.source}: preparing its import"
        if self.state == "running":
            return (
                f"importing {self.done} of {self.total} blobs and manifests from the registry:2 storage in "
                f"{self.source}; what is imported is served already"
            )
        if self.state == "failed":
            return f"importing the registry:2 storage in {self.source} failed: {self.detail}"
        return None


def setup_distribution_import(ctx: ExtensionContext) -> None:
    """Register the import (leader) and the progress reader (every process) if there is a tree."""
    root = distribution_tree(ctx.settings)
    if root is None:
        return
    from .distribution_import import V2

    source = str((root / V2).resolve())
    progress = ImportProgress(source)
    ctx.notices.append(progress.notice)
    ctx.scheduler.register(
        Job(
            "distribution-import",
            lambda: _import(ctx.database, ctx.registry, root, progress),
            interval=RETRY_EVERY,
            leader_only=True,
            first_delay=0,
        )
    )
    ctx.scheduler.register(
        Job("distribution-import-progress", lambda: _refresh(ctx.database, progress), interval=REFRESH_EVERY, first_delay=0)
    )


async def _refresh(db: Database, progress: ImportProgress) -> None:
    """Copy the importing process's progress from the database (nothing to do once done)."""
    from ..metadata import import_store

    if progress.importing_here or progress.state == "done":
        return  # (a "failed" row may be an earlier start's, which the leader is retrying: keep reading)
    row = await import_store.load(db, progress.source)
    if row is not None:
        progress.state, progress.done, progress.total = row.state, row.done, row.total
        progress.detail = row.detail or ""


async def _import(db: Database, registry: RegistryService, root: Path, progress: ImportProgress) -> None:
    from ..metadata import import_store
    from .distribution_import import DistributionImporter, DistributionImportError, FilesystemSource

    if progress.state == "done" or progress.given_up:
        return
    row = await import_store.load(db, progress.source)
    if row is not None and row.state == "done":
        progress.state = "done"
        return
    progress.importing_here = True
    progress.state = "scanning"
    now = time.time()
    row = import_store.ImportRow(progress.source, "running", 0, 0, now, now, None, None)
    await import_store.save(db, row)
    log.info("registry:2 storage found in %s: importing it in the background (its files are only read)", progress.source)
    source = FilesystemSource(root)
    importer = DistributionImporter(source, registry, link=True, concurrency=CONCURRENCY, keep_existing_tags=True)
    try:
        await source.open()
        plans = await importer.plan()
        row.total = progress.total = sum(len(p.blobs) + len(p.manifests) for p in plans)
        progress.state = row.state = "running"
        await import_store.save(db, row)
        log.info("registry:2 import: %d repositories, %d blobs and manifests to bring in", len(plans), progress.total)
        marks = {"log": time.monotonic(), "save": time.monotonic()}
        pending_save = False

        def count(event: str, amount: int) -> None:
            nonlocal pending_save
            if event not in ("blob", "manifest"):
                return
            progress.done = min(progress.total, progress.done + amount)
            pending_save = True
            now = time.monotonic()
            if now - marks["log"] >= LOG_EVERY:
                marks["log"] = now
                log.info("registry:2 import: %d of %d blobs and manifests", progress.done, progress.total)

        importer.progress = count
        pause = float(os.environ.get(PAUSE_ENV) or 0)
        for plan in plans:  # one repository at a time: each is served once its manifests are in
            await importer.run([plan])
            if pause:
                await asyncio.sleep(pause)
            if pending_save and time.monotonic() - marks["save"] >= SAVE_EVERY:
                marks["save"] = time.monotonic()
                row.done, pending_save = progress.done, False
                await import_store.save(db, row)
        stats = importer.stats
        stats.repositories = len(plans)
        summary = stats.summary()
        for problem in stats.problems:
            log.warning("registry:2 import: %s", problem)
        row.done = progress.done
        row.state = progress.state = "done"
        row.finished_at = time.time()
        row.detail = json.dumps({**summary, "problems": stats.problems[:20]}, sort_keys=True)
        await import_store.save(db, row)
        log.info(
            "registry:2 import done: %d repositories, %d blobs linked, %d copied, %d already present, "
            "%d manifests, %d tags (%.1f MB verified in %.1f s)%s%s",
            summary["repositories"],
            summary["blobs_linked"],
            summary["blobs_copied"],
            summary["blobs_skipped"] + summary["blobs_mounted"],
            summary["manifests"],
            summary["tags"],
            summary["bytes"] / 1e6,
            summary["seconds"],
            f"; {len(stats.problems)} problems (logged above)" if stats.problems else "",
            f"; copied, not linked, because {stats.copied_because}" if stats.copied_because else "",
        )
    except DistributionImportError as exc:
        # A corrupt blob, an unreadable tree: said once; the next start tries again.
        progress.state = row.state = "failed"
        progress.given_up = True
        progress.detail = row.detail = f"{exc}; run `moorage import-distribution {root}` to retry and see details"
        await import_store.save(db, row)
        log.error("registry:2 import failed: %s", progress.detail)
    finally:
        progress.importing_here = False  # cancelled mid-way (shutdown, leadership lost): the next leader resumes
        await source.close()
