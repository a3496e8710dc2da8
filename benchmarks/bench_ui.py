#!/usr/bin/env python3
"""Web UI page-render benchmark (issue 11): server time of the repositories page, search and a
tag page, on a registry holding ``--repos`` repositories (10,000) and one repository with
``--tags`` tags (1,000).

The database is filled directly (SQLite, the default backend) -- each repository gets one
manifest, one to three tags and two blob links, as a push would leave them -- then a real
``moorage serve`` answers; each request's server time is read from the ``Server-Timing``
header the UI sets (handler + template, without the network): wall time and the process's
CPU time meanwhile (the wall time on a busy shared machine includes waiting for a core; the
CPU time is what the page costs), ``--n`` times per page after a warm-up, as p50/p99.  ``--mode token`` measures an anonymous visitor on a
registry with token auth (10% of the repositories public), which adds the visibility
condition to every query.

    python benchmarks/bench_ui.py --repos 10000 --tags 1000 --n 200 [--mode token]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.registry_proc import start_moorage  # noqa: E402

NAMESPACES = ["team", "infra", "ml", "web", "data", "mobile", "sec", "ops", "lab", "edge"]


def digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def manifest_bytes(seed: str) -> tuple[bytes, list[tuple[str, int]]]:
    blobs = [(digest(f"{seed}/config".encode()), 700), (digest(f"{seed}/layer".encode()), 3_000_000 + len(seed) * 1000)]
    doc = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": blobs[0][0], "size": blobs[0][1]},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": blobs[1][0], "size": blobs[1][1]}],
    }
    return json.dumps(doc).encode(), blobs


def fill(db_path: Path, repos: int, tags_in_big: int, public_share: float) -> None:
    rng = random.Random(11)
    conn = sqlite3.connect(db_path)
    now = time.time()
    cur = conn.cursor()
    repo_rows, blob_rows, link_rows, man_rows, mb_rows, tag_rows = [], [], [], [], [], []
    names = [f"{NAMESPACES[i % len(NAMESPACES)]}/service-{i:05d}" for i in range(repos - 1)] + ["big/many-tags"]
    man_id = 0
    for rid, name in enumerate(names, start=1):
        public = rng.random() < public_share or (public_share > 0 and name == "big/many-tags")
        repo_rows.append((rid, name, public, now - rng.random() * 86400 * 90))
        n_tags = tags_in_big if name == "big/many-tags" else rng.randint(1, 3)
        n_manifests = min(n_tags, 50) if name == "big/many-tags" else 1
        mids = []
        for m in range(n_manifests):
            man_id += 1
            payload, blobs = manifest_bytes(f"{name}/{m}")
            man_rows.append(
                (
                    man_id,
                    rid,
                    digest(payload),
                    "application/vnd.oci.image.manifest.v1+json",
                    len(payload),
                    payload,
                    "application/vnd.oci.image.config.v1+json",
                    None,
                    None,
                    now,
                )
            )
            for d, size in blobs:
                blob_rows.append((d, size, now, now))
                link_rows.append((rid, d, now))
                mb_rows.append((man_id, d))
            mids.append(man_id)
        for t in range(n_tags):
            tag_rows.append((rid, f"v{t}.0" if t else "latest", mids[t % len(mids)], now - rng.random() * 86400 * 30))
    cur.executemany("INSERT INTO repositories (id, name, public, created_at) VALUES (?,?,?,?)", repo_rows)
    cur.executemany("INSERT OR IGNORE INTO blobs (digest, size, created_at, last_linked_at) VALUES (?,?,?,?)", blob_rows)
    cur.executemany("INSERT OR IGNORE INTO repository_blobs (repository_id, digest, created_at) VALUES (?,?,?)", link_rows)
    cur.executemany(
        "INSERT INTO manifests (id, repository_id, digest, media_type, size, payload, artifact_type, "
        "subject_digest, annotations, created_at) VALUES (?,?,?,?,?,?,?,?,?,?)",
        man_rows,
    )
    cur.executemany("INSERT OR IGNORE INTO manifest_blobs (manifest_id, digest) VALUES (?,?)", mb_rows)
    cur.executemany("INSERT INTO tags (repository_id, name, manifest_id, updated_at) VALUES (?,?,?,?)", tag_rows)
    conn.commit()
    cur.execute("ANALYZE")
    conn.close()


def timings(header: str) -> tuple[float, float]:
    """(wall ms, CPU ms) from ``Server-Timing: app;dur=W, cpu;dur=C``."""
    parts = dict(p.strip().split(";dur=") for p in header.split(","))
    return float(parts["app"]), float(parts["cpu"])


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * q))]


def measure(url: str, n: int, headers: dict[str, str] | None = None) -> tuple[float, float, float, float, int]:
    """p50/p99 of wall and CPU server time over ``n`` requests after a warm-up."""
    s = requests.Session()
    s.headers.update(headers or {})
    wall, cpu = [], []
    for i in range(n + 5):
        r = s.get(url, timeout=60, allow_redirects=False)
        assert r.status_code == 200, (url, r.status_code)
        if i >= 5:  # warm-up
            w, c = timings(r.headers["Server-Timing"])
            wall.append(w)
            cpu.append(c)
    return statistics.median(wall), pct(wall, 0.99), statistics.median(cpu), pct(cpu, 0.99), len(r.content)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repos", type=int, default=10_000)
    ap.add_argument("--tags", type=int, default=1_000)
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--mode", choices=("none", "token"), default="none")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        env = {"MOORAGE_ACCESS_LOG": "false"}
        if args.mode == "token":
            env.update(
                {"MOORAGE_AUTH__MODE": "token", "MOORAGE_AUTH__ADMIN_PASSWORD": "bench-admin", "MOORAGE_AUTH__BCRYPT_ROUNDS": "4"}
            )
        proc = start_moorage(Path(tmp) / "srv", env=env)  # creates and migrates the database
        proc.stop()
        t0 = time.time()
        fill(proc.data_dir / "moorage.db", args.repos, args.tags, 0.1 if args.mode == "token" else 0.0)
        print(f"filled {args.repos} repositories ({args.tags} tags in big/many-tags) in {time.time() - t0:.1f}s")
        proc.start()
        with open("/proc/loadavg") as fh:
            print("load average at start:", " ".join(fh.read().split()[:3]))
        deep = 100 if args.mode == "none" else 10
        try:
            pages = {
                "repositories, by name, page 1": "/",
                # (token mode: an anonymous visitor sees the ~10% public ones: ~20 pages)
                f"repositories, by name, page {deep}": f"/?page={deep}",
                "repositories, by last push": "/?sort=pushed",
                "repositories, by size": "/?sort=size",
                "repositories, namespace filter": "/?ns=ml",
                "search 'service-0042' (full page)": "/?q=service-0042",
                "search 'ice-01' (htmx fragment)": "/?q=ice-01",
                f"tag page, {args.tags} tags (first page)": "/ui/repo/big/many-tags",
                f"tag page, {args.tags} tags, page 5": "/ui/repo/big/many-tags?page=5",
                "manifest page": "/ui/repo/big/many-tags/-/manifest/latest",
            }
            print(f"mode={args.mode}  server time per request (Server-Timing: wall, and CPU of the process), n={args.n}")
            print(f"{'page':44s} {'wall p50':>9s} {'wall p99':>9s} {'cpu p50':>8s} {'cpu p99':>8s} {'bytes':>7s}")
            for label, path in pages.items():
                hx = {"HX-Request": "true", "HX-Target": "repo-results"} if "htmx" in label else None
                w50, w99, c50, c99, size = measure(proc.url + path, args.n, hx)
                print(f"{label:44s} {w50:9.1f} {w99:9.1f} {c50:8.1f} {c99:8.1f} {size:7d}")
        finally:
            proc.stop()


if __name__ == "__main__":
    main()
