"""A backend outage is answered 503 UNAVAILABLE with Retry-After (clients retry), never a bare 500.

The registry reaches PostgreSQL (or S3) through a small TCP relay in the test; closing the relay
is a real outage as the registry sees it (connections reset, new ones refused).  Below the HTTP
tests, the translations themselves: drivers raise ``StorageUnavailable``, the metadata layer
``DatabaseUnavailable``; a SQL error or a missing blob is not an outage.
"""

from __future__ import annotations

import asyncio
import errno
import socket
import sqlite3
import threading
import uuid
from urllib.parse import urlsplit, urlunsplit

import pytest

from tests.support.http import Client, error_codes
from tests.support.registry_proc import read_log, start_moorage


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


@pytest.mark.services
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
        # (/v2/_catalog: PostgreSQL's page is read straight through asyncpg, Database.all)
        for path in ("/v2/outage/app/manifests/v1", "/v2/outage/app/tags/list", "/v2/_catalog", "/v2/_catalog?n=10"):
            r = c.req("GET", path)
            assert r.status_code == 503, r.text
            assert error_codes(r) == ["UNAVAILABLE"] and r.headers["Retry-After"]
            # the client hears that it may retry, not what the driver said
            assert r.json()["errors"][0]["message"] == "a storage or database service is unavailable; retry"
        r = c.req("POST", "/v2/outage/app/blobs/uploads/")
        assert r.status_code == 503, r.text
        r = c.req("GET", "/readyz")
        assert r.status_code == 503 and r.json()["checks"]["database"] != "ok", r.text
        log = read_log(srv.log_path) if srv.log_path else ""
        assert "backend unavailable on GET /v2/outage/app/manifests/v1" in log
        assert "untranslated database outage" not in log  # every path went through the metadata layer
    finally:
        relay.close()
        srv.stop()


@pytest.mark.services
def test_storage_outage_gives_503(rgw, tmp_path) -> None:  # noqa: ANN001
    """S3 unreachable mid-push: the PATCH and the stat behind HEAD answer 503 UNAVAILABLE, /readyz says storage."""
    host, port = urlsplit(rgw.endpoint_url).hostname, urlsplit(rgw.endpoint_url).port
    relay = Relay((host, port))
    srv = start_moorage(
        tmp_path / "srv",
        env={
            "MOORAGE_STORAGE__DRIVER": "s3",
            "MOORAGE_STORAGE__S3__BUCKET": f"outage-{uuid.uuid4().hex[:8]}",
            "MOORAGE_STORAGE__S3__ENDPOINT_URL": f"http://127.0.0.1:{relay.port}",
            "MOORAGE_STORAGE__S3__ACCESS_KEY": rgw.access_key,
            "MOORAGE_STORAGE__S3__SECRET_KEY": rgw.secret_key,
            "MOORAGE_STORAGE__S3__REGION": rgw.region,
        },
    )
    try:
        c = Client(srv.url)
        c.push_image("outage/s3", "v1")
        r = c.req("POST", "/v2/outage/s3/blobs/uploads/")
        assert r.status_code == 202, r.text
        location = r.headers["Location"]
        relay.close()
        r = c.req("PATCH", location, data=b"x" * 4096, headers={"Content-Type": "application/octet-stream"})
        assert r.status_code == 503, r.text
        assert error_codes(r) == ["UNAVAILABLE"] and r.headers["Retry-After"]
        assert "127.0.0.1" not in r.text  # no endpoint or driver detail in the client body
        r = c.req("GET", "/readyz")
        assert r.status_code == 503 and r.json()["checks"]["storage"] != "ok", r.text
        assert r.json()["checks"]["database"] == "ok"
    finally:
        relay.close()
        srv.stop()


# -- the translations, without a server ---------------------------------------------------------


def test_filesystem_driver_raises_storage_unavailable(tmp_path, monkeypatch) -> None:  # noqa: ANN001
    from moorage.errors import StorageUnavailable
    from moorage.storage import PartialAppend, filesystem

    store = filesystem.FilesystemBlobStore(tmp_path)
    asyncio.run(store.open())
    digest = "sha256:" + "a" * 64
    assert asyncio.run(store.stat(digest)) is None  # a missing blob is no outage
    real_lstat = filesystem.os.lstat  # (the driver lstat()s a blob: a link there is never followed)

    def failing_lstat(path, *a, **kw):  # noqa: ANN001, ANN002, ANN003
        if "blobs" in str(path):
            raise OSError(errno.EIO, "Input/output error", str(path))
        return real_lstat(path, *a, **kw)

    monkeypatch.setattr(filesystem.os, "lstat", failing_lstat)
    with pytest.raises(StorageUnavailable) as info:
        asyncio.run(store.stat(digest))
    assert "EIO" in info.value.reason and isinstance(info.value.__cause__, OSError)
    monkeypatch.setattr(filesystem.os, "lstat", real_lstat)

    async def append() -> None:
        state = await store.upload_create("u1")

        async def chunks():  # noqa: ANN202
            yield b"x" * 10

        def full(*_a, **_kw):  # noqa: ANN002, ANN003
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(filesystem, "_write_all", full)
        await store.upload_append("u1", state, 0, chunks())

    with pytest.raises(PartialAppend) as partial:
        asyncio.run(append())
    assert isinstance(partial.value.cause, StorageUnavailable) and partial.value.size == 0

    # an error of the caller (a bad digest) stays what it is
    with pytest.raises(ValueError):
        asyncio.run(store.stat("sha256:../../etc"))


def test_s3_outage_classifier() -> None:
    from botocore.exceptions import ClientError, EndpointConnectionError, ReadTimeoutError

    from moorage.storage.s3 import s3_outage

    def client_error(code: str, status: int) -> ClientError:
        return ClientError({"Error": {"Code": code, "Message": "m"}, "ResponseMetadata": {"HTTPStatusCode": status}}, "PutObject")

    assert s3_outage(EndpointConnectionError(endpoint_url="http://127.0.0.1:1"))
    assert s3_outage(ReadTimeoutError(endpoint_url="http://127.0.0.1:1"))
    assert s3_outage(client_error("SlowDown", 503))
    assert s3_outage(client_error("InternalError", 500))
    assert s3_outage(client_error("RequestTimeout", 400))
    assert s3_outage(client_error("NoSuchKey", 404)) is None
    assert s3_outage(client_error("AccessDenied", 403)) is None
    assert s3_outage(ValueError("x")) is None


def test_database_layer_raises_database_unavailable(tmp_path) -> None:  # noqa: ANN001
    """Real SQLite errors through the real Database: locked past the timeout is an outage, bad SQL is not."""
    from sqlalchemy import text
    from sqlalchemy.exc import OperationalError

    from moorage.errors import DatabaseUnavailable
    from moorage.metadata import db as dbmod

    path = tmp_path / "m.db"

    async def scenario() -> None:
        database = dbmod.Database(f"sqlite+aiosqlite:///{path}")
        try:
            async with database.write() as conn:
                await conn.execute(text("CREATE TABLE t (x INTEGER)"))
            with pytest.raises(OperationalError):  # no such table: a bug, not an outage
                async with database.read() as conn:
                    await conn.execute(text("SELECT * FROM missing"))
            await database.close()  # pooled connections would keep the locker from its exclusive lock
            locker = sqlite3.connect(str(path), isolation_level=None)
            locker.execute("PRAGMA locking_mode=EXCLUSIVE")
            locker.execute("BEGIN IMMEDIATE")
            locker.execute("INSERT INTO t VALUES (1)")
            locker.execute("COMMIT")
            try:
                with pytest.raises(DatabaseUnavailable) as info:
                    async with database.read(snapshot=False) as conn:
                        await conn.execute(text("SELECT count(*) FROM t"))
                assert "locked" in info.value.reason and info.value.status == 503
                with pytest.raises(DatabaseUnavailable):
                    await database.ping()
            finally:
                locker.close()
            await database.ping()
        finally:
            await database.close()

    asyncio.run(scenario())
