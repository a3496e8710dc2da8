"""What a process knows of "the storage is full": one log line a minute, and ``/readyz``'s detail.

A full disk refuses every write, so a busy registry would log one error per refused request --
thousands a minute, themselves filling the disk that holds the log.  :class:`FullState` logs
the first refusal, then at most one line per :data:`LOG_INTERVAL` with the count refused since,
and remembers the last refusal so ``/readyz`` can say "writes refused" while reads go on.  A
write answered 2xx afterwards clears that (space was found), as does :data:`FORGET_AFTER`
without another refusal.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from aiohttp import web

from ..errors import DatabaseFull, StorageFullError

log = logging.getLogger("moorage.api")

#: Seconds between two "storage is full" log lines of one process.
LOG_INTERVAL = 60.0
#: Seconds after the last refusal that ``/readyz`` stops reporting it.
FORGET_AFTER = 120.0
#: Methods whose 2xx answer proves that writing works again.
WRITE_METHODS = frozenset({"PUT", "POST", "PATCH"})


@dataclass
class FullState:
    #: Monotonic time of the last refusal (None: none, or cleared since).
    last: float | None = None
    #: Which store was full at the last refusal, and what it said.
    what: str = ""
    reason: str = ""
    #: Refusals not yet reported in a log line.
    unlogged: int = 0
    _logged_at: float | None = field(default=None, repr=False)

    def refused(self, exc: StorageFullError, method: str, path: str, now: float | None = None) -> None:
        """A request was refused because the storage is full: remember, and log if due."""
        now = time.monotonic() if now is None else now
        self.last = now
        self.what = "database" if isinstance(exc, DatabaseFull) else "storage"
        self.reason = exc.reason
        self.unlogged += 1
        if self._logged_at is None or now - self._logged_at >= LOG_INTERVAL:
            log.error(
                "%s is full: writes refused with 507 (%d request(s) since the last such line; next line in %g s at "
                "the earliest); last: %s %s: %s (%r)",
                self.what,
                self.unlogged,
                LOG_INTERVAL,
                method,
                path[:200],
                exc.reason,
                exc.__cause__,
            )
            self._logged_at, self.unlogged = now, 0

    def wrote(self) -> None:
        """A write succeeded: there is room again (perhaps only for small writes: the next
        refusal sets it again).  The log's rate limit stays: a disk on the edge, where small
        writes pass and large ones fail, still gets one line a minute."""
        self.last = None

    def detail(self, now: float | None = None) -> str | None:
        """For ``/readyz``: None, or what is refused and why."""
        now = time.monotonic() if now is None else now
        if self.last is None or now - self.last > FORGET_AFTER:
            return None
        return (
            f"{self.what} full: writes refused, reads work ({' '.join(self.reason.split())[:200]}; {now - self.last:.0f} s ago)"
        )


FULL_STATE = web.AppKey("storage_full", FullState)


def full_state(request: web.Request) -> FullState | None:
    state: FullState | None = request.config_dict.get(FULL_STATE)
    return state
