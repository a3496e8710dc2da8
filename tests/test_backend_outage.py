"""A database outage is answered 503 UNAVAILABLE with Retry-After (clients retry), never a bare 500.

The registry reaches PostgreSQL through a small TCP relay in the test; closing the relay is a
real outage as the registry sees it (connections reset, new ones refused).
"""

from __future__ import annotations

import socket
import threading
import uuid
from urllib.parse import urlsplit, urlunsplit

import pytest

from tests.support.http import Client, error_codes
from tests.support.registry_proc import start_moorage

pytestmark = pytest.mark.services


class Relay:
    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.socks: list[socket.socket] = []
        self.open = True
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while self.open:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target, timeout=10)
            self.socks += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(a: socket.socket, b: socket.socket) -> None:
        try:
            while data := a.recv(65536):
                b.sendall(data)
        except OSError:
            pass
        finally:
            for s in (a, b):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        self.open = False
        try:  # wakes the thread blocked in accept(); close() alone would leave it listening
            self.listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.listener.close()
        for s in self.socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
                s.close()
            except OSError:
                pass


def test_database_outage_gives_503(postgres_url: str, tmp_path) -> None:  # noqa: ANN001
    from tests.support.postgres import create_database

    url = create_database(postgres_url, f"outage_{uuid.uuid4().hex[:8]}")
    parts = urlsplit(url)
    relay = Relay((parts.hostname, parts.port))
    relayed = urlunsplit(parts._replace(netloc=f"{parts.username}:{parts.password}@127.0.0.1:{relay.port}"))
    srv = start_moorage(tmp_path / "srv", env={"MOORAGE_DATABASE__URL": relayed, "MOORAGE_DATABASE__AUTO_MIGRATE": "true"})
    try:
        c = Client(srv.url)
        c.push_image("outage/app", "v1")
        assert c.req("GET", "/v2/outage/app/manifests/v1").status_code == 200
        relay.close()
        for path in ("/v2/outage/app/manifests/v1", "/v2/outage/app/tags/list"):
            r = c.req("GET", path)
            assert r.status_code == 503, r.text
            assert error_codes(r) == ["UNAVAILABLE"] and r.headers["Retry-After"]
        r = c.req("POST", "/v2/outage/app/blobs/uploads/")
        assert r.status_code == 503, r.text
    finally:
        relay.close()
        srv.stop()
