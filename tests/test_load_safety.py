"""What the throughput work of issue 10 must not break, tried as an attacker would:

* small PATCHes (Content-Length known, at most 1 MiB) are written without taking the session's
  claim first; racing each other at one offset, exactly one wins, the others get 416 and leave
  no bytes behind, and the session completes with the winner's bytes only;
* a kill -9 of the server in the middle of many concurrent pushes (group commit on the SQLite
  writer thread, two workers) loses nothing that was acknowledged: every blob answered 201 and
  every manifest answered 201 is there, byte for byte, after the restart.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.support.http import Client, sha256
from tests.support.registry_proc import RegistryProcess, start_moorage


def _path(location: str) -> str:
    parts = urlsplit(location)
    return parts.path + (f"?{parts.query}" if parts.query else "")


def test_racing_small_patches_one_wins_losers_leave_nothing(fresh_moorage: RegistryProcess) -> None:
    c = Client(fresh_moorage.url)
    for round_ in range(5):
        loc = _path(c.req("POST", "/v2/race/app/blobs/uploads/").headers["Location"])
        bodies = [os.urandom(2000 + i) for i in range(6)]
        start = threading.Barrier(len(bodies))
        statuses: list[int] = [0] * len(bodies)

        def patch(i: int) -> None:
            mine = Client(fresh_moorage.url)
            start.wait(10)
            r = mine.req(
                "PATCH",
                loc,
                data=bodies[i],
                headers={"Content-Type": "application/octet-stream", "Content-Range": f"0-{len(bodies[i]) - 1}"},
            )
            statuses[i] = r.status_code

        threads = [threading.Thread(target=patch, args=(i,)) for i in range(len(bodies))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert statuses.count(202) == 1, statuses
        assert all(s in (202, 416) for s in statuses), statuses
        winner = bodies[statuses.index(202)]
        status = c.req("GET", loc)
        assert status.status_code == 204 and status.headers["Range"] == f"0-{len(winner) - 1}"
        if fresh_moorage.backend == "fs-sqlite":  # type: ignore[attr-defined]
            upload_id = loc.split("?")[0].rstrip("/").rsplit("/", 1)[1]
            parts = os.listdir(fresh_moorage.data_dir / "storage" / "uploads" / upload_id)  # type: ignore[operator]
            assert len(parts) == 1, f"round {round_}: losers left part files behind: {parts}"
        # a loser's bytes can never be completed into this session
        loser = bodies[statuses.index(416)]
        assert c.req("PUT", loc, params={"digest": sha256(loser)}).status_code == 400
        loc = _path(c.req("POST", "/v2/race/app/blobs/uploads/").headers["Location"])
        r = c.req("PATCH", loc, data=winner, headers={"Content-Type": "application/octet-stream"})
        assert r.status_code == 202
        r = c.req("PUT", _path(r.headers["Location"]), params={"digest": sha256(winner)})
        assert r.status_code == 201, r.text
        assert c.req("GET", f"/v2/race/app/blobs/{sha256(winner)}").content == winner


def test_small_patch_while_a_claimed_writer_streams_is_refused(fresh_moorage: RegistryProcess) -> None:
    """The unclaimed path must respect a live claim: a small PATCH arriving while a chunked
    (claimed) PATCH streams gets 416, and the streamed bytes are what the session holds."""
    import socket
    import sqlite3

    if fresh_moorage.backend != "fs-sqlite":  # type: ignore[attr-defined]
        pytest.skip("watches the claim in the SQLite file")
    c = Client(fresh_moorage.url)
    loc = _path(c.req("POST", "/v2/claimed/app/blobs/uploads/").headers["Location"])
    host, port = urlsplit(fresh_moorage.url).hostname, urlsplit(fresh_moorage.url).port
    streamed = os.urandom(3000)
    sock = socket.create_connection((host, port), timeout=30)
    try:
        sock.sendall(
            (
                f"PATCH {loc} HTTP/1.1\r\nHost: {host}:{port}\r\nTransfer-Encoding: chunked\r\n"
                "Content-Type: application/octet-stream\r\n\r\n"
            ).encode()
        )
        sock.sendall(b"%x\r\n%s\r\n" % (1000, streamed[:1000]))
        upload_id = loc.split("?")[0].rstrip("/").rsplit("/", 1)[1]
        deadline = time.time() + 20
        while time.time() < deadline:  # wait until the streaming request holds the claim
            with sqlite3.connect(fresh_moorage.data_dir / "moorage.db") as db:  # type: ignore[operator]
                if db.execute("SELECT writer FROM uploads WHERE id = ?", (upload_id,)).fetchone()[0]:
                    break
            time.sleep(0.05)
        else:
            raise AssertionError("the streaming PATCH never took the claim")
        st = c.req("PATCH", loc, data=b"x" * 10, headers={"Content-Type": "application/octet-stream", "Content-Range": "0-9"})
        assert st.status_code == 416, st.status_code
        sock.sendall(b"%x\r\n%s\r\n0\r\n\r\n" % (2000, streamed[1000:]))
        reply = sock.recv(4096)
        assert reply.startswith(b"HTTP/1.1 202"), reply[:200]
    finally:
        sock.close()
    assert c.req("PUT", loc, params={"digest": sha256(streamed)}).status_code == 201


def _manifest(config: tuple[str, int], layers: list[tuple[str, int]]) -> bytes:
    return json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config[0], "size": config[1]},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d, "size": n} for d, n in layers],
        }
    ).encode()


def test_kill_during_concurrent_pushes_loses_nothing_acknowledged(tmp_path: Path) -> None:
    env: dict[str, str] = {}
    proc = start_moorage(tmp_path / "srv", env=env, extra_args=["--workers", "2"])
    acked_blobs: dict[str, tuple[str, bytes]] = {}
    acked_manifests: dict[str, tuple[str, bytes]] = {}
    lock = threading.Lock()
    stop = threading.Event()
    killed = threading.Event()
    refused: list[str] = []  # answers other than success before the kill ('database is locked' -> 500)

    def bad(r: object, what: str) -> None:
        with lock:
            if not killed.is_set():
                refused.append(f"{what}: {getattr(r, 'status_code', r)} {getattr(r, 'text', '')[:200]}")

    def pusher(n: int) -> None:
        c = Client(proc.url)
        repo = f"kill/c{n}"
        loop = 0
        while not stop.is_set():
            loop += 1
            try:
                descs = []
                for _ in range(2):
                    data = os.urandom(16_384 + loop)
                    r = c.req("POST", f"/v2/{repo}/blobs/uploads/", timeout=10)
                    if r.status_code != 202:
                        return bad(r, "POST")
                    r = c.req(
                        "PATCH",
                        _path(r.headers["Location"]),
                        data=data,
                        timeout=10,
                        headers={"Content-Type": "application/octet-stream", "Content-Range": f"0-{len(data) - 1}"},
                    )
                    if r.status_code != 202:
                        return bad(r, "PATCH")
                    r = c.req("PUT", _path(r.headers["Location"]), params={"digest": sha256(data)}, timeout=10)
                    if r.status_code != 201:
                        return bad(r, "blob PUT")
                    with lock:
                        if not killed.is_set():  # an answer read after the kill may race it; count only before
                            acked_blobs[sha256(data)] = (repo, data)
                    descs.append((sha256(data), len(data)))
                body = _manifest(descs[0], descs[1:])
                r = c.req(
                    "PUT",
                    f"/v2/{repo}/manifests/t{loop}",
                    data=body,
                    timeout=10,
                    headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"},
                )
                if r.status_code != 201:
                    return bad(r, "manifest PUT")
                with lock:
                    if not killed.is_set():
                        acked_manifests[f"{repo}:t{loop}"] = (repo, body)
            except Exception:  # the server died under us
                return

    threads = [threading.Thread(target=pusher, args=(i,)) for i in range(16)]
    try:
        for t in threads:
            t.start()
        deadline = time.time() + 60
        while time.time() < deadline and len(acked_manifests) < 40:
            time.sleep(0.05)
        assert len(acked_manifests) >= 40, f"the pushes did not get going: {refused[:3]}"
        pgid = os.getpgid(proc.proc.pid)
        assert pgid != os.getpgid(0), "the server must run in a process group of its own"
        with lock:  # nothing is counted as acknowledged from here on
            killed.set()
            os.killpg(pgid, signal.SIGKILL)  # master and both workers, at once
        stop.set()
        for t in threads:
            t.join(30)
        proc.proc.wait(10)
        # two workers, sixteen pushers: not one refusal ('database is locked' would be a 500)
        assert not refused, refused[:5]
        proc.start()
        c = Client(proc.url)
        missing = [d for d, (repo, data) in acked_blobs.items() if c.req("GET", f"/v2/{repo}/blobs/{d}").content != data]
        assert not missing, f"{len(missing)} of {len(acked_blobs)} acknowledged blobs lost or wrong"
        lost = [
            ref
            for ref, (repo, body) in acked_manifests.items()
            if c.req(
                "GET",
                f"/v2/{repo}/manifests/{ref.split(':')[1]}",
                headers={"Accept": "application/vnd.oci.image.manifest.v1+json"},
            ).content
            != body
        ]
        assert not lost, f"{len(lost)} of {len(acked_manifests)} acknowledged manifests lost"
    finally:
        stop.set()
        proc.stop()
