#!/usr/bin/env python3
"""Issue 24, the web UI's part: search-as-you-type, the list's first page, the tag pages of a
100,000-tag repository, the namespace filter -- at N repositories, on SQLite and PostgreSQL.

The registry is built like ``bench_scale.py``'s (``tests/support/scale.py``: rows cloned in SQL,
``big/tags`` with ``--tags`` tags) but seeded in SQL too (no server: these are query-layer
figures), so the same script runs against an older checkout for a "before" column::

    python benchmarks/bench_ui_scale.py --repos 1000000 --db sqlite,postgres --json /tmp/after.json
    python benchmarks/bench_ui_scale.py --repos 100000 --compare /tmp/old-checkout   # before/after

``--compare``: the registry is built once (with this checkout's migrations: the older code
ignores the trigram index), then measured by both checkouts' code in alternating child
processes (the older checkout needs this script copied into its ``benchmarks/``).

Also timed: migration 0017 building the SQLite trigram index of an existing database.
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.postgres import create_database, start_postgres  # noqa: E402
from tests.support.scale import clone_sql, run_sql, seed_sql  # noqa: E402

SEARCHES = ("r00", "r0050", "r005000", "ns0005", "ns00050/", "qqq", "zz", "r", "q", "zq", "99", "0")
#: Rare names added to the clones: ``zq`` (and ``q``, ``zq/``...) name these 1,500 and nothing else.
RARE = 1500


async def amedian_ms(fn: Callable[[], Awaitable[Any]], repeat: int = 5) -> float:
    await fn()  # warm
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        await fn()
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)


async def build(url: str, n: int, n_tags: int, sqlite: bool) -> dict[str, float]:
    from moorage.metadata.db import Database

    fig: dict[str, float] = {}
    db = Database(url)
    await db.migrate()
    await db.close()
    t = time.perf_counter()
    await run_sql(url, seed_sql(sqlite) + clone_sql(n, n_tags, sqlite))
    fig["build (s)"] = time.perf_counter() - t
    seed = "(SELECT min(id) FROM manifests)"
    series = (
        f"WITH RECURSIVE s(x) AS (SELECT 0 UNION ALL SELECT x + 1 FROM s WHERE x < {RARE - 1}) SELECT x FROM s"
        if sqlite
        else f"SELECT x FROM generate_series(0, {RARE - 1}) x"
    )
    await run_sql(
        url,
        [
            "INSERT INTO repositories (name, public, created_at) SELECT 'team-zq/app-' || x, "
            f"{'0' if sqlite else 'false'}, 1.7e9 FROM ({series}) s",
            "INSERT INTO manifests (repository_id, digest, media_type, size, payload, created_at) SELECT r.id, m.digest, "
            f"m.media_type, m.size, m.payload, 1.7e9 FROM repositories r, manifests m WHERE r.name LIKE 'team-zq/%' AND m.id = {seed}",
        ],
    )
    versions = ROOT / "moorage/metadata/migrations/versions"
    drop_grams = (
        [
            "DROP TRIGGER repository_name_grams_ai",
            "DROP TRIGGER repository_name_grams_ad",
            "DROP TRIGGER repository_name_grams_au",
            "DROP TABLE repository_name_grams",
            "DROP TABLE name_gram_positions",
        ]
        if sqlite
        else ["DROP INDEX ix_repositories_name_grams", "DROP FUNCTION moorage_name_grams(text)"]
    )
    has_grams = (versions / "0018_short_search_grams.py").exists()
    if sqlite and (versions / "0017_sqlite_search_fts.py").exists():
        # migrations 0017 (+ 0018) on an existing database: drop their indexes, step back, migrate again
        stmts = ["DROP TRIGGER repositories_fts_ai", "DROP TRIGGER repositories_fts_ad", "DROP TRIGGER repositories_fts_au"]
        stmts += ["DROP TABLE repositories_fts", *(drop_grams if has_grams else [])]
        await run_sql(url, [*stmts, "UPDATE alembic_version SET version_num = '0016'"])
        db = Database(url)
        t = time.perf_counter()
        await db.migrate()
        label = (
            "migrations 0017+0018: build both search indexes (s)" if has_grams else "migration 0017: build the trigram index (s)"
        )
        fig[label] = time.perf_counter() - t
        await db.close()
    if has_grams:
        await run_sql(url, [*drop_grams, "UPDATE alembic_version SET version_num = '0017'"])
        db = Database(url)
        t = time.perf_counter()
        await db.migrate()
        fig["migration 0018: build the short-term index (s)"] = time.perf_counter() - t
        await db.close()
    from moorage.ui.queries import UIQueries

    db = Database(url)
    try:
        await UIQueries(db).refresh_stats()  # the sort figures, as the UI keeps them
    finally:
        await db.close()
    await run_sql(url, [])  # PostgreSQL: VACUUM ANALYZE, as autovacuum would
    return fig


async def measure(url: str, fig: dict[str, Any]) -> None:
    from sqlalchemy import true

    from moorage.gc import retention
    from moorage.metadata.db import Database
    from moorage.metadata.records import RetentionPolicy
    from moorage.metadata.store import MetadataStore
    from moorage.ui.queries import UIQueries

    db = Database(url)
    ui = UIQueries(db)
    store = MetadataStore(db)
    everything = true()
    try:
        for sort in ("name", "pushed", "size"):
            fig[f"UI list page 1, sort {sort}"] = await amedian_ms(lambda: ui.list_repositories(everything, sort=sort))
        for q in SEARCHES:
            fig[f"UI search '{q}'"] = await amedian_ms(lambda: ui.list_repositories(everything, query=q))
        fig["UI search 'r005000', sort size"] = await amedian_ms(
            lambda: ui.list_repositories(everything, query="r005000", sort="size")
        )
        fig["namespace filter (admin)"] = await amedian_ms(lambda: ui.namespaces_of(everything), 3)
        rid = (await ui.repository("big/tags"))["id"]  # type: ignore[index]
        fig["UI repo page big/tags, page 1"] = await amedian_ms(lambda: ui.tags_page(rid))
        fig["UI repo page big/tags, page 500 (offset)"] = await amedian_ms(lambda: ui.tags_page(rid, offset=499 * 100))
        fig["UI repo page big/tags, page 1000 (offset)"] = await amedian_ms(lambda: ui.tags_page(rid, offset=999 * 100))
        if "after" in inspect.signature(ui.tags_page).parameters:
            rows, _ = await ui.tags_page(rid, offset=498 * 100)
            key = ui.tag_cursor(rows[-1])  # type: ignore[attr-defined]
            fig["UI repo page big/tags, page 500 (keyset)"] = await amedian_ms(lambda: ui.tags_page(rid, after=key))
            rows, _ = await ui.tags_page(rid, offset=998 * 100)
            key = ui.tag_cursor(rows[-1])  # type: ignore[attr-defined]
            fig["UI repo page big/tags, page 1000 (keyset)"] = await amedian_ms(lambda: ui.tags_page(rid, after=key))
            rows, _ = await ui.tags_page(rid, offset=500 * 100)
            key = ui.tag_cursor(rows[0])  # type: ignore[attr-defined]
            fig["UI repo page big/tags, page 500 (keyset, Previous)"] = await amedian_ms(lambda: ui.tags_page(rid, before=key))
        fig["UI repo page big/tags, filter 'v0999'"] = await amedian_ms(lambda: ui.tags_page(rid, query="v0999"))
        fig["tags list big/tags n=100, first"] = await amedian_ms(lambda: store.list_tags("big/tags", 100, None))
        fig["tags list big/tags n=100, middle"] = await amedian_ms(lambda: store.list_tags("big/tags", 100, "v050000"))
        fig["tags list big/tags n=100, end"] = await amedian_ms(lambda: store.list_tags("big/tags", 100, "v099900"))
        fig["tags list big/tags, all 100,000"] = await amedian_ms(lambda: store.list_tags("big/tags", None, None), 3)
        for label, pol in (
            ("keep_last 10: 99,990 go", [RetentionPolicy("big/*", 10, None, None)]),
            ("keep_last 99,000: 1,000 go", [RetentionPolicy("big/*", 99_000)]),
            ("expire 100 y: none go", [RetentionPolicy("big/*", None, None, 36500)]),
        ):
            fig[f"retention plan big/tags ({label})"] = await amedian_ms(
                lambda pol=pol: retention.plan_repository(db, pol, "big/tags"), 3
            )
        batches = getattr(retention, "plan_repository_batches", None)
        if batches is not None:  # after issue 24: a batch of 1,000 at a time, from the last one's key
            from moorage.metadata.policy_store import PolicyStore

            keep10 = [RetentionPolicy("big/*", 10, None, None)]

            async def first_batch() -> Any:
                it = batches(db, keep10, "big/tags")
                try:
                    return await anext(it)
                finally:
                    await it.aclose()

            fig["retention plan big/tags, keep_last 10: first batch of 1,000"] = await amedian_ms(first_batch)
            mid = (1.6e9 + 50_000, "v050000")
            fig["retention plan big/tags, keep_last 10: batch 50 of 100"] = await amedian_ms(
                lambda: PolicyStore(db).retention_candidates("big/tags", [(10, None)], limit=1000, after=mid)
            )
    finally:
        await db.close()


def compare(url: str, old: Path, rounds: int) -> dict[str, Any]:
    """Measure ``url`` with this checkout's code and with ``old``'s (its own copy of this
    script), alternately in child processes, ``rounds`` times each: on a shared machine the
    load moves, so before and after are taken side by side.  Per figure, the lower median."""
    import subprocess

    runs: dict[str, list[dict[str, float]]] = {"after": [], "before": []}
    for _ in range(rounds):
        for label, root in (("before", old), ("after", ROOT)):
            out = subprocess.run(
                [sys.executable, str(root / "benchmarks" / "bench_ui_scale.py"), "--measure", url],
                capture_output=True,
                text=True,
                cwd=root,
            )
            if out.returncode != 0:
                raise SystemExit(f"{label} ({root}) failed:\n{out.stderr[-3000:]}")
            runs[label].append(json.loads(out.stdout.strip().splitlines()[-1]))
    fig: dict[str, Any] = {}
    for label, figs in runs.items():
        for key in dict.fromkeys(k for f in figs for k in f):
            fig[f"{label}: {key}"] = min(f[key] for f in figs if key in f)
    return fig


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repos", type=int, default=100_000)
    ap.add_argument("--tags", type=int, default=100_000)
    ap.add_argument("--db", default="sqlite,postgres")
    ap.add_argument("--workdir")
    ap.add_argument("--json")
    ap.add_argument("--compare", help="an older checkout: measure the same data with its code too, alternately")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--measure", help=argparse.SUPPRESS)  # (child of --compare: one measurement, JSON on stdout)
    args = ap.parse_args()
    if args.measure:
        fig: dict[str, Any] = {}
        asyncio.run(measure(args.measure, fig))
        print(json.dumps(fig))
        return
    kinds = [k.strip() for k in args.db.split(",") if k.strip()]
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-ui-scale-", dir=args.workdir) as tmp:
        work = Path(tmp)

        def one(kind: str, admin: str | None) -> None:
            if kind == "postgres":
                assert admin is not None
                url = create_database(admin, f"uiscale_{args.repos}_{int(time.time())}")
            else:
                url = f"sqlite+aiosqlite:///{work / 'm.db'}"
            fig: dict[str, Any] = asyncio.run(build(url, args.repos, args.tags, kind == "sqlite"))
            if args.compare:
                fig.update(compare(url, Path(args.compare).resolve(), args.rounds))
            else:
                asyncio.run(measure(url, fig))
            results[kind] = fig
            print(kind, json.dumps(fig, indent=1), flush=True)

        if "postgres" in kinds:
            with start_postgres(work / "pg") as admin:
                for kind in kinds:
                    one(kind, admin)
        else:
            for kind in kinds:
                one(kind, None)
    keys = list(dict.fromkeys(k for r in results.values() for k in r))
    print(f"\nN = {args.repos:,} repositories (+ big/tags with {args.tags:,} tags); ms unless stated")
    print(f"{'figure':55s}" + "".join(f"{k:>12s}" for k in kinds))
    for key in keys:
        print(f"{key:55s}" + "".join(f"{results[k].get(key, float('nan')):12.1f}" for k in kinds))
    if args.json:
        Path(args.json).write_text(json.dumps({"repos": args.repos, "tags": args.tags, "results": results}, indent=2))


if __name__ == "__main__":
    main()
