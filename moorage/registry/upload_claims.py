"""One writer per upload session: a request's claim on a session, held in the database.

Why in the database: the two requests of an attack (or of a confused client) can reach
different worker processes or replicas, so a per-process lock protects nothing.  A request
that is about to write takes the claim with one compare-and-set on the session's row
(``writer`` token, ``writer_until`` lease, expected ``size``) *before* it touches a byte; a
second request finds the claim held and is refused; the holder's final update of the session
(the compare-and-set that records the new size and state) also ends the claim.

Leases: a holder that crashes cannot release its claim, so a claim expires ``lease`` seconds
after it was taken or last renewed.  A live holder renews it every third of the lease while it
works (the renewal also refreshes the session's idle clock, so the collector never aborts a
session that is being written).  A holder that lost its claim (a stall longer than the lease)
can do no harm: it writes only to part files/objects of its own, which are listed in the
session only by its own final compare-and-set -- and that fails without the claim.

Crashed holders on this host: waiting out the lease after a ``kill -9`` would block a client
resuming its upload for a minute.  Each serving process therefore holds a shared ``flock`` on
``<data>/claims/<instance>.lock`` for its lifetime and puts ``<instance>.`` in front of its
claim tokens (:class:`ProcessLiveness`); a request that finds a session claimed by an instance
whose lock it can take exclusively knows that process is gone and takes the claim over at
once.  Claims of processes elsewhere (replicas on other hosts) expire with the lease.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

from .. import errors
from ..metadata.store import MetadataStore

log = logging.getLogger("moorage.uploads")

#: Default lease of a claim in seconds (``uploads.writer_lease``).
DEFAULT_LEASE = 60.0


class ClaimLost(errors.BlobUploadInvalid):
    """The request's claim expired and another request took the session over."""

    def __init__(self) -> None:
        super().__init__("another request took over this upload session; query its status (GET) and resume")


class UploadClaim:
    """This request's exclusive right to write to one upload session.

    Use as ``async with claim:`` after :meth:`take` succeeded: renews the lease in the
    background and releases the claim at the end unless :attr:`released` (the final update
    released it).  The renewal task exists only for requests longer than a third of the lease.
    """

    __slots__ = ("store", "upload_id", "token", "lease", "until", "released", "lost", "_task", "_timer")

    def __init__(self, store: MetadataStore, upload_id: str, lease: float = DEFAULT_LEASE, instance: str = "") -> None:
        self.store = store
        self.upload_id = upload_id
        self.token = f"{instance}.{uuid.uuid4().hex}" if instance else uuid.uuid4().hex
        self.lease = lease
        self.until = 0.0
        self.released = False
        self.lost = False
        self._task: asyncio.Task[None] | None = None
        self._timer: asyncio.TimerHandle | None = None

    def expiry(self) -> float:
        """A new lease end, remembered locally to stop writing once it may have passed."""
        self.until = time.time() + self.lease
        return self.until

    async def take(self, expected_size: int) -> bool:
        """Compare-and-set the claim; False if the session moved or someone else holds it."""
        return await self.store.claim_upload(self.upload_id, expected_size, self.token, self.expiry())

    async def __aenter__(self) -> UploadClaim:
        # A timer, not a task: most requests end long before the first renewal is due.
        self._timer = asyncio.get_running_loop().call_later(self.lease / 3, self._start_renewing)
        return self

    def _start_renewing(self) -> None:
        self._timer = None
        self._task = asyncio.create_task(self._renew())

    async def __aexit__(self, *exc: object) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass  # cancelled just above: the expected way for the renewal task to end
            except Exception:  # noqa: BLE001 - the renewal's own failure; the claim is released below anyway
                log.warning("upload %s: lease renewal ended with an error", self.upload_id, exc_info=True)
        if not self.released and not self.lost:
            # Shielded: a cancelled request (client gone) still frees the session at once,
            # rather than after the lease.
            try:
                await asyncio.shield(self.store.release_upload(self.upload_id, self.token))
            except Exception as exc:  # noqa: BLE001 - the claim then just runs out with its lease
                log.warning("upload %s: releasing the writer claim failed (it expires with its lease): %r", self.upload_id, exc)
        self.released = True

    async def _renew(self) -> None:
        while True:
            before = self.until
            try:
                ok = await self.store.renew_upload_claim(self.upload_id, self.token, self.expiry())
            except errors.DatabaseUnavailable as exc:  # the old lease still runs out at `before`
                log.debug("upload %s: lease renewal failed, retrying: %s", self.upload_id, exc.reason)
                self.until = before
                await asyncio.sleep(self.lease / 10)
                continue
            if not ok:
                self.lost = True
                return
            await asyncio.sleep(self.lease / 3)

    def check(self) -> None:
        """Raise :class:`ClaimLost` if the claim is (or may be) gone: stop writing."""
        if self.lost or time.time() > self.until:
            self.lost = True
            raise ClaimLost()

    async def guard(self, body: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        """``body``, checking the claim before each chunk is passed on to be written."""
        async for chunk in body:
            self.check()
            yield chunk


class ProcessLiveness:
    """Whether the serving process that took a claim still runs (same host and data directory).

    Every serving process holds a shared ``flock`` on ``<directory>/<instance>.lock`` while it
    lives; the kernel drops it when the process dies, however it dies.  ``is_dead(instance)``
    is True only if that file exists here and its lock can be taken exclusively -- never a
    guess: an unknown instance (another host) is not dead, its claim waits for the lease.
    """

    #: Lock files of dead instances older than this are removed at start-up.
    SWEEP_AFTER = 3600.0

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.instance = uuid.uuid4().hex[:16]
        self._fd: int | None = None

    def open(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._sweep()
        fd = os.open(self.directory / f"{self.instance}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(fd, fcntl.LOCK_SH)
        self._fd = fd

    def close(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):  # a lock file left behind is swept by the next start
                os.unlink(self.directory / f"{self.instance}.lock")
            os.close(self._fd)
            self._fd = None

    def is_dead(self, instance: str) -> bool:
        if not instance or not instance.isalnum() or instance == self.instance:
            return False
        try:
            fd = os.open(self.directory / f"{instance}.lock", os.O_RDWR)
        except OSError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return False
        else:
            fcntl.flock(fd, fcntl.LOCK_UN)
            return True
        finally:
            os.close(fd)

    def _sweep(self) -> None:
        cutoff = time.time() - self.SWEEP_AFTER
        for entry in os.scandir(self.directory):
            name = entry.name
            if not name.endswith(".lock"):
                continue
            try:
                if entry.stat().st_mtime < cutoff and self.is_dead(name[:-5]):
                    os.unlink(entry.path)
            except OSError:
                continue
