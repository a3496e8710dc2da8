"""sendfile(2) driven by the event loop, so a client that never reads holds only its connection.

The earlier version ran a blocking sendfile loop in ``asyncio.to_thread``: every stalled reader
then held one thread of the loop's shared default pool for up to a minute, and with that pool
(6 threads on 2 CPUs) full, every other ``to_thread`` user waited too -- a login (bcrypt) took
58 s behind 8 stalled blob GETs.  Here the socket stays non-blocking: ``os.sendfile`` copies
what fits into the socket buffer and returns at once; when the buffer is full we wait for the
socket to become writable with ``loop.add_writer`` (no thread), bounded by a stall timeout.

We write to a ``dup`` of the connection's socket: uvloop refuses ``add_writer`` on a descriptor
a transport owns, and if the transport closes its descriptor while we wait (client gone), the
number may be reused by another connection -- our duplicate still names this connection's socket.
The writer is always removed before the duplicate is closed (epoll keys on the open file).
"""

from __future__ import annotations

import asyncio
import os

#: Largest single sendfile call: one call never copies more than this before we yield.
_CHUNK = 8 << 20


class SendStalled(TimeoutError):
    """The client accepted no data for the stall timeout."""


async def _writable(loop: asyncio.AbstractEventLoop, fd: int, timeout: float) -> None:
    waiter: asyncio.Future[None] = loop.create_future()

    def ready() -> None:
        if not waiter.done():
            waiter.set_result(None)

    loop.add_writer(fd, ready)
    try:
        await asyncio.wait_for(waiter, timeout)
    except TimeoutError:
        raise SendStalled(f"client accepted nothing for {timeout:.0f} s") from None
    finally:
        loop.remove_writer(fd)


async def sendfile_async(sock_fd: int, file_fd: int, count: int, *, stall_timeout: float) -> int:
    """Send ``count`` bytes of ``file_fd`` from offset 0 to the socket; returns bytes sent.

    Takes ownership of neither descriptor.  Raises ``OSError`` (client gone, file shorter than
    ``count``) or :class:`SendStalled`; the bytes sent so far are in the exception's
    ``sent`` attribute.
    """
    loop = asyncio.get_running_loop()
    dup = os.dup(sock_fd)
    offset = 0
    try:
        while offset < count:
            try:
                sent = os.sendfile(dup, file_fd, offset, min(count - offset, _CHUNK))
            except BlockingIOError:
                await _writable(loop, dup, stall_timeout)
                continue
            if sent == 0:
                raise ConnectionResetError("blob file shorter than expected")
            offset += sent
            await asyncio.sleep(0)  # let other connections run between large copies
        return offset
    except (OSError, asyncio.CancelledError) as exc:
        exc.sent = offset  # type: ignore[union-attr]  # how far the copy got, for the caller's log
        raise
    finally:
        os.close(dup)
