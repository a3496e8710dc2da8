#!/usr/bin/env python3
"""CPU per request of manifest GET by tag and blob HEAD, Moorage source trees side by side.

Why CPU and not req/s: on a shared machine (other jobs on the same two cores) wall-clock
throughput moves by a third from one run to the next, while the server's own CPU time per
request (utime + stime of its process tree, from ``/proc``, divided by the requests served)
moves far less.  Each tree gets its own one-worker server (filesystem + SQLite, default
configuration); the runs alternate between them (the first server rotates each round), so
load that comes and goes hits them alike.  Reported: every round's figure and the median.

    python benchmarks/bench_cpu_per_request.py old=/tmp/tree-a37 new=. --rounds 5
    python benchmarks/bench_cpu_per_request.py a=. b=.@MOORAGE_UI__ENABLED=false   # per-tree environment

manifest GET: ``wrk -t2 -c32`` with the bench's Accept header; blob HEAD: ``ab -i -k -c32``
(wrk cannot time HEADs).  A tree is ``LABEL=DIR[@K=V,K=V]``.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import requests

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(REPO_ROOT / "benchmarks"))

import bench_core as bc  # noqa: E402
from proctree import tree_pids  # noqa: E402

from tests.support.registry_proc import RegistryProcess, start_moorage  # noqa: E402

_TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pids: list[int]) -> float:
    """utime + stime of ``pids`` (fields 14 and 15 of /proc/PID/stat, after the command name)."""
    ticks = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        ticks += int(fields[11]) + int(fields[12])
    return ticks / _TICK


def run_wrk(url: str, seconds: int, connections: int) -> tuple[int, float]:
    cmd = ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "-H", f"Accept: {bc.ACCEPT}", url]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60).stdout
    if re.search(r"Non-2xx or 3xx responses", out):
        raise RuntimeError(f"wrk saw errors:\n{out}")
    return int(re.search(r"(\d+) requests in", out).group(1)), float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]


def run_ab(url: str, seconds: int, connections: int) -> tuple[int, float]:
    cmd = ["ab", "-i", "-k", f"-c{connections}", f"-t{seconds}", "-n", "10000000", url]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60).stdout
    if re.search(r"Non-2xx responses", out):
        raise RuntimeError(f"ab saw errors:\n{out}")
    done = int(re.search(r"Complete requests:\s+(\d+)", out).group(1))  # type: ignore[union-attr]
    return done, float(re.search(r"Requests per second:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("trees", nargs="+", metavar="LABEL=DIR[@K=V,...]")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seconds", type=int, default=6, help="length of each load run")
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--only", default="manifest,head", help="manifest, head or both")
    args = ap.parse_args(argv)
    kinds = [k for k in args.only.split(",") if k]
    work = Path(tempfile.mkdtemp(prefix="bench-cpu-"))
    servers: list[tuple[str, RegistryProcess]] = []
    config, layer, manifest = bc.small_image()
    digest = "sha256:" + hashlib.sha256(layer).hexdigest()
    try:
        for spec in args.trees:
            label, _, rest = spec.partition("=")
            tree, _, extra = rest.partition("@")
            env = dict(kv.split("=", 1) for kv in extra.split(",") if kv)
            proc = start_moorage(work / label, env=env, extra_args=["--workers", "1"], tree=Path(tree).resolve())
            servers.append((label, proc))
            s = requests.Session()
            bc.put_small_blob(s, proc.url, "bench/small", config)
            bc.put_small_blob(s, proc.url, "bench/small", layer)
            bc.put_manifest(s, proc.url, "bench/small", "latest", manifest)
            run_wrk(f"{proc.url}/v2/bench/small/manifests/latest", 2, args.connections)  # warm-up
        results: dict[tuple[str, str], list[tuple[float, float]]] = {}
        for r in range(args.rounds):
            order = servers[r % len(servers) :] + servers[: r % len(servers)]
            for kind in kinds:
                for label, proc in order:
                    pids = tree_pids(proc.proc.pid)
                    before = cpu_seconds(pids)
                    if kind == "manifest":
                        n, rps = run_wrk(f"{proc.url}/v2/bench/small/manifests/latest", args.seconds, args.connections)
                    else:
                        n, rps = run_ab(f"{proc.url}/v2/bench/small/blobs/{digest}", args.seconds, args.connections)
                    us = (cpu_seconds(pids) - before) / n * 1e6
                    results.setdefault((kind, label), []).append((us, rps))
                    print(f"round {r} {kind:8} {label:10} {us:7.1f} us/request {rps:8.0f} req/s", file=sys.stderr, flush=True)
        print(f"{'':8} {'':10} {'us/request':>10}  (each round)                 {'req/s':>7}")
        for (kind, label), figures in results.items():
            each = " ".join(f"{x[0]:.0f}" for x in figures)
            print(
                f"{kind:8} {label:10} {statistics.median(x[0] for x in figures):10.1f}  ({each})  {statistics.median(x[1] for x in figures):7.0f}"
            )
        return 0
    finally:
        for _, proc in servers:
            proc.stop()


if __name__ == "__main__":
    sys.exit(main())
