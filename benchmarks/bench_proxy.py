"""Pull-through cache figures (issue 12): cold pull through the cache vs a direct pull from the
upstream, and a warm pull through the cache vs a pull of the same image pushed locally.

    python benchmarks/bench_proxy.py [--repeat 3] [--mib 100]

Upstream: Debian's docker-registry (Distribution 2.8.2) on 127.0.0.1; cache: Moorage
(filesystem + SQLite) with that upstream under namespace ``d``.  Each round builds a fresh
image (random layers, so "cold" is really cold), then, with ``skopeo copy`` into an OCI layout:

* direct:  docker://UPSTREAM/bench/imgN          (straight from Distribution)
* cold:    docker://CACHE/d/bench/imgN           (the cache fetches, stores and streams)
* warm:    docker://CACHE/d/bench/imgN           (again: served from the cache)
* local:   docker://CACHE/local/imgN             (the same image pushed to the cache directly)

and one raw HTTP GET of a single-blob (cold through the cache vs direct).  Medians are printed;
ratios > 1 mean the first figure is slower.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import requests
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support import ocilayout  # noqa: E402
from tests.support.clients import Skopeo  # noqa: E402
from tests.support.registry_proc import start_distribution, start_moorage  # noqa: E402


def timed(fn) -> float:  # type: ignore[no-untyped-def]
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--mib", type=int, default=100, help="image size (four layers)")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-proxy-"))
    dist = cache = None
    try:
        dist = start_distribution(work / "dist")
        cfg = work / "cache.yml"
        cfg.write_text(yaml.safe_dump({"proxy": {"upstreams": [{"name": "d", "url": dist.url, "namespace": "d"}]}}))
        cache = start_moorage(work / "cache", extra_args=["--config", str(cfg)], env={"MOORAGE_ACCESS_LOG": "false"})
        sk = Skopeo(work / "skopeo")
        mib = 1024 * 1024
        sizes = [args.mib * mib * p // 100 for p in (40, 30, 20, 10)]
        fig: dict[str, list[float]] = {k: [] for k in ("direct", "cold", "warm", "local", "blob_direct", "blob_cold")}
        for i in range(args.repeat):
            img = ocilayout.build_image(
                work / f"img{i}", "v1", layers=[os.urandom(s) for s in sizes], seed=f"bench{i}", compress=False
            )
            sk.copy(f"oci:{img.dir}:v1", f"docker://{dist.host}/bench/img{i}:v1")
            sk.copy(f"oci:{img.dir}:v1", f"docker://{cache.host}/local/img{i}:v1")

            def pull(ref: str, name: str) -> None:
                out = work / "out" / name
                shutil.rmtree(out, ignore_errors=True)
                out.parent.mkdir(parents=True, exist_ok=True)
                sk.copy(ref, f"oci:{out}:v1")

            fig["direct"].append(timed(lambda: pull(f"docker://{dist.host}/bench/img{i}:v1", "direct")))
            fig["cold"].append(timed(lambda: pull(f"docker://{cache.host}/d/bench/img{i}:v1", "cold")))
            fig["warm"].append(timed(lambda: pull(f"docker://{cache.host}/d/bench/img{i}:v1", "warm")))
            fig["local"].append(timed(lambda: pull(f"docker://{cache.host}/local/img{i}:v1", "local")))
            data = os.urandom(args.mib * mib)
            digest = "sha256:" + hashlib.sha256(data).hexdigest()
            r = requests.post(f"{dist.url}/v2/bench/blob{i}/blobs/uploads/", timeout=60)
            loc = r.headers["Location"]
            requests.put(loc + ("&" if "?" in loc else "?") + f"digest={digest}", data=data, timeout=120).raise_for_status()

            def get(url: str) -> None:
                with requests.get(url, stream=True, timeout=120) as resp:
                    resp.raise_for_status()
                    for _ in resp.iter_content(1 << 20):
                        pass

            fig["blob_direct"].append(timed(lambda: get(f"{dist.url}/v2/bench/blob{i}/blobs/{digest}")))
            fig["blob_cold"].append(timed(lambda: get(f"{cache.url}/v2/d/bench/blob{i}/blobs/{digest}")))
        med = {k: statistics.median(v) for k, v in fig.items()}
        print(f"image {args.mib} MiB (4 uncompressed layers), {args.repeat} rounds, medians:")
        rows = [
            ("skopeo pull, direct from Distribution", "direct"),
            ("skopeo pull, cold through the cache", "cold"),
            ("skopeo pull, warm through the cache", "warm"),
            ("skopeo pull, pushed locally to Moorage", "local"),
            (f"GET {args.mib} MiB blob, direct", "blob_direct"),
            (f"GET {args.mib} MiB blob, cold through the cache", "blob_cold"),
        ]
        for label, key in rows:
            print(f"  {label:<45} {med[key]:7.2f} s")
        print(f"  cold/direct ratio (skopeo)  {med['cold'] / med['direct']:.2f}x")
        print(f"  warm/local ratio (skopeo)   {med['warm'] / med['local']:.2f}x")
        print(f"  cold/direct ratio (one blob) {med['blob_cold'] / med['blob_direct']:.2f}x")
    finally:
        if cache is not None:
            cache.stop()
        if dist is not None:
            dist.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
