"""Issue 8, items 1 and 13: one writer per upload session; a digest names exactly one content.

The attacks of the issue, sent over raw sockets (asyncio streams) so that a request can be held
open with only its head sent, on every selected backend (fs-sqlite, s3-postgres) and with
several worker processes (``--workers 2``: the two requests of an attack may land on different
processes, so the one-writer rule must hold in the database, not in one process's memory):

* **held PATCH** -- a chunked PATCH sends its head and waits; a second PATCH brings the genuine
  content C; the held PATCH then writes M; ``PUT ?digest=sha256(C)``.  Before the fix, the blob
  ``sha256(C)`` served M -- also in the victim's repository that had pushed C before.
* **PATCH across PUT** -- after a genuine PATCH of C, a PATCH is held open while ``PUT
  ?digest=sha256(C)`` completes the upload, then writes 5,000 more bytes into what has become
  the blob (stored 6,000 bytes, database 1,000).
* four parallel ``PUT ?digest=`` on one session: one 201, the others a spec 4xx (was 3 x 500).

What must hold afterwards: ``sha256(C)`` is served as exactly C (size and bytes) from every
repository that has it, a concurrent second writer is refused with 416 RANGE_INVALID (and the
upload's progress headers), and the session stays usable.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.support.backends import EnvFactory
from tests.support.http import Client, error_codes, sha256
from tests.support.registry_proc import RegistryProcess, start_moorage


@pytest.fixture(scope="module", params=[1, 2], ids=["1worker", "2workers"])
def server(
    request: pytest.FixtureRequest, backend: tuple[str, EnvFactory], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RegistryProcess]:
    """Shared by the module's attacks (each uses upload sessions and digests of its own)."""
    name, make_env = backend
    env = {**make_env(), "MOORAGE_WORKERS": str(request.param)}
    proc = start_moorage(tmp_path_factory.mktemp("srv"), env=env)
    proc.backend = name  # type: ignore[attr-defined]
    try:
        yield proc
    finally:
        proc.stop()


class HeldRequest:
    """One HTTP/1.1 request on its own connection whose body is sent when the test decides."""

    def __init__(self, url: str, method: str, path: str, headers: dict[str, str]) -> None:
        parts = urlsplit(url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.method, self.path, self.headers = method, path, headers
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def send_head(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        head = f"{self.method} {self.path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
        head += "".join(f"{k}: {v}\r\n" for k, v in self.headers.items()) + "\r\n"
        self.writer.write(head.encode())
        await self.writer.drain()

    async def send(self, data: bytes) -> None:
        """Send body bytes; a server that already answered and closed is not an error here."""
        assert self.writer is not None
        try:
            self.writer.write(data)
            await self.writer.drain()
        except (ConnectionError, OSError):
            pass

    async def send_chunked(self, data: bytes, last: bool = True) -> None:
        await self.send(b"%x\r\n%s\r\n" % (len(data), data) + (b"0\r\n\r\n" if last else b""))

    async def status(self, timeout: float = 30.0) -> int:
        """The response status (0 if the server closed without answering)."""
        assert self.reader is not None and self.writer is not None
        try:
            line = await asyncio.wait_for(self.reader.readline(), timeout)
        except (ConnectionError, OSError):
            line = b""
        finally:
            self.writer.close()
        parts = line.split()
        return int(parts[1]) if len(parts) >= 2 else 0


def _path(location: str) -> str:
    return urlsplit(location).path if location.startswith("http") else location


def _served_exactly(c: Client, repo: str, digest: str, content: bytes) -> None:
    """``digest`` in ``repo`` is either unknown or exactly ``content`` (HEAD size and GET bytes)."""
    head = c.req("HEAD", f"/v2/{repo}/blobs/{digest}")
    if head.status_code == 404:
        return
    assert head.status_code == 200, head.status_code
    assert int(head.headers["Content-Length"]) == len(content)
    got = c.req("GET", f"/v2/{repo}/blobs/{digest}")
    assert got.status_code == 200
    assert hashlib.sha256(got.content).hexdigest() == digest.split(":", 1)[1], "blob bytes do not match their digest"
    assert got.content == content


# Time for the server to receive a held request's head and start its handler (a scheduling
# wait, not a timing assertion: if the handler starts later, the attack is simply not tried).
SETTLE = 1.0


def test_held_patch_cannot_substitute_blob(server: RegistryProcess) -> None:
    c = Client(server.url)
    genuine, malicious = os.urandom(1000), os.urandom(1000)
    digest = sha256(genuine)
    # The victim already has the genuine blob in another repository.
    assert c.push_blob("bob/base", genuine) == digest

    loc = _path(c.req("POST", "/v2/alice/app/blobs/uploads/").headers["Location"])

    async def attack() -> tuple[int, int]:
        held = HeldRequest(server.url, "PATCH", loc, {"Transfer-Encoding": "chunked", "Content-Type": "application/octet-stream"})
        await held.send_head()
        await asyncio.sleep(SETTLE)
        second = await asyncio.to_thread(c.req, "PATCH", loc, data=genuine, headers={"Content-Type": "application/octet-stream"})
        await held.send_chunked(malicious)
        return second.status_code, await held.status()

    second_status, held_status = asyncio.run(attack())
    # Exactly one of the two writers may have been accepted.
    assert not (second_status == 202 and held_status == 202)
    if second_status != 202:
        assert second_status == 416, second_status
    put = c.req("PUT", loc, params={"digest": digest})
    if held_status == 202:  # the held PATCH won: the session holds M, which is not sha256(C)
        assert put.status_code == 400 and error_codes(put) == ["DIGEST_INVALID"]
    _served_exactly(c, "alice/app", digest, genuine)
    _served_exactly(c, "bob/base", digest, genuine)
    assert c.req("GET", f"/v2/bob/base/blobs/{digest}").status_code == 200


def test_patch_open_across_put_cannot_grow_blob(server: RegistryProcess) -> None:
    c = Client(server.url)
    genuine, extra = os.urandom(1000), os.urandom(5000)
    digest = sha256(genuine)
    assert c.push_blob("bob/base", genuine) == digest

    loc = _path(c.req("POST", "/v2/alice/app/blobs/uploads/").headers["Location"])
    r = c.req("PATCH", loc, data=genuine, headers={"Content-Type": "application/octet-stream"})
    assert r.status_code == 202

    async def attack() -> tuple[int, int]:
        held = HeldRequest(server.url, "PATCH", loc, {"Transfer-Encoding": "chunked", "Content-Type": "application/octet-stream"})
        await held.send_head()
        await asyncio.sleep(SETTLE)
        put = await asyncio.to_thread(c.req, "PUT", loc, params={"digest": digest})
        await held.send_chunked(extra)
        return put.status_code, await held.status()

    put_status, held_status = asyncio.run(attack())
    assert not (put_status == 201 and held_status == 202)
    if put_status != 201:
        assert put_status == 416, put_status
    _served_exactly(c, "alice/app", digest, genuine)
    _served_exactly(c, "bob/base", digest, genuine)
    # Whichever request won, the session is not wedged: it either completed or can be
    # completed now (with the extra bytes the held PATCH added, C + extra).
    if put_status != 201:
        fin = c.req("PUT", loc, params={"digest": sha256(genuine + extra)})
        assert fin.status_code == 201, fin.text
        _served_exactly(c, "alice/app", sha256(genuine + extra), genuine + extra)


def test_concurrent_second_writer_is_refused_and_session_stays_usable(server: RegistryProcess) -> None:
    c = Client(server.url)
    first, second = os.urandom(3000), os.urandom(2000)
    loc = _path(c.req("POST", "/v2/busy/app/blobs/uploads/").headers["Location"])

    async def run() -> tuple[int, dict[str, str], int]:
        held = HeldRequest(server.url, "PATCH", loc, {"Transfer-Encoding": "chunked", "Content-Type": "application/octet-stream"})
        await held.send_head()
        await held.send_chunked(first[:1000], last=False)
        await asyncio.sleep(SETTLE)
        other = await asyncio.to_thread(c.req, "PATCH", loc, data=second, headers={"Content-Type": "application/octet-stream"})
        await held.send_chunked(first[1000:])
        return other.status_code, dict(other.headers), await held.status()

    other_status, other_headers, held_status = asyncio.run(run())
    assert held_status == 202
    assert other_status == 416
    assert other_headers.get("Location") and "Range" in other_headers
    status = c.req("GET", loc)
    assert status.status_code == 204 and status.headers["Range"] == f"0-{len(first) - 1}"
    # The session continues where the held PATCH left it.
    r = c.req(
        "PATCH",
        loc,
        data=second,
        headers={"Content-Range": f"{len(first)}-{len(first) + len(second) - 1}", "Content-Type": "application/octet-stream"},
    )
    assert r.status_code == 202, r.text
    done = c.req("PUT", loc, params={"digest": sha256(first + second)})
    assert done.status_code == 201, done.text
    _served_exactly(c, "busy/app", sha256(first + second), first + second)


def test_parallel_puts_on_one_session(server: RegistryProcess) -> None:
    """Item 13: four parallel ``PUT ?digest=`` with a body on one session: one 201, the rest 4xx."""
    c = Client(server.url)
    data = os.urandom(500_000)
    digest = sha256(data)
    loc = _path(c.req("POST", "/v2/par/app/blobs/uploads/").headers["Location"])

    async def run() -> list[int]:
        return [
            r.status_code
            for r in await asyncio.gather(
                *(
                    asyncio.to_thread(
                        Client(server.url).req,
                        "PUT",
                        loc,
                        params={"digest": digest},
                        data=data,
                        headers={"Content-Type": "application/octet-stream"},
                    )
                    for _ in range(4)
                )
            )
        ]

    statuses = asyncio.run(run())
    assert statuses.count(201) <= 1, statuses
    assert all(s in (201, 404, 416) for s in statuses), statuses
    if 201 not in statuses:  # every PUT lost the race to another; the session is still there
        assert c.req("PUT", loc, params={"digest": digest}, data=data).status_code == 201
    _served_exactly(c, "par/app", digest, data)
    assert c.req("HEAD", f"/v2/par/app/blobs/{digest}").status_code == 200


def test_claim_of_a_vanished_replica_expires_with_its_lease(fresh_moorage: RegistryProcess) -> None:
    """A claim held by a process this host does not know (a replica elsewhere that died) blocks
    the session until its lease runs out -- then the session is usable again."""
    if fresh_moorage.backend != "fs-sqlite":  # type: ignore[attr-defined]
        pytest.skip("writes the claim straight into the SQLite file")
    import sqlite3
    import time

    c = Client(fresh_moorage.url)
    loc = _path(c.req("POST", "/v2/lease/app/blobs/uploads/").headers["Location"])
    upload_id = loc.rstrip("/").rsplit("/", 1)[1]
    until = time.time() + 3
    with sqlite3.connect(fresh_moorage.data_dir / "moorage.db") as db:  # type: ignore[operator]
        assert (
            db.execute(
                "UPDATE uploads SET writer = ?, writer_until = ? WHERE id = ?", ("0123456789abcdef.elsewhere", until, upload_id)
            ).rowcount
            == 1
        )
    data = os.urandom(1000)
    r = c.req("PATCH", loc, data=data, headers={"Content-Type": "application/octet-stream"})
    assert r.status_code == 416 and error_codes(r) == ["RANGE_INVALID"]
    time.sleep(max(0.0, until - time.time()) + 0.2)
    r = c.req("PATCH", loc, data=data, headers={"Content-Type": "application/octet-stream"})
    assert r.status_code == 202, r.text
    assert c.req("PUT", loc, params={"digest": sha256(data)}).status_code == 201


def test_long_patch_keeps_its_claim(backend: tuple[str, EnvFactory], tmp_path: Path) -> None:
    """A PATCH that streams for longer than the lease renews its claim: a second writer that
    arrives after the first lease would have run out is still refused, and the long PATCH
    completes (``uploads.writer_lease`` = 5 s here, renewed every 5/3 s)."""
    name, make_env = backend
    proc = start_moorage(tmp_path / "srv", env={**make_env(), "MOORAGE_UPLOADS__WRITER_LEASE": "5"})
    try:
        c = Client(proc.url)
        loc = _path(c.req("POST", "/v2/long/app/blobs/uploads/").headers["Location"])
        pieces = [os.urandom(1000) for _ in range(16)]

        async def run() -> tuple[int, int]:
            held = HeldRequest(
                proc.url, "PATCH", loc, {"Transfer-Encoding": "chunked", "Content-Type": "application/octet-stream"}
            )
            await held.send_head()
            other = 0
            for i, piece in enumerate(pieces):
                await held.send_chunked(piece, last=False)
                await asyncio.sleep(0.5)
                if i == 13:  # ~7 s in: past the first lease
                    other = (
                        await asyncio.to_thread(
                            c.req, "PATCH", loc, data=b"x", headers={"Content-Type": "application/octet-stream"}
                        )
                    ).status_code
            await held.send(b"0\r\n\r\n")
            return other, await held.status()

        other_status, held_status = asyncio.run(run())
        assert other_status == 416
        assert held_status == 202
        data = b"".join(pieces)
        assert c.req("PUT", loc, params={"digest": sha256(data)}).status_code == 201
        _served_exactly(c, "long/app", sha256(data), data)
    finally:
        proc.stop()
