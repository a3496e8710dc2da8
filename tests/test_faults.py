"""Faults under load (issue 21, "Fault tests in the suite"): while several clients push at once,

* PostgreSQL is stopped with ``pg_ctl stop -m immediate`` (S3 + PostgreSQL) and started again;
* the S3 service (Ceph RGW) is frozen with SIGSTOP and thawed with SIGCONT (S3 + PostgreSQL);
* the filesystem holding the data directory (blobs and SQLite) fills up and is freed (fs + SQLite).

Each asserts what a user relies on: every push the registry acknowledged (manifest ``PUT`` 201)
reads back byte-identical afterwards, no request is answered 500 (an outage is 503, a full disk
503 or 507), and pushes succeed again within 10 s of the fault's end (a bounded wait loop).  The
figures (answers by status, pushes acknowledged, seconds to the first push after the fault) are
printed.  test_backend_outage.py has the single-request translations (a relay closed under a
server); these are the real services failing under concurrent writers.
"""

from __future__ import annotations

import collections
import hashlib
import json
import os
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.support.registry_proc import RegistryProcess, start_moorage

pytestmark = [pytest.mark.scaleout]

RECOVERY = 10.0  # seconds: pushes succeed again within this long after the fault ends
T = 90  # a client's timeout per request: longer than any fault here
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def _sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass
class Acked:
    repo: str
    tag: str
    manifest: bytes
    blobs: dict[str, bytes]
    started: float


@dataclass
class Pushers:
    """``n`` threads, each pushing small distinct images (a monolithic layer, a POST/PATCH/PUT
    layer, a config, a tagged manifest) until stopped; records every answer's status and every
    acknowledged push."""

    url: str
    n: int = 4
    layer_bytes: int = 48 * 1024
    statuses: collections.Counter[int] = field(default_factory=collections.Counter)
    acked: list[Acked] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    bad: list[str] = field(default_factory=list)  # 500s (and any 5xx other than 503/507), with body
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> Pushers:
        for i in range(self.n):
            t = threading.Thread(target=self._run, args=(i,), name=f"pusher-{i}", daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(T + 30)
        assert not any(t.is_alive() for t in self._threads), "a pusher hung past its timeouts"

    def _answer(self, r: requests.Response, what: str) -> bool:
        with self._lock:
            self.statuses[r.status_code] += 1
            if r.status_code >= 500 and r.status_code not in (503, 507):
                self.bad.append(f"{what}: {r.status_code} {r.text[:300]}")
        return r.status_code < 300

    def _run(self, i: int) -> None:
        s = requests.Session()
        k = 0
        while not self._stop.is_set():
            k += 1
            started = time.monotonic()
            try:
                ok = self._push_one(s, f"fault/p{i}", f"t{k}", started)
            except requests.RequestException as exc:  # a reset or a timeout is not an answer
                with self._lock:
                    self.failures.append(f"{type(exc).__name__}: {str(exc)[:200]}")
                ok = False
            if not ok:
                time.sleep(0.2)

    def _push_one(self, s: requests.Session, repo: str, tag: str, started: float) -> bool:
        base = f"{self.url}/v2/{repo}"
        mono, chunked = os.urandom(self.layer_bytes), os.urandom(self.layer_bytes)
        config = json.dumps({"architecture": "amd64", "os": "linux", "nonce": uuid.uuid4().hex}).encode()
        for blob in (mono, config):
            if not self._answer(
                s.post(f"{base}/blobs/uploads/", params={"digest": _sha(blob)}, data=blob, timeout=T), "POST ?digest"
            ):
                return False
        r = s.post(f"{base}/blobs/uploads/", timeout=T)
        if not self._answer(r, "POST"):
            return False
        loc = self.url + r.headers["Location"] if r.headers["Location"].startswith("/") else r.headers["Location"]
        half = len(chunked) // 2
        r = s.patch(loc, data=chunked[:half], headers={"Content-Type": "application/octet-stream"}, timeout=T)
        if not self._answer(r, "PATCH"):
            return False
        loc = self.url + r.headers["Location"] if r.headers["Location"].startswith("/") else r.headers["Location"]
        r = s.put(
            loc,
            params={"digest": _sha(chunked)},
            data=chunked[half:],
            headers={"Content-Type": "application/octet-stream"},
            timeout=T,
        )
        if not self._answer(r, "PUT"):
            return False
        doc = {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": _sha(config), "size": len(config)},
            "layers": [
                {"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": _sha(b), "size": len(b)}
                for b in (mono, chunked)
            ],
        }
        body = json.dumps(doc).encode()
        r = s.put(f"{base}/manifests/{tag}", data=body, headers={"Content-Type": OCI_MANIFEST}, timeout=T)
        if not self._answer(r, "PUT manifest"):
            return False
        with self._lock:
            self.acked.append(Acked(repo, tag, body, {_sha(b): b for b in (mono, chunked, config)}, started))
        return True

    def acked_since(self, t: float) -> int:
        with self._lock:
            return sum(1 for a in self.acked if a.started >= t)


def _under_fault(url: str, fault: Callable[[], None], heal: Callable[[], None], hold: float, label: str) -> Pushers:
    """Concurrent pushes; the fault for ``hold`` seconds; healed; recovery awaited (bounded);
    then every acknowledged push read back."""
    pushers = Pushers(url).start()
    try:
        deadline = time.monotonic() + 60
        while pushers.acked_since(0) < 4 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert pushers.acked_since(0) >= 4, f"no pushes before the fault: {pushers.statuses} {pushers.failures[-3:]}"
        before = len(pushers.acked)
        fault()
        time.sleep(hold)
        healed = time.monotonic()
        heal()
        deadline = healed + RECOVERY
        while pushers.acked_since(healed) == 0 and time.monotonic() < deadline:
            time.sleep(0.1)
        recovered = pushers.acked_since(healed) > 0
        took = time.monotonic() - healed
    finally:
        pushers.stop()
    print(
        f"\n{label}: answers {dict(sorted(pushers.statuses.items()))}, pushes acknowledged {before} before the fault "
        f"and {len(pushers.acked)} in all, client-side failures {len(pushers.failures)}, "
        f"first push after the fault within {took:.1f} s"
    )
    assert recovered, f"no push succeeded within {RECOVERY:.0f} s of the fault's end: {pushers.statuses} {pushers.failures[-3:]}"
    assert not pushers.bad, pushers.bad[:5]
    assert 500 not in pushers.statuses
    _read_back(url, pushers.acked)
    return pushers


def _read_back(url: str, acked: list[Acked]) -> None:
    """Every acknowledged push: its manifest under its tag, and each blob, byte for byte."""
    s = requests.Session()
    for a in acked:
        r = s.get(f"{url}/v2/{a.repo}/manifests/{a.tag}", headers={"Accept": OCI_MANIFEST}, timeout=T)
        assert r.status_code == 200 and r.content == a.manifest, (a.repo, a.tag, r.status_code, r.text[:200])
        for digest, data in a.blobs.items():
            r = s.get(f"{url}/v2/{a.repo}/blobs/{digest}", timeout=T)
            assert r.status_code == 200 and r.content == data, (a.repo, a.tag, digest, r.status_code)


def _s3_env(rgw: Any) -> dict[str, str]:
    return {
        "MOORAGE_STORAGE__DRIVER": "s3",
        "MOORAGE_STORAGE__S3__BUCKET": f"fault-{uuid.uuid4().hex[:10]}",
        "MOORAGE_STORAGE__S3__ENDPOINT_URL": rgw.endpoint_url,
        "MOORAGE_STORAGE__S3__ACCESS_KEY": rgw.access_key,
        "MOORAGE_STORAGE__S3__SECRET_KEY": rgw.secret_key,
        "MOORAGE_STORAGE__S3__REGION": rgw.region,
    }


@pytest.fixture()
def own_postgres(tmp_path: Path) -> Iterator[Any]:
    """A PostgreSQL cluster of this test's own: stopping it must not stop anyone else's."""
    from tests.support.postgres import PostgresServer, missing_binaries

    if missing_binaries():
        pytest.fail(f"PostgreSQL not installed: {missing_binaries()}")
    # Durable commits: the shared test clusters run with synchronous_commit off (fast, and
    # nothing there is ever crashed); here an immediate stop must not lose what was acknowledged.
    server = PostgresServer(tmp_path / "pg", extra_conf={"synchronous_commit": "on"})
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.mark.services
@pytest.mark.timeout(600)
def test_postgres_stopped_immediately_during_concurrent_pushes(rgw: Any, own_postgres: Any, tmp_path: Path) -> None:
    env = {**_s3_env(rgw), "MOORAGE_DATABASE__URL": own_postgres.url, "MOORAGE_DATABASE__AUTO_MIGRATE": "true"}
    srv = start_moorage(tmp_path / "srv", env=env)
    try:
        _under_fault(srv.url, own_postgres.pg_ctl_stop, own_postgres.restart, hold=5.0, label="pg_ctl stop -m immediate")
        assert requests.get(f"{srv.url}/readyz", timeout=T).status_code == 200
    finally:
        srv.stop()


@pytest.mark.services
@pytest.mark.timeout(600)
def test_s3_service_frozen_during_concurrent_pushes(rgw: Any, ceph_cluster: Any, postgres_url: str, tmp_path: Path) -> None:
    from tests.support.postgres import create_database

    rgw_proc = ceph_cluster._rgw  # the radosgw process of this session's throwaway cluster
    assert rgw_proc is not None and rgw_proc.poll() is None
    url = create_database(postgres_url, f"fault_{uuid.uuid4().hex[:10]}")
    env = {**_s3_env(rgw), "MOORAGE_DATABASE__URL": url, "MOORAGE_DATABASE__AUTO_MIGRATE": "true"}
    srv = start_moorage(tmp_path / "srv", env=env)
    frozen = False

    def freeze() -> None:
        nonlocal frozen
        os.kill(rgw_proc.pid, signal.SIGSTOP)
        frozen = True

    def thaw() -> None:
        nonlocal frozen
        os.kill(rgw_proc.pid, signal.SIGCONT)
        frozen = False

    try:
        _under_fault(srv.url, freeze, thaw, hold=10.0, label="RGW SIGSTOP 10 s")
    finally:
        if frozen:
            os.kill(rgw_proc.pid, signal.SIGCONT)
        srv.stop()


@pytest.fixture()
def small_filesystem(tmp_path: Path) -> Iterator[Path]:
    """A 48 MiB tmpfs mounted where the server's data directory will be (its log stays outside)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small filesystem needs root (CI and the dev machines run as root)")
    data = tmp_path / "srv" / "data"
    data.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=48m,mode=0700", "tmpfs", str(data)], check=True, timeout=30)
    try:
        yield data
    finally:
        subprocess.run(["umount", "-l", str(data)], check=False, timeout=30)


@pytest.mark.timeout(600)
def test_filesystem_full_during_concurrent_pushes(small_filesystem: Path) -> None:
    srv: RegistryProcess = start_moorage(small_filesystem.parent)
    filler = small_filesystem / "filler"

    def fill() -> None:
        fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            for size in (1 << 20, 4096):  # then the last few pages too
                try:
                    while True:
                        os.write(fd, b"\0" * size)
                except OSError:
                    pass
        finally:
            os.close(fd)

    try:
        pushers = _under_fault(srv.url, fill, lambda: filler.unlink(), hold=5.0, label="filesystem full")
        full = pushers.statuses.get(503, 0) + pushers.statuses.get(507, 0)
        assert full > 0, f"the full filesystem was never met: {pushers.statuses}"
    finally:
        srv.stop()
