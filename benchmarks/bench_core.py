#!/usr/bin/env python3
"""Core benchmarks of issue 2: Moorage side by side with CNCF Distribution 2.8.2 in one run.

Starts Debian's ``docker-registry`` (Distribution 2.8.2, filesystem storage) and one Moorage
server per ``--workers`` value (filesystem + SQLite, each in its own temp dir), all on
127.0.0.1, and measures, interleaving the servers inside every repetition so that machine
noise hits them alike (each figure is the median of ``--repeat`` runs):

* push of one 256 MiB random blob as POST + one streaming PATCH (chunked transfer encoding,
  no Content-Range, like docker/podman) + PUT ?digest= -- MB/s (10^6 bytes/s);
* pull of that blob (read and discarded) -- MB/s;
* manifest GET by tag under 32 connections: ``wrk -t2 -c32 -d10s --latency`` with an Accept
  header -- req/s and p99 latency; blob HEAD by digest
  with ``ab -i -k -c32`` (wrk cannot time HEADs) -- req/s;
* listing 1,000 tags: paginated with n=100 (following Link) and in one request -- ms;
* walking a 1,000-repository catalog with n=100 -- ms;
* ``skopeo copy`` push and pull of a ~200 MB five-layer OCI image (built offline with
  tests/support/ocilayout.py, cached in ``--cache-dir``) -- seconds;
* peak RSS (VmHWM of /proc/PID/status) of each server after the run (sum over a Moorage
  server's processes when it has several workers).

``ratio`` is oriented so that > 1 means Moorage is better: Moorage/Distribution for
throughputs, Distribution/Moorage for times, latencies and memory. Targets (issue 2): push
>= 2x, everything else >= 1x.

    python benchmarks/bench_core.py                 # Moorage with 1 and 2 workers
    python benchmarks/bench_core.py --workers 1 --only push,pull --repeat 5
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import hashlib
import http.client
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import requests

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from proctree import tree_pids  # noqa: E402

from tests.support import ocilayout  # noqa: E402
from tests.support.clients import Skopeo  # noqa: E402
from tests.support.registry_proc import RegistryProcess, start_distribution, start_moorage  # noqa: E402

ACCEPT = ", ".join(
    [
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
    ]
)
MiB = 1 << 20
IO_CHUNK = 1 << 20
ALL_BENCHES = ("push", "pull", "manifest", "tags", "catalog", "skopeo")
#: Listing figures take milliseconds: each round times them this many times (median).
INNER = 10
IMAGE_LAYERS = (64 * MiB, 48 * MiB, 40 * MiB, 32 * MiB, 16 * MiB)  # ~200 MB


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- servers
@dataclass
class Server:
    label: str
    proc: RegistryProcess
    results: dict[str, list[float]] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return self.proc.url

    def add(self, key: str, value: float) -> None:
        self.results.setdefault(key, []).append(value)

    def pids(self) -> list[int]:
        """The server process and all its descendants (Moorage workers are forked children)."""
        return tree_pids(self.proc.proc.pid)


def pss_kib(pid: int) -> int:
    """Proportional set size now (shared pages split between the processes sharing them)."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def vm_hwm_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


# ----------------------------------------------------------------------------- raw HTTP
def _conn(url: str, timeout: float = 300) -> http.client.HTTPConnection:
    parts = urlsplit(url)
    return http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)


def _path(base: str, location: str) -> str:
    parts = urlsplit(urljoin(base + "/", location))
    return parts.path + (f"?{parts.query}" if parts.query else "")


def _expect(resp: http.client.HTTPResponse, *codes: int) -> bytes:
    body = resp.read()
    if resp.status not in codes:
        raise RuntimeError(f"HTTP {resp.status} (wanted {codes}): {body[:300]!r}")
    return body


def push_blob_streaming(base: str, repo: str, path: Path, digest: str) -> None:
    """POST, one streaming PATCH (chunked, no Content-Range), PUT ?digest= -- like docker.

    The PATCH body goes out as 1 MiB chunks with sendfile(2) straight from the (page-cached)
    file: a lean client, as Go's is, so the figure measures the server rather than Python's
    http.client (which spends ~0.5 s of CPU per 256 MiB copying chunks).
    """
    conn = _conn(base)
    try:
        conn.request("POST", f"/v2/{repo}/blobs/uploads/", headers={"Content-Length": "0"})
        resp = conn.getresponse()
        _expect(resp, 202)
        loc = _path(base, resp.getheader("Location"))
        conn.putrequest("PATCH", loc, skip_accept_encoding=True)
        conn.putheader("Content-Type", "application/octet-stream")
        conn.putheader("Transfer-Encoding", "chunked")
        conn.endheaders()
        sock = conn.sock
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        size = path.stat().st_size
        with open(path, "rb") as fh:
            off = 0
            while off < size:
                n = min(IO_CHUNK, size - off)
                sock.sendall(b"%x\r\n" % n)
                sock.sendfile(fh, off, n)
                sock.sendall(b"\r\n")
                off += n
        sock.sendall(b"0\r\n\r\n")
        resp = conn.getresponse()
        _expect(resp, 202)
        loc = _path(base, resp.getheader("Location"))
        sep = "&" if "?" in loc else "?"
        conn.request("PUT", f"{loc}{sep}digest={digest}", headers={"Content-Length": "0"})
        _expect(conn.getresponse(), 201)
    finally:
        conn.close()


def pull_blob(base: str, repo: str, digest: str, size: int) -> None:
    conn = _conn(base)
    try:
        conn.request("GET", f"/v2/{repo}/blobs/{digest}")
        resp = conn.getresponse()
        if resp.status != 200:
            raise RuntimeError(f"GET blob: HTTP {resp.status} {resp.read()[:300]!r}")
        buf = memoryview(bytearray(IO_CHUNK))
        got = 0
        while True:
            n = resp.readinto(buf)
            if not n:
                break
            got += n
        if got != size:
            raise RuntimeError(f"pulled {got} bytes, expected {size}")
    finally:
        conn.close()


# ----------------------------------------------------------------------------- fixtures
def random_file(path: Path, size: int, seed: int) -> str:
    """A file of ``size`` random bytes (cached: reused if present); returns its sha256 digest."""
    digest_file = path.with_suffix(".sha256")
    if path.exists() and path.stat().st_size == size and digest_file.exists():
        return digest_file.read_text().strip()
    import random

    rng = random.Random(seed)
    h = hashlib.sha256()
    with open(path, "wb") as fh:
        left = size
        while left:
            data = rng.randbytes(min(16 * MiB, left))
            h.update(data)
            fh.write(data)
            left -= len(data)
    digest = "sha256:" + h.hexdigest()
    digest_file.write_text(digest)
    return digest


def small_image() -> tuple[bytes, bytes, bytes]:
    """(config, layer, manifest) of a tiny OCI image, deterministic."""
    config = ocilayout.canonical_json({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}})
    layer = b"moorage-bench-layer\n" * 64
    manifest = ocilayout.canonical_json(
        {
            "schemaVersion": 2,
            "mediaType": ocilayout.MT_OCI_MANIFEST,
            "config": {"mediaType": ocilayout.MT_OCI_CONFIG, "digest": ocilayout.sha256_digest(config), "size": len(config)},
            "layers": [{"mediaType": ocilayout.MT_OCI_LAYER_TAR, "digest": ocilayout.sha256_digest(layer), "size": len(layer)}],
        }
    )
    return config, layer, manifest


def put_small_blob(s: requests.Session, base: str, repo: str, data: bytes) -> str:
    digest = ocilayout.sha256_digest(data)
    r = s.post(f"{base}/v2/{repo}/blobs/uploads/", timeout=30)
    r.raise_for_status()
    loc = urljoin(base + "/", r.headers["Location"])
    r = s.put(loc, params={"digest": digest}, data=data, headers={"Content-Type": "application/octet-stream"}, timeout=30)
    if r.status_code != 201:
        raise RuntimeError(f"PUT blob: {r.status_code} {r.text[:300]}")
    return digest


def mount_blob(s: requests.Session, base: str, repo: str, digest: str, source: str) -> None:
    r = s.post(f"{base}/v2/{repo}/blobs/uploads/", params={"mount": digest, "from": source}, timeout=30)
    if r.status_code != 201:
        raise RuntimeError(f"mount into {repo}: {r.status_code} {r.text[:300]}")


def put_manifest(s: requests.Session, base: str, repo: str, ref: str, body: bytes) -> None:
    r = s.put(f"{base}/v2/{repo}/manifests/{ref}", data=body, headers={"Content-Type": ocilayout.MT_OCI_MANIFEST}, timeout=30)
    if r.status_code != 201:
        raise RuntimeError(f"PUT manifest {repo}:{ref}: {r.status_code} {r.text[:300]}")


def walk(base: str, path: str, key: str, n: int | None) -> tuple[int, int]:
    """GET path over one keep-alive connection, following rel=next Links.

    Returns (entries seen, requests made). http.client rather than requests: its per-request
    client overhead is a fraction of requests', so the figure is mostly the server's.
    """
    conn = _conn(base, timeout=60)
    url = path + (f"?n={n}" if n else "")
    seen = 0
    try:
        for i in range(1, 100_001):
            conn.request("GET", url)
            resp = conn.getresponse()
            body = _expect(resp, 200)
            seen += len(json.loads(body)[key] or [])
            link = resp.getheader("Link")
            if not link:
                return seen, i
            m = re.match(r"\s*<([^>]+)>", link)
            if not m:
                raise RuntimeError(f"bad Link header {link!r}")
            url = _path(base, m.group(1))
    finally:
        conn.close()
    raise RuntimeError("pagination did not end")


# ----------------------------------------------------------------------------- wrk
_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


def _ms(text: str) -> float:
    m = re.match(r"([\d.]+)(us|ms|s|m)$", text.strip())
    if not m:
        raise ValueError(text)
    return float(m.group(1)) * _UNITS[m.group(2)]


def run_ab_head(url: str, duration: int, connections: int) -> tuple[float, str]:
    """HEAD requests with ApacheBench (keep-alive): wrk waits for a body after a HEAD answer
    that declares a Content-Length, so it cannot time HEADs."""
    cp = subprocess.run(
        ["ab", "-i", "-k", f"-c{connections}", f"-t{duration}", "-n", "10000000", url],
        capture_output=True,
        text=True,
        timeout=duration + 60,
    )
    out = cp.stdout
    if cp.returncode != 0:
        raise RuntimeError(f"ab failed: {cp.stderr}{out}")
    rps = float(re.search(r"Requests per second:\s+([\d.]+)", out).group(1))
    bad = re.search(r"Non-2xx responses:\s+(\d+)", out)
    return rps, f"non-2xx={bad.group(1)}" if bad else ""


def run_wrk(url: str, duration: int, connections: int, threads: int) -> tuple[float, float, str]:
    cp = subprocess.run(
        ["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration}s", "--latency", "-H", f"Accept: {ACCEPT}", url],
        capture_output=True,
        text=True,
        timeout=duration + 60,
    )
    out = cp.stdout
    if cp.returncode != 0:
        raise RuntimeError(f"wrk failed: {cp.stderr}{out}")
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p99 = _ms(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1))
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errs = re.search(r"Socket errors:.*", out)
    note = ""
    if bad:
        note += f" non-2xx={bad.group(1)}"
    if errs:
        note += " " + errs.group(0)
    return rps, p99, note.strip()


# ----------------------------------------------------------------------------- benchmark
class Bench:
    def __init__(self, args: argparse.Namespace, servers: list[Server], work: Path, cache: Path) -> None:
        self.args = args
        self.servers = servers
        self.work = work
        self.cache = cache
        self.sessions = {srv.label: requests.Session() for srv in servers}

    def each(self, fn: Callable[[Server], None]) -> None:
        for srv in self.servers:
            fn(srv)

    def rounds(self, name: str, fn: Callable[[Server, int], None]) -> None:
        for i in range(self.args.repeat):
            # Rotate who goes first so no server always gets the warm (or cold) slot.
            order = self.servers[i % len(self.servers) :] + self.servers[: i % len(self.servers)]
            for srv in order:
                fn(srv, i)
            log(f"{name}: round {i + 1}/{self.args.repeat} done")

    # -- blob push / pull -------------------------------------------------------------------
    def blobs(self, push: bool, pull: bool) -> None:
        size = self.args.blob_mib * MiB
        log(f"preparing {self.args.repeat} random {self.args.blob_mib} MiB blobs in {self.cache}")
        files = []
        for i in range(self.args.repeat):
            path = self.cache / f"blob-{self.args.blob_mib}M-{i}.bin"
            files.append((path, random_file(path, size, seed=1000 + i)))
        if not push:  # pull alone still needs the blob in place
            for srv in self.servers:
                push_blob_streaming(srv.url, "bench/blob", *files[0])

        def do_push(srv: Server, i: int) -> None:
            path, digest = files[i]
            t0 = time.perf_counter()
            push_blob_streaming(srv.url, f"bench/blob{i}", path, digest)
            srv.add("push_MBps", size / (time.perf_counter() - t0) / 1e6)

        if push:
            self.rounds("push", do_push)

        def do_pull(srv: Server, i: int) -> None:
            path, digest = files[i if push else 0]
            repo = f"bench/blob{i}" if push else "bench/blob"
            t0 = time.perf_counter()
            pull_blob(srv.url, repo, digest, size)
            srv.add("pull_MBps", size / (time.perf_counter() - t0) / 1e6)

        if pull:
            self.rounds("pull", do_pull)

    # -- small image used by manifest/tags/catalog -------------------------------------------
    def small_image(self) -> bytes:
        config, layer, manifest = small_image()
        for srv in self.servers:
            s = self.sessions[srv.label]
            put_small_blob(s, srv.url, "bench/small", config)
            put_small_blob(s, srv.url, "bench/small", layer)
            put_manifest(s, srv.url, "bench/small", "latest", manifest)
        return manifest

    def manifest_get(self) -> None:
        self.small_image()

        def do(srv: Server, i: int) -> None:
            rps, p99, note = run_wrk(
                f"{srv.url}/v2/bench/small/manifests/latest",
                self.args.wrk_duration,
                self.args.wrk_connections,
                self.args.wrk_threads,
            )
            srv.add("manifest_rps", rps)
            srv.add("manifest_p99_ms", p99)
            if note:
                srv.notes["manifest"] = note

        self.rounds("manifest GET (wrk)", do)

        # blob HEAD by digest: what every client asks before it pushes a layer
        digest = "sha256:" + hashlib.sha256(small_image()[1]).hexdigest()

        def do_head(srv: Server, i: int) -> None:
            rps, note = run_ab_head(f"{srv.url}/v2/bench/small/blobs/{digest}", self.args.wrk_duration, self.args.wrk_connections)
            srv.add("blob_head_rps", rps)
            if note:
                srv.notes["blob HEAD"] = note

        self.rounds("blob HEAD (wrk)", do_head)

    def tags(self) -> None:
        manifest = self.small_image()
        digests = [ocilayout.sha256_digest(b) for b in small_image()[:2]]
        ntags = self.args.tags
        t0 = time.perf_counter()
        for srv in self.servers:
            s = self.sessions[srv.label]
            for d in digests:
                mount_blob(s, srv.url, "bench/tags", d, "bench/small")

        def tag(job: tuple[Server, int]) -> None:
            srv, j = job
            put_manifest(self._thread_session(srv), srv.url, "bench/tags", f"t{j:05d}", manifest)

        with cf.ThreadPoolExecutor(8) as pool:
            list(pool.map(tag, [(srv, j) for j in range(ntags) for srv in self.servers]))
        log(f"created {ntags} tags per server in {time.perf_counter() - t0:.1f}s (not measured)")

        def do(srv: Server, i: int) -> None:
            paged, one = [], []
            for _ in range(INNER):  # a few ms each: several runs per round, their median
                t0 = time.perf_counter()
                seen, pages = walk(srv.url, "/v2/bench/tags/tags/list", "tags", 100)
                t1 = time.perf_counter()
                seen1, _ = walk(srv.url, "/v2/bench/tags/tags/list", "tags", None)
                t2 = time.perf_counter()
                if seen != ntags or seen1 != ntags:
                    raise RuntimeError(f"{srv.label}: listed {seen}/{seen1} tags, expected {ntags}")
                paged.append((t1 - t0) * 1e3)
                one.append((t2 - t1) * 1e3)
            srv.add("tags_paged_ms", statistics.median(paged))
            srv.add("tags_one_ms", statistics.median(one))
            srv.notes["tags"] = f"n=100 listing took {pages} request(s)"

        self.rounds("tags list", do)

    def catalog(self) -> None:
        manifest = self.small_image()
        digests = [ocilayout.sha256_digest(b) for b in small_image()[:2]]
        nrepos = self.args.repos
        t0 = time.perf_counter()

        def make(job: tuple[Server, int]) -> None:
            srv, j = job
            s = self._thread_session(srv)
            repo = f"cat/r{j:05d}"
            for d in digests:
                mount_blob(s, srv.url, repo, d, "bench/small")
            put_manifest(s, srv.url, repo, "v1", manifest)

        with cf.ThreadPoolExecutor(8) as pool:
            list(pool.map(make, [(srv, j) for j in range(nrepos) for srv in self.servers]))
        log(f"created {nrepos} repositories per server in {time.perf_counter() - t0:.1f}s (not measured)")
        expected = None

        def do(srv: Server, i: int) -> None:
            nonlocal expected
            times = []
            for _ in range(INNER):
                t0 = time.perf_counter()
                seen, pages = walk(srv.url, "/v2/_catalog", "repositories", 100)
                times.append((time.perf_counter() - t0) * 1e3)
            srv.add("catalog_ms", statistics.median(times))
            if seen < nrepos:
                raise RuntimeError(f"{srv.label}: catalog has {seen} repositories, expected >= {nrepos}")
            srv.notes["catalog"] = f"{seen} repositories in {pages} requests"

        self.rounds("catalog walk", do)

    _tls: dict = {}

    def _thread_session(self, srv: Server) -> requests.Session:
        import threading

        key = (threading.get_ident(), srv.label)
        s = self._tls.get(key)
        if s is None:
            s = self._tls[key] = requests.Session()
        return s

    # -- skopeo ------------------------------------------------------------------------------
    def skopeo(self) -> None:
        # One image per round (different seeds -> different layers): skopeo keeps a blob-info
        # cache (as root under /var/lib/containers/cache) and would otherwise mount layers it
        # pushed in an earlier round instead of uploading them.
        layouts = []
        for i in range(self.args.repeat):
            layout = self.cache / f"image-200M-{i}"
            marker = layout / ".complete"
            if not marker.exists():
                log(f"building ~200 MB OCI layout {i} (once; cached in {self.cache})")
                shutil.rmtree(layout, ignore_errors=True)
                ocilayout.build_image(layout, "v1", layers=IMAGE_LAYERS, seed=f"bench{i}")
                marker.write_text("ok")
            layouts.append(layout)
        total = sum(p.stat().st_size for p in (layouts[0] / "blobs" / "sha256").iterdir())

        def do(srv: Server, i: int) -> None:
            # A fresh skopeo home and a fresh repository per round as well.
            sk = Skopeo(self.work / f"skopeo-{srv.label.replace(' ', '_')}-{i}")
            ref = f"docker://{srv.proc.host}/bench/img{i}:v1"
            t0 = time.perf_counter()
            sk.copy(f"oci:{layouts[i]}:v1", ref, timeout=600)
            t1 = time.perf_counter()
            out = self.work / f"pulled-{srv.label.replace(' ', '_')}-{i}"
            sk.copy(ref, f"oci:{out}:v1", timeout=600)
            t2 = time.perf_counter()
            got = sum(p.stat().st_size for p in (out / "blobs" / "sha256").iterdir())
            shutil.rmtree(out, ignore_errors=True)
            shutil.rmtree(sk.workdir, ignore_errors=True)
            if got < total * 0.99:
                raise RuntimeError(f"{srv.label}: pulled {got} bytes, pushed {total}")
            srv.add("skopeo_push_s", t1 - t0)
            srv.add("skopeo_pull_s", t2 - t1)

        log(f"skopeo image: {total / 1e6:.0f} MB in {len(IMAGE_LAYERS)} layers")
        self.rounds("skopeo", do)

    # -- driver ------------------------------------------------------------------------------
    def run(self) -> None:
        only = self.args.only
        if "push" in only or "pull" in only:
            self.blobs("push" in only, "pull" in only)
        if "manifest" in only:
            self.manifest_get()
        if "tags" in only:
            self.tags()
        if "catalog" in only:
            self.catalog()
        if "skopeo" in only:
            self.skopeo()
        for srv in self.servers:
            pids = srv.pids()
            kib = [vm_hwm_kib(p) for p in pids]
            srv.add("rss_MiB", sum(kib) / 1024)
            srv.add("pss_MiB", sum(pss_kib(p) for p in pids) / 1024)
            if len(pids) > 1:
                srv.notes["rss"] = "+".join(f"{k / 1024:.0f}" for k in kib) + " MiB"


# ----------------------------------------------------------------------------- report
#: key -> (label, unit, higher is better, target ratio)
FIGURES = [
    ("push_MBps", "blob push 256 MiB, 1 streaming PATCH", "MB/s", True, 2.0),
    ("pull_MBps", "blob pull 256 MiB", "MB/s", True, 1.0),
    ("manifest_rps", "manifest GET by tag, wrk -c32", "req/s", True, 1.0),
    ("manifest_p99_ms", "manifest GET p99 latency", "ms", False, 1.0),
    ("blob_head_rps", "blob HEAD by digest, ab -k -c32", "req/s", True, 1.0),
    ("tags_paged_ms", "list 1,000 tags, n=100 pages", "ms", False, 1.0),
    ("tags_one_ms", "list 1,000 tags, one request", "ms", False, 1.0),
    ("catalog_ms", "walk 1,000-repo catalog, n=100", "ms", False, 1.0),
    ("skopeo_push_s", "skopeo push ~200 MB image", "s", False, 1.0),
    ("skopeo_pull_s", "skopeo pull ~200 MB image", "s", False, 1.0),
    ("rss_MiB", "peak RSS after the run (VmHWM, sum)", "MiB", False, 1.0),
    ("pss_MiB", "memory after the run (PSS, sum)", "MiB", False, 1.0),
]


def _fmt(v: float | None) -> str:
    if v is None:
        return "-"
    if v >= 1000:
        return f"{v:,.0f}"
    if v >= 100:
        return f"{v:.0f}"
    if v >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


def report(servers: list[Server], repeat: int, args: argparse.Namespace | None = None) -> str:
    base, others = servers[0], servers[1:]
    head = ["figure", "unit", base.label]
    for o in others:
        head += [o.label, "ratio", "ok"]
    rows = [head]
    for key, label, unit, higher, target in FIGURES:
        if key not in base.results:
            continue
        if args is not None:
            label = (
                label.replace("256 MiB", f"{args.blob_mib} MiB")
                .replace("1,000 tags", f"{args.tags:,} tags")
                .replace("1,000-repo", f"{args.repos:,}-repo")
                .replace("-c32", f"-c{args.wrk_connections}")
            )
        b = statistics.median(base.results[key])
        row = [label, unit, _fmt(b)]
        for o in others:
            vals = o.results.get(key)
            if not vals:
                row += ["-", "-", ""]
                continue
            m = statistics.median(vals)
            ratio = (m / b if higher else b / m) if b and m else float("nan")
            row += [_fmt(m), f"{ratio:.2f}x", "yes" if ratio >= target else f"NO (>= {target:g}x)"]
        rows.append(row)
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = []
    for n, r in enumerate(rows):
        lines.append("  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=False))))
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    lines.append("")
    lines.append(
        f"median of {repeat} rounds (listings: of {INNER} runs per round first; RSS: one reading); ratio > 1 means Moorage is better "
        "(Moorage/Distribution for rates, Distribution/Moorage for times, latency, memory)"
    )
    for srv in servers:
        for k, note in srv.notes.items():
            lines.append(f"note {srv.label} {k}: {note}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workers", default="1,2", help="comma-separated Moorage worker counts (default 1,2)")
    ap.add_argument("--repeat", type=int, default=3, help="runs per timed figure; the median is reported")
    ap.add_argument("--only", default=",".join(ALL_BENCHES), help=f"subset of {','.join(ALL_BENCHES)}")
    ap.add_argument("--blob-mib", type=int, default=256)
    ap.add_argument("--tags", type=int, default=1000)
    ap.add_argument("--repos", type=int, default=1000)
    ap.add_argument("--wrk-duration", type=int, default=10)
    ap.add_argument("--wrk-connections", type=int, default=32)
    ap.add_argument("--wrk-threads", type=int, default=2)
    ap.add_argument(
        "--cache-dir",
        default=os.path.join(tempfile.gettempdir(), "moorage-bench-cache"),
        help="random blobs and the OCI layout are generated once and kept here",
    )
    ap.add_argument("--keep", action="store_true", help="keep the servers' temp dirs (logs, data)")
    ap.add_argument("--json", help="also write the raw results to this file")
    ap.add_argument(
        "--moorage-env", action="append", default=[], metavar="K=V", help="extra environment for the Moorage servers (repeatable)"
    )
    ap.add_argument(
        "--compare-tree",
        metavar="DIR",
        help="also run a Moorage from another source tree (e.g. `git archive` of an older commit) "
        "with the first --workers count: before/after figures under the same noise",
    )
    args = ap.parse_args(argv)
    args.only = {x.strip() for x in args.only.split(",") if x.strip()}
    unknown = args.only - set(ALL_BENCHES)
    if unknown:
        ap.error(f"unknown benchmark(s): {', '.join(sorted(unknown))}")
    worker_counts = [int(w) for w in args.workers.split(",") if w.strip()]
    menv = dict(kv.split("=", 1) for kv in args.moorage_env)

    cache = Path(args.cache_dir)
    cache.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="moorage-bench-"))
    servers: list[Server] = []
    try:
        log(f"work dir {work}")
        servers.append(Server("Distribution", start_distribution(work / "distribution")))
        for w in worker_counts:
            proc = start_moorage(work / f"moorage-w{w}", env=menv, extra_args=["--workers", str(w)])
            servers.append(Server(f"Moorage {w}w", proc))
        if args.compare_tree:
            tree = Path(args.compare_tree).resolve()
            w = worker_counts[0]
            proc = start_moorage(work / "moorage-compare", env=menv, extra_args=["--workers", str(w)], tree=tree)
            servers.append(Server(f"compare {w}w", proc))
        for srv in servers:
            log(f"{srv.label}: {srv.url} pid {srv.proc.proc.pid}")
        Bench(args, servers, work, cache).run()
        table = report(servers, args.repeat, args)
        print(table)
        if args.json:
            Path(args.json).write_text(json.dumps({s.label: {"results": s.results, "notes": s.notes} for s in servers}, indent=2))
        return 0
    finally:
        for srv in servers:
            srv.proc.stop()
        if args.keep:
            log(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
