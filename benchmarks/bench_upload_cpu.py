#!/usr/bin/env python3
"""Server CPU per blob upload on a registry without quotas, for one or more code trees.

Each tree's server (1 worker, filesystem + SQLite, auth off) is started in turn on a fresh data
directory; ``--clients`` threads each loop the docker/podman upload flow (``POST`` ->
``PATCH`` the whole blob -> ``PUT ?digest=``, 16 KiB of random bytes) over one keep-alive
connection for ``--uploads`` uploads in all.  Printed per tree: uploads/s, and the server's CPU
time (user + system, from /proc) per upload -- the figure that shows per-request work such as
the quota middleware's lookup, and that is less disturbed than throughput by other processes on
a shared machine.  ``--rounds`` alternates the trees (A B A B ...) to spread out noise.

    python benchmarks/bench_upload_cpu.py --tree before=/tmp/base --tree after=. --rounds 3
"""

from __future__ import annotations

import argparse
import hashlib
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def _one_upload(s: requests.Session, url: str, repo: str) -> None:
    data = os.urandom(16 * 1024)
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    r = s.post(f"{url}/v2/{repo}/blobs/uploads/")
    assert r.status_code == 202, r.text
    loc = url + r.headers["Location"]
    r = s.patch(loc, data=data, headers={"Content-Type": "application/octet-stream", "Content-Range": f"0-{len(data) - 1}"})
    assert r.status_code == 202, r.text
    r = s.put(loc, params={"digest": digest})
    assert r.status_code == 201, r.text


def measure(tree: Path, uploads: int, clients: int) -> tuple[float, float]:
    """(uploads/s, server CPU ms per upload) for the code in ``tree``."""
    port = _free_port()
    with tempfile.TemporaryDirectory(prefix="bench-upload-cpu-") as tmp:
        env = {**os.environ, "PYTHONPATH": str(tree)}
        proc = subprocess.Popen(
            [sys.executable, "-m", "moorage.cli", "serve", "--addr", f"127.0.0.1:{port}", "--data", tmp],
            cwd=tree,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            for _ in range(300):
                try:
                    if requests.get(f"{url}/v2/", timeout=5).status_code == 200:
                        break
                except requests.RequestException:
                    pass
                time.sleep(0.1)
            else:
                raise RuntimeError(f"server in {tree} did not start")
            warm = requests.Session()
            for _ in range(10):
                _one_upload(warm, url, "bench/warm")
            per_client = uploads // clients
            errors: list[BaseException] = []

            def client(i: int) -> None:
                s = requests.Session()
                try:
                    for _ in range(per_client):
                        _one_upload(s, url, f"bench/c{i}")
                except BaseException as exc:  # noqa: BLE001 - reported below
                    errors.append(exc)

            cpu0, t0 = _cpu_seconds(proc.pid), time.monotonic()
            threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            cpu1, t1 = _cpu_seconds(proc.pid), time.monotonic()
            if errors:
                raise errors[0]
            done = per_client * clients
            return done / (t1 - t0), (cpu1 - cpu0) * 1000 / done
        finally:
            proc.terminate()
            proc.wait(timeout=30)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tree", action="append", required=True, help="NAME=PATH of a code tree (repeatable)")
    ap.add_argument("--uploads", type=int, default=600)
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    trees = [(n, Path(p).resolve()) for n, p in (t.split("=", 1) for t in args.tree)]
    results: dict[str, list[tuple[float, float]]] = {n: [] for n, _ in trees}
    for r in range(args.rounds):
        for name, path in trees:
            rate, cpu = measure(path, args.uploads, args.clients)
            results[name].append((rate, cpu))
            print(f"round {r + 1} {name:>10}: {rate:7.1f} uploads/s  {cpu:6.2f} ms server CPU per upload", flush=True)
    for name, rows in results.items():
        print(
            f"median {name:>10}: {statistics.median(r for r, _ in rows):7.1f} uploads/s  "
            f"{statistics.median(c for _, c in rows):6.2f} ms server CPU per upload (3 requests)"
        )


if __name__ == "__main__":
    main()
