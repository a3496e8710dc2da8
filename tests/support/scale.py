"""Registries of N repositories built in seconds by cloning one image's rows in SQL (issue 24).

Used by ``benchmarks/bench_scale.py`` (seed pushed through the API first) and by
``tests/test_scale.py`` (seed inserted by :func:`seed_sql`, no server needed).  Repository names
are ``ns<NNNNN>/r<NNNNNNN>``: 100,000 namespaces spread over the N repositories, catalog order =
clone order; one more repository ``big/tags`` holds ``tags_in_big`` tags on one manifest.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

NAMESPACES = 100_000


def repo_name(i: int, n: int) -> str:
    """The ``i``-th cloned repository (catalog order = ``i`` order)."""
    return f"ns{i * NAMESPACES // n:05d}/r{i:07d}"


def seed_sql(sqlite: bool) -> list[str]:
    """``seed/app:latest``: one manifest referencing two blobs, linked in its repository."""
    false = "0" if sqlite else "false"
    payload = "X'7b7d'" if sqlite else "'\\x7b7d'::bytea"
    d1, d2, dm = ("sha256:" + hashlib.sha256(x).hexdigest() for x in (b"config", b"layer", b"manifest"))
    return [
        f"INSERT INTO repositories (name, public, created_at) VALUES ('seed/app', {false}, 1.7e9)",
        f"INSERT INTO blobs (digest, size, created_at, last_linked_at) VALUES ('{d1}', 6, 1.7e9, 1.7e9), ('{d2}', 5, 1.7e9, 1.7e9)",
        f"INSERT INTO repository_blobs (repository_id, digest, created_at) SELECT id, '{d1}', 1.7e9 FROM repositories "
        f"UNION ALL SELECT id, '{d2}', 1.7e9 FROM repositories",
        "INSERT INTO manifests (repository_id, digest, media_type, size, payload, created_at) SELECT id, "
        f"'{dm}', 'application/vnd.oci.image.manifest.v1+json', 2, {payload}, 1.7e9 FROM repositories",
        f"INSERT INTO manifest_blobs (manifest_id, digest) SELECT id, '{d1}' FROM manifests UNION ALL SELECT id, '{d2}' FROM manifests",
        "INSERT INTO tags (repository_id, name, manifest_id, updated_at) SELECT repository_id, 'latest', id, 1.7e9 FROM manifests",
    ]


_SEED_REPO = "(SELECT id FROM repositories WHERE name = 'seed/app')"
_SEED_MANIFEST = f"(SELECT id FROM manifests WHERE repository_id = {_SEED_REPO})"
_MANIFEST_COLUMNS = "digest, media_type, size, payload, artifact_type, subject_digest, annotations, created_at"


def _clone_parts(n: int, sqlite: bool) -> tuple[str, str, str, str]:
    """The dialect's pieces of the clone statements: (a series of ``x`` from ``{lo}`` to
    ``{hi}``, to format; the repository name of clone ``x``; the tag name of ``x``; false)."""
    if sqlite:
        series = "WITH RECURSIVE g(x) AS (SELECT {lo} UNION ALL SELECT x + 1 FROM g WHERE x < {hi}) SELECT x FROM g"
        name = f"'ns' || printf('%05d', (x * {NAMESPACES}) / {n}) || '/r' || printf('%07d', x)"
        return series, name, "'v' || printf('%06d', x)", "0"
    series = "SELECT x FROM generate_series({lo}, {hi}) AS x"
    name = f"'ns' || lpad(((x::bigint * {NAMESPACES}) / {n})::text, 5, '0') || '/r' || lpad(x::text, 7, '0')"
    return series, name, "'v' || lpad(x::text, 6, '0')", "false"


def _big_tags_sql(series: str, tag: str, tags_in_big: int) -> str:
    """``big/tags``'s ``tags_in_big`` tags, all on its manifest."""
    return (
        f"INSERT INTO tags (repository_id, name, manifest_id, updated_at) SELECT m.repository_id, {tag}, m.id, 1.6e9 + x "
        f"FROM manifests m, ({series.format(lo=0, hi=tags_in_big - 1)}) s "
        "WHERE m.repository_id = (SELECT id FROM repositories WHERE name = 'big/tags')"
    )


def clone_sql(n: int, tags_in_big: int, sqlite: bool) -> list[str]:
    """Statements cloning ``seed/app`` into ``n`` repositories, plus ``big/tags``'s tags."""
    series, name, tag, false = _clone_parts(n, sqlite)
    seed_repo, seed_man, cols = _SEED_REPO, _SEED_MANIFEST, _MANIFEST_COLUMNS
    out = [
        f"INSERT INTO repositories (name, public, created_at) SELECT {name}, {false}, 1.7e9 FROM ({series.format(lo=0, hi=n - 1)}) s",
        f"INSERT INTO repositories (name, public, created_at) VALUES ('big/tags', {false}, 1.7e9)",
        f"INSERT INTO manifests (repository_id, {cols}) SELECT r.id, {', '.join('m.' + c for c in cols.split(', '))} "
        f"FROM repositories r, manifests m WHERE m.id = {seed_man} AND r.id <> m.repository_id",
        "INSERT INTO manifest_blobs (manifest_id, digest) SELECT m.id, mb.digest FROM manifests m, manifest_blobs mb "
        f"WHERE mb.manifest_id = {seed_man} AND m.id <> mb.manifest_id",
        "INSERT INTO tags (repository_id, name, manifest_id, updated_at) SELECT m.repository_id, 'latest', m.id, "
        f"1.7e9 + m.id FROM manifests m WHERE m.id <> {seed_man}",
        "INSERT INTO repository_blobs (repository_id, digest, created_at) SELECT r.id, rb.digest, 1.7e9 "
        f"FROM repositories r, repository_blobs rb WHERE rb.repository_id = {seed_repo} AND r.id <> rb.repository_id",
    ]
    if tags_in_big > 0:
        out.append(_big_tags_sql(series, tag, tags_in_big))
    return out


def clone_sql_batches(n: int, tags_in_big: int, sqlite: bool, batch: int) -> Iterator[list[str]]:
    """:func:`clone_sql` cut into transactions of ``batch`` repositories each (the same rows,
    same names, same order; ``big/tags`` last), for sizes where one transaction would not do:
    at 10M repositories SQLite's WAL would hold every new page (~20 GB) until the commit's
    checkpoint copies it into the database, doubling the disk the build needs.  Each batch
    finds its repositories by a range of the name index (``ns<NNNNN>/r<NNNNNNN>`` sorts in
    clone order), so nothing in Python grows with ``n``."""
    series, name, tag, false = _clone_parts(n, sqlite)
    seed_repo, seed_man, cols = _SEED_REPO, _SEED_MANIFEST, _MANIFEST_COLUMNS

    def rows_of(where: str) -> list[str]:
        """A manifest, its blob references, tag ``latest`` and blob links for each repository
        ``r`` matching ``where`` (all copied from the seed's)."""
        return [
            f"INSERT INTO manifests (repository_id, {cols}) SELECT r.id, {', '.join('m.' + c for c in cols.split(', '))} "
            f"FROM repositories r, manifests m WHERE m.id = {seed_man} AND {where}",
            "INSERT INTO manifest_blobs (manifest_id, digest) SELECT m.id, mb.digest "
            "FROM repositories r JOIN manifests m ON m.repository_id = r.id, manifest_blobs mb "
            f"WHERE mb.manifest_id = {seed_man} AND {where}",
            "INSERT INTO tags (repository_id, name, manifest_id, updated_at) SELECT m.repository_id, 'latest', m.id, "
            f"1.7e9 + m.id FROM repositories r JOIN manifests m ON m.repository_id = r.id WHERE {where}",
            "INSERT INTO repository_blobs (repository_id, digest, created_at) SELECT r.id, rb.digest, 1.7e9 "
            f"FROM repositories r, repository_blobs rb WHERE rb.repository_id = {seed_repo} AND {where}",
        ]

    for lo in range(0, n, batch):
        hi = min(n, lo + batch) - 1
        where = f"r.name BETWEEN '{repo_name(lo, n)}' AND '{repo_name(hi, n)}'"
        yield [
            f"INSERT INTO repositories (name, public, created_at) SELECT {name}, {false}, 1.7e9 "
            f"FROM ({series.format(lo=lo, hi=hi)}) s",
            *rows_of(where),
            # PostgreSQL: statistics for the next batch's joins (a plan made for empty tables
            # would loop over millions of rows); sampled, so seconds whatever the size.
            *([] if sqlite else ["ANALYZE repositories, manifests"]),
        ]
    last = [f"INSERT INTO repositories (name, public, created_at) VALUES ('big/tags', {false}, 1.7e9)"]
    last += rows_of("r.name = 'big/tags'")
    if tags_in_big > 0:
        last.append(_big_tags_sql(series, tag, tags_in_big))
    yield last


async def run_sql(url: str, statements: list[str], *, analyze: bool = True) -> None:
    """Run ``statements`` in one transaction (then VACUUM ANALYZE on PostgreSQL, as autovacuum
    would soon; SQLite is left without statistics, as Moorage leaves it: ANALYZE there while
    ``ui_repo_stats`` is still empty makes its planner scan that table once per repository).
    ``analyze=False``: no VACUUM ANALYZE (a batch of a larger build; the last batch runs it)."""
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine

    engine = create_async_engine(url)
    try:
        async with engine.begin() as conn:
            for stmt in statements:
                await conn.execute(text(stmt))
        if analyze and not url.startswith("sqlite"):
            async with engine.connect() as conn:
                await conn.execution_options(isolation_level="AUTOCOMMIT")
                await conn.execute(text("VACUUM ANALYZE"))
    finally:
        await engine.dispose()


#: Runs ``moorage.cli`` and, at exit, writes the process's own peak RSS to stderr.  ``VmHWM``
#: of /proc/self/status belongs to the memory map made by ``exec``; ``wait4``'s and
#: ``getrusage``'s ``ru_maxrss`` are not usable here: Linux carries the RSS of the *forking*
#: process (a benchmark or pytest holding hundreds of MiB) into the child's figure.
_PEAK_LAUNCHER = (
    "import atexit, runpy, sys\n"
    "def _peak():\n"
    "    for line in open('/proc/self/status'):\n"
    "        if line.startswith('VmHWM:'):\n"
    "            sys.stderr.write('\\nMOORAGE_PEAK_RSS_KB=' + line.split()[1] + '\\n')\n"
    "atexit.register(_peak)\n"
    "sys.argv = ['moorage'] + sys.argv[1:]\n"
    "runpy.run_module('moorage.cli', run_name='__main__', alter_sys=True)\n"
)


def run_with_peak_rss(args: list[str], env: dict[str, str], cwd: str) -> tuple[int, str, str, float]:
    """(exit code, stdout, stderr, peak RSS in MiB) of ``python -m moorage.cli ARGS``."""
    import subprocess
    import sys

    cp = subprocess.run([sys.executable, "-c", _PEAK_LAUNCHER, *args], env=env, cwd=cwd, capture_output=True, text=True)
    peak = float("nan")
    for line in cp.stderr.splitlines():
        if line.startswith("MOORAGE_PEAK_RSS_KB="):
            peak = int(line.split("=", 1)[1]) / 1024
    return cp.returncode, cp.stdout, cp.stderr, peak
