#!/usr/bin/env python3
"""Backends benchmark (issue 4): S3 (Ceph RGW) + PostgreSQL beside filesystem + SQLite, and
one vs two replicas behind nginx.

Starts a throwaway Ceph RGW and PostgreSQL (tests/support), then

* ``fs``      -- one Moorage, filesystem + SQLite;
* ``s3``      -- one Moorage, S3 + PostgreSQL (replica 1);
* ``lb1``     -- nginx in front of replica 1 only;
* ``lb2``     -- nginx round-robin over replicas 1 and 2 (same bucket and database);
* ``lb2a``    -- the same with upload-session affinity (deploy/nginx.conf's hash of the upload id);

and measures (median of ``--repeat`` runs, interleaved so machine noise hits all alike):

* push of one ``--size`` MiB random blob: POST, one streaming PATCH (chunked transfer encoding,
  like docker), PUT ?digest= -- MB/s (10^6 B/s).  Through ``lb2`` the three requests land on
  different replicas, so the replica answering the PUT has no in-memory hash state and
  re-hashes the upload from S3;
* cross-replica finish: the same push against the two replicas directly, POST+PATCH on
  replica 1 and PUT on replica 2, next to all three on replica 1: the difference is the cost of
  finishing on a replica without the in-memory hash (it resumes the SHA-256 state saved in the
  database); a third replica with ``MOORAGE_RESUMABLE_HASH=0`` shows what re-reading and
  re-hashing the upload from S3 instead costs;
* pull of that blob -- MB/s;
* manifest GET by tag: ``wrk -t2 -c32 -d5s`` -- req/s and p99 latency.

    python benchmarks/bench_backends.py --size 128 --repeat 3
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from tests.support.ceph import CephRGW  # noqa: E402
from tests.support.nginx import Nginx  # noqa: E402
from tests.support.postgres import PostgresServer, create_database  # noqa: E402
from tests.support.registry_proc import RegistryProcess, start_moorage  # noqa: E402

MiB = 1 << 20
IO_CHUNK = 1 * MiB
ACCEPT = "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json"


# ----------------------------------------------------------------------------- http helpers
def _conn(base: str) -> http.client.HTTPConnection:
    u = urlsplit(base)
    return http.client.HTTPConnection(u.hostname, u.port, timeout=600)


def _expect(resp: http.client.HTTPResponse, status: int) -> None:
    body = resp.read()
    if resp.status != status:
        raise RuntimeError(f"HTTP {resp.status}, expected {status}: {body[:300]!r}")


def _chunks(path: Path) -> Iterator[bytes]:
    with open(path, "rb") as fh:
        while data := fh.read(IO_CHUNK):
            yield data


def push_blob(bases: tuple[str, str, str], repo: str, path: Path, digest: str) -> None:
    """POST on bases[0], one streaming PATCH on bases[1], PUT ?digest= on bases[2]."""
    c0 = _conn(bases[0])
    c0.request("POST", f"/v2/{repo}/blobs/uploads/", headers={"Content-Length": "0"})
    r = c0.getresponse()
    _expect(r, 202)
    loc = r.getheader("Location")
    c1 = c0 if bases[1] == bases[0] else _conn(bases[1])
    c1.request(
        "PATCH",
        loc,
        body=_chunks(path),
        encode_chunked=True,
        headers={"Content-Type": "application/octet-stream", "Transfer-Encoding": "chunked"},
    )
    r = c1.getresponse()
    _expect(r, 202)
    loc = r.getheader("Location")
    c2 = c1 if bases[2] == bases[1] else _conn(bases[2])
    c2.request("PUT", f"{loc}{'&' if '?' in loc else '?'}digest={digest}", headers={"Content-Length": "0"})
    _expect(c2.getresponse(), 201)
    for c in {c0, c1, c2}:
        c.close()


def pull_blob(base: str, repo: str, digest: str, size: int) -> None:
    c = _conn(base)
    c.request("GET", f"/v2/{repo}/blobs/{digest}")
    r = c.getresponse()
    if r.status != 200:
        raise RuntimeError(f"GET blob: HTTP {r.status}")
    buf = memoryview(bytearray(IO_CHUNK))
    got = 0
    while n := r.readinto(buf):
        got += n
    c.close()
    if got != size:
        raise RuntimeError(f"pulled {got} bytes, expected {size}")


def put_small(base: str, repo: str, data: bytes) -> str:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    c = _conn(base)
    c.request(
        "POST", f"/v2/{repo}/blobs/uploads/?digest={digest}", body=data, headers={"Content-Type": "application/octet-stream"}
    )
    _expect(c.getresponse(), 201)
    c.close()
    return digest


def push_manifest(base: str, repo: str, tag: str) -> None:
    cfg = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}}).encode()
    layer = os.urandom(1000)
    cd, ld = put_small(base, repo, cfg), put_small(base, repo, layer)
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": len(cfg)},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": ld, "size": len(layer)}],
        }
    ).encode()
    c = _conn(base)
    c.request(
        "PUT",
        f"/v2/{repo}/manifests/{tag}",
        body=manifest,
        headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"},
    )
    _expect(c.getresponse(), 201)
    c.close()


def run_wrk(url: str, duration: int) -> tuple[float, str]:
    cp = subprocess.run(
        ["wrk", "-t2", "-c32", f"-d{duration}s", "--latency", "-H", f"Accept: {ACCEPT}", url],
        capture_output=True,
        text=True,
        timeout=duration + 60,
    )
    if cp.returncode != 0:
        raise RuntimeError(f"wrk failed: {cp.stderr}{cp.stdout}")
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", cp.stdout).group(1))
    p99 = re.search(r"^\s+99%\s+(\S+)", cp.stdout, re.M).group(1)
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", cp.stdout)
    return rps, p99 + (f" non-2xx={bad.group(1)}" if bad else "")


def timed(fn: Callable[[], None]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


# ----------------------------------------------------------------------------- main
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=128, help="blob size in MiB (default 128)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--wrk-seconds", type=int, default=5)
    ap.add_argument("--part-size", type=int, default=16, help="S3 part size in MiB (default 16)")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="moorage-bench-backends-"))
    size = args.size * MiB
    blob = work / "blob.bin"
    h = hashlib.sha256()
    with open(blob, "wb") as fh:
        for _ in range(args.size):
            chunk = os.urandom(MiB)
            h.update(chunk)
            fh.write(chunk)
    digest = "sha256:" + h.hexdigest()

    procs: list[RegistryProcess] = []
    lbs: list[Nginx] = []
    ceph = CephRGW(work / "ceph")
    pg = PostgresServer(work / "pg")
    try:
        rgw = ceph.start()
        pg_admin = pg.start()
        db_url = create_database(pg_admin, f"bench_{uuid.uuid4().hex[:8]}")
        s3_env = {
            "MOORAGE_STORAGE__DRIVER": "s3",
            "MOORAGE_STORAGE__S3__BUCKET": f"bench-{uuid.uuid4().hex[:8]}",
            "MOORAGE_STORAGE__S3__ENDPOINT_URL": rgw.endpoint_url,
            "MOORAGE_STORAGE__S3__ACCESS_KEY": rgw.access_key,
            "MOORAGE_STORAGE__S3__SECRET_KEY": rgw.secret_key,
            "MOORAGE_STORAGE__S3__REGION": rgw.region,
            "MOORAGE_STORAGE__S3__PART_SIZE": str(args.part_size * MiB),
            "MOORAGE_DATABASE__URL": db_url,
            "MOORAGE_DATABASE__AUTO_MIGRATE": "true",
        }
        quiet = {"MOORAGE_ACCESS_LOG": "false", "MOORAGE_LOG_LEVEL": "warning"}
        fs = start_moorage(work / "fs", env=quiet)
        procs.append(fs)
        r1 = start_moorage(work / "r1", env={**s3_env, **quiet})
        procs.append(r1)
        r2 = start_moorage(work / "r2", env={**s3_env, **quiet, "MOORAGE_DATABASE__AUTO_MIGRATE": "false"})
        procs.append(r2)
        r3 = start_moorage(
            work / "r3", env={**s3_env, **quiet, "MOORAGE_DATABASE__AUTO_MIGRATE": "false", "MOORAGE_RESUMABLE_HASH": "0"}
        )
        procs.append(r3)
        lb1 = Nginx(work / "lb1", [r1.host]).start()
        lbs.append(lb1)
        lb2 = Nginx(work / "lb2", [r1.host, r2.host]).start()
        lbs.append(lb2)
        lb2a = Nginx(work / "lb2a", [r1.host, r2.host], affinity=True).start()
        lbs.append(lb2a)
        print(
            f"services: ceph {ceph.timings.get('total', 0):.1f}s, postgres {pg.timings.get('total', 0):.1f}s; "
            f"blob {args.size} MiB, S3 part size {args.part_size} MiB, {os.cpu_count()} CPUs",
            flush=True,
        )

        push_cases: dict[str, tuple[str, str, str]] = {
            "fs+sqlite (1 replica)": (fs.url,) * 3,
            "s3+postgres (1 replica)": (r1.url,) * 3,
            "s3+postgres, nginx -> 2 replicas": (lb2.url,) * 3,
            "s3+postgres, nginx -> 2, upload affinity": (lb2a.url,) * 3,
            "s3+postgres, PUT on the other replica": (r1.url, r1.url, r2.url),
            "  same, that replica re-hashing from S3": (r1.url, r1.url, r3.url),
        }
        pull_cases = {
            "fs+sqlite (1 replica)": fs.url,
            "s3+postgres (1 replica)": r1.url,
            "s3+postgres, nginx -> 2 replicas": lb2.url,
            "s3+postgres, nginx -> 2, upload affinity": lb2a.url,
        }
        push_t: dict[str, list[float]] = {k: [] for k in push_cases}
        pull_t: dict[str, list[float]] = {k: [] for k in pull_cases}
        for rep in range(args.repeat):
            for i, (name, bases) in enumerate(push_cases.items()):
                push_t[name].append(timed(lambda: push_blob(bases, f"bench/push{rep}-{i}", blob, digest)))
            for i, (name, base) in enumerate(pull_cases.items()):
                pull_t[name].append(timed(lambda: pull_blob(base, f"bench/push{rep}-{i}", digest, size)))

        print(f"\n{'push (POST + streaming PATCH + PUT)':44} {'MB/s':>8} {'s':>8}")
        for name, ts in push_t.items():
            med = statistics.median(ts)
            print(f"  {name:42} {size / med / 1e6:8.1f} {med:8.2f}")
        resumed = statistics.median(push_t["s3+postgres, PUT on the other replica"])
        rehashed = statistics.median(push_t["  same, that replica re-hashing from S3"])
        print(f"  re-hashing instead of resuming the saved hash state costs {rehashed - resumed:+.2f} s for {args.size} MiB")
        print(f"\n{'pull (GET blob)':44} {'MB/s':>8} {'s':>8}")
        for name, ts in pull_t.items():
            med = statistics.median(ts)
            print(f"  {name:42} {size / med / 1e6:8.1f} {med:8.2f}")

        for base in (fs.url, r1.url):
            push_manifest(base, "bench/manifest", "v1")
        wrk_cases = {
            "fs+sqlite, direct": fs.url,
            "s3+postgres, direct (1 replica)": r1.url,
            "s3+postgres, nginx -> 1 replica": lb1.url,
            "s3+postgres, nginx -> 2 replicas": lb2.url,
        }
        print(f"\n{'manifest GET by tag (wrk -t2 -c32 -d' + str(args.wrk_seconds) + 's)':44} {'req/s':>8} {'p99':>8}")
        for name, base in wrk_cases.items():
            rps, p99 = run_wrk(f"{base}/v2/bench/manifest/manifests/v1", args.wrk_seconds)
            print(f"  {name:42} {rps:8.0f} {p99:>8}", flush=True)
    finally:
        for lb in lbs:
            lb.stop()
        for p in procs:
            p.stop()
        pg.stop()
        ceph.stop()
        import shutil

        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
