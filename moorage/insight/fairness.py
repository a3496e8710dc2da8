"""Sharing the scanner between users: a scan queue served round-robin by namespace, and the
process's memory budget for scans handed out in the same order.

One user pushing a thousand images must not keep another user's one image waiting behind
them: the queue keeps one line per namespace (the first component of the repository name, which
is whose it is) and takes one item from each line in turn.  The memory budget does the same for
scans waiting for room (a scan started by the API waits there, not in the queue).
"""

from __future__ import annotations

import asyncio
from collections import deque


def namespace_of(repository: str) -> str:
    """Whose a repository is, for fairness: its first path component."""
    return repository.split("/", 1)[0]


class FairQueue:
    """A bounded queue of ``(repository, digest)`` served round-robin over namespaces.

    A repeated item already waiting is not queued twice.  When the queue is full, a namespace
    holding fewer items than the largest one still gets in: the newest item of the largest
    namespace makes room (and is returned, for the log)."""

    def __init__(self, maxsize: int) -> None:
        self.maxsize = max(1, maxsize)
        self._lines: dict[str, deque[tuple[str, str]]] = {}
        self._turns: deque[str] = deque()
        self._queued: set[tuple[str, str]] = set()
        self._size = 0
        self._ready = asyncio.Event()

    def qsize(self) -> int:
        return self._size

    def empty(self) -> bool:
        return self._size == 0

    def put_nowait(self, item: tuple[str, str]) -> tuple[str, str] | None:
        """Queue ``item``; returns the item dropped to make room, if any.  Raises
        :class:`asyncio.QueueFull` when the queue is full and ``item``'s namespace has its share."""
        if item in self._queued:
            return None
        ns = namespace_of(item[0])
        dropped = None
        if self._size >= self.maxsize:
            largest = max(self._lines, key=lambda k: len(self._lines[k]))
            if largest == ns or len(self._lines[largest]) <= len(self._lines.get(ns, ())) + 1:
                raise asyncio.QueueFull
            dropped = self._lines[largest].pop()
            self._queued.discard(dropped)
            self._size -= 1
        line = self._lines.get(ns)
        if line is None:
            line = self._lines[ns] = deque()
            self._turns.append(ns)
        line.append(item)
        self._queued.add(item)
        self._size += 1
        self._ready.set()
        return dropped

    def get_nowait(self) -> tuple[str, str]:
        if not self._size:
            raise asyncio.QueueEmpty
        ns = self._turns.popleft()
        line = self._lines[ns]
        item = line.popleft()
        if line:
            self._turns.append(ns)  # its next item waits for every other namespace's turn
        else:
            del self._lines[ns]
        self._queued.discard(item)
        self._size -= 1
        return item

    async def get(self) -> tuple[str, str]:
        while not self._size:
            self._ready.clear()
            await self._ready.wait()
        return self.get_nowait()


class ByteBudget:
    """Bytes the scans of one process may keep together.  :meth:`acquire` waits for room; waiting
    scans are served round-robin by namespace, each namespace's own in arrival order."""

    def __init__(self, capacity: int) -> None:
        self.capacity = max(1, capacity)
        self.used = 0
        self._waiting: dict[str, deque[tuple[int, asyncio.Future[None]]]] = {}
        self._turns: deque[str] = deque()

    async def acquire(self, n: int, key: str, timeout: float) -> bool:
        """Take ``n`` bytes (at most the capacity) within ``timeout`` seconds; False if not."""
        n = min(n, self.capacity)
        if not self._turns and self.used + n <= self.capacity:
            self.used += n
            return True
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if key not in self._waiting:
            self._waiting[key] = deque()
            self._turns.append(key)
        self._waiting[key].append((n, fut))
        try:
            async with asyncio.timeout(max(0.0, timeout)):
                await asyncio.shield(fut)
            return True
        except TimeoutError:
            if fut.done() and not fut.cancelled():
                return True  # granted in the same instant the wait ran out: keep it
            fut.cancel()
            self._grant()  # a head of line that gave up must not block the others
            return False
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self.release(n)
            else:
                fut.cancel()
                self._grant()
            raise

    def release(self, n: int) -> None:
        self.used = max(0, self.used - min(n, self.capacity))
        self._grant()

    def _grant(self) -> None:
        while self._turns:
            key = self._turns[0]
            line = self._waiting[key]
            while line and line[0][1].done():  # timed out or cancelled
                line.popleft()
            if not line:
                self._turns.popleft()
                del self._waiting[key]
                continue
            n, fut = line[0]
            if self.used + n > self.capacity:
                return  # strict turn order: no starvation of a large request
            line.popleft()
            self.used += n
            fut.set_result(None)
            self._turns.popleft()
            if line:
                self._turns.append(key)
            else:
                del self._waiting[key]
