"""Which repositories a search term can match, read from the database's substring indexes.

The web UI's search is a substring match (``name LIKE '%term%'``), which a B-tree cannot serve:
a rare term made the list walk every name (52-130 ms at 1M repositories, issue 24).  The
indexes only *name candidates*; the listing keeps its ``LIKE``, so its rows are the ``LIKE``'s
exactly whichever path served them.

* Three characters or more: SQLite's FTS5 trigram table (migration 0017); PostgreSQL's
  ``pg_trgm`` GIN index (0016), which the planner uses by itself.
* One or two characters (no trigram holds them; migration 0018): SQLite's
  ``repository_name_grams`` table of two-character substrings; PostgreSQL's GIN index on
  ``moorage_name_grams(name)``, whose rarity is read from the planner's statistics first (a GIN
  scan cannot stop early: a gram in every name costs 40 ms to read, where the name walk finds a
  page of a common term at once).

A term naming more than :data:`CANDIDATES` repositories is common: the name walk finds its page
soon, and the caller walks (``candidates`` returns None).
"""

from __future__ import annotations

import functools
import time
from typing import Any

from sqlalchemy import (
    Integer,
    Text,
    TypeDecorator,
    and_,
    any_,
    bindparam,
    cast,
    column,
    func,
    literal,
    literal_column,
    select,
    table,
    text,
    type_coerce,
)
from sqlalchemy.sql import FromClause
from sqlalchemy.sql.elements import ColumnElement

from ..metadata.db import Database
from ..metadata.tables import NAME_GRAMS_INDEX, REPOSITORIES_FTS, REPOSITORY_NAME_GRAMS, repositories

#: Most repositories an index may name for the list to read them by id and sort them (a few
#: ms); a term naming more is common enough that the walk of the name index finds a page soon
#: (at least one name in 500 matches at 1M repositories).
CANDIDATES = 2000
#: Shortest term the trigram indexes serve (one trigram); shorter ones use the gram index.
TRIGRAM_MIN_CHARS = 3
#: PostgreSQL: a table this small is walked (the planner's statistics may not exist yet).
GRAM_MIN_ROWS = 20_000
#: PostgreSQL: how long the gram frequencies read from ``pg_stats`` are kept (seconds).  They
#: only choose between two paths of the same result, so a stale figure costs time, not rows.
GRAM_STATS_TTL = 300.0


@functools.cache
def _ids_type() -> Any:
    """PostgreSQL ``integer[]`` handed to and from asyncpg as it is (which encodes and decodes
    it in C): SQLAlchemy's ARRAY type checks every element in Python, 3 ms for 2,000 ids.
    (Built on first use: the embedded server loads no PostgreSQL code.)"""
    from sqlalchemy.dialects.postgresql import ARRAY

    class IdArray(TypeDecorator[list[int]]):
        impl = ARRAY(Integer)
        cache_ok = True

        def bind_processor(self, dialect: Any) -> None:
            return None

        def result_processor(self, dialect: Any, coltype: Any) -> None:
            return None

    return IdArray()


#: PostgreSQL, for the rest of the listing's transaction (SET LOCAL).
_NO_PARALLEL = text("SELECT set_config('max_parallel_workers_per_gather', '0', true)")

_fts = table(REPOSITORIES_FTS, column("rowid", Integer))
_grams = table(REPOSITORY_NAME_GRAMS, column("gram"), column("repository_id", Integer))


def like_escape(text: str) -> str:
    """``text`` literal in a ``LIKE`` pattern whose escape character is ``\\``."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def name_contains(term: str) -> ColumnElement[bool]:
    """The search itself: the repository's name contains ``term`` (the caller lowers it)."""
    return repositories.c.name.like("%" + like_escape(term) + "%", escape="\\")


def fts_phrase(query: str) -> str:
    """``query`` as one FTS5 phrase: every character literal (a ``"`` doubled), so the
    trigram tokenizer sees exactly the text and MATCH names the rows containing it."""
    return '"' + query.replace('"', '""') + '"'


def uses_trigrams(term: str) -> bool:
    """Whether a trigram index can serve the substring search of ``term`` (lowered): three
    characters or more, and no NUL (FTS5 reads its query up to a NUL)."""
    return len(term) >= TRIGRAM_MIN_CHARS and "\x00" not in term


def uses_grams(term: str) -> bool:
    """Whether the gram index (0018) serves ``term`` (lowered): one or two characters, no NUL
    (SQLite's ``LIKE`` and ``length()`` stop at a NUL, PostgreSQL's text cannot hold one)."""
    return 0 < len(term) < TRIGRAM_MIN_CHARS and "\x00" not in term


def _next_code_point(c: str) -> str | None:
    """The character after ``c`` in code point (= UTF-8 byte) order, skipping the surrogates
    (which cannot be encoded); None after the last one."""
    n = ord(c) + 1
    if 0xD800 <= n <= 0xDFFF:
        n = 0xE000
    return chr(n) if n <= 0x10FFFF else None


def sqlite_gram_condition(term: str) -> ColumnElement[bool]:
    """SQLite: the rows of ``repository_name_grams`` of the names containing ``term`` (lowered,
    :func:`uses_grams`): the gram itself for two characters, every gram starting with it for
    one (a name's last character has the gram ``c || char(1)``)."""
    gram = _grams.c.gram
    if len(term) == 2:
        return gram == term
    upper = _next_code_point(term)
    return and_(gram >= term, gram < upper) if upper is not None else gram >= term


class SearchIndex:
    """The substring indexes of one database, looked up once; :meth:`candidates` per search."""

    def __init__(self, db: Database) -> None:
        self.db = db
        #: False: never use an index (tests compare both paths).
        self.enabled = True
        #: SQLite: 0017's trigram table / 0018's gram table exist; PostgreSQL: 0018's gram
        #: index exists (None: not looked up yet).
        self._fts: bool | None = None
        self._grams: bool | None = None
        #: PostgreSQL: (read at, gram -> estimated rows, rows in the table)
        self._stats: tuple[float, dict[str, float], float] | None = None

    async def _look_up(self) -> None:
        if self._fts is not None and self._grams is not None:
            return
        async with self.db.read(snapshot=False) as conn:
            if self.db.is_sqlite:
                q = text("SELECT name FROM sqlite_master WHERE type = 'table' AND name IN (:f, :g)")
                found = set((await conn.execute(q, {"f": REPOSITORIES_FTS, "g": REPOSITORY_NAME_GRAMS})).scalars())
                self._fts, self._grams = REPOSITORIES_FTS in found, REPOSITORY_NAME_GRAMS in found
            else:
                q = text("SELECT 1 FROM pg_indexes WHERE schemaname = current_schema() AND indexname = :i")
                self._fts = False  # pg_trgm serves LIKE through the planner
                self._grams = (await conn.execute(q, {"i": NAME_GRAMS_INDEX})).first() is not None

    async def candidates(self, query: str, conn: Any) -> ColumnElement[bool] | None:
        """A condition on ``repositories`` holding the few whose name may contain ``query``
        (a superset of the matches, read by id) -- or None: no index serves the term, or it
        is common (over :data:`CANDIDATES` names).

        Run on the listing's own connection (one snapshot for the probe and the page).
        Rarity is tried first with a read that stops at :data:`CANDIDATES` + 1 index rows
        (PostgreSQL: after the statistics say so).  SQLite's condition then reads the index
        again inside the listing's own statements (no list of ids bound twice into them);
        PostgreSQL's is the ids read, as one array (see :meth:`_postgres_candidates`)."""
        term = query.lower()
        if not term or not self.enabled:
            return None
        await self._look_up()
        if not self.db.is_sqlite:
            return await self._postgres_candidates(term, conn)
        index = self._sqlite_index(term)
        if index is None:
            return None
        id_column, matches, repeats = index
        ids = select(id_column).where(matches)
        if repeats:
            ids = ids.distinct()  # a name has several grams starting with the character
        found = len((await conn.execute(ids.limit(CANDIDATES + 1))).all())
        return repositories.c.id.in_(ids) if found <= CANDIDATES else None

    def _sqlite_index(self, term: str) -> tuple[Any, ColumnElement[bool], bool] | None:
        """SQLite: the index serving ``term`` (lowered) as (its repository id column, the
        condition naming the term's names, whether an id can be named twice) -- or None."""
        if uses_trigrams(term) and self._fts:
            return _fts.c.rowid, literal_column(REPOSITORIES_FTS).op("MATCH")(fts_phrase(term)), False
        if uses_grams(term) and self._grams:
            return _grams.c.repository_id, sqlite_gram_condition(term), len(term) == 1
        return None

    async def _postgres_candidates(self, term: str, conn: Any) -> ColumnElement[bool] | None:
        """PostgreSQL, a term of one or two characters: the ids of its repositories, read by a
        bitmap scan of the gram index -- when the index's statistics say the term is rare:
        a GIN scan cannot stop early (a gram in every name costs about 40 ms to read), where
        the name walk finds a common term's page at once.  (Longer terms: the planner
        chooses between ``pg_trgm``'s index and the name walk; an explicit probe there was
        measured slower, 12-15 ms against 8-9 for the ``r0050`` kind of term.)"""
        if not (uses_grams(term) and self._grams):
            return None
        estimate = await self._gram_estimate(term, conn)
        if estimate is None or estimate > CANDIDATES:
            return None
        # The function's COST (0018) makes a scan testing it on every row (30 us each: 30 s at
        # 1M) the planner's last choice, whatever its own estimate of the term.
        from sqlalchemy.dialects.postgresql import array

        matches = func.moorage_name_grams(repositories.c.name).op("@>")(array([cast(literal(term), Text)]))
        await conn.execute(_NO_PARALLEL)  # two workers started for 1,500 index entries: slower
        found = select(repositories.c.id).where(matches).limit(CANDIDATES + 1).subquery()
        ids = (await conn.execute(select(type_coerce(func.array_agg(found.c.id), _ids_type())))).scalar_one() or []
        if len(ids) > CANDIDATES:
            return None
        # The ids, as one array parameter: the planner then knows how many rows it reads.  With
        # the gram condition itself in the listing it estimated a gram missing from its
        # statistics at half the rarest one listed -- 20,000 rows at 1M -- and hashed every
        # manifest to join them (365 ms); with the probe as a subquery it may scan the table
        # with the LIKE, expecting 3 rows (seen at 25,000 repositories).
        return repositories.c.id == any_(bindparam("candidate_ids", ids, type_=_ids_type()))

    async def _gram_estimate(self, term: str, conn: Any) -> float | None:
        """PostgreSQL: about how many names hold ``term`` as a gram, from the statistics
        ANALYZE keeps of the gram index (a gram missing from its most common elements is rarer
        than the least common listed one: at most ~0.1 % of the rows).  None: a small or
        never analyzed table -- walk the names."""
        now = time.monotonic()
        if self._stats is None or now - self._stats[0] > GRAM_STATS_TTL:
            q = text(
                "SELECT c.reltuples, s.most_common_elems::text::text[], s.most_common_elem_freqs "
                "FROM pg_class c LEFT JOIN pg_stats s ON s.schemaname = current_schema() AND s.tablename = :i "
                "WHERE c.oid = 'repositories'::regclass"
            )
            row = (await conn.execute(q, {"i": NAME_GRAMS_INDEX})).first()
            rows = float(row[0]) if row is not None and row[0] is not None else -1.0
            elems, freqs = (row[1] or [], row[2] or []) if row is not None else ([], [])
            self._stats = (now, {str(e): float(f) * rows for e, f in zip(elems, freqs, strict=False)}, rows)
        _, estimates, rows = self._stats
        if rows < GRAM_MIN_ROWS or not estimates:
            return None
        return estimates.get(term, 0.0)

    def count_source(self, query: str) -> tuple[FromClause, ColumnElement[bool], bool] | None:
        """SQLite, a common term (after :meth:`candidates` said so): what to count the matches
        from, index rows first -- (joined rows, condition, whether ids repeat).  The count
        stops at its cap, so it reads ~1,001 index rows; a name walk would read half the names
        to find the 1,001st match of a term in one name out of 500.  None: count by the walk."""
        if not self.enabled or not self.db.is_sqlite:
            return None
        index = self._sqlite_index(query.lower())
        if index is None:
            return None
        id_column, matches, repeats = index
        return id_column.table.join(repositories, repositories.c.id == id_column), matches, repeats
