"""A full disk (issue 21 item 7): the data directory of a real ``moorage serve`` on a small tmpfs.

Pushes until the file system is full, then checks what the registry promises
(docs/integrity.md, "Storage full"): every refused write is ``507 Insufficient Storage`` with an
``UNAVAILABLE`` body saying the storage is full (never a 500, never a bare 503 "retry"); every
push acknowledged before is read back byte-identical; reads keep working; ``/readyz`` stays 200
and says "storage full: writes refused"; the log has one "is full" line a minute, not one per
request; and once space is freed (the tmpfs grown, as an operator grows a volume) pushes succeed
again and ``/readyz`` is clean.

Needs root or ``sudo -n`` (``mount -t tmpfs``); a machine that cannot mount skips (fails in CI).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.support.registry_proc import RegistryProcess, read_log, start_moorage
from tests.support.require import missing

pytestmark = pytest.mark.protocol

#: Size of the tmpfs holding the data directory; each image below adds ~1 MiB of random bytes.
SIZE_MB = 24
LAYER = 1 << 20
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def _sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _as_root() -> list[str]:
    """Prefix for a command that needs root: nothing as root, else ``sudo -n`` (CI runners)."""
    if os.geteuid() == 0:
        return []
    sudo = shutil.which("sudo")
    return [sudo, "-n"] if sudo else []


@pytest.fixture()
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """``tmp_path/srv/data`` as a tmpfs of :data:`SIZE_MB` MiB owned by this user (unmounted afterwards)."""
    mnt = tmp_path / "srv" / "data"
    mnt.mkdir(parents=True)
    opts = f"size={SIZE_MB}m,mode=0700,uid={os.getuid()},gid={os.getgid()}"
    r = subprocess.run([*_as_root(), "mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(mnt)], capture_output=True)
    if r.returncode != 0:
        missing(f"cannot mount a tmpfs (needs root, or sudo -n): {r.stderr.decode(errors='replace').strip()}")
    try:
        yield mnt
    finally:
        subprocess.run([*_as_root(), "umount", "-l", str(mnt)], capture_output=True)


class Pusher:
    """Pushes images step by step, remembering what the registry acknowledged."""

    def __init__(self, proc: RegistryProcess) -> None:
        self.base = proc.url
        self.s = requests.Session()
        #: (repository, tag) -> (manifest bytes, {digest: bytes}) of every acknowledged manifest.
        self.acked: dict[tuple[str, str], tuple[bytes, dict[str, bytes]]] = {}
        #: Every answer that was not a success: (method, path, status, body).
        self.refused: list[tuple[str, str, int, bytes]] = []

    def _note(self, r: requests.Response, ok: int) -> bool:
        if r.status_code == ok:
            return True
        self.refused.append((r.request.method or "", r.request.path_url, r.status_code, r.content))
        return False

    def push(self, repo: str, tag: str, layer_size: int = LAYER) -> bool:
        layer = os.urandom(layer_size)
        config = json.dumps({"architecture": "amd64", "os": "linux", "rnd": os.urandom(8).hex()}).encode()
        for data in (config, layer):
            r = self.s.post(
                f"{self.base}/v2/{repo}/blobs/uploads/",
                params={"digest": _sha(data)},
                data=data,
                headers={"Content-Type": "application/octet-stream"},
                timeout=60,
            )
            if not self._note(r, 201):
                return False
        manifest = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": _sha(config), "size": len(config)},
                "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": _sha(layer), "size": len(layer)}],
            }
        ).encode()
        r = self.s.put(
            f"{self.base}/v2/{repo}/manifests/{tag}", data=manifest, headers={"Content-Type": OCI_MANIFEST}, timeout=60
        )
        if not self._note(r, 201):
            return False
        self.acked[(repo, tag)] = (manifest, {_sha(config): config, _sha(layer): layer})
        return True

    def chunked(self, repo: str, size: int) -> int:
        """A POST / PATCH / PUT upload; the status of the first step that failed (or 201)."""
        data = os.urandom(size)
        r = self.s.post(f"{self.base}/v2/{repo}/blobs/uploads/", timeout=60)
        if not self._note(r, 202):
            return r.status_code
        loc = r.headers["Location"]
        url = loc if loc.startswith("http") else self.base + loc
        r = self.s.patch(url, data=data, headers={"Content-Type": "application/octet-stream"}, timeout=60)
        if not self._note(r, 202):
            return r.status_code
        loc = r.headers["Location"]
        url = loc if loc.startswith("http") else self.base + loc
        r = self.s.put(url, params={"digest": _sha(data)}, timeout=60)
        self._note(r, 201)
        return r.status_code

    def check_all_readable(self) -> None:
        for (repo, tag), (manifest, blobs) in self.acked.items():
            r = self.s.get(f"{self.base}/v2/{repo}/manifests/{tag}", headers={"Accept": OCI_MANIFEST}, timeout=60)
            assert r.status_code == 200 and r.content == manifest, (repo, tag, r.status_code)
            for digest, data in blobs.items():
                r = self.s.get(f"{self.base}/v2/{repo}/blobs/{digest}", timeout=60)
                assert r.status_code == 200 and r.content == data, (repo, digest, r.status_code)


def test_full_disk_says_so_keeps_data_and_recovers(small_fs: Path) -> None:
    proc = start_moorage(small_fs.parent)
    try:
        p = Pusher(proc)
        n = 0
        while p.push("full/app", f"v{n}"):
            n += 1
            assert n < 4 * SIZE_MB, "the file system never filled up"
        assert n >= 3, f"only {n} image(s) fit: {p.refused[-1:]}"
        # go on writing into the full disk: every kind of write, many times
        for i in range(12):
            p.push("full/app", f"late{i}", layer_size=LAYER // 4)
            p.chunked("full/other", 64 * 1024)
            p.s.put(
                f"{proc.url}/v2/full/app/manifests/again{i}",
                data=next(iter(p.acked.values()))[0],
                headers={"Content-Type": OCI_MANIFEST},
                timeout=60,
            )  # a tag of a stored manifest: a database write only
        statuses = {s for _m, _p, s, _b in p.refused}
        assert 500 not in statuses and statuses <= {507}, [(m, u, s, b[:200]) for m, u, s, b in p.refused if s != 507]
        for _m, _u, _s, body in p.refused:
            err = json.loads(body)["errors"][0]
            assert err["code"] == "UNAVAILABLE" and "storage is full" in err["message"], err
            assert err["detail"] == {"reason": "storage full"}
        # nothing acknowledged is lost, and reads work on the full disk
        p.check_all_readable()
        r = requests.get(f"{proc.url}/v2/_catalog", timeout=30)
        assert r.status_code == 200 and "full/app" in r.json()["repositories"]
        for page in ("/", "/ui/repo/full/app"):  # the web UI too
            assert requests.get(proc.url + page, timeout=30).status_code == 200, page
        ready = requests.get(f"{proc.url}/readyz", timeout=30)
        assert ready.status_code == 200, ready.text
        assert ready.json()["status"] == "degraded" and "full: writes refused" in ready.json()["detail"], ready.text
        # one log line a minute, not one per refused request
        log = read_log(small_fs.parent / "moorage.log")
        full_lines = [line for line in log.splitlines() if "is full: writes refused" in line]
        print(f"{n} images fit; {len(p.refused)} refused writes; {len(full_lines)} 'is full' log line(s)")
        assert len(p.refused) >= 20 and 1 <= len(full_lines) <= 2, full_lines
        assert "Traceback" not in log and "unhandled error" not in log

        # space again (the volume grown): pushes succeed again within seconds, readyz is clean
        subprocess.run([*_as_root(), "mount", "-o", f"remount,size={4 * SIZE_MB}m", str(small_fs)], check=True)
        deadline = time.monotonic() + 10
        while not p.push("full/app", "after"):
            assert time.monotonic() < deadline, p.refused[-3:]
            time.sleep(0.5)
        assert p.chunked("full/other", 64 * 1024) == 201
        ready = requests.get(f"{proc.url}/readyz", timeout=30).json()
        assert ready["status"] == "ok" and "detail" not in ready, ready
        p.check_all_readable()
    finally:
        proc.stop()


# -- the translations and the log limit, in this process (unit tier) ---------------------------
@pytest.mark.unit
def test_full_errnos_become_storage_full_others_stay_unavailable() -> None:
    import errno

    from moorage.errors import StorageFull, StorageUnavailable
    from moorage.storage.base import as_outage, os_outage

    for code in (errno.ENOSPC, errno.EDQUOT):
        exc = as_outage(OSError(code, os.strerror(code)), os_outage, "filesystem")
        assert isinstance(exc, StorageFull) and exc.status == 507 and exc.headers["Retry-After"] == "60"
        assert exc.to_json() == {"code": "UNAVAILABLE", "message": exc.message, "detail": {"reason": "storage full"}}
        assert "storage is full" in exc.message and errno.errorcode[code] in exc.reason
    for code in (errno.EIO, errno.EROFS):
        exc = as_outage(OSError(code, os.strerror(code)), os_outage, "filesystem")
        assert type(exc) is StorageUnavailable and exc.status == 503


@pytest.mark.unit
def test_s3_quota_exceeded_is_full() -> None:
    from botocore.exceptions import ClientError

    from moorage.errors import StorageFull
    from moorage.storage.base import as_outage
    from moorage.storage.s3 import s3_outage

    err = ClientError(
        {"Error": {"Code": "QuotaExceeded", "Message": "m"}, "ResponseMetadata": {"HTTPStatusCode": 403}}, "PutObject"
    )
    assert isinstance(as_outage(err, s3_outage, "s3"), StorageFull)


@pytest.mark.unit
def test_sqlite_full_is_database_full(tmp_path: Path) -> None:
    """A real "database or disk is full" from SQLite (its page limit reached) through
    Database.write: DatabaseFull, a 507."""
    import asyncio

    from sqlalchemy import text

    from moorage.errors import DatabaseFull
    from moorage.metadata.db import Database

    async def go() -> None:
        db = Database(f"sqlite+aiosqlite:///{tmp_path / 'm.db'}")
        try:
            async with db.write() as conn:
                await conn.execute(text("CREATE TABLE t (x BLOB)"))
            with pytest.raises(DatabaseFull) as info:
                async with db.write() as conn:
                    await conn.execute(text("PRAGMA max_page_count = 20"))
                    for _ in range(100):
                        await conn.execute(text("INSERT INTO t VALUES (randomblob(4096))"))
            assert info.value.status == 507 and "full" in info.value.reason
        finally:
            await db.close()

    asyncio.run(go())


@pytest.mark.unit
def test_full_log_once_a_minute_and_readyz_detail(caplog: pytest.LogCaptureFixture) -> None:
    import logging

    from moorage.api.storage_full import FORGET_AFTER, LOG_INTERVAL, FullState
    from moorage.errors import DatabaseFull, StorageFull

    state = FullState()
    caplog.set_level(logging.ERROR, logger="moorage.api")
    exc = StorageFull(reason="filesystem: ENOSPC: No space left on device")
    for i in range(500):  # 500 refusals within one interval: one line
        state.refused(exc, "PUT", "/v2/a/blobs/uploads/x", now=1000 + i * (LOG_INTERVAL - 1) / 500)
    lines = [r for r in caplog.records if "is full" in r.getMessage()]
    assert len(lines) == 1 and "storage is full" in lines[0].getMessage()
    assert "storage full: writes refused" in (state.detail(now=1000 + LOG_INTERVAL) or "")
    state.wrote()  # a write went through: readyz clean, but the log limit holds
    assert state.detail(now=1000 + LOG_INTERVAL) is None
    state.refused(
        DatabaseFull(reason="sqlite: database or disk is full"), "PUT", "/v2/a/manifests/t", now=1000 + LOG_INTERVAL - 0.5
    )
    assert len([r for r in caplog.records if "is full" in r.getMessage()]) == 1
    state.refused(exc, "PUT", "/x", now=1000 + 2 * LOG_INTERVAL)
    lines = [r.getMessage() for r in caplog.records if "is full" in r.getMessage()]
    assert len(lines) == 2 and "(501 request(s) since the last such line" in lines[1]
    assert state.detail(now=1000 + 2 * LOG_INTERVAL + FORGET_AFTER + 1) is None


@pytest.mark.unit
def test_postgresql_disk_full_is_database_full() -> None:
    """asyncpg's DiskFullError (SQLSTATE 53100) as SQLAlchemy's asyncpg dialect raises it (an
    adapted DBAPI error caused by it): DatabaseFull; another PostgreSQL error stays what it was."""
    import asyncpg.exceptions
    from sqlalchemy.dialects.postgresql.asyncpg import AsyncAdapt_asyncpg_dbapi
    from sqlalchemy.exc import DBAPIError

    from moorage.errors import DatabaseFull
    from moorage.metadata.errors import outage_error

    def wrapped(cause: Exception) -> DBAPIError:
        try:
            try:
                raise cause
            except Exception as exc:
                raise AsyncAdapt_asyncpg_dbapi.Error(str(exc), exc) from exc
        except Exception as adapted:  # noqa: BLE001
            return DBAPIError("INSERT ...", {}, adapted)

    full = outage_error(wrapped(asyncpg.exceptions.DiskFullError("could not extend file: No space left on device")))
    assert isinstance(full, DatabaseFull) and full.status == 507
    assert outage_error(wrapped(asyncpg.exceptions.UniqueViolationError("duplicate key"))) is None
