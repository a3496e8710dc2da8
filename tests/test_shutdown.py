"""SIGTERM (what ``docker container stop`` sends) while an upload is in flight: the server exits
cleanly within a few seconds, and after a restart the client resumes the upload from the offset
the registry reports -- nothing half-written becomes a blob."""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import time
from pathlib import Path
from urllib.parse import urlsplit

from tests.support.clients import http_request
from tests.support.registry_proc import start_moorage


def _start_chunked_patch(host: str, port: int, path: str, first: bytes) -> socket.socket:
    """A streaming PATCH (as docker sends it) that sends ``first`` and then stalls."""
    s = socket.create_connection((host, port), timeout=10)
    s.sendall(
        f"PATCH {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/octet-stream\r\n"
        "Transfer-Encoding: chunked\r\n\r\n".encode()
        + f"{len(first):x}\r\n".encode()
        + first
        + b"\r\n"
    )
    return s


def test_sigterm_during_upload_exits_cleanly_and_upload_resumes(tmp_path: Path) -> None:
    srv = start_moorage(tmp_path / "srv")
    data = os.urandom(3 << 20)
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    try:
        status, headers, _ = http_request("POST", f"{srv.url}/v2/team/app/blobs/uploads/")
        assert status == 202
        location = headers["location"]
        path = urlsplit(location).path if location.startswith("http") else location
        sock = _start_chunked_patch("127.0.0.1", srv.port, path, data[: 1 << 20])
        time.sleep(1.0)  # the server is now inside the PATCH, waiting for more bytes
        t0 = time.monotonic()
        srv.proc.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
        rc = srv.proc.wait(timeout=15)  # type: ignore[union-attr]
        took = time.monotonic() - t0
        print(f"exit {rc} after SIGTERM in {took:.2f}s with an upload in flight")
        assert rc == 0
        sock.close()

        srv.start()  # same data directory, new port
        status, headers, _ = http_request("GET", f"{srv.url}{path}")
        assert status == 204, status
        end = int(headers["range"].split("-")[1])
        offset = end + 1 if end >= 0 and headers["range"] != "0-0" else 0
        assert 0 <= offset <= 1 << 20
        status, headers, _ = http_request(
            "PATCH",
            f"{srv.url}{path}",
            data=data[offset:],
            headers={"Content-Type": "application/octet-stream", "Content-Range": f"{offset}-{len(data) - 1}"},
        )
        assert status == 202, status
        status, _, _ = http_request("PUT", f"{srv.url}{path}?digest={digest}")
        assert status == 201
        status, _, body = http_request("GET", f"{srv.url}/v2/team/app/blobs/{digest}")
        assert status == 200 and body == data
    finally:
        srv.stop()
