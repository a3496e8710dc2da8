"""``api.common.body_chunks``: the body of an upload gathered into large chunks, but never held back.

The consumer of these chunks enforces the bounds of a streamed body (the storage quota on a
chunked PATCH, ``RegistryService._append``): a byte the gatherer keeps while it waits for more
is a byte no check sees.  A client that sends exactly one gathered chunk plus one byte and then
holds its body open used to get no answer at all (the byte waited for a chunk that never came):
the quota on a chunked PATCH then failed about one run in eight, depending on how TCP segments
fell (tests/test_guarantees.py).  Here the same shape is driven deterministically.
"""

from __future__ import annotations

import asyncio

from aiohttp import web

from moorage.api.common import body_chunks

SIZE = 64 * 1024
#: A bound on waits for an answer, only so that a failure cannot hang the suite.
BOUND = 20.0


async def _serve(seen: list[int], limit: int) -> tuple[web.AppRunner, int]:
    async def handler(request: web.Request) -> web.Response:
        total = 0
        async for chunk in body_chunks(request, SIZE):
            seen.append(len(chunk))
            total += len(chunk)
            if total > limit:  # what the quota does: refuse while the body is still open
                return web.Response(status=403, text="over", headers={"Connection": "close"})
        return web.Response(status=202, text=str(total))

    app = web.Application()
    app.router.add_route("PATCH", "/up", handler)
    runner = web.AppRunner(app, shutdown_timeout=1.0)  # (the server lingers on a refused body otherwise)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, port


async def _held_body(pieces: list[bytes], *, end: bool, limit: int) -> tuple[bytes, list[int]]:
    seen: list[int] = []
    runner, port = await _serve(seen, limit)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"PATCH /up HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        for piece in pieces:
            writer.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
            await writer.drain()
            await asyncio.sleep(0.2)  # each piece arrives on its own, as it would from a slow client
        if end:
            writer.write(b"0\r\n\r\n")
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), BOUND)
        except TimeoutError:
            head = b""
        writer.transport.abort()  # the server would otherwise linger, reading the rest of the body
        return head, seen
    finally:
        await runner.cleanup()


def test_a_byte_past_a_full_chunk_is_passed_on_while_the_body_stays_open() -> None:
    # one whole chunk, then one byte, then silence: the byte must reach the consumer (-> 403)
    head, seen = asyncio.run(_held_body([b"a" * SIZE, b"b"], end=False, limit=SIZE))
    assert head.startswith(b"HTTP/1.1 403"), (head, seen)
    assert sum(seen) == SIZE + 1


def test_small_pieces_of_an_open_body_reach_the_consumer() -> None:
    head, seen = asyncio.run(_held_body([b"x" * 10] * 3, end=False, limit=25))
    assert head.startswith(b"HTTP/1.1 403"), (head, seen)
    assert sum(seen) == 30


def test_an_ended_body_arrives_whole_and_in_order() -> None:
    pieces = [bytes([i]) * (SIZE // 3 + i) for i in range(7)]
    head, seen = asyncio.run(_held_body(pieces, end=True, limit=10 * SIZE))
    assert head.startswith(b"HTTP/1.1 202"), head
    assert sum(seen) == sum(map(len, pieces))


def test_a_fast_body_is_still_gathered_into_full_chunks() -> None:
    """Bytes that arrive together are passed on together (large writes, few hash dispatches)."""

    async def run() -> list[int]:
        seen: list[int] = []
        runner, port = await _serve(seen, 1 << 30)
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            body = b"z" * (8 * SIZE)
            writer.write(f"PATCH /up HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)
            await writer.drain()
            await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), BOUND)
            writer.close()
        finally:
            await runner.cleanup()
        return seen

    seen = asyncio.run(run())
    assert sum(seen) == 8 * SIZE
    assert max(seen) >= SIZE  # gathered, not passed on 16 KiB at a time
