"""What one writer per upload session costs (issue 8): this tree against another, same run.

    git -C /work/main archive HEAD moorage | tar -x -C /tmp/before   # the tree to compare with
    python benchmarks/bench_upload_claims.py --compare-tree /tmp/before

Both servers run from fs+SQLite with one worker; they take turns inside every round and each
figure is the median of ``--repeat`` rounds:

* ``small chunked``: sequential pushes of 4 KiB blobs as POST, PATCH, PUT (the docker/podman
  flow) -- per-request overhead: the claim is one more indexed UPDATE per PATCH and per PUT;
* ``server CPU ms/push``: CPU time the server process spent per small push (from /proc; on a
  shared, loaded machine the wall-clock figures swing, this one hardly);
* ``small mono``: sequential ``POST ?digest=`` of 4 KiB (created already claimed: no extra UPDATE);
* ``small chunked x8``: the same from 8 threads at once (write-lock contention on SQLite);
* ``big 1 PATCH``: one streaming PATCH of ``--big-mib`` MiB, then PUT (the usual client flow;
  the upload's single part file is hard-linked into place, as before it was renamed);
* ``big 8 PATCHes``: the same bytes in 8 PATCHes with Content-Range: 8 part files, which the
  commit concatenates in the kernel (``copy_file_range``) -- the price of per-request parts.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.support.registry_proc import start_moorage  # noqa: E402

CT = {"Content-Type": "application/octet-stream"}


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process and its children (the workers), from /proc."""
    total = 0.0
    tick = os.sysconf("SC_CLK_TCK")
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(d.name) == pid or int(fields[1]) == pid:  # fields[1]: ppid
            total += (int(fields[11]) + int(fields[12])) / tick
    return total


def small_chunked(url: str, n: int, tag: str) -> float:
    s = requests.Session()
    t0 = time.perf_counter()
    for i in range(n):
        data = f"{tag}-{i}-".encode() + os.urandom(4096)
        loc = s.post(f"{url}/v2/bench/small/blobs/uploads/").headers["Location"]
        loc = s.patch(url + loc, data=data, headers=CT).headers["Location"]
        r = s.put(url + loc, params={"digest": sha(data)})
        assert r.status_code == 201, r.text
    return n / (time.perf_counter() - t0)


def small_mono(url: str, n: int, tag: str) -> float:
    s = requests.Session()
    t0 = time.perf_counter()
    for i in range(n):
        data = f"{tag}-m{i}-".encode() + os.urandom(4096)
        r = s.post(f"{url}/v2/bench/mono/blobs/uploads/", params={"digest": sha(data)}, data=data, headers=CT)
        assert r.status_code == 201, r.text
    return n / (time.perf_counter() - t0)


def small_parallel(url: str, n: int, tag: str, threads: int = 8) -> float:
    errors: list[BaseException] = []

    def run(k: int) -> None:
        try:
            small_chunked(url, n // threads, f"{tag}-t{k}")
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    t0 = time.perf_counter()
    ts = [threading.Thread(target=run, args=(k,)) for k in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    if errors:
        raise errors[0]
    return (n // threads * threads) / (time.perf_counter() - t0)


def big(url: str, data: bytes, pieces: int) -> float:
    s = requests.Session()
    t0 = time.perf_counter()
    loc = s.post(f"{url}/v2/bench/big/blobs/uploads/").headers["Location"]
    if pieces == 1:

        def gen():  # chunked transfer, no Content-Range: what docker and podman send
            for i in range(0, len(data), 1 << 20):
                yield data[i : i + (1 << 20)]

        loc = s.patch(url + loc, data=gen(), headers=CT).headers["Location"]
    else:
        step = -(-len(data) // pieces)
        for off in range(0, len(data), step):
            chunk = data[off : off + step]
            r = s.patch(url + loc, data=chunk, headers={**CT, "Content-Range": f"{off}-{off + len(chunk) - 1}"})
            assert r.status_code == 202, r.text
            loc = r.headers["Location"]
    r = s.put(url + loc, params={"digest": sha(data)})
    assert r.status_code == 201, r.text
    return len(data) / (1 << 20) / (time.perf_counter() - t0)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--compare-tree", required=True, metavar="DIR")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--small", type=int, default=300)
    ap.add_argument("--big-mib", type=int, default=128)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="moorage-claims-bench-"))
    tree = Path(args.compare_tree).resolve()
    servers = {
        "this tree": start_moorage(work / "after"),
        "compare": start_moorage(work / "before", tree=tree),
    }
    figures: dict[str, dict[str, list[float]]] = {k: {} for k in servers}
    try:
        for rnd in range(args.repeat):
            data = os.urandom(args.big_mib << 20)
            for label, proc in servers.items():
                tag = f"r{rnd}-{label[0]}"
                f = figures[label]
                pid = proc.proc.pid  # type: ignore[union-attr]
                c0 = cpu_seconds(pid)
                f.setdefault("small chunked (pushes/s)", []).append(small_chunked(proc.url, args.small, tag))
                c1 = cpu_seconds(pid)
                f.setdefault("small mono (pushes/s)", []).append(small_mono(proc.url, args.small, tag))
                c2 = cpu_seconds(pid)
                # Server CPU per push: far less sensitive to a loaded machine than wall time.
                f.setdefault("small chunked (server CPU ms/push)", []).append((c1 - c0) * 1000 / args.small)
                f.setdefault("small mono (server CPU ms/push)", []).append((c2 - c1) * 1000 / args.small)
                f.setdefault("small chunked x8 (pushes/s)", []).append(small_parallel(proc.url, args.small, tag))
                f.setdefault("big 1 PATCH (MiB/s)", []).append(big(proc.url, data, 1))
                f.setdefault("big 8 PATCHes (MiB/s)", []).append(big(proc.url, data[::-1], 8))
                print(f"round {rnd + 1} {label}: " + ", ".join(f"{k}={v[-1]:.1f}" for k, v in f.items()), flush=True)
        print(f"\n{'figure':36} {'this tree':>10} {'compare':>10} {'ratio':>7}")
        for key in figures["this tree"]:
            a, b = statistics.median(figures["this tree"][key]), statistics.median(figures["compare"][key])
            print(f"{key:36} {a:10.2f} {b:10.2f} {a / b:7.2f}")
    finally:
        for proc in servers.values():
            proc.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
