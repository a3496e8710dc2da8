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
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from typing import AsyncIterator

from ..metadata.store import MetadataStore
from . import errors

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

    __slots__ = ("store", "upload_id", "token", "lease", "until", "released", "lost", "_task")

    def __init__(self, store: MetadataStore, upload_id: str, lease: float = DEFAULT_LEASE, token: str | None = None) -> None:
        self.store = store
        self.upload_id = upload_id
        self.token = token or uuid.uuid4().hex
        self.lease = lease
        self.until = 0.0
        self.released = False
        self.lost = False
        self._task: asyncio.Task[None] | None = None

    def expiry(self) -> float:
        """A new lease end, remembered locally to stop writing once it may have passed."""
        self.until = time.time() + self.lease
        return self.until

    async def take(self, expected_size: int) -> bool:
        """Compare-and-set the claim; False if the session moved or someone else holds it."""
        return await self.store.claim_upload(self.upload_id, expected_size, self.token, self.expiry())

    async def __aenter__(self) -> "UploadClaim":
        self._task = asyncio.create_task(self._renew())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        if not self.released and not self.lost:
            # Shielded: a cancelled request (client gone) still frees the session at once,
            # rather than after the lease.
            with contextlib.suppress(Exception):
                await asyncio.shield(self.store.release_upload(self.upload_id, self.token))
        self.released = True

    async def _renew(self) -> None:
        while True:
            await asyncio.sleep(self.lease / 3)
            before = self.until
            try:
                ok = await self.store.renew_upload_claim(self.upload_id, self.token, self.expiry())
            except Exception:  # database unreachable: the old lease still runs out at `before`
                self.until = before
                continue
            if not ok:
                self.lost = True
                return

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
