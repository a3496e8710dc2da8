"""A throwaway single-node Ceph cluster with a RADOS Gateway (S3) for tests.

    with start_rgw(tmp_path / "ceph") as ep:
        s3 = ep.boto3_client()          # path-style, SigV4, ep.region
        s3.create_bucket(Bucket="blobs")

Layout: one monitor (msgr2 only, on 127.0.0.1:<free port>), one OSD using the
in-memory ``memstore`` objectstore, one radosgw (beast frontend on
127.0.0.1:<free port>) and one S3 user with known keys.  Everything (conf,
mon store, logs, admin sockets) lives in ``workdir``; ``stop()`` kills the
daemons and removes ``workdir`` (set MOORAGE_KEEP_SERVICE_DIRS=1 to keep it).
Cold start on the 2-core dev box is about 1.5-2.5 s.  No mgr is run: pools,
PGs and I/O work without one (``ceph -s`` then shows "0 pools" and
"mgr: no daemons active" - that is cosmetic).

Settings that matter (found on Debian 12, ceph 16.2.15 "pacific"):

* ``auth {cluster,service,client} required = none`` - no cephx keyrings.  With
  auth off, radosgw *also* needs ``ms mon client mode = crc`` or it cannot
  authenticate to the monitor.
* ``osd pool default size = 1`` + ``osd pool default min size = 1`` +
  ``mon allow pool size one = true`` (pacific refuses size-1 pools otherwise)
  and ``osd crush chooseleaf type = 0`` for a single OSD.
* ``osd pool default pg num = 8`` / ``pg autoscale mode = off``: rgw creates
  7 pools; the pacific default of 32 PGs each comes close to
  ``mon max pg per osd`` (250) on one OSD.
* ``paxos propose interval = 0.01`` cuts start-up from ~19 s to ~2 s (every
  osdmap change, e.g. each pool rgw creates, otherwise waits 1 s+).
* The OSD data dir must exist before ``ceph-osd --mkfs`` with memstore
  (otherwise ``MemStore::set_fsid`` asserts and the process aborts).
* ``public addr``/``cluster addr = 127.0.0.1`` or the OSD listens on 0.0.0.0.
* ``memstore device bytes`` is the OSD's reported capacity (default 1 GiB);
  data really lives in RAM.  We use 4 GiB; the OSD goes "full" near 95 %.
* ``mon data avail crit = 0`` so a nearly-full /tmp does not stop the mon.
* radosgw exits with status 98 ("failed to bind address ...: Address already
  in use" / "ERROR: failed initializing frontend") when its port is taken, so
  the port is checked free, and on that failure another port is tried.
  radosgw connects to RADOS and watches ``default.rgw.control/notify.*``
  *before* binding; the dead process's watches then linger for ``osd
  client watch timeout`` (30 s) and every notify (radosgw-admin user create,
  bucket creation) stalls ~30 s.  So after such a failure the stale watchers
  are listed (``rados listwatchers``) and blocklisted
  (``ceph osd blocklist add ADDR``) before retrying.
* ``ceph-osd`` takes ~5-10 s to exit on SIGTERM once the mon is gone; with an
  in-memory store there is nothing to flush, so daemons get a short SIGTERM
  grace and then SIGKILL.

S3 behaviour of radosgw 16.2 that differs from AWS (checked with boto3 1.43,
path-style addressing):

* CompleteMultipartUpload returns an **empty ETag** (``''``); HeadObject /
  GetObject afterwards return the proper ``"<md5-of-md5s>-<nparts>"`` ETag.
* ListParts on an aborted (or never existing) upload id fails with
  **NoSuchKey** (404), not NoSuchUpload.  AbortMultipartUpload on an unknown
  id does return NoSuchUpload.
* ``CopyObjectResult``/``CopyPartResult`` ETags come back **without the
  surrounding double quotes** (PutObject/UploadPart/ListParts ETags are
  quoted, as on AWS).
* Error responses mostly carry no ``<Message>`` (boto3 shows
  ``Message: None``) - match on the error Code only.
* HeadObject/HeadBucket on a missing key/bucket: code ``'404'`` (no body,
  as on AWS).
* CreateBucket on a bucket you already own returns 200 (like AWS
  us-east-1), not BucketAlreadyOwnedByYou.
* SigV4 accepts any region name in the credential scope (signing with
  "us-east-1" or "eu-west-9" both work), but CreateBucket with a
  LocationConstraint other than the zonegroup's api_name ("default") fails
  with InvalidLocationConstraint - send no LocationConstraint.
* boto3's default request checksums (CRC32 trailers) are accepted; the
  checksum is not echoed back.
* Bucket names shorter than 3 chars -> InvalidBucketName (as on AWS).
* Multipart parts below 5 MiB (other than the last) -> EntityTooSmall on
  complete (as on AWS).
"""

from __future__ import annotations

import atexit
import json
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._procs import (
    ServiceStartError,
    clean_env,
    die_with_parent,
    free_port,
    keep_dirs,
    port_is_free,
    stop_process,
    tail,
    wait_until,
)

DEFAULT_ACCESS_KEY = "MOORAGETESTACCESSKEY0"
DEFAULT_SECRET_KEY = "moorage-test-secret-key-0123456789abcdefgh"
DEFAULT_REGION = "us-east-1"
S3_USER = "moorage-test"

REQUIRED_BINARIES = (
    "ceph-mon",
    "ceph-osd",
    "radosgw",
    "radosgw-admin",
    "ceph",
    "ceph-authtool",
    "monmaptool",
    "rados",
)

# Unix socket paths (admin sockets) must fit in sockaddr_un.sun_path.
_MAX_SOCKET_PATH = 100


def missing_binaries() -> list[str]:
    return [b for b in REQUIRED_BINARIES if shutil.which(b) is None]


@dataclass(frozen=True)
class RGWEndpoint:
    """How to reach the throwaway RGW as an S3 client."""

    endpoint_url: str  # "http://127.0.0.1:PORT"
    access_key: str
    secret_key: str
    region: str
    host: str
    port: int
    ceph_conf: Path  # for `radosgw-admin -c ...` / `ceph -c ...`

    def client_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for boto3/aiobotocore ``create_client("s3", **kw)``."""
        from botocore.config import Config

        return {
            "endpoint_url": self.endpoint_url,
            "aws_access_key_id": self.access_key,
            "aws_secret_access_key": self.secret_key,
            "region_name": self.region,
            "config": Config(
                s3={"addressing_style": "path"},
                signature_version="s3v4",
                retries={"max_attempts": 2, "mode": "standard"},
                connect_timeout=5,
                read_timeout=60,
            ),
        }

    def boto3_client(self):
        import boto3

        return boto3.client("s3", **self.client_kwargs())


@dataclass
class CephRGW:
    workdir: Path
    access_key: str = DEFAULT_ACCESS_KEY
    secret_key: str = DEFAULT_SECRET_KEY
    region: str = DEFAULT_REGION
    timeout: float = 90.0  # overall bound for each start-up phase
    memstore_bytes: int = 4 << 30
    timings: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.workdir = Path(self.workdir).resolve()
        self._fsid = str(uuid.uuid4())
        self._mon_port = 0
        self._rgw_port = 0
        self._mon: subprocess.Popen | None = None
        self._osd: subprocess.Popen | None = None
        self._rgw: subprocess.Popen | None = None
        self._endpoint: RGWEndpoint | None = None
        self._stopped = False
        self._atexit_registered = False

    # ------------------------------------------------------------------ paths
    @property
    def conf(self) -> Path:
        return self.workdir / "ceph.conf"

    @property
    def logdir(self) -> Path:
        return self.workdir / "log"

    # --------------------------------------------------------------- lifecycle
    def __enter__(self) -> RGWEndpoint:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> RGWEndpoint:
        if self._endpoint is not None:
            return self._endpoint
        missing = missing_binaries()
        if missing:
            raise ServiceStartError(f"Ceph binaries missing: {', '.join(missing)} (run .ci/install-services.sh)")
        if self.workdir.exists() and any(self.workdir.iterdir()):
            raise ServiceStartError(f"workdir {self.workdir} is not empty")
        if not self._atexit_registered:
            atexit.register(self.stop)
            self._atexit_registered = True
        t0 = time.monotonic()
        try:
            self._start_mon()
            self._start_osd()
            self._start_rgw()
            self._create_user()
            self._endpoint = RGWEndpoint(
                endpoint_url=f"http://127.0.0.1:{self._rgw_port}",
                access_key=self.access_key,
                secret_key=self.secret_key,
                region=self.region,
                host="127.0.0.1",
                port=self._rgw_port,
                ceph_conf=self.conf,
            )
            self._check_s3(self._endpoint)
        except BaseException:
            self.stop()
            raise
        self.timings["total"] = time.monotonic() - t0
        return self._endpoint

    def stop(self) -> None:
        """Kill all daemons (bounded) and remove the workdir.  Idempotent."""
        if self._stopped:
            return
        self._stopped = True
        # rgw first (exits promptly on SIGTERM); OSD/mon hold nothing worth
        # flushing (memstore, throwaway mon store), so kill them quickly.
        stop_process(self._rgw, signal.SIGTERM, grace=3)
        stop_process(self._osd, signal.SIGKILL, grace=5)
        stop_process(self._mon, signal.SIGKILL, grace=5)
        self._rgw = self._osd = self._mon = None
        if not keep_dirs():
            shutil.rmtree(self.workdir, ignore_errors=True)
        if self._atexit_registered:
            atexit.unregister(self.stop)
            self._atexit_registered = False

    # ----------------------------------------------------------------- helpers
    def _diag(self) -> str:
        return "\n".join(tail(p) for p in sorted(self.logdir.glob("*")) if p.is_file())

    def _run(self, *args: str, timeout: float = 30, check: bool = True) -> subprocess.CompletedProcess:
        try:
            cp = subprocess.run(
                list(args),
                capture_output=True,
                text=True,
                timeout=timeout,
                env=clean_env(),
                stdin=subprocess.DEVNULL,
            )
        except subprocess.TimeoutExpired as e:
            raise ServiceStartError(f"{' '.join(args)} timed out after {timeout}s\n{self._diag()}") from e
        if check and cp.returncode != 0:
            raise ServiceStartError(f"{' '.join(args)} failed ({cp.returncode}):\n{cp.stdout}\n{cp.stderr}\n{self._diag()}")
        return cp

    def _ceph(self, *args: str, timeout: float = 15, check: bool = True) -> subprocess.CompletedProcess:
        return self._run("ceph", "-c", str(self.conf), "--connect-timeout", "5", *args, timeout=timeout, check=check)

    def _spawn(self, name: str, *args: str) -> subprocess.Popen:
        out = open(self.logdir / f"{name}.stdout", "ab")
        try:
            return subprocess.Popen(
                list(args),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=clean_env(),
                preexec_fn=die_with_parent,
                cwd=self.workdir,
            )
        finally:
            out.close()

    def _write_conf(self) -> None:
        w = self.workdir
        asok = str(w / "run" / "$name.asok")
        if len(asok.replace("$name", "client.rgw")) > _MAX_SOCKET_PATH:
            asok = ""  # too long for a unix socket: no admin sockets then
        self.conf.write_text(
            f"""\
# Throwaway single-node test cluster written by tests/support/ceph.py
[global]
fsid = {self._fsid}
mon host = [v2:127.0.0.1:{self._mon_port}]
mon initial members = a
public addr = 127.0.0.1
cluster addr = 127.0.0.1
ms bind msgr1 = false
ms bind msgr2 = true
auth cluster required = none
auth service required = none
auth client required = none
ms mon client mode = crc
osd pool default size = 1
osd pool default min size = 1
mon allow pool size one = true
mon allow pool delete = true
mon warn on pool no redundancy = false
osd crush chooseleaf type = 0
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
paxos propose interval = 0.01
mon data avail crit = 0
mon data avail warn = 0
client mount timeout = 30
keyring = {w}/keyring
run dir = {w}/run
crash dir = {w}/crash
admin socket = {asok}
pid file = {w}/run/$name.pid
log file = {w}/log/$name.log
mon cluster log file = {w}/log/cluster.log
log to stderr = false
err to stderr = true
debug ms = 0/0

[mon]
mon data = {w}/mon.$id

[osd]
osd data = {w}/osd.$id
osd objectstore = memstore
memstore device bytes = {self.memstore_bytes}
osd crush update on start = true

[client.rgw]
rgw data = {w}/rgw
rgw frontends = beast endpoint=127.0.0.1:{self._rgw_port}
debug rgw = 1/5
"""
        )

    # ------------------------------------------------------------------ phases
    def _start_mon(self) -> None:
        t = time.monotonic()
        for attempt in range(3):
            for sub in ("run", "log", "crash", "rgw"):
                (self.workdir / sub).mkdir(parents=True, exist_ok=True)
            shutil.rmtree(self.workdir / "mon.a", ignore_errors=True)
            self._mon_port = free_port()
            self._write_conf()
            keyring = self.workdir / "keyring"
            keyring.unlink(missing_ok=True)
            self._run("ceph-authtool", "--create-keyring", str(keyring), "--gen-key", "-n", "mon.", "--cap", "mon", "allow *")
            monmap = self.workdir / "monmap"
            monmap.unlink(missing_ok=True)
            self._run(
                "monmaptool",
                "--create",
                "--fsid",
                self._fsid,
                "--addv",
                "a",
                f"[v2:127.0.0.1:{self._mon_port}]",
                str(monmap),
            )
            self._run("ceph-mon", "-c", str(self.conf), "--mkfs", "-i", "a", "--monmap", str(monmap), "--keyring", str(keyring))
            self._mon = self._spawn("mon.a", "ceph-mon", "-c", str(self.conf), "-i", "a", "-f")
            try:
                wait_until(
                    lambda: self._ceph("health", timeout=10, check=False).returncode == 0,
                    timeout=self.timeout,
                    what="ceph-mon",
                    interval=0.05,
                    alive=[self._mon],
                    on_fail=self._diag,
                )
                break
            except ServiceStartError:
                stop_process(self._mon, signal.SIGKILL)
                self._mon = None
                if attempt == 2 or port_is_free(self._mon_port):
                    raise  # not a port clash: don't hide it
        self.timings["mon"] = time.monotonic() - t

    def _start_osd(self) -> None:
        t = time.monotonic()
        osd_uuid = str(uuid.uuid4())
        osd_id = self._ceph("osd", "new", osd_uuid).stdout.strip()
        if osd_id != "0":
            raise ServiceStartError(f"unexpected osd id {osd_id!r}")
        (self.workdir / "osd.0").mkdir()  # memstore mkfs asserts without it
        self._run("ceph-osd", "-c", str(self.conf), "-i", "0", "--mkfs", "--osd-uuid", osd_uuid)
        self._osd = self._spawn("osd.0", "ceph-osd", "-c", str(self.conf), "-i", "0", "-f")

        def osd_up() -> bool:
            cp = self._ceph("osd", "dump", "-f", "json", timeout=10, check=False)
            if cp.returncode != 0:
                return False
            osds = json.loads(cp.stdout).get("osds", [])
            return bool(osds) and osds[0].get("up") == 1

        wait_until(osd_up, timeout=self.timeout, what="ceph-osd", interval=0.1, alive=[self._mon, self._osd], on_fail=self._diag)
        self.timings["osd"] = time.monotonic() - t

    def _rgw_answers(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self._rgw_port}/", timeout=2) as r:
                return r.status == 200 and r.headers.get("x-amz-request-id") is not None
        except (urllib.error.URLError, OSError):
            return False

    def _start_rgw(self) -> None:
        t = time.monotonic()
        for attempt in range(3):
            port = free_port()
            if not port_is_free(port):
                continue
            self._rgw_port = port
            self._write_conf()
            self._rgw = self._spawn(
                "client.rgw",
                "radosgw",
                "-c",
                str(self.conf),
                "-n",
                "client.rgw",
                "-f",
            )
            try:
                wait_until(
                    self._rgw_answers,
                    timeout=self.timeout,
                    what="radosgw",
                    interval=0.05,
                    alive=[self._mon, self._osd, self._rgw],
                    on_fail=self._diag,
                )
            except ServiceStartError:
                rc = self._rgw.poll()
                stop_process(self._rgw, signal.SIGKILL)
                self._rgw = None
                if rc == 98 and attempt < 2:  # EADDRINUSE: someone took the port meanwhile
                    self._evict_stale_watchers()
                    continue
                raise
            # It answered; make sure it is *our* radosgw still running on it.
            time.sleep(0.05)
            if self._rgw.poll() is not None:
                if attempt < 2:
                    self._rgw = None
                    self._evict_stale_watchers()
                    continue
                raise ServiceStartError(f"radosgw exited with {self._rgw.returncode}\n{self._diag()}")
            break
        else:  # pragma: no cover
            raise ServiceStartError("could not find a free port for radosgw")
        self.timings["rgw"] = time.monotonic() - t

    def _evict_stale_watchers(self) -> None:
        """Blocklist the watches a dead radosgw left on its control objects.

        radosgw connects to RADOS (and watches default.rgw.control/notify.0-7)
        *before* it binds its HTTP port.  When it then dies on the bind, the
        watches stay until ``osd client watch timeout`` (30 s) and every
        metadata change (user create, bucket create) that notifies them
        blocks that long.  Only called when no radosgw of ours is running.
        """
        addrs: set[str] = set()
        for i in range(8):
            cp = self._run(
                "rados",
                "-c",
                str(self.conf),
                "-p",
                "default.rgw.control",
                "listwatchers",
                f"notify.{i}",
                timeout=15,
                check=False,
            )
            addrs.update(tok.split("=", 1)[1] for tok in cp.stdout.split() if tok.startswith("watcher="))
        for addr in sorted(addrs):
            self._ceph("osd", "blocklist", "add", addr, "600", check=False)

    def _create_user(self) -> None:
        t = time.monotonic()
        self._run(
            "radosgw-admin",
            "-c",
            str(self.conf),
            "-n",
            "client.admin",
            "user",
            "create",
            f"--uid={S3_USER}",
            f"--display-name={S3_USER}",
            f"--access-key={self.access_key}",
            f"--secret-key={self.secret_key}",
            timeout=60,
        )
        self.timings["user"] = time.monotonic() - t

    def _check_s3(self, ep: RGWEndpoint) -> None:
        """A signed request must succeed before we hand the endpoint out."""
        t = time.monotonic()
        try:
            import botocore.exceptions  # noqa: F401
        except ImportError:  # boto3 is a test dependency; without it skip the check
            return
        client = ep.boto3_client()
        last: list[Exception] = []

        def ok() -> bool:
            try:
                client.list_buckets()
                return True
            except Exception as e:  # noqa: BLE001 - retried, reported below
                last[:] = [e]
                return False

        try:
            wait_until(ok, timeout=30, what="radosgw signed request", interval=0.1, alive=[self._rgw])
        except ServiceStartError as e:
            raise ServiceStartError(f"{e}\nlast error: {last}\n{self._diag()}") from None
        self.timings["s3_check"] = time.monotonic() - t


@contextmanager
def start_rgw(workdir: Path | str, **kwargs: Any) -> Iterator[RGWEndpoint]:
    """Start a throwaway Ceph+RGW in ``workdir``; stop and remove it on exit."""
    cluster = CephRGW(Path(workdir), **kwargs)
    try:
        yield cluster.start()
    finally:
        cluster.stop()
