#!/usr/bin/env python3
"""Issue 24: a registry of N repositories on SQLite and PostgreSQL -- catalog, UI listings, GC memory.

Builds N repositories quickly: one image (config + one layer) is pushed through the HTTP API into
``seed/app:latest``, then its rows are cloned in SQL (repositories, manifests, manifest_blobs, tags,
repository_blobs: one image per repository, all sharing the seed's two blobs), plus one repository
``big/tags`` holding ``--tags`` tags.  Repository names are ``ns<NNNNN>/r<NNNNNNN>``: 100,000
namespaces (at N = 100,000 one repository each), in catalog order.  Then it prints:

* ``/v2/_catalog?n=1000`` at the start, middle and end (median of 51, once the server's start-up
  jobs are done: :func:`settle_seconds`), and the whole walk;
* tags list / manifest GET of one repository (median of 20);
* the UI's repository list (page 1, search-as-you-type, sort by name / last push / size);
* the catalog of a user with pull grants on 10 namespaces out of 100,000 (query layer);
* ``moorage gc --dry-run --grace 0``: wall time and peak RSS (the child's own ``VmHWM``);
* 100,000 tags in one repository: tags list pages, the UI repository page, retention plan;
* all-repository scans: quota usage of a namespace, the storage chart, scrub's count,
  retention over every tag, the UI's full sort-figure refresh.

    python benchmarks/bench_scale.py --repos 100000,1000000       # both sizes, both databases
    python benchmarks/bench_scale.py --repos 100000 --db postgres --json /tmp/after.json
    nice -n 10 python benchmarks/bench_scale.py --repos 10000000 --db sqlite --only gc \
        --build-batch 1000000 --workdir /work/tmp-gc10m      # the GC figures alone, at 10M

PostgreSQL is a throwaway cluster started like the tests do (``tests/support/postgres.py``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import inspect
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import requests  # noqa: E402

from tests.support.postgres import create_database, start_postgres  # noqa: E402
from tests.support.registry_proc import start_moorage  # noqa: E402
from tests.support.scale import (  # noqa: E402
    NAMESPACES,
    clone_sql,
    clone_sql_batches,
    repo_name,
    run_sql,
    run_with_peak_rss,
)

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def _sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def push_seed(url: str) -> None:
    """One image through the API: config and layer by monolithic POST, then the manifest."""
    s = requests.Session()
    config = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}}).encode()
    layer = os.urandom(2048)
    descs = []
    for data, mt in ((config, "application/vnd.oci.image.config.v1+json"), (layer, "application/vnd.oci.image.layer.v1.tar")):
        d = _sha(data)
        r = s.post(
            f"{url}/v2/seed/app/blobs/uploads/?digest={d}", data=data, headers={"Content-Type": "application/octet-stream"}
        )
        assert r.status_code == 201, r.text
        descs.append({"mediaType": mt, "digest": d, "size": len(data)})
    manifest = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": descs[0], "layers": descs[1:]}).encode()
    r = s.put(f"{url}/v2/seed/app/manifests/latest", data=manifest, headers={"Content-Type": OCI_MANIFEST})
    assert r.status_code == 201, r.text


def median_ms(fn: Callable[[], Any], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)


async def amedian_ms(fn: Callable[[], Awaitable[Any]], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        await fn()
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)


def gc_dry_run(env: dict[str, str], data: Path) -> tuple[float, float]:
    """(seconds, peak RSS MiB) of ``moorage gc --dry-run --grace 0`` as a child process (its
    own VmHWM: ``wait4``'s figure would include this benchmark's RSS at fork time)."""
    t = time.perf_counter()
    args = ["gc", "--dry-run", "--grace", "0", "--json", "-q", "--data", str(data)]
    code, _, err, peak = run_with_peak_rss(args, env, str(ROOT))
    assert code == 0, err[-2000:]
    return time.perf_counter() - t, peak


async def in_process(db_url: str, n: int, fig: dict[str, Any]) -> None:
    """Figures measured on the query layer (UI, filtered catalog, retention, all-repo scans)."""
    from sqlalchemy import true

    from moorage.gc import retention
    from moorage.metadata import integrity_store
    from moorage.metadata.db import Database
    from moorage.metadata.policy_store import PolicyStore
    from moorage.metadata.records import RetentionPolicy
    from moorage.metadata.store import MetadataStore
    from moorage.ui.queries import UIQueries, Visibility

    db = Database(db_url)
    ui = UIQueries(db)
    store = MetadataStore(db)
    try:
        t = time.perf_counter()
        await ui.refresh_stats()
        fig["ui stats refresh (all repos)"] = (time.perf_counter() - t) * 1000
        await run_sql(db_url, [])  # PostgreSQL: VACUUM ANALYZE, as autovacuum would after 100,000 new rows
        everything = true()
        for sort in ("name", "pushed", "size"):
            fig[f"UI repo list page 1, sort {sort}"] = await amedian_ms(lambda: ui.list_repositories(everything, sort=sort), 5)
        keyset = "after" in inspect.signature(ui.list_repositories).parameters
        deep = min(2000, max(1, n // 50 - 1))  # a deep page (page 2,000 at 100,000 and more)
        for sort in ("name", "pushed", "size"):
            key = f"UI repo list page {deep}, sort {sort}"
            if keyset:  # after issue 24: the Next link carries the last row's key (keyset)
                rows, _ = await ui.list_repositories(everything, sort=sort, offset=(deep - 2) * 50, limit=50)
                cursor = ui.cursor(rows[-1], sort)
                fig[key] = await amedian_ms(lambda: ui.list_repositories(everything, sort=sort, after=cursor), 5)
            else:
                fig[key] = await amedian_ms(lambda: ui.list_repositories(everything, sort=sort, offset=(deep - 1) * 50), 5)
        for q in ("r00", "r0050", "r005000", "ns0005", "ns00050/"):
            fig[f"UI search '{q}'"] = await amedian_ms(lambda: ui.list_repositories(everything, query=q), 5)
        # A user with pull grants on 10 namespaces out of 100,000.
        grants = [f"ns{k * (NAMESPACES // 10):05d}/*" for k in range(10)]
        vis = Visibility(public_ok=True, pull_patterns=grants)
        cond = await ui.visible_condition(vis)
        fig["UI repo list, user with 10 namespace grants"] = await amedian_ms(lambda: ui.list_repositories(cond), 5)
        # /v2/_catalog?n=1000 of that user, the service's path (what the API handler runs).
        from moorage.auth.authenticator import Authenticator
        from moorage.config import Settings
        from moorage.metadata.auth_store import AuthStore
        from moorage.registry.access_rules import Grant, Principal
        from moorage.registry.service import RegistryService
        from moorage.storage.memory import MemoryBlobStore

        auth = Authenticator(Settings(), AuthStore(db))
        user = Principal("someone", grants=[Grant(g, frozenset({"pull"})) for g in grants])
        service = RegistryService(store, MemoryBlobStore())
        scope_of = getattr(auth, "catalog_scope", None)

        async def user_catalog() -> list[str]:
            if scope_of is not None:
                return await service.catalog(1001, None, await scope_of(user))

            async def keep(names: list[str]) -> list[str]:
                return await auth.visible(user, names)

            return await service.catalog(1001, None, keep)

        fig["/v2/_catalog n=1000 path, user with 10 namespace grants"] = await amedian_ms(user_catalog, 15)
        filtered = getattr(store, "catalog_in", None)
        prefixes = [g[:-1] for g in grants]
        if filtered is not None:
            fig["catalog n=1000, user with 10 namespace grants"] = await amedian_ms(lambda: filtered(1000, None, prefixes), 5)
        else:  # before: walk the catalog in batches and filter (what api/catalog.py's _filtered does)

            async def walk_filter() -> list[str]:
                out: list[str] = []
                last = None
                while len(out) < 1000:
                    names = await store.catalog(1000, last)
                    if not names:
                        break
                    out += [x for x in names if any(x.startswith(p) for p in prefixes)]
                    last = names[-1]
                return out

            fig["catalog n=1000, user with 10 namespace grants"] = await amedian_ms(walk_filter, 1)
        # 100,000 tags in one repository
        rid = (await ui.repository("big/tags"))["id"]  # type: ignore[index]
        fig["UI repo page (big/tags), page 1"] = await amedian_ms(lambda: ui.tags_page(rid), 5)
        fig["UI repo page (big/tags), page 500"] = await amedian_ms(lambda: ui.tags_page(rid, offset=500 * 100), 5)
        pol = [RetentionPolicy("big/*", 10, None, None)]
        ps = PolicyStore(db)

        by_db = getattr(retention, "plan_repository", None)

        async def plan_big(policies: list[RetentionPolicy] = pol) -> Any:
            if by_db is not None:  # after issue 24: ranked by the database
                return await by_db(db, policies, "big/tags")
            return retention.plan(policies, await ps.load_tags("big/tags"))

        fig["retention plan (big/tags, keep_last 10: 99,991 go)"] = await amedian_ms(plan_big, 3)
        keep = [RetentionPolicy("big/*", 99_000)]
        fig["retention plan (big/tags, keep_last 99,000: 1,001 go)"] = await amedian_ms(lambda: plan_big(keep), 3)
        young = [RetentionPolicy("big/*", None, None, 36500)]
        fig["retention plan (big/tags, expire 100 y: none go)"] = await amedian_ms(lambda: plan_big(young), 3)
        # all-repository scans
        fig["quota usage, namespace ns00000"] = await amedian_ms(lambda: ps.namespace_usage("ns00000"), 3)
        fig["quota usage, namespace big"] = await amedian_ms(lambda: ps.namespace_usage("big"), 3)
        fig["chart: storage by repository"] = await amedian_ms(lambda: ui.storage_by_repository(everything), 3)
        fig["scrub progress count (all blobs)"] = await amedian_ms(lambda: integrity_store.count_blobs(db, None, None, None), 3)
        pol_all = [RetentionPolicy("*", 10, None, None)]
        by_all = getattr(retention, "plan_all", None)

        async def plan_all(policies: list[RetentionPolicy] = pol_all) -> Any:
            if by_all is not None:  # after issue 24: only repositories a rule can shorten are read
                return await by_all(db, policies)
            return retention.plan(policies, await ps.load_tags(None))

        fig["retention plan (every tag, keep_last 10)"] = await amedian_ms(plan_all, 1)
        fig["retention plan (every tag, expire 100 y: none go)"] = await amedian_ms(
            lambda: plan_all([RetentionPolicy("*", None, None, 36500)]), 1
        )
        fig["scrub progress count (namespace ns00000)"] = await amedian_ms(
            lambda: integrity_store.count_blobs(db, None, "ns00000", None), 3
        )
        hour = int(time.time() // 3600)
        fig["chart: activity, 30 days"] = await amedian_ms(lambda: ui.activity(everything, hour - 30 * 24), 3)
    finally:
        await db.close()


def settle_seconds(n: int) -> float:
    """How long the server is left alone after its start before the HTTP figures: at start it
    runs its jobs over every repository (the UI's sort figures, ~9-16 s at 1M on PostgreSQL; the
    events statistics, ~3.5 s), which share the two cores with the requests measured.  The
    catalog figures of issue 24's first runs were taken during them (8-20 ms at 1M on
    PostgreSQL where the settled page takes 3-5 ms)."""
    return max(2.0, 30.0 * n / 1_000_000)


def measure_http(url: str, n: int, fig: dict[str, Any]) -> None:
    time.sleep(settle_seconds(n))
    s = requests.Session()

    def get(path: str) -> requests.Response:
        r = s.get(url + path)
        assert r.status_code == 200, (path, r.status_code, r.text[:300])
        return r

    get("/v2/_catalog?n=1000")  # warm
    fig["catalog n=1000, first page"] = median_ms(lambda: get("/v2/_catalog?n=1000"), 51)
    mid = repo_name(n // 2, n)
    fig["catalog n=1000, middle"] = median_ms(lambda: get(f"/v2/_catalog?n=1000&last={mid}"), 51)
    end = repo_name(max(0, n - 1000), n)
    fig["catalog n=1000, near the end"] = median_ms(lambda: get(f"/v2/_catalog?n=1000&last={end}"), 51)
    t = time.perf_counter()
    path: str | None = "/v2/_catalog?n=1000"
    pages = 0
    while path:
        r = get(path)
        pages += 1
        link = r.headers.get("Link")
        path = link.split(";")[0].strip("<>") if link else None
    fig["catalog walk (s)"] = time.perf_counter() - t
    fig["catalog walk pages"] = pages
    one = repo_name(n // 3, n)
    fig["tags list, one repo"] = median_ms(lambda: get(f"/v2/{one}/tags/list"), 20)
    accept = {"Accept": OCI_MANIFEST}
    fig["manifest GET, one repo"] = median_ms(lambda: s.get(f"{url}/v2/{one}/manifests/latest", headers=accept), 20)
    fig["tags list big/tags n=100, first"] = median_ms(lambda: get("/v2/big/tags/tags/list?n=100"), 5)
    fig["tags list big/tags n=100, middle"] = median_ms(lambda: get("/v2/big/tags/tags/list?n=100&last=v050000"), 5)
    fig["tags list big/tags n=100, end"] = median_ms(lambda: get("/v2/big/tags/tags/list?n=100&last=v099900"), 5)


def build(db_url: str, n: int, tags_in_big: int, sqlite: bool, batch: int) -> None:
    """Clone the seed into ``n`` repositories: one transaction, or (``batch`` > 0) one per
    ``batch`` repositories, so that neither Python nor SQLite's WAL grows with ``n``."""
    if batch <= 0:
        asyncio.run(run_sql(db_url, clone_sql(n, tags_in_big, sqlite)))
        return
    parts = list(clone_sql_batches(n, tags_in_big, sqlite, batch))  # n / batch short lists of SQL text
    for i, statements in enumerate(parts):
        t = time.perf_counter()
        asyncio.run(run_sql(db_url, statements, analyze=i == len(parts) - 1))
        print(f"  batch {i + 1}/{len(parts)}: {time.perf_counter() - t:.1f} s", file=sys.stderr, flush=True)


def run_one(
    kind: str, n: int, tags_in_big: int, work: Path, pg_admin: str | None, only: str = "all", batch: int = 0
) -> dict[str, Any]:
    fig: dict[str, Any] = {}
    data = work / kind / "data"
    data.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MOORAGE_")}
    env["PYTHONPATH"] = str(ROOT)
    if kind == "postgres":
        assert pg_admin is not None
        url = create_database(pg_admin, f"scale_{n}_{int(time.time())}")
        env["MOORAGE_DATABASE__URL"] = url.replace("postgresql+asyncpg://", "postgresql://")
        db_url = url
    else:
        db_url = f"sqlite+aiosqlite:///{data / 'moorage.db'}"
    subprocess.run([sys.executable, "-m", "moorage.cli", "migrate", "--data", str(data)], env=env, cwd=ROOT, check=True)
    srv_env = {k: v for k, v in env.items() if k.startswith("MOORAGE_")}
    srv = start_moorage(work / kind, env=srv_env)
    try:
        push_seed(srv.url)
    finally:
        srv.stop()
    t = time.perf_counter()
    build(db_url, n, tags_in_big, kind == "sqlite", batch)
    fig["build (s)"] = time.perf_counter() - t
    if kind == "sqlite":
        fig["database size (MB)"] = sum(p.stat().st_size for p in data.glob("moorage.db*")) / 1e6
    else:
        fig["database size (MB)"] = asyncio.run(_pg_size(db_url)) / 1e6
    print(f"  built {n:,} in {fig['build (s)']:.0f} s, {fig['database size (MB)']:,.0f} MB", file=sys.stderr, flush=True)
    if only == "all":
        srv = start_moorage(work / kind, env=srv_env)
        try:
            measure_http(srv.url, n, fig)
        finally:
            srv.stop()
        asyncio.run(in_process(db_url, n, fig))
    secs, rss = gc_dry_run(env, data)
    fig["gc --dry-run --grace 0 (s)"] = secs
    fig["gc --dry-run peak RSS (MiB)"] = rss
    # With a retention policy every repository is read (no skipping of clean ones): the mark
    # phase's worst case.  keep_last 10 removes nothing from the one-tag repositories.
    asyncio.run(run_sql(db_url, ["INSERT INTO retention_policies (pattern, keep_last, created_at) VALUES ('ns*', 10, 1.7e9)"]))
    secs, rss = gc_dry_run(env, data)
    asyncio.run(run_sql(db_url, ["DELETE FROM retention_policies"]))
    fig["gc --dry-run, a retention policy (every repo read) (s)"] = secs
    fig["gc --dry-run, a retention policy, peak RSS (MiB)"] = rss
    if kind == "postgres":
        asyncio.run(_pg_drop(pg_admin or "", db_url))
    return fig


async def _pg_drop(admin: str, url: str) -> None:
    """Drop the benchmark's database (1M repositories: 2.6 GB) before the next one is built."""
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine

    engine = create_async_engine(admin, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as conn:
            await conn.execute(text(f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1]}" WITH (FORCE)'))
    finally:
        await engine.dispose()


async def _pg_size(url: str) -> int:
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine

    engine = create_async_engine(url)
    async with engine.connect() as conn:
        size = (await conn.execute(text("SELECT pg_database_size(current_database())"))).scalar_one()
    await engine.dispose()
    return int(size)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repos", default="100000", help="sizes, comma-separated: 100000,1000000")
    ap.add_argument("--tags", type=int, default=100_000, help="tags in the one big repository")
    ap.add_argument("--db", default="sqlite,postgres")
    ap.add_argument("--workdir", help="keep the data here (default: a temporary directory)")
    ap.add_argument("--json", help="also write the figures to this file")
    ap.add_argument(
        "--only", choices=("all", "gc"), default="all", help="gc: build, then only the two GC dry runs (no server, no queries)"
    )
    ap.add_argument(
        "--build-batch",
        type=int,
        default=0,
        help="clone in transactions of this many repositories (0: one transaction); 1000000 at 10M",
    )
    args = ap.parse_args()
    kinds = [k.strip() for k in args.db.split(",") if k.strip()]
    sizes = [int(x) for x in str(args.repos).split(",") if x.strip()]
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-scale-", dir=args.workdir) as tmp:
        work = Path(tmp)
        with contextlib.ExitStack() as stack:
            admin = stack.enter_context(start_postgres(work / "pg")) if "postgres" in kinds else None
            for n in sizes:
                for kind in kinds:
                    col = f"{kind} {n:,}"
                    results[col] = run_one(kind, n, args.tags, work / f"{kind}-{n}", admin, args.only, args.build_batch)
                    print(f"done: {col}", file=sys.stderr, flush=True)
                    shutil.rmtree(work / f"{kind}-{n}", ignore_errors=True)  # 1M: 1.5-2.6 GB each
    cols = list(results)
    keys = list(dict.fromkeys(k for r in results.values() for k in r))
    print(f"\nN repositories (+ big/tags with {args.tags:,} tags); times in ms unless stated")
    print(f"{'figure':58s}" + "".join(f"{c:>20s}" for c in cols))
    for key in keys:
        print(f"{key:58s}" + "".join(f"{results[c].get(key, float('nan')):20.1f}" for c in cols))
    if args.json:
        Path(args.json).write_text(json.dumps({"repos": sizes, "tags": args.tags, "results": results}, indent=2))


if __name__ == "__main__":
    main()
