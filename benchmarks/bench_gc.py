#!/usr/bin/env python3
"""GC benchmark of issue 5: collection time for a generated registry of 10 000 manifests / 50 000 blobs.

Generates, directly through the metadata tables and the filesystem BlobStore (no HTTP, so it
takes seconds), a registry of ``--repos`` repositories holding ``--manifests`` image manifests;
each manifest references its own config and ``--unique-layers`` layers of its own plus one
layer from a shared pool, so ``--manifests * (2 + unique)`` ... sized to ``--blobs`` in total
(default: 10 000 configs + 30 000 own layers + 10 000 pool layers = 50 000 blobs, a 64-byte
file each).  Every other manifest is tagged; the rest are untagged and old, so
``--delete-untagged`` reclaims about half of the blobs.  Then it times:

1. ``gc --dry-run --delete-untagged`` (mark only);
2. ``gc --delete-untagged`` (mark + delete ~5 000 manifests + sweep ~20 000 blobs + storage);
3. a second ``gc --delete-untagged`` with nothing left to collect (steady-state cost);

and prints the per-phase timings of each run.  ``--database-url postgresql://...`` runs the
same against PostgreSQL (blobs stay on the filesystem); ``--postgres`` starts a throwaway one.

    python benchmarks/bench_gc.py
    python benchmarks/bench_gc.py --manifests 1000 --blobs 5000
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from moorage.config_load import load_settings  # noqa: E402
from moorage.gc.collector import Collector, GCOptions, check_consistency  # noqa: E402
from moorage.metadata.db import Database  # noqa: E402
from moorage.metadata.tables import (  # noqa: E402
    blobs,
    manifest_blobs,
    manifests,
    repositories,
    repository_blobs,
    tags,
)
from moorage.storage import create_blob_store  # noqa: E402


def _digest(label: str) -> tuple[str, bytes]:
    data = hashlib.sha256(label.encode()).digest() * 2
    return "sha256:" + hashlib.sha256(data).hexdigest(), data


async def generate(db: Database, store, n_repos: int, n_manifests: int, n_blobs: int, unique: int) -> dict[str, int]:
    rng = random.Random(5)
    old = time.time() - 2 * 86400
    own_total = n_manifests * (1 + unique)
    pool_size = max(1, n_blobs - own_total)
    pool = [_digest(f"pool-{i}") for i in range(pool_size)]
    blob_rows: dict[str, int] = {}
    links: set[tuple[int, str]] = set()
    man_rows, mb_rows, tag_rows = [], [], []
    for i in range(n_manifests):
        repo_id = i % n_repos + 1
        own = [_digest(f"m{i}-config")] + [_digest(f"m{i}-layer{k}") for k in range(unique)]
        shared = pool[rng.randrange(pool_size)]
        refs = own + [shared]
        for d, data in refs:
            blob_rows[d] = len(data)
            links.add((repo_id, d))
        mdigest = "sha256:" + hashlib.sha256(f"manifest-{i}".encode()).hexdigest()
        man_rows.append(
            {
                "id": i + 1,
                "repository_id": repo_id,
                "digest": mdigest,
                "media_type": "application/vnd.oci.image.manifest.v1+json",
                "size": 500,
                "payload": b"{}",
                "artifact_type": None,
                "subject_digest": None,
                "annotations": None,
                "created_at": old,
            }
        )
        mb_rows.extend({"manifest_id": i + 1, "digest": d} for d, _ in refs)
        if i % 2 == 0:
            tag_rows.append({"repository_id": repo_id, "name": f"t{i}", "manifest_id": i + 1, "updated_at": old + i})
    for d, data in pool:  # pool layers nobody drew are garbage too
        blob_rows.setdefault(d, len(data))

    async with db.write() as conn:
        await conn.execute(
            repositories.insert(),
            [{"id": r + 1, "name": f"bench/repo{r}", "public": False, "created_at": old} for r in range(n_repos)],
        )
        rows = [
            {"digest": d, "size": s, "created_at": old, "last_linked_at": old, "pending_until": None, "deleting_since": None}
            for d, s in blob_rows.items()
        ]
        for i in range(0, len(rows), 5000):
            await conn.execute(blobs.insert(), rows[i : i + 5000])
        link_rows = [{"repository_id": r, "digest": d, "created_at": old} for r, d in links]
        for i in range(0, len(link_rows), 5000):
            await conn.execute(repository_blobs.insert(), link_rows[i : i + 5000])
        for i in range(0, len(man_rows), 2000):
            await conn.execute(manifests.insert(), man_rows[i : i + 2000])
        for i in range(0, len(mb_rows), 5000):
            await conn.execute(manifest_blobs.insert(), mb_rows[i : i + 5000])
        await conn.execute(tags.insert(), tag_rows)

    # tiny blob files, written where the driver keeps them
    every = {d: data for d, data in pool}
    for i in range(n_manifests):
        for label in [f"m{i}-config"] + [f"m{i}-layer{k}" for k in range(unique)]:
            d, data = _digest(label)
            every[d] = data

    def write_all() -> None:
        made: set[Path] = set()
        for d, data in every.items():
            path = store.local_path(d)
            if path.parent not in made:
                path.parent.mkdir(parents=True, exist_ok=True)
                made.add(path.parent)
            path.write_bytes(data)

    await asyncio.to_thread(write_all)
    return {
        "repositories": n_repos,
        "manifests": n_manifests,
        "tags": len(tag_rows),
        "blobs": len(blob_rows),
        "links": len(links),
        "manifest_blob_refs": len(mb_rows),
    }


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repos", type=int, default=100)
    ap.add_argument("--manifests", type=int, default=10_000)
    ap.add_argument("--blobs", type=int, default=50_000)
    ap.add_argument("--unique-layers", type=int, default=3)
    ap.add_argument("--database-url", help="PostgreSQL URL (default: SQLite in the temp dir)")
    ap.add_argument("--postgres", action="store_true", help="start a throwaway PostgreSQL (tests/support/postgres.py) and use it")
    ap.add_argument("--dir", help="work directory (default: a temp dir)")
    args = ap.parse_args()

    work = Path(args.dir or tempfile.mkdtemp(prefix="moorage-bench-gc-"))
    settings = load_settings(data=str(work), database={"url": args.database_url} if args.database_url else None)
    db = Database(settings.database_url)
    await db.migrate()
    store = create_blob_store(settings)
    await store.open()
    t = time.monotonic()
    shape = await generate(db, store, args.repos, args.manifests, args.blobs, args.unique_layers)
    print(
        f"generated {shape} in {time.monotonic() - t:.1f}s ({'PostgreSQL' if args.database_url else 'SQLite'}, "
        f"filesystem at {work})"
    )

    for label, opts in (
        ("dry run", GCOptions(grace=3600, dry_run=True, delete_untagged=True)),
        ("collect", GCOptions(grace=3600, delete_untagged=True)),
        ("again (nothing to do)", GCOptions(grace=3600, delete_untagged=True)),
    ):
        res = await Collector(db, store, opts).run()
        s = res.summary()
        print(
            f"{label:24s} {res.seconds:7.2f}s  manifests={s['manifests_removed']} blobs={s['blobs_removed']} "
            f"bytes={s['bytes_removed']} skipped={s['skipped_concurrent']}  phases={res.timings}"
        )
    t = time.monotonic()
    problems = await check_consistency(db, store)
    print(f"consistency check: {len(problems)} problem(s) in {time.monotonic() - t:.2f}s")
    await store.close()
    await db.close()
    if not args.dir:
        import shutil

        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    if "--postgres" in sys.argv:
        from tests.support.postgres import start_postgres

        with tempfile.TemporaryDirectory(prefix="moorage-bench-pg-") as pgdir, start_postgres(Path(pgdir)) as url:
            sys.argv += ["--database-url", url]
            asyncio.run(main())
    else:
        asyncio.run(main())
