#!/usr/bin/env python3
"""Load and soak benchmark (issue 10's mix; issue 8's soak with ``--duration 600``).

N concurrent clients (default 64), each looping:

1. push: a config blob and two layers of random bytes (16-64 KiB each, ``--min-kib/--max-kib``),
   each as ``POST /blobs/uploads/`` -> ``PATCH`` (the whole blob, ``Content-Range``) ->
   ``PUT ?digest=``; then the OCI manifest under a new tag;
2. pull back: the manifest by tag and the three blobs, digests checked;
3. every fifth loop: ``DELETE`` the tag.

against CNCF Distribution 2.8.2 (Debian ``docker-registry``, delete enabled) and Moorage with
1 worker and with ``--workers 2``, one server after the other in the same run (each alone on
the machine while it is measured), on filesystem storage + SQLite by default; ``--backend
s3-postgres`` runs the Moorage servers on Ceph RGW + PostgreSQL (started here with
tests/support) while Distribution stays on its filesystem driver.

The clients are locust ``FastHttpUser``s (geventhttpclient, one keep-alive connection each)
driven through locust's library mode in this process.  Printed per server: requests/s over the
measured window, p50 and p99 of all requests (locust's histogram: 2 significant digits), errors
(any unexpected status, digest mismatch or transport error), and the RSS of the server's
processes (the master and every worker) at the start and at the end; ratios against
Distribution (> 1 means Moorage is better).  Distribution 2.8.2 does not delete by tag (it
answers 400 DIGEST_INVALID): that answer is counted apart, as ``refused``, not as an error.

``--py-spy DIR`` records each Moorage server under load with py-spy (all processes, sampling
100 Hz; wall-clock stacks including idle threads) and writes, per server, the flame-graph
input (``*.folded``) and a summary of the top frames (``*.top.txt``).

    python benchmarks/bench_load.py                                 # 64 clients, 60 s each
    python benchmarks/bench_load.py --duration 600 --servers moorage-1   # the 10-minute soak
    python benchmarks/bench_load.py --clients 16 --duration 20 --servers distribution,moorage-2
"""

from __future__ import annotations

# locust runs on gevent: patch before anything imports ssl/socket/threading.
from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import collections  # noqa: E402
import hashlib  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import os  # noqa: E402
import random  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import gevent  # noqa: E402
from locust import FastHttpUser, events, task  # noqa: E402
from locust.env import Environment  # noqa: E402
from proctree import tree_pids  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from tests.support.registry_proc import RegistryProcess, start_distribution, start_moorage  # noqa: E402

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
ALL_SERVERS = ("distribution", "moorage-1", "moorage-2")
KiB = 1024


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


# ----------------------------------------------------------------------------- the client mix
@dataclass
class Mix:
    min_bytes: int = 16 * KiB
    max_bytes: int = 64 * KiB
    delete_every: int = 5
    #: What went wrong, by kind (first example text kept).
    errors: collections.Counter = field(default_factory=collections.Counter)
    examples: dict[str, str] = field(default_factory=dict)
    refused: int = 0
    loops: int = 0

    def error(self, kind: str, text: str) -> None:
        self.errors[kind] += 1
        self.examples.setdefault(kind, text[:300])


MIX = Mix()


class RegistryUser(FastHttpUser):
    """One client: its own repository, one keep-alive connection, the loop of the module doc."""

    # no think time: each client sends its next request as soon as the previous one is answered
    connection_timeout = 60.0
    network_timeout = 120.0
    insecure = True
    _counter = 0

    def on_start(self) -> None:
        RegistryUser._counter += 1
        self.repo = f"load/c{RegistryUser._counter:03d}-{uuid.uuid4().hex[:6]}"
        self.loop = 0
        self.rng = random.Random(RegistryUser._counter)

    # -- one request, checked ----------------------------------------------------------------
    def _req(self, method: str, path: str, name: str, want: tuple[int, ...], **kw: Any) -> Any:
        with self.client.request(method, path, name=name, catch_response=True, **kw) as resp:
            if resp.status_code in want:
                resp.success()
            else:
                text = f"{method} {name}: {resp.status_code} {(resp.text or '')[:200]!r}"
                resp.failure(text)
                MIX.error(f"{name} {resp.status_code}", text)
                raise _Abort()
            return resp

    def _push_blob(self, data: bytes) -> str:
        digest = sha256(data)
        r = self._req("POST", f"/v2/{self.repo}/blobs/uploads/", "blob POST", (202,))
        loc = r.headers.get("Location", "")
        r = self._req(
            "PATCH",
            loc,
            "blob PATCH",
            (202,),
            data=data,
            headers={"Content-Type": "application/octet-stream", "Content-Range": f"0-{len(data) - 1}"},
        )
        loc = r.headers.get("Location", loc)
        sep = "&" if "?" in loc else "?"
        self._req(
            "PUT",
            f"{loc}{sep}digest={digest}",
            "blob PUT",
            (201,),
            data=b"",
            headers={"Content-Type": "application/octet-stream"},
        )
        return digest

    def _pull_blob(self, digest: str) -> None:
        r = self._req("GET", f"/v2/{self.repo}/blobs/{digest}", "blob GET", (200,))
        if sha256(r.content) != digest:
            MIX.error("blob GET digest mismatch", f"{digest}: got {len(r.content)} bytes of {sha256(r.content)}")

    @task
    def loop_once(self) -> None:
        try:
            self._loop()
        except _Abort:
            pass

    def _loop(self) -> None:
        self.loop += 1
        size = lambda: self.rng.randint(MIX.min_bytes, MIX.max_bytes)  # noqa: E731
        config = json.dumps({"architecture": "amd64", "os": "linux", "loop": self.loop, "pad": os.urandom(32).hex()}).encode()
        layers = [os.urandom(size()), os.urandom(size())]
        digests = [self._push_blob(b) for b in (config, *layers)]
        manifest = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": digests[0], "size": len(config)},
                "layers": [
                    {"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d, "size": len(b)}
                    for d, b in zip(digests[1:], layers, strict=False)
                ],
            }
        ).encode()
        tag = f"t{self.loop}"
        self._req(
            "PUT",
            f"/v2/{self.repo}/manifests/{tag}",
            "manifest PUT",
            (201,),
            data=manifest,
            headers={"Content-Type": OCI_MANIFEST},
        )
        r = self._req("GET", f"/v2/{self.repo}/manifests/{tag}", "manifest GET", (200,), headers={"Accept": OCI_MANIFEST})
        if r.content != manifest:
            MIX.error("manifest GET mismatch", f"{tag}: {len(r.content)} bytes, digest {sha256(r.content)}")
        for d in digests:
            self._pull_blob(d)
        if self.loop % MIX.delete_every == 0:
            with self.client.request(
                "DELETE", f"/v2/{self.repo}/manifests/{tag}", name="tag DELETE", catch_response=True
            ) as resp:
                if resp.status_code == 202:
                    resp.success()
                elif resp.status_code in (400, 405) and any(
                    code in (resp.content or b"") for code in (b"DIGEST_INVALID", b"UNSUPPORTED")
                ):
                    # Distribution 2.8.2 cannot delete a tag (400 DIGEST_INVALID): refused, not an error
                    resp.success()
                    MIX.refused += 1
                else:
                    resp.failure(f"tag DELETE {resp.status_code}")
                    MIX.error(f"tag DELETE {resp.status_code}", (resp.text or "")[:200])
        MIX.loops += 1


class _Abort(Exception):
    """This loop cannot go on (the failure is already counted); start the next one."""


# ----------------------------------------------------------------------------- servers
@dataclass
class Server:
    label: str
    proc: RegistryProcess
    figures: dict[str, Any] = field(default_factory=dict)

    def pids(self) -> list[int]:
        """The server process and all its descendants (Moorage workers are forked children)."""
        return tree_pids(self.proc.proc.pid)  # type: ignore[union-attr]

    def rss_mib(self) -> float:
        total = 0
        for pid in self.pids():
            try:
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
            except OSError:
                pass
        return total / 1024

    def cpu_seconds(self) -> float:
        ticks = os.sysconf("SC_CLK_TCK")
        total = 0.0
        for pid in self.pids():
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                total += (int(fields[11]) + int(fields[12])) / ticks  # utime + stime
            except OSError:
                pass
        return total


def _s3_postgres(work: Path, stack: list[Any]) -> dict[str, str]:
    """Start Ceph RGW + PostgreSQL (tests/support) and return the MOORAGE_* env for them
    (``start_server`` gives every Moorage server a bucket and a database of its own)."""
    from tests.support.ceph import CephRGW
    from tests.support.postgres import PostgresServer

    ceph = CephRGW(work / "ceph")
    stack.append(ceph)
    rgw = ceph.start()
    pg = PostgresServer(work / "pg")
    stack.append(pg)
    pg_admin = pg.start()
    return {
        "MOORAGE_STORAGE__DRIVER": "s3",
        "MOORAGE_STORAGE__S3__ENDPOINT_URL": rgw.endpoint_url,
        "MOORAGE_STORAGE__S3__ACCESS_KEY": rgw.access_key,
        "MOORAGE_STORAGE__S3__SECRET_KEY": rgw.secret_key,
        "MOORAGE_STORAGE__S3__REGION": rgw.region,
        "MOORAGE_DATABASE__AUTO_MIGRATE": "true",
        "_PG_ADMIN": pg_admin,
    }


def start_server(label: str, work: Path, backend_env: dict[str, str]) -> Server:
    if label == "distribution":
        return Server(label, start_distribution(work / label))
    workers = label.split("-", 1)[1]
    # Access log off: Distribution's goes to its log file too, but Moorage's is a Python
    # logging call per request; --access-log keeps it.
    env = {**backend_env, "MOORAGE_LOG_LEVEL": "warning"}
    if not ARGS.access_log:
        env["MOORAGE_ACCESS_LOG"] = "false"
    # each server on a bucket and a database of its own
    pg_admin = env.pop("_PG_ADMIN", None)
    if pg_admin is not None:
        from tests.support.postgres import create_database

        env["MOORAGE_STORAGE__S3__BUCKET"] = f"load-{uuid.uuid4().hex[:8]}"
        env["MOORAGE_DATABASE__URL"] = create_database(pg_admin, f"load_{uuid.uuid4().hex[:8]}")
    if ARGS.instrument:
        env["MOORAGE_INSTRUMENT_DIR"] = str(Path(ARGS.instrument) / label)
        return Server(label, _start_instrumented(work / label, env, workers))
    return Server(label, start_moorage(work / label, env=env, extra_args=["--workers", workers], start_timeout=60))


def _start_instrumented(tmp: Path, env: dict[str, str], workers: str) -> RegistryProcess:
    """Like ``start_moorage`` but through benchmarks/instrumented_serve.py (lock/pool/fsync timers)."""
    data = tmp / "data"
    data.mkdir(parents=True, exist_ok=True)
    pp = os.environ.get("PYTHONPATH")
    full_env = {"PYTHONPATH": f"{REPO_ROOT}{os.pathsep}{pp}" if pp else str(REPO_ROOT), "PYTHONUNBUFFERED": "1", **env}
    proc = RegistryProcess(
        argv=[
            sys.executable,
            str(REPO_ROOT / "benchmarks" / "instrumented_serve.py"),
            "serve",
            "--addr",
            "127.0.0.1:{port}",
            "--data",
            str(data),
            "--workers",
            workers,
        ],
        workdir=tmp,
        kind="moorage",
        env=full_env,
        cwd=REPO_ROOT,
        start_timeout=60,
        data_dir=data,
    )
    return proc.start()


def instrument_report(label: str, requests: int) -> str:
    """Sum the per-process JSON of instrumented_serve.py: counts per request, mean and max."""
    folder = Path(ARGS.instrument) / label
    total: dict[str, list[float]] = {}
    for f in folder.glob("*.json"):
        for k, v in json.loads(f.read_text()).items():
            t = total.setdefault(k, [0, 0.0, 0.0])
            t[0] += v["count"]
            t[1] += v["total_s"]
            t[2] = max(t[2], v["max_s"])
    lines = [
        f"{label}: whole run incl. warm-up, {requests} requests",
        "| what | count | per request | mean ms | max ms | total s |",
        "|---|---|---|---|---|---|",
    ]
    for k, (n, tot, mx) in sorted(total.items(), key=lambda kv: -kv[1][1]):
        lines.append(
            f"| {k} | {int(n)} | {n / max(requests, 1):.2f} | {1000 * tot / max(n, 1):.2f} | {1000 * mx:.0f} | {tot:.1f} |"
        )
    return "\n".join(lines)


# ----------------------------------------------------------------------------- py-spy
def _py_spy() -> str | None:
    exe = subprocess.run(["sh", "-c", "command -v py-spy"], capture_output=True, text=True).stdout.strip()
    if not exe:
        log("py-spy not found (pip install py-spy): no profile")
    return exe or None


def start_py_spy(server: Server, out: Path, duration: int) -> subprocess.Popen | None:
    """CPU profile of the server and its workers: only samples where a thread is running."""
    exe = _py_spy()
    if exe is None:
        return None
    out.parent.mkdir(parents=True, exist_ok=True)
    argv = [
        exe,
        "record",
        "--pid",
        str(server.proc.proc.pid),
        "--subprocesses",
        "--threads",
        "--rate",
        "100",
        "--duration",
        str(duration),
        "--format",
        "raw",
        "--output",
        str(out),
        *ARGS.py_spy_args.split(),
    ]
    if "--native" not in argv:
        argv.append("--nonblocking")  # py-spy refuses native stacks without pausing the process
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=open(str(out) + ".log", "w"))


def py_spy_dump(server: Server, out: Path) -> None:
    """Append a snapshot of every thread of every process (what each one waits on, right now)."""
    exe = _py_spy()
    if exe is None:
        return
    res = subprocess.run(
        [exe, "dump", "--pid", str(server.proc.proc.pid), "--subprocesses", "--nonblocking"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    with open(out, "a") as fh:
        fh.write(f"===== {time.strftime('%H:%M:%S')}\n{res.stdout}{res.stderr}\n")


def summarize_folded(path: Path, top: int = 30) -> str:
    """Top frames by self and by inclusive samples, and samples per thread, from py-spy's
    collapsed stacks (``process;thread;frame;...;leaf count``)."""
    self_c: collections.Counter = collections.Counter()
    incl: collections.Counter = collections.Counter()
    threads: collections.Counter = collections.Counter()
    procs: collections.Counter = collections.Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = stack.split(";")
        proc = frames[0].split(":")[0] if frames[0].startswith("process ") else ""
        if proc:
            frames = frames[1:]
        thread = ""
        if frames and frames[0].startswith("thread "):
            thread = frames[0].split(": ", 1)[-1]
            thread = thread.rstrip("0123456789_") or thread  # ThreadPoolExecutor-0_3 -> ThreadPoolExecutor-0
            frames = frames[1:]
        if not frames:
            continue
        total += n
        procs[proc] += n
        threads[thread] += n
        self_c[frames[-1]] += n
        for f in set(frames):
            incl[f] += n
    pct = lambda n: f"{100 * n / max(total, 1):5.1f}%"  # noqa: E731
    lines = [f"{path.name}: {total} samples of running threads (100 Hz, all processes)", "", "by process:"]
    lines += [f"  {pct(n)}  {p}" for p, n in procs.most_common()]
    lines += ["", "by thread:"] + [f"  {pct(n)}  {t}" for t, n in threads.most_common(10)]
    lines += ["", "top self:"] + [f"  {pct(n)}  {f}" for f, n in self_c.most_common(top)]
    lines += ["", "top inclusive:"] + [f"  {pct(n)}  {f}" for f, n in incl.most_common(top)]
    return "\n".join(lines)


# ----------------------------------------------------------------------------- one run
def run_load(server: Server, clients: int, duration: int, warmup: float) -> None:
    global MIX
    MIX = Mix(min_bytes=ARGS.min_kib * KiB, max_bytes=ARGS.max_kib * KiB)
    RegistryUser._counter = 0
    env = Environment(user_classes=[RegistryUser], host=server.proc.url, events=events)
    runner = env.create_local_runner()
    rss_start = server.rss_mib()
    runner.start(clients, spawn_rate=max(clients / 2.0, 1))
    gevent.sleep(warmup)
    warm_requests = env.stats.total.num_requests
    env.stats.reset_all()
    MIX.errors.clear()
    MIX.refused = 0
    MIX.loops = 0
    cpu0, t0 = server.cpu_seconds(), time.monotonic()
    profiler = None
    if ARGS.py_spy and server.label.startswith("moorage"):
        profiler = start_py_spy(server, Path(ARGS.py_spy) / f"{server.label}.raw", max(duration - 2, 5))
    rss_samples = []
    dumps = 0
    while time.monotonic() - t0 < duration:
        gevent.sleep(min(5.0, duration - (time.monotonic() - t0)))
        rss_samples.append(server.rss_mib())
        if profiler is not None and dumps < 3 and time.monotonic() - t0 > duration * (dumps + 1) / 4:
            dumps += 1
            py_spy_dump(server, Path(ARGS.py_spy) / f"{server.label}.dump.txt")
    elapsed = time.monotonic() - t0
    cpu = server.cpu_seconds() - cpu0
    total = env.stats.total
    n, fails = total.num_requests, total.num_failures
    runner.quit()
    runner.greenlet.join(timeout=30)
    all_requests = warm_requests + env.stats.total.num_requests  # incl. the ones answered while stopping
    if ARGS.instrument:
        gevent.sleep(2.5)  # the instrumented server writes its totals every 2 s
    rss_end = server.rss_mib()
    if profiler is not None:
        try:
            profiler.wait(timeout=120)
        except subprocess.TimeoutExpired:
            profiler.send_signal(2)  # py-spy writes what it has on SIGINT
            profiler.wait(timeout=60)
    server.figures = {
        "rps": n / elapsed,
        "p50": total.get_response_time_percentile(0.5),
        "p99": total.get_response_time_percentile(0.99),
        "errors": fails + sum(v for k, v in MIX.errors.items() if "mismatch" in k),
        "refused": MIX.refused,
        "requests": n,
        "requests_all": all_requests,
        "loops": MIX.loops,
        "rss_start": rss_start,
        "rss_end": rss_end,
        "rss_max": max(rss_samples or [rss_end]),
        "rss_every_5s": [round(x, 1) for x in rss_samples],
        "cpu_ms_per_req": 1000 * cpu / max(n, 1),
        "per_name": {
            name: (e.num_requests, e.get_response_time_percentile(0.5), e.get_response_time_percentile(0.99))
            for (name, _m), e in env.stats.entries.items()
        },
        "error_examples": dict(MIX.examples),
    }
    log(
        f"{server.label}: {n} requests in {elapsed:.0f}s = {n / elapsed:.0f}/s, p50 {server.figures['p50']} ms, "
        f"p99 {server.figures['p99']} ms, errors {server.figures['errors']}, refused {MIX.refused}, "
        f"RSS {rss_start:.0f} -> {rss_end:.0f} MiB, {server.figures['cpu_ms_per_req']:.2f} ms CPU/request"
    )
    for kind, text in MIX.examples.items():
        log(f"  error {kind} x{MIX.errors[kind]}: {text}")


# ----------------------------------------------------------------------------- report
def report(servers: list[Server]) -> str:
    base = next((s for s in servers if s.label == "distribution" and s.figures), None)

    def ratio(s: Server, key: str, higher_better: bool) -> str:
        if base is None or s is base or not base.figures.get(key) or not s.figures.get(key):
            return ""
        r = s.figures[key] / base.figures[key] if higher_better else base.figures[key] / s.figures[key]
        return f" ({r:.2f}x)"

    head = "| server | requests/s | p50 | p99 | errors | refused | RSS start -> end (max) | CPU/request |"
    rows = [head, "|" + "---|" * 8]
    for s in servers:
        f = s.figures
        if not f:
            continue
        rows.append(
            f"| {s.label} | {f['rps']:.0f}{ratio(s, 'rps', True)} | {f['p50']:.0f} ms{ratio(s, 'p50', False)} | "
            f"{f['p99']:.0f} ms{ratio(s, 'p99', False)} | {f['errors']} | {f['refused']} | "
            f"{f['rss_start']:.0f} -> {f['rss_end']:.0f} ({f['rss_max']:.0f}) MiB | {f['cpu_ms_per_req']:.2f} ms |"
        )
    rows.append("")
    rows.append("ratios (x) against Distribution, > 1 = Moorage better; p50/p99 over all requests (locust histogram).")
    rows.append("")
    rows.append("per request kind: count, p50 / p99 (ms)")
    names = sorted({n for s in servers for n in s.figures.get("per_name", {})})
    rows.append("| request | " + " | ".join(s.label for s in servers if s.figures) + " |")
    rows.append("|---|" + "---|" * sum(1 for s in servers if s.figures))
    for name in names:
        cells = []
        for s in servers:
            if not s.figures:
                continue
            c = s.figures["per_name"].get(name)
            cells.append(f"{c[0]}, {c[1]:.0f} / {c[2]:.0f}" if c else "")
        rows.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


ARGS: argparse.Namespace


def main(argv: list[str] | None = None) -> int:
    global ARGS
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clients", type=int, default=64)
    ap.add_argument("--duration", type=int, default=60, help="measured seconds per server (600 = the soak)")
    ap.add_argument("--warmup", type=float, default=5.0, help="seconds of load before measuring")
    ap.add_argument("--min-kib", type=int, default=16)
    ap.add_argument("--max-kib", type=int, default=64)
    ap.add_argument(
        "--servers",
        default=",".join(ALL_SERVERS),
        help=f"comma-separated, in run order, of {ALL_SERVERS} (moorage-N = N workers)",
    )
    ap.add_argument(
        "--backend",
        choices=("fs-sqlite", "s3-postgres"),
        default="fs-sqlite",
        help="Moorage's storage + database (Distribution always uses its filesystem driver)",
    )
    ap.add_argument("--access-log", action="store_true", help="keep Moorage's access log on")
    ap.add_argument("--py-spy", metavar="DIR", help="profile each Moorage server under load into DIR")
    ap.add_argument("--py-spy-args", default="", help="more py-spy record flags, e.g. '--gil' or '--native'")
    ap.add_argument(
        "--instrument",
        metavar="DIR",
        help="run Moorage through instrumented_serve.py: writer-lock, pool-queue, fsync timers into DIR",
    )
    ap.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (logs, data)")
    ARGS = ap.parse_args(argv)
    logging.getLogger("locust").setLevel(logging.WARNING)
    labels = [s.strip() for s in ARGS.servers.split(",") if s.strip()]
    for label in labels:
        if label != "distribution" and not (label.startswith("moorage-") and label[8:].isdigit()):
            ap.error(f"unknown server {label!r}")
    work = Path(tempfile.mkdtemp(prefix="bench-load-"))
    stack: list[Any] = []
    servers: list[Server] = []
    try:
        backend_env = _s3_postgres(work, stack) if ARGS.backend == "s3-postgres" else {}
        for label in labels:
            log(f"starting {label} ({ARGS.backend if label != 'distribution' else 'filesystem'})")
            srv = start_server(label, work, backend_env)
            servers.append(srv)
            try:
                run_load(srv, ARGS.clients, ARGS.duration, ARGS.warmup)
            finally:
                srv.proc.stop()
        if ARGS.py_spy:
            for srv in servers:
                raw = Path(ARGS.py_spy) / f"{srv.label}.raw"
                if raw.exists() and raw.stat().st_size:
                    summary = summarize_folded(raw)
                    (Path(ARGS.py_spy) / f"{srv.label}.top.txt").write_text(summary + "\n")
                    print(summary, "\n")
    finally:
        for thing in reversed(stack):
            try:
                thing.stop()
            except Exception as exc:  # noqa: BLE001 - best effort teardown
                log(f"stopping {thing}: {exc}")
        if not ARGS.keep:
            subprocess.run(["rm", "-rf", str(work)], check=False)
        else:
            log(f"kept {work}")
    print(
        f"\n{ARGS.clients} clients, {ARGS.duration} s per server, blobs {ARGS.min_kib}-{ARGS.max_kib} KiB, "
        f"backend {ARGS.backend}\n"
    )
    print(report(servers))
    if ARGS.instrument:
        for srv in servers:
            if srv.label.startswith("moorage") and srv.figures:
                print()
                print(instrument_report(srv.label, srv.figures.get("requests_all", srv.figures["requests"])))
    if ARGS.json:
        Path(ARGS.json).write_text(
            json.dumps({s.label: {k: v for k, v in s.figures.items()} for s in servers}, indent=1, default=str)
        )
    return 1 if any(s.figures.get("errors") for s in servers) else 0


if __name__ == "__main__":
    sys.exit(main())
