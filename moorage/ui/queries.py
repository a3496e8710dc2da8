"""SQL behind the web UI: repository listings, tag tables, storage and activity
figures, browser sessions.

Listings must stay fast at 10,000 repositories and 1,000 tags: every page is a ``LIMIT``ed
query on an index plus per-row figures computed only for the rows shown (tag counts from
the ``tags`` primary key, last push from ``ix_tags_updated``, sizes from the
``repository_blobs`` primary key).  Sorting by last push or by size needs the figure of every
visible repository; those run as correlated subqueries on the same indexes (measured in
``benchmarks/bench_ui.py``).

Visibility is a SQL condition built from the viewer (:class:`Visibility`), so pagination
counts only what the viewer may see.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import and_, delete, false, func, literal_column, or_, select, text, true, update
from sqlalchemy.sql.elements import ColumnElement, True_

from ..metadata.db import Database
from ..metadata.listing import listed
from ..metadata.tables import (
    blobs,
    manifest_blobs,
    manifest_children,
    manifests,
    namespaces,
    repositories,
    repository_blobs,
    tags,
    ui_activity,
    ui_repo_stats,
    ui_sessions,
)
from .search_index import SearchIndex, like_escape, name_contains

SORTS = ("name", "pushed", "size")


def pattern_like(pattern: str) -> str:
    """A grant pattern (``*`` = any run of characters, ``/`` included) as a LIKE pattern."""
    return "%".join(like_escape(p) for p in pattern.split("*"))


class Row(dict):  # type: ignore[type-arg]
    """A result row for templates: ``row.name`` without Jinja trying (and failing) an
    attribute lookup first on every access -- measurable on a page of 100 rows."""

    __slots__ = ()

    def __getattr__(self, key: str) -> Any:
        try:
            return self[key]
        except KeyError:
            raise AttributeError(key) from None


@dataclass(slots=True)
class Visibility:
    """Which repositories a viewer may see (pull), as data the SQL condition is built from.

    ``everything``: administrators, ``auth.mode: none`` and htpasswd users.  Otherwise a
    repository is visible if it is public (itself or a namespace above it, unless
    ``public_ok`` is off -- htpasswd mode has no anonymous access), or if ``pull_patterns``
    grant it and, for a scoped access token, ``scope_patterns`` allow it too.
    """

    everything: bool = False
    public_ok: bool = True
    #: Grant patterns giving pull (an owner's ``name`` and ``name/*`` included).
    pull_patterns: list[str] = field(default_factory=list)
    #: A scoped access token's patterns giving pull (None = not scoped).
    scope_patterns: list[str] | None = None


def _matches_any(patterns: Iterable[str], db: Database | None = None) -> ColumnElement[bool]:
    """Repositories matching any grant pattern.  A pattern ending in its only ``*`` (``team/*``,
    the common grant) is a range of the byte-ordered name index (``team/ <= name < team0``),
    so a viewer with grants on 10 namespaces reads 10 ranges, not every name (issue 24)."""
    name = repositories.c.name
    conds: list[ColumnElement[bool]] = []
    for p in patterns:
        if "*" not in p:
            conds.append(name == p)
        elif db is not None and p.index("*") == len(p) - 1 and p[:-1]:
            conds.append(_prefix_range(db, p[:-1]))
        else:
            conds.append(name.like(pattern_like(p), escape="\\"))
    return or_(*conds) if conds else false()


def _prefix_range(db: Database, prefix: str) -> ColumnElement[bool]:
    """Names starting with ``prefix``, as a range of the name index (``Database.lexical``)."""
    from ..metadata.store import prefix_successor

    name = db.lexical(repositories.c.name)
    upper = prefix_successor(prefix)
    return and_(name >= prefix, name < upper) if upper is not None else name >= prefix


#: The repository list counts up to this many rows; past it the total is "1,000+" (or, on
#: PostgreSQL with everything visible, the planner's estimate).
COUNT_CAP = 1000
#: Longest cursor accepted (a float, ":" and a repository name of at most 255 characters).
MAX_CURSOR = 300
#: The repository list shows tag counts up to this, then "1,000+": counting a repository's
#: 100,000 tags on every list view cost 15-20 ms at 1M repositories (issue 24).
TAG_COUNT_CAP = 1000
#: Most index probes of the namespace filter's walk (one per namespace, or per top-level name).
NAMESPACE_PROBES = 2000


@dataclass(frozen=True, slots=True)
class Total:
    """How many repositories a listing holds: exact up to :data:`COUNT_CAP`, else at least
    ``count`` (``estimated``: about ``count``); ``more``: a page follows the one returned."""

    count: int
    exact: bool = True
    estimated: bool = False
    more: bool = False

    @property
    def label(self) -> str:
        if self.exact:
            return f"{self.count:,}"
        return f"about {self.count:,}" if self.estimated else f"{self.count:,}+"


def _parse_cursor(raw: str | None, sort: str) -> tuple[float, str] | None:
    """``(key, name)`` of a cursor from :meth:`UIQueries.cursor`, or None if it is absent or
    malformed (then the listing starts at its first page: a bad link is never an error)."""
    if not raw or len(raw) > MAX_CURSOR or "\x00" in raw:
        return None
    if sort not in ("pushed", "size"):
        return 0.0, raw
    head, sep, name = raw.partition(":")
    if not sep or not name:
        return None
    try:
        key = float(head)
    except ValueError:
        return None
    if key != key or key in (float("inf"), float("-inf")):
        return None
    if sort == "size":
        # compared with a BIGINT column as an integer (a float would cast the column: no index)
        if not key.is_integer() or not 0 <= key < 2**63:
            return None
        return int(key), name
    return key, name


def _row_figures(ids: Sequence[int]) -> Any:
    """(repository id, tag count capped at :data:`TAG_COUNT_CAP` + 1, last push, size) of each
    repository, one statement: per repository a count of at most 1,001 entries of the tags
    key (issue 24: counting a repository's 100,000 tags on every list view), the maximum of
    ``ix_tags_updated`` and the sum of its linked blobs."""
    rid = repositories.c.id
    # (ordered by the key: PostgreSQL would otherwise pick a Seq Scan "until 1,001 rows",
    # which for a repository whose tags lie at the table's end reads the whole table)
    capped = (
        select(tags.c.name)
        .where(tags.c.repository_id == rid)
        .order_by(tags.c.name)
        .limit(TAG_COUNT_CAP + 1)
        .correlate(repositories)
        .subquery()
    )
    count = select(func.count()).select_from(capped).correlate(repositories).scalar_subquery()
    last = select(func.max(tags.c.updated_at)).where(tags.c.repository_id == rid).correlate(repositories).scalar_subquery()
    size = (
        select(func.sum(blobs.c.size))
        .select_from(repository_blobs.join(blobs, blobs.c.digest == repository_blobs.c.digest))
        .where(repository_blobs.c.repository_id == rid)
        .correlate(repositories)
        .scalar_subquery()
    )
    return select(rid, count, last, size).where(rid.in_(list(ids)))


#: PostgreSQL, for the statements of one listing (SET LOCAL: this transaction only).  Custom
#: plans: the page's SQL is the same for every search term (``LIKE $1``), so after five runs a
#: pooled connection's prepared statement may switch to a generic plan, chosen for no term in
#: particular -- measured: a bitmap scan of the trigram index for ``r`` (every name), 125 ms
#: instead of 5.  No parallel workers: starting two for a count of 1,001 rows cost 16 ms.
_PG_LISTING_SETTINGS = text(
    "SELECT set_config('plan_cache_mode', 'force_custom_plan', true), set_config('max_parallel_workers_per_gather', '0', true)"
)


class UIQueries:
    def __init__(self, db: Database) -> None:
        self.db = db
        #: The substring indexes that name a search term's candidates (issue 24).
        self.search = SearchIndex(db)

    # -- visibility ---------------------------------------------------------------------------
    async def public_namespaces(self) -> list[str]:
        async with self.db.read(snapshot=False) as conn:
            return list((await conn.execute(select(namespaces.c.name).where(namespaces.c.public.is_(True)))).scalars())

    async def visible_condition(self, vis: Visibility) -> ColumnElement[bool]:
        if vis.everything:
            return true()
        conds: list[ColumnElement[bool]] = []
        if vis.public_ok:
            # ``public`` as the partial index ix_repositories_public_name states it (migration
            # 0012), with a name range so SQLite can use it as one branch of a MULTI-INDEX OR
            # (a bare ``public = 1`` makes it scan the table: 140 ms vs 0.2 ms at 100,000).
            public: list[ColumnElement[bool]] = [and_(repositories.c.public, self.db.lexical(repositories.c.name) >= "")]
            for ns in await self.public_namespaces():
                public.append(_prefix_range(self.db, ns + "/"))
            conds.append(or_(*public))
        granted = _matches_any(vis.pull_patterns, self.db)
        if vis.scope_patterns is not None:
            granted = and_(granted, _matches_any(vis.scope_patterns, self.db))
        conds.append(granted)
        return or_(*conds)

    # -- repositories -------------------------------------------------------------------------
    def _listing_where(self, visible: ColumnElement[bool], query: str, namespace: str) -> list[ColumnElement[bool]]:
        # The catalog's rule (.listing): a repository without a manifest
        # is not listed, so the UI and /v2/_catalog name the same repositories.
        where: list[ColumnElement[bool]] = [visible, listed()]
        if query:
            where.append(name_contains(query.lower()))
        if namespace:
            # A range on the name index ("ns/" <= name < "ns0", '0' follows '/'), not a LIKE scan.
            name = self.db.lexical(repositories.c.name)
            where += [name >= namespace + "/", name < namespace + "0"]
        return where

    async def list_repositories(
        self,
        visible: ColumnElement[bool],
        *,
        query: str = "",
        namespace: str = "",
        sort: str = "name",
        offset: int = 0,
        limit: int = 50,
        after: str | None = None,
        before: str | None = None,
    ) -> tuple[list[Row], Total]:
        """One page of repositories with tag count, last push and size; and how many there are.

        ``after``/``before``: a key from :meth:`cursor` (the page after that row / before it) --
        keyset pagination, so page 20,000 costs what page 2 does (an OFFSET reads and drops
        every row before it); ``offset`` serves direct page links.  The count stops at
        :data:`COUNT_CAP` (issue 24: an exact ``count(*)`` of 1M rows on every page view);
        past it, :class:`Total` is an estimate or "at least".  One more row than ``limit`` is
        read so the caller knows whether a next page exists (``Total.more``)."""
        async with self.db.read() as conn:
            candidates = await self.search.candidates(query, conn)
            if query and candidates is None and not self.db.is_sqlite:
                # A search that walks the name index.  (A rare term's statements read ids: any
                # plan of them is an index lookup, and a kept generic one saves planning a
                # 2,000-id array each time, 1.5 ms at 1M; without a term no parameter changes
                # the plan's shape.)
                await conn.execute(_PG_LISTING_SETTINGS)
            listing = self._listing_where(visible, query, namespace)
            where = list(listing)
            name = self.db.lexical(repositories.c.name)
            if candidates is not None:
                # A rare term: the few repositories an index names, read by id and sorted
                # (walking the name index in order would test every name: 100-130 ms at 1M).
                where.append(candidates)
                name = self.db.lexical(repositories.c.name.concat(""))
            elif not isinstance(visible, True_):
                # A restricted viewer sees a few ranges of the name index: gather them (BitmapOr /
                # MULTI-INDEX OR) and sort what they hold.  Ordering by the bare column would let the
                # planner walk the whole name index filtering row by row, expecting a page soon
                # (measured: 154 ms at 100,000 repositories for a user with 10 namespaces, 0.3 ms so).
                name = self.db.lexical(repositories.c.name.concat(""))
            cols: list[Any] = [repositories.c.id, repositories.c.name, repositories.c.public]
            mark = _parse_cursor(after if after is not None else before, sort)
            backward = after is None and mark is not None  # (a malformed key: the first page)
            if sort in ("pushed", "size"):
                # Order from the kept figures (ui_repo_stats); a repository not in it yet sorts last.
                key = func.coalesce(ui_repo_stats.c.last_push if sort == "pushed" else ui_repo_stats.c.size, 0)
                q = select(*cols, key.label("sort_key")).select_from(
                    repositories.outerjoin(ui_repo_stats, ui_repo_stats.c.repository_id == repositories.c.id)
                )
                if mark is not None:
                    k, n = mark
                    # (key DESC, name ASC): rows after (k, n) -- or before, going back
                    where.append(or_(key > k, and_(key == k, name < n)) if backward else or_(key < k, and_(key == k, name > n)))
                order = [key.asc(), name.desc()] if backward else [key.desc(), name]
            else:
                q = select(*cols, repositories.c.name.label("sort_key"))
                if mark is not None:
                    where.append(name < mark[1] if backward else name > mark[1])
                order = [name.desc()] if backward else [name]
            # A rare term's first page: its few candidates are all read to be sorted anyway, so
            # they are counted in the same statement (a second pass over them cost 1.7 ms of
            # PostgreSQL's time for 1,500 candidates at 1M).
            whole = candidates is not None and mark is None and not offset
            if whole:
                q = q.add_columns(func.count().over().label("matches"))
            q = q.where(*where).order_by(*order).limit(limit + 1)
            if mark is None and offset:
                q = q.offset(offset)
            fast = None
            if candidates is None and sort in ("pushed", "size") and not (backward and mark is not None and mark[0] <= 0):
                fast = self._by_figure(visible, query, namespace, sort, mark, backward, offset, limit)
            count_where = list(listing)
            counted_from: Any = repositories
            repeats = False
            if candidates is not None:
                count_where.append(candidates)
            elif isinstance(visible, True_) and (source := self.search.count_source(query)) is not None:
                # A common term: count by a walk of the index's matches joined to their rows, which
                # stops at the 1,001st (a name walk would read half the names to find the 1,001st
                # match of a term in one name out of 500; an IN (index rows) reads them all first).
                # Not for a restricted viewer: their few name ranges are the cheaper walk.
                counted_from, matches, repeats = source
                count_where.append(matches)
            counting = select(repositories.c.id).select_from(counted_from).where(*count_where)
            if repeats:
                counting = counting.distinct()  # a name has several grams starting with a character
            count_q = select(func.count()).select_from(counting.limit(COUNT_CAP + 1).subquery())
            rows = []
            for stmt in fast or ():
                rows += (await conn.execute(stmt)).all()
                if len(rows) > limit:
                    break
            if len(rows) <= limit and not backward:
                rows = []  # the page reaches the repositories without a figure: the full query
            if not rows:
                rows = (await conn.execute(q)).all()
            more = len(rows) > limit
            rows = rows[:limit]
            if backward:
                rows.reverse()
            if mark is None and not more and (rows or not offset):
                counted = offset + len(rows)  # a first (or direct) page that holds the end: no count
            elif whole and rows:
                counted = int(rows[0].matches)
            else:
                counted = int((await conn.execute(count_q)).scalar_one())
            total = Total(counted, exact=True, more=more or backward)
            if counted > COUNT_CAP:
                total = Total(COUNT_CAP, exact=False, more=more or backward)
                if isinstance(visible, True_) and not query and not namespace and not self.db.is_sqlite:
                    # The planner's row estimate (VACUUM/ANALYZE keep it): free, and close.
                    est = (
                        await conn.execute(text("SELECT reltuples FROM pg_class WHERE oid = 'repositories'::regclass"))
                    ).scalar()
                    if est is not None and est > COUNT_CAP:
                        total = Total(int(est), exact=False, estimated=True, more=more or backward)
            ids = [int(r.id) for r in rows]
            stats: dict[int, tuple[int, float | None]] = {}
            sizes: dict[int, int] = {}
            if ids:
                for r in await conn.execute(_row_figures(ids)):
                    stats[int(r[0])] = (int(r[1]), r[2])
                    sizes[int(r[0])] = int(r[3] or 0)
        out = []
        for r in rows:
            count, last = stats.get(int(r.id), (0, None))
            out.append(
                Row(
                    name=r.name,
                    public=bool(r.public),
                    tags=min(count, TAG_COUNT_CAP),
                    tags_more=count > TAG_COUNT_CAP,
                    last_push=last,
                    size=sizes.get(int(r.id), 0),
                    sort_key=r.sort_key,
                )
            )
        return out, total

    def _by_figure(
        self,
        visible: ColumnElement[bool],
        query: str,
        namespace: str,
        sort: str,
        mark: tuple[float, str] | None,
        backward: bool,
        offset: int,
        limit: int,
    ) -> list[Any]:
        """The list sorted by last push or size as walks of ``ix_ui_repo_stats_push_name`` /
        ``_size_name`` (figure DESC, name), over the repositories whose figure is above 0.

        Those come first in that order, in the same order as the full query's (which sorts
        every visible repository: 100-200 ms at 100,000); the caller falls back to it for a
        page that reaches the figure-0 tail (no push yet, or not in ``ui_repo_stats`` yet).
        After a key (k, n): first the rows tied at k past n (the index positioned at (k, n)),
        then the rows past k -- one ``(key, name) > (k, n)`` condition would make the index
        walk every row tied at k from the start (thousands of equal sizes)."""
        zero: Any = literal_column("0")
        key = func.coalesce(ui_repo_stats.c.last_push, zero) if sort == "pushed" else ui_repo_stats.c.size
        sname = self.db.lexical(ui_repo_stats.c.name)
        where = [*self._listing_where(visible, query, namespace), key > zero]
        base = select(repositories.c.id, repositories.c.name, repositories.c.public, key.label("sort_key")).select_from(
            ui_repo_stats.join(repositories, repositories.c.id == ui_repo_stats.c.repository_id)
        )
        order = [key.asc(), sname.desc()] if backward else [key.desc(), sname]
        if mark is None:
            q = base.where(*where).order_by(*order).limit(limit + 1)
            return [q.offset(offset) if offset else q]
        k, n = mark
        tied = (  # (one key: ordered by name alone, so SQLite sees the index's order too)
            base.where(*where, key == k, sname < n if backward else sname > n)
            .order_by(sname.desc() if backward else sname)
            .limit(limit + 1)
        )
        past = base.where(*where, key > k if backward else key < k).order_by(*order).limit(limit + 1)
        return [tied, past]

    @staticmethod
    def cursor(row: Row, sort: str) -> str:
        """The key of ``row`` in ``sort`` order, for ``list_repositories(after=/before=)``."""
        if sort in ("pushed", "size"):
            return f"{float(row.sort_key)!r}:{row.name}"
        return str(row.name)

    async def namespaces_of(self, visible: ColumnElement[bool], limit: int = 500) -> list[str]:
        """First path components of the visible repositories (for the namespace filter), sorted.

        Everything visible (administrators): a skip scan of the name index, one probe per
        namespace -- the next listed name at or past ``<namespace>0`` (``'0'`` follows ``'/'``:
        every ``<namespace>/...`` name is jumped over), one per top-level name -- at most
        :data:`NAMESPACE_PROBES` probes, so 1M repositories in 100,000 namespaces cost 500 index
        lookups, not a grouping of every name (issue 24).  A restricted viewer's few ranges
        are grouped as before (what they may see, not the whole table)."""
        if isinstance(visible, True_):
            return sorted(set(await self._namespace_walk(limit)))[:limit]
        name = repositories.c.name
        pos = func.instr(name, "/") if self.db.is_sqlite else func.strpos(name, "/")
        ns = func.substr(name, 1, pos - 1)
        q = select(ns.label("ns")).where(visible, listed(), pos > 0).group_by(ns).order_by(ns).limit(limit)
        async with self.db.read(snapshot=False) as conn:
            return [r.ns for r in await conn.execute(q)]

    async def _namespace_walk(self, limit: int) -> list[str]:
        """The first ``limit`` namespaces of the skip scan, within its first
        :data:`NAMESPACE_PROBES` steps (the walk stops at whichever comes first)."""
        if self.db.is_sqlite:
            pos, c, nxt = "instr({0}, '/')", "", "char(1)"
        else:
            pos, c, nxt = "strpos({0}, '/')", ' COLLATE "C"', "chr(1)"
        # (chr(1): never in a repository name; ``name || chr(1)`` is the least string past it)
        probe = (
            f"(SELECT r.name FROM repositories r WHERE r.name{c} >= {{lo}} "
            f"AND EXISTS (SELECT 1 FROM manifests m WHERE m.repository_id = r.id) ORDER BY r.name{c} LIMIT 1)"
        )
        w_pos = pos.format("w.name")
        step = f"CASE WHEN {w_pos} > 0 THEN substr(w.name, 1, {w_pos} - 1) || '0' ELSE w.name || {nxt} END"
        sql = (
            f"WITH RECURSIVE walk(name) AS (SELECT {probe.format(lo=chr(39) * 2)} "
            f"UNION ALL SELECT {probe.format(lo=step)} FROM walk w WHERE w.name IS NOT NULL) "
            f"SELECT substr(name, 1, {pos.format('name')} - 1) AS ns FROM "
            f"(SELECT name FROM walk WHERE name IS NOT NULL LIMIT {int(NAMESPACE_PROBES)}) s "
            f"WHERE {pos.format('name')} > 0 LIMIT {int(limit)}"
        )
        async with self.db.read(snapshot=False) as conn:
            return [r.ns for r in await conn.execute(text(sql))]

    async def repository(self, name: str) -> dict[str, Any] | None:
        async with self.db.read(snapshot=False) as conn:
            row = (await conn.execute(select(repositories).where(repositories.c.name == name))).first()
        return None if row is None else Row(id=int(row.id), name=row.name, public=bool(row.public))

    async def is_visible(self, visible: ColumnElement[bool], name: str) -> bool:
        async with self.db.read(snapshot=False) as conn:
            q = select(repositories.c.id).where(repositories.c.name == name, visible)
            return (await conn.execute(q)).first() is not None

    # -- tags and manifests -------------------------------------------------------------------
    async def tags_page(
        self,
        repo_id: int,
        *,
        query: str = "",
        offset: int = 0,
        limit: int = 100,
        after: str | None = None,
        before: str | None = None,
    ) -> tuple[list[Row], int]:
        """Tags newest first (by push time, then name byte-wise), with their manifest's digest,
        type, payload (for an index's platforms) and compressed size (sum of the blobs it
        references); and how many tags match.

        ``after``/``before``: a key from :meth:`tag_cursor` (the page after that tag / before
        it) -- keyset pages on ``ix_tags_updated``, so page 1,000 of 100,000 tags costs what
        page 2 does (issue 24: an OFFSET read and sorted every tag before the page).  A
        malformed key is the first page.  ``offset`` serves direct ``page=N`` links: it walks
        only the index's (push time, name, manifest) entries, the manifests are read for the
        page's rows alone."""
        where: list[ColumnElement[bool]] = [tags.c.repository_id == repo_id]
        if query:
            where.append(tags.c.name.like("%" + like_escape(query) + "%", escape="\\"))
        name = self.db.lexical(tags.c.name)
        mark = _parse_cursor(after if after is not None else before, "pushed")
        backward = after is None and mark is not None
        key_cols = (tags.c.name.label("tag"), tags.c.updated_at, tags.c.manifest_id)
        pages: list[Any]
        if mark is None:
            q = select(*key_cols).where(*where).order_by(tags.c.updated_at.desc(), name).limit(limit)
            pages = [q.offset(offset) if offset else q]
        else:
            k, n = float(mark[0]), mark[1]
            # The tags tied at k past n, then those past k: one (updated_at, name) > (k, n)
            # condition would not be a range of the index on PostgreSQL and SQLite alike.  The
            # ties are found by push time and sorted (``name || ''``: SQLite would otherwise
            # walk the (repository, name) key from n, through every later name).
            tie = self.db.lexical(tags.c.name.concat(""))
            if backward:
                tied = select(*key_cols).where(*where, tags.c.updated_at == k, tie < n).order_by(tie.desc())
                past = select(*key_cols).where(*where, tags.c.updated_at > k).order_by(tags.c.updated_at, name.desc())
            else:
                tied = select(*key_cols).where(*where, tags.c.updated_at == k, tie > n).order_by(tie)
                past = select(*key_cols).where(*where, tags.c.updated_at < k).order_by(tags.c.updated_at.desc(), name)
            pages = [tied.limit(limit), past.limit(limit)]
        async with self.db.read() as conn:
            keys: list[Any] = []
            for stmt in pages:
                keys += (await conn.execute(stmt)).all()
                if len(keys) >= limit:
                    break
            keys = keys[:limit]
            if backward:
                keys.reverse()
            total = int((await conn.execute(select(func.count()).select_from(tags).where(*where))).scalar_one())
            mids = sorted({int(r.manifest_id) for r in keys})
            by_id: dict[int, Any] = {}
            if mids:
                for m in await conn.execute(
                    select(
                        manifests.c.id,
                        manifests.c.digest,
                        manifests.c.media_type,
                        manifests.c.size,
                        manifests.c.artifact_type,
                        manifests.c.payload,
                    ).where(manifests.c.id.in_(mids))
                ):
                    by_id[int(m.id)] = m
            sizes = await self._manifest_sizes(conn, repo_id, sorted(by_id), {i: bytes(m.payload) for i, m in by_id.items()})
        out = []
        for r in keys:
            m = by_id.get(int(r.manifest_id))
            if m is None:  # (a foreign key: never; a tag is not shown without its manifest)
                continue
            out.append(
                Row(
                    tag=r.tag,
                    pushed=r.updated_at,
                    digest=m.digest,
                    media_type=m.media_type,
                    manifest_size=int(m.size),
                    artifact_type=m.artifact_type,
                    payload=bytes(m.payload),
                    size=sizes.get(int(m.id), 0),
                )
            )
        return out, total

    @staticmethod
    def tag_cursor(row: Row) -> str:
        """The key of a :meth:`tags_page` row, for ``tags_page(after=/before=)``."""
        return f"{float(row.pushed)!r}:{row.tag}"

    async def _manifest_sizes(self, conn: Any, repo_id: int, mids: Sequence[int], payloads: dict[int, bytes]) -> dict[int, int]:
        """Compressed size per manifest: its blobs; for an index, the sum over its children."""
        if not mids:
            return {}
        sizes: dict[int, int] = {}
        for r in await conn.execute(
            select(manifest_blobs.c.manifest_id, func.sum(blobs.c.size))
            .select_from(manifest_blobs.join(blobs, blobs.c.digest == manifest_blobs.c.digest))
            .where(manifest_blobs.c.manifest_id.in_(mids))
            .group_by(manifest_blobs.c.manifest_id)
        ):
            sizes[int(r[0])] = int(r[1] or 0)
        # Indexes: sum of their children's blobs (children are looked up by digest, one query).
        children: dict[int, list[str]] = {}
        for mid in mids:
            if mid in sizes:
                continue
            try:
                doc = json.loads(payloads.get(mid, b"") or b"{}")
            except ValueError:
                continue
            if isinstance(doc, dict) and isinstance(doc.get("manifests"), list):
                children[mid] = [
                    str(m["digest"]) for m in doc["manifests"] if isinstance(m, dict) and isinstance(m.get("digest"), str)
                ]
        wanted = sorted({d for ds in children.values() for d in ds})
        if wanted:
            child_sizes: dict[str, int] = {}
            for r in await conn.execute(
                select(manifests.c.digest, func.sum(blobs.c.size))
                .select_from(
                    manifests.join(manifest_blobs, manifest_blobs.c.manifest_id == manifests.c.id).join(
                        blobs, blobs.c.digest == manifest_blobs.c.digest
                    )
                )
                .where(manifests.c.repository_id == repo_id, manifests.c.digest.in_(wanted[:1000]))
                .group_by(manifests.c.digest)
            ):
                child_sizes[r[0]] = int(r[1] or 0)
            for mid, ds in children.items():
                sizes[mid] = sum(child_sizes.get(d, 0) for d in ds)
        return sizes

    async def referrers_of(self, repo_id: int, subjects: Sequence[str]) -> dict[str, list[dict[str, Any]]]:
        """Manifests whose ``subject`` is one of ``subjects`` (signatures, SBOMs ...), by subject."""
        if not subjects:
            return {}
        q = (
            select(
                manifests.c.digest,
                manifests.c.media_type,
                manifests.c.size,
                manifests.c.artifact_type,
                manifests.c.subject_digest,
                manifests.c.annotations,
                manifests.c.created_at,
            )
            .where(manifests.c.repository_id == repo_id, manifests.c.subject_digest.in_(list(subjects)[:1000]))
            .order_by(manifests.c.created_at)
            .limit(2000)
        )
        out: dict[str, list[dict[str, Any]]] = {}
        async with self.db.read(snapshot=False) as conn:
            for r in await conn.execute(q):
                try:
                    ann = json.loads(r.annotations) if r.annotations else {}
                except ValueError:
                    ann = {}
                out.setdefault(r.subject_digest, []).append(
                    Row(
                        digest=r.digest,
                        media_type=r.media_type,
                        size=int(r.size),
                        artifact_type=r.artifact_type or r.media_type,
                        annotations=ann or {},
                        created=r.created_at,
                    )
                )
        return out

    async def tag_digest(self, repo_id: int, tag: str) -> str | None:
        q = (
            select(manifests.c.digest)
            .select_from(tags.join(manifests, manifests.c.id == tags.c.manifest_id))
            .where(tags.c.repository_id == repo_id, tags.c.name == tag)
        )
        async with self.db.read(snapshot=False) as conn:
            digest: str | None = (await conn.execute(q)).scalar()
            return digest

    async def manifest(self, repo_id: int, digest: str) -> dict[str, Any] | None:
        q = select(manifests).where(manifests.c.repository_id == repo_id, manifests.c.digest == digest)
        async with self.db.read() as conn:
            r = (await conn.execute(q)).first()
            if r is None:
                return None
            tag_names = list(
                (
                    await conn.execute(select(tags.c.name).where(tags.c.manifest_id == r.id).order_by(tags.c.name).limit(200))
                ).scalars()
            )
            sizes = await self._manifest_sizes(conn, repo_id, [int(r.id)], {int(r.id): bytes(r.payload)})
            parents = list(
                (
                    await conn.execute(
                        select(manifests.c.digest)
                        .select_from(manifest_children.join(manifests, manifests.c.id == manifest_children.c.manifest_id))
                        .where(manifest_children.c.child_digest == r.digest, manifests.c.repository_id == repo_id)
                        .limit(20)
                    )
                ).scalars()
            )
        return Row(
            parents=parents,
            id=int(r.id),
            digest=r.digest,
            media_type=r.media_type,
            size=int(r.size),
            payload=bytes(r.payload),
            artifact_type=r.artifact_type,
            subject=r.subject_digest,
            created=r.created_at,
            tags=tag_names,
            total_size=sizes.get(int(r.id), 0),
        )

    async def blob_sizes(self, digests: Sequence[str]) -> dict[str, int]:
        if not digests:
            return {}
        async with self.db.read(snapshot=False) as conn:
            return {
                r.digest: int(r.size)
                for r in await conn.execute(select(blobs.c.digest, blobs.c.size).where(blobs.c.digest.in_(list(digests)[:1000])))
            }

    # -- charts -------------------------------------------------------------------------------
    async def storage_by_repository(self, visible: ColumnElement[bool], limit: int = 2000) -> list[tuple[str, int]]:
        """(repository, bytes of blobs linked to it), largest first, at most ``limit``.

        Read from the kept figures (``ui_repo_stats.size``, the sum the list's size sort
        uses, refreshed from events and every 10 minutes) by walking ``(size DESC, name)``:
        summing every repository's links at each page view took 4.5 s at 1M repositories
        (issue 24).  Repositories with nothing linked are left out, as before."""
        sname = self.db.lexical(ui_repo_stats.c.name)
        q = (
            select(repositories.c.name, ui_repo_stats.c.size)
            .select_from(ui_repo_stats.join(repositories, repositories.c.id == ui_repo_stats.c.repository_id))
            .where(ui_repo_stats.c.size > 0, visible)
            .order_by(ui_repo_stats.c.size.desc(), sname)
            .limit(limit)
        )
        async with self.db.read(snapshot=False) as conn:
            return [(r.name, int(r.size or 0)) for r in await conn.execute(q)]

    async def activity(
        self, visible: ColumnElement[bool], since_bucket: int, repository: str | None = None
    ) -> list[tuple[int, int, int]]:
        """(hour bucket, pushes, pulls) since ``since_bucket``, summed over visible repositories."""
        q = (
            select(ui_activity.c.bucket, func.sum(ui_activity.c.pushes), func.sum(ui_activity.c.pulls))
            .select_from(ui_activity.join(repositories, repositories.c.name == ui_activity.c.repository))
            .where(ui_activity.c.bucket >= since_bucket, visible)
            .group_by(ui_activity.c.bucket)
            .order_by(ui_activity.c.bucket)
        )
        if repository is not None:
            q = q.where(ui_activity.c.repository == repository)
        async with self.db.read(snapshot=False) as conn:
            return [(int(r[0]), int(r[1] or 0), int(r[2] or 0)) for r in await conn.execute(q)]

    async def add_activity(self, counts: dict[tuple[int, str], tuple[int, int]]) -> None:
        """Add (pushes, pulls) to each (bucket, repository) row, creating rows as needed."""
        if not counts:
            return
        async with self.db.write() as conn:
            for (bucket, repo), (pushes, pulls) in sorted(counts.items()):
                ins = self.db.insert(ui_activity).values(bucket=bucket, repository=repo, pushes=pushes, pulls=pulls)
                await conn.execute(
                    ins.on_conflict_do_update(
                        index_elements=["bucket", "repository"],
                        set_={"pushes": ui_activity.c.pushes + pushes, "pulls": ui_activity.c.pulls + pulls},
                    )
                )

    async def prune_activity(self, before_bucket: int) -> int:
        async with self.db.write() as conn:
            res = await conn.execute(delete(ui_activity).where(ui_activity.c.bucket < before_bucket))
        return int(res.rowcount or 0)

    # -- sort figures -------------------------------------------------------------------------
    def _stats_select(self, where: ColumnElement[bool] | None = None) -> Any:
        tag_count = select(func.count()).select_from(tags).where(tags.c.repository_id == repositories.c.id).scalar_subquery()
        last = select(func.max(tags.c.updated_at)).where(tags.c.repository_id == repositories.c.id).scalar_subquery()
        size = (
            select(func.coalesce(func.sum(blobs.c.size), 0))
            .select_from(repository_blobs.join(blobs, blobs.c.digest == repository_blobs.c.digest))
            .where(repository_blobs.c.repository_id == repositories.c.id)
            .scalar_subquery()
        )
        q = select(repositories.c.id, tag_count, last, size, repositories.c.name)
        return q.where(where) if where is not None else q

    async def refresh_stats(self, names: Sequence[str] | None = None) -> None:
        """Recompute the sort figures of ``names`` (None: of every repository).

        An upsert from one ``INSERT ... SELECT``, so replicas refreshing at the same time
        never collide on the key; rows of deleted repositories go with them (ON DELETE
        CASCADE).  Runs on the write connection (SQLite: aiosqlite's thread), so a full
        refresh of a big registry does not hold up the event loop.
        """
        cols = ["repository_id", "tags", "last_push", "size", "name"]

        def upsert(where: ColumnElement[bool]) -> Any:
            ins = self.db.insert(ui_repo_stats).from_select(cols, self._stats_select(where))
            return ins.on_conflict_do_update(
                index_elements=["repository_id"],
                set_={
                    "tags": ins.excluded.tags,
                    "last_push": ins.excluded.last_push,
                    "size": ins.excluded.size,
                    "name": ins.excluded.name,
                },
                # Only rows whose figures changed: the full refresh every 10 minutes otherwise
                # rewrites every row and its four index entries (1M repositories: 10-35 s).
                where=or_(*(getattr(ui_repo_stats.c, c).is_distinct_from(getattr(ins.excluded, c)) for c in cols[1:])),
            )

        async with self.db.write() as conn:
            if names is None:
                # (SQLite needs a WHERE in an INSERT ... SELECT ... ON CONFLICT: "true" it is)
                await conn.execute(upsert(true()))
                return
            for chunk in (list(names)[i : i + 500] for i in range(0, len(names), 500)):
                await conn.execute(upsert(repositories.c.name.in_(chunk)))

    # -- sessions -----------------------------------------------------------------------------
    async def create_session(
        self, sid_hash: str, user: str, token_id: str | None, csrf: str, ttl: float, credential: str | None = None
    ) -> None:
        now = time.time()
        async with self.db.write() as conn:
            await conn.execute(
                ui_sessions.insert().values(
                    id=sid_hash,
                    username=user,
                    token_id=token_id,
                    credential=credential,
                    csrf=csrf,
                    created_at=now,
                    expires_at=now + ttl,
                )
            )

    async def get_session(self, sid_hash: str) -> dict[str, Any] | None:
        q = select(ui_sessions).where(ui_sessions.c.id == sid_hash, ui_sessions.c.expires_at > time.time())
        async with self.db.read(snapshot=False) as conn:
            r = (await conn.execute(q)).first()
        if r is None:
            return None
        return {
            "user": r.username,
            "token_id": r.token_id,
            "credential": r.credential,
            "csrf": r.csrf,
            "created_at": r.created_at,
        }

    async def delete_session(self, sid_hash: str) -> None:
        async with self.db.write() as conn:
            await conn.execute(delete(ui_sessions).where(ui_sessions.c.id == sid_hash))

    async def delete_sessions_of(self, user: str) -> None:
        async with self.db.write() as conn:
            await conn.execute(delete(ui_sessions).where(ui_sessions.c.username == user))

    async def prune_sessions(self) -> int:
        async with self.db.write() as conn:
            res = await conn.execute(delete(ui_sessions).where(ui_sessions.c.expires_at <= time.time()))
        return int(res.rowcount or 0)

    async def touch_session(self, sid_hash: str, expires_at: float) -> None:
        async with self.db.write() as conn:
            await conn.execute(update(ui_sessions).where(ui_sessions.c.id == sid_hash).values(expires_at=expires_at))
