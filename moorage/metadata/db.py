"""Engines, transactions and migrations; the only place where SQLite and PostgreSQL differ.

SQLite: WAL mode, foreign keys on; reads run synchronously on the event loop (``BEGIN``
deferred, concurrent under WAL), writes use ``BEGIN IMMEDIATE`` on the one connection of the
process's writer thread (:mod:`.writer`: one thread hop per transaction, group commit, an
``flock`` queue across processes), so a write transaction never has to upgrade a read lock
(the classic SQLITE_BUSY deadlock) and writers queue without spinning.
PostgreSQL: asyncpg engines; writes rely on row locks (``FOR SHARE``/``FOR UPDATE``).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy import Connection, create_engine, event, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import AsyncAdaptedQueuePool

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

from .errors import translated, translation
from .schema_version import MIGRATIONS, SchemaOutOfDate, script_head
from .writer import SQLiteWriter

T = TypeVar("T")

#: A parameter of a hot read (:meth:`Database.first`) that the caller must give.
_REQUIRED = object()
#: PostgreSQL advisory-lock key serialising concurrent ``migrate`` runs ("moorage" in ASCII).
_MIGRATION_LOCK_KEY = 0x6D6F6F72616765


class Database:
    def __init__(self, url: str, *, pool_size: int = 10) -> None:
        self.url = url
        #: id(statement) -> (statement, SQL, parameter names and defaults), None: the pooled path.
        self._hot_statements: dict[int, tuple[Any, str, tuple[tuple[str, Any], ...]] | None] = {}
        #: The same for PostgreSQL's :meth:`all` (asyncpg's SQL).
        self._pg_statements: dict[int, tuple[Any, str, tuple[tuple[str, Any], ...]] | None] = {}
        self.is_sqlite = url.startswith("sqlite")
        if url.startswith("postgresql"):
            from ..extras import require

            require("postgres", "a PostgreSQL database")
        if self.is_sqlite:
            path = url.split(":///", 1)[1]
            if path and path != ":memory:":
                from ..filemodes import secure_sqlite

                secure_sqlite(Path(path))  # 0600 from creation: it holds the signing key
            # The aiosqlite engines are made on first use (``read_engine``/``write_engine``): a
            # command that only reads never imports SQLAlchemy's asyncio extension and the ORM it
            # pulls in (~7 MiB, a seventh of a command's start-up).
            self._sqlite_pool_size = pool_size
            #: A database file (not ``:memory:``, whose every connection is another database):
            #: :meth:`first` may keep a connection of its own.
            self._hot_file = bool(path) and path != ":memory:" and not path.startswith("file:")
            # Reads run synchronously on the event loop: an indexed SQLite read under WAL takes
            # tens of microseconds and never waits for writers, while a trip through aiosqlite's
            # thread costs far more than the query (measured: manifest GET 5x faster).
            self.sync_read_engine: Any = create_engine(
                "sqlite:///" + path,
                connect_args={"check_same_thread": False, "timeout": ON_LOOP_BUSY_MS / 1000},
                pool_size=2,
                max_overflow=8,
            )
            _sqlite_pragmas(self.sync_read_engine, immediate=False, busy_ms=ON_LOOP_BUSY_MS)
            # Single-statement reads (the hot lookups) skip BEGIN/ROLLBACK: in autocommit a
            # SELECT is its own transaction with one consistent snapshot -- what PostgreSQL
            # reads get below.  35-45% less CPU per lookup.
            self.sync_autocommit_engine: Any = create_engine(
                "sqlite:///" + path,
                connect_args={"check_same_thread": False, "timeout": ON_LOOP_BUSY_MS / 1000},
                pool_size=2,
                max_overflow=8,
            )
            _sqlite_pragmas(self.sync_autocommit_engine, immediate=False, begin=False, busy_ms=ON_LOOP_BUSY_MS)
            # Writes: one thread, one connection, group commit (writer.py).
            self.writer: SQLiteWriter | None = SQLiteWriter(
                _sqlite_writer_engine(path), lock_path=Path(path + ".writer-lock") if path and path != ":memory:" else None
            )
        else:
            self.writer = None
            self.sync_read_engine = self.sync_autocommit_engine = None
            # Reads without a snapshot: autocommit, no pre-ping -- a transaction would buy a
            # single statement nothing but the BEGIN/ROLLBACK round trips (and a ping one more):
            # 3-4x more manifest lookups per second without them.  A connection that died with
            # the server fails one read, and SQLAlchemy then recycles the whole pool.
            self.read_engine = create_async_engine(url, pool_size=pool_size, max_overflow=pool_size, isolation_level="AUTOCOMMIT")
            # Snapshot reads (several statements seeing one state, e.g. the GC's index load):
            # REPEATABLE READ -- PostgreSQL's default READ COMMITTED takes a new snapshot per
            # statement.  Read-only, so it never fails with serialization errors.  Same pool.
            self.snapshot_engine = self.read_engine.execution_options(isolation_level="REPEATABLE READ")
            writers = max(2, pool_size // 2)
            # No pre-ping (a round trip per transaction): run_write() re-runs a transaction
            # whose connection turned out dead before it committed anything.
            self.write_engine = create_async_engine(url, pool_size=writers, max_overflow=writers)

    _read_engine: AsyncEngine | None = None
    _write_engine: AsyncEngine | None = None

    @property
    def read_engine(self) -> AsyncEngine:
        if self._read_engine is None:  # SQLite: made on first use
            self._read_engine = self._sqlite_engine(self.url, immediate=False, pool_size=self._sqlite_pool_size)
        return self._read_engine

    @read_engine.setter
    def read_engine(self, engine: AsyncEngine) -> None:
        self._read_engine = engine

    @property
    def write_engine(self) -> AsyncEngine:
        if self._write_engine is None:  # SQLite: made on first use
            self._write_engine = self._sqlite_engine(self.url, immediate=True, pool_size=1)
        return self._write_engine

    @write_engine.setter
    def write_engine(self, engine: AsyncEngine) -> None:
        self._write_engine = engine

    @staticmethod
    def _sqlite_engine(url: str, *, immediate: bool, pool_size: int) -> AsyncEngine:
        engine = create_async_engine(
            url,
            poolclass=AsyncAdaptedQueuePool,
            pool_size=pool_size,
            max_overflow=0 if immediate else pool_size,
            connect_args={"timeout": 60},
        )
        _sqlite_pragmas(engine.sync_engine, immediate=immediate)
        return engine

    # -- transactions ---------------------------------------------------------------------
    @contextlib.asynccontextmanager
    async def read(self, *, snapshot: bool = True) -> AsyncIterator[Any]:
        """A read-only transaction.  Callers must not await anything but ``execute`` inside it.

        ``snapshot=False`` is for reads whose statements need not see one snapshot together
        (one statement, typically): on SQLite they then run without BEGIN/ROLLBACK.
        """
        engine = self.sync_read_engine if snapshot else self.sync_autocommit_engine
        with translated():  # outages as DatabaseUnavailable (moorage.metadata.errors)
            if engine is not None:
                with engine.connect() as conn:
                    yield _SyncReader(conn)
                return
            async with (self.snapshot_engine if snapshot else self.read_engine).connect() as conn:
                yield conn

    async def first(self, statement: Any, params: dict[str, Any]) -> Any:
        """The first row of one read statement (None if none), as :meth:`read` with
        ``snapshot=False`` would give it -- to unpack or index, not to read by name -- for the
        reads every manifest GET and blob HEAD makes.

        SQLite (a database file): the statement, compiled once, runs on a connection of the
        autocommit engine kept for these reads (same pragmas, same busy timeout), without the
        pool, the ``Connection`` and the result objects -- about a third of a manifest GET's
        CPU went to them.  A statement whose parameters or columns need SQLAlchemy's type
        processing takes the pooled path.  Errors are SQLAlchemy's, translated as :meth:`read`
        translates them (outages as DatabaseUnavailable); the connection is dropped after one.
        """
        try:
            hot = self._hot_sql(statement)
            if hot is not None:
                values = [params.get(name, default) for name, default in hot[2]]
                if _REQUIRED not in values:  # else the pooled path says what is missing, as before
                    return self._hot_first(hot[1], values)
            engine = self.sync_autocommit_engine
            if engine is not None:
                with engine.connect() as conn:
                    return conn.execute(statement, params).first()
            async with self.read_engine.connect() as aconn:
                return (await aconn.execute(statement, params)).first()
        except Exception as exc:  # outages as DatabaseUnavailable, as in read()
            error = translation(exc)
            if error is None:
                raise
            raise error from exc

    async def all(self, statement: Any, params: dict[str, Any]) -> list[Any]:
        """Every row of one read statement, as :meth:`read` with ``snapshot=False`` would give
        them -- to unpack or index, not to read by name -- for a listing read page by page
        (``/v2/_catalog``: 1,000 rows a page).

        PostgreSQL: the statement, compiled once, runs on a pooled connection's asyncpg
        connection directly (asyncpg prepares it once per connection), without SQLAlchemy's
        ``Connection``, cursor and ``Row`` objects -- a third of the catalog page's time in
        this process went to them (0.6 of 1.9 ms at 1,000 rows).  A statement whose
        parameters or columns need SQLAlchemy's type processing takes the pooled path, as does
        SQLite (whose reads are in-process and cheap already).  Errors are raised as
        SQLAlchemy would have raised them, then translated as :meth:`read` translates them (a
        lost connection: DatabaseUnavailable, and the pool renewed as SQLAlchemy renews it).
        """
        hot = self._pg_sql(statement)
        if hot is not None:
            values = [params.get(name, default) for name, default in hot[2]]
            if _REQUIRED not in values:  # else the pooled path says what is missing
                return await self._pg_all(hot[1], values)
        with translated():
            engine = self.sync_autocommit_engine
            if engine is not None:
                with engine.connect() as conn:
                    return list(conn.execute(statement, params).all())
            async with self.read_engine.connect() as aconn:
                return list((await aconn.execute(statement, params)).all())

    def _pg_sql(self, statement: Any) -> tuple[Any, str, tuple[tuple[str, Any], ...]] | None:
        """(statement, asyncpg SQL, parameter names and defaults) of a plain read statement on
        PostgreSQL (None: SQLite, or parameters/columns that need type processing)."""
        if self.is_sqlite:
            return None
        return _cached_plain_sql(self._pg_statements, statement, self.read_engine.dialect)

    async def _pg_all(self, sql: str, values: list[Any]) -> list[Any]:
        from sqlalchemy.util import greenlet_spawn

        with translated():  # the pool's own errors (checkout timeout, connect refused)
            fairy = await self.read_engine.raw_connection()
        try:
            rows: list[Any] = await fairy.driver_connection.fetch(sql, *values)  # type: ignore[union-attr]
        except Exception as exc:
            adapter = fairy.dbapi_connection
            dialect = self.read_engine.dialect
            try:  # the asyncpg dialect's own translation into its DB-API exceptions
                adapter._handle_exception(exc)  # type: ignore[union-attr]  # noqa: SLF001
                adapted: Exception = exc
            except Exception as dbapi_error:  # noqa: BLE001 - re-raised below, wrapped
                adapted = dbapi_error
            lost = bool(dialect.is_disconnect(adapted, adapter, None))  # type: ignore[arg-type]
            wrapped = DBAPIError.instance(
                sql, values, adapted, dialect.loaded_dbapi.Error, connection_invalidated=lost, dialect=dialect
            )
            if lost:  # as SQLAlchemy does: this connection closed (terminated, no waiting), and
                # every other one of its generation replaced at its next checkout (a server restart
                # costs one failed read, not one per pooled connection)
                self.read_engine.sync_engine.pool._invalidate(fairy, wrapped)  # noqa: SLF001
            fairy.close()
            error = translation(wrapped)
            raise (error or wrapped) from exc
        except BaseException:  # cancelled mid-query: the connection's state is unknown
            fairy.invalidate()
            fairy.close()
            raise
        await greenlet_spawn(fairy.close)  # back to the pool (its reset may need the loop)
        return rows

    #: A SQLite database file: :meth:`first` keeps a connection of its own (set in ``__init__``).
    _hot_file = False
    _hot_conn: Any = None
    #: The thread whose reads use the connection (the first to ask: the server's event loop).
    _hot_thread: int | None = None

    def _hot_sql(self, statement: Any) -> tuple[Any, str, tuple[tuple[str, Any], ...]] | None:
        if self.sync_autocommit_engine is None or not self._hot_file:
            return None
        if self._hot_thread != threading.get_ident():  # the connection is one thread's (the loop's)
            if self._hot_thread is not None:
                return None
            self._hot_thread = threading.get_ident()
        return _cached_plain_sql(self._hot_statements, statement, self.sync_autocommit_engine.dialect)

    def _hot_first(self, sql: str, values: list[Any]) -> Any:
        conn = self._hot_conn
        try:
            if conn is None:
                proxied = self.sync_autocommit_engine.raw_connection()  # the engine's connect event: pragmas
                proxied.detach()  # ours from now on; the pool makes another when it needs one
                conn = self._hot_conn = proxied.dbapi_connection
            cursor = conn.execute(sql, values)
            try:
                return cursor.fetchone()
            finally:
                cursor.close()
        except Exception as exc:
            import sqlite3  # (loaded already: the engine's driver)

            from sqlalchemy.exc import DBAPIError

            self._hot_conn = None  # the next read opens a fresh one
            if conn is not None:
                with contextlib.suppress(sqlite3.Error):
                    conn.close()
            if isinstance(exc, sqlite3.Error):  # as SQLAlchemy would have raised it
                raise DBAPIError.instance(sql, values, exc, sqlite3.Error) from exc
            raise

    @contextlib.asynccontextmanager
    async def write(self) -> AsyncIterator[Any]:
        """An interactive write transaction: ``await conn.execute(...)`` statement by statement.

        For paths where speed does not matter; hot paths use :meth:`run_write`.
        """
        with translated():  # outages as DatabaseUnavailable (moorage.metadata.errors)
            if self.writer is not None:
                async with self.writer.transaction() as conn:
                    yield _SyncReader(conn)
                return
            async with self.write_engine.begin() as conn:
                yield conn

    @contextlib.asynccontextmanager
    async def write_in(self, conn: Any | None) -> AsyncIterator[Any]:
        """``conn`` when given -- the caller's open write transaction, so that a change and its
        audit entry commit (or roll back) together -- else a :meth:`write` transaction of its own.
        The stores' write methods take ``conn=`` through this."""
        if conn is not None:
            yield conn
            return
        async with self.write() as own:
            yield own

    async def run_write(self, fn: Callable[[Connection], T]) -> T:
        """Run ``fn(conn)`` (synchronous SQLAlchemy Core) as one write transaction; its result
        once committed.  An exception from ``fn`` rolls its work back and is raised here.

        SQLite: on the writer thread, grouped with the other transactions queued meanwhile
        (one thread hop, :mod:`.writer`).  PostgreSQL: on a pooled asyncpg connection through
        ``run_sync`` (no thread hop); a connection found dead before anything was committed
        is replaced and ``fn`` run again, which is what makes the pre-ping unnecessary.
        """
        with translated():
            if self.writer is not None:
                return await self.writer.run(fn)
            for attempt in range(2):
                returned = False

                def call(conn: Connection) -> T:
                    nonlocal returned
                    value = fn(conn)
                    returned = True
                    return value

                try:
                    async with self.write_engine.begin() as conn:
                        return await conn.run_sync(call)
                except DBAPIError as exc:
                    if attempt or returned or not exc.connection_invalidated:
                        raise
            raise AssertionError("unreachable")

    def insert(self, table: Any) -> Any:
        """A dialect insert supporting ``on_conflict_do_nothing/update`` (same API on both)."""
        # Imported here: the PostgreSQL dialect is ~2 MiB a SQLite registry has no use for.
        if self.is_sqlite:
            from sqlalchemy.dialects import sqlite

            return sqlite.insert(table)
        from sqlalchemy.dialects import postgresql

        return postgresql.insert(table)

    def lexical(self, column: Any) -> Any:
        """``column`` compared byte-wise (PostgreSQL's locale collations would sort differently)."""
        return column if self.is_sqlite else column.collate("C")

    async def ping(self) -> None:
        """One trivial query: raises if the database cannot be reached (``/readyz``)."""
        async with self.read(snapshot=False) as conn:
            await conn.execute(text("SELECT 1"))

    async def close(self) -> None:
        if self.writer is not None:
            await asyncio.to_thread(self.writer.close)
        if self._read_engine is not None:
            await self._read_engine.dispose()
        if self._hot_conn is not None:
            conn, self._hot_conn = self._hot_conn, None
            conn.close()
        if self.sync_read_engine is not None:
            self.sync_read_engine.dispose()
            self.sync_autocommit_engine.dispose()
        if self._write_engine is not None and self._write_engine is not self._read_engine:
            await self._write_engine.dispose()

    # -- migrations -----------------------------------------------------------------------
    def _alembic_config(self) -> Any:
        # Alembic is imported only when migrations are looked at: it is a third of the CLI's
        # start-up time, and most commands never need it.
        from alembic.config import Config

        cfg = Config()
        cfg.set_main_option("script_location", str(MIGRATIONS))
        cfg.set_main_option("sqlalchemy.url", self.url.replace("%", "%%"))
        return cfg

    def head_revision(self) -> str | None:
        fast = script_head()
        if fast is not None:
            return fast
        from alembic.script import ScriptDirectory

        return ScriptDirectory.from_config(self._alembic_config()).get_current_head()

    async def current_revision(self) -> str | None:
        if self.sync_read_engine is not None:  # SQLite: one read on the loop, no aiosqlite engine
            with self.sync_read_engine.connect() as sync_conn:
                return _revision_of(sync_conn)
        async with self.write_engine.connect() as conn:
            return await conn.run_sync(_revision_of)

    async def migrate(self) -> tuple[str | None, str | None]:
        """Upgrade to the newest schema; returns (before, after) revisions.

        A database already at the head is left alone without importing Alembic (one query).
        """
        head = script_head()
        if self.sync_read_engine is not None and head is not None:
            current = await self.current_revision()
            if current == head:
                return current, current

        def upgrade(sync_conn: Any) -> None:
            cfg = self._alembic_config()
            cfg.attributes["connection"] = sync_conn
            from alembic import command

            command.upgrade(cfg, "head")

        async with self.write_engine.begin() as conn:
            if not self.is_sqlite:
                # Replicas started together with auto_migrate on: one migrates, the others
                # wait here and then find the schema at head (PostgreSQL DDL is transactional).
                await conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK_KEY})
            before = await conn.run_sync(_revision_of)
            if before is not None and before == head:
                return before, before
            if before is not None and before not in self._known_revisions():
                raise SchemaOutOfDate(_newer_schema(before, head))  # not Alembic's traceback
            await conn.run_sync(upgrade)
        return before, await self.current_revision()

    def _known_revisions(self) -> set[str]:
        """Every revision this Moorage's migration scripts define (imports Alembic: cold paths only)."""
        from alembic.script import ScriptDirectory

        return {rev.revision for rev in ScriptDirectory.from_config(self._alembic_config()).walk_revisions()}

    async def check_schema(self) -> None:
        current, head = await self.current_revision(), self.head_revision()
        if current != head:
            if current is not None and current not in self._known_revisions():
                raise SchemaOutOfDate(_newer_schema(current, head))
            raise SchemaOutOfDate(
                f"database schema is at revision {current or 'empty'}, this Moorage needs {head}: "
                "run `moorage migrate` (with the same --config/--data) first"
            )


def _cached_plain_sql(
    cache: dict[int, tuple[Any, str, tuple[tuple[str, Any], ...]] | None], statement: Any, dialect: Any
) -> tuple[Any, str, tuple[tuple[str, Any], ...]] | None:
    """:func:`_plain_sql` of ``statement``, kept in ``cache`` by the statement's id (the entry
    keeps the statement, so the id stays its own).  At most 256 entries: the fast reads are
    meant for statements built once (a handful); any others take the pooled path."""
    key = id(statement)
    if key in cache:
        return cache[key]
    if len(cache) >= 256:
        return None
    found = cache[key] = _plain_sql(statement, dialect)
    return found


def _plain_sql(statement: Any, dialect: Any) -> tuple[Any, str, tuple[tuple[str, Any], ...]] | None:
    """(statement, SQL, parameter names and defaults) of ``statement`` compiled for ``dialect``
    if its parameters and columns need no SQLAlchemy type processing (else None): what the
    hot reads (:meth:`Database.first`, :meth:`Database.all`) hand to the driver directly."""
    compiled = statement.compile(dialect=dialect)
    plain = (
        not compiled._bind_processors  # noqa: SLF001 - no type processing of parameters
        and compiled.positiontup is not None
        and not compiled.post_compile_params  # IN lists and the like: rendered per call
        and not compiled.literal_execute_params
    )
    if plain:
        for column in getattr(statement, "selected_columns", ()):
            if column.type.dialect_impl(dialect).result_processor(dialect, None) is not None:
                plain = False
    if not plain:
        return None
    binds = compiled.binds
    # (name, value when the caller gives none; _REQUIRED: the caller must give one)
    names = tuple((name, _REQUIRED if binds[name].required else compiled.params.get(name)) for name in compiled.positiontup)
    return (statement, compiled.string, names)  # the statement kept: its id stays its own


def _newer_schema(current: str, head: str | None) -> str:
    return (
        f"database schema is at revision {current}, which this Moorage does not know "
        f"(it needs {head}): the database was migrated by a newer Moorage; upgrade this one"
    )


#: Reads that run on the event loop wait at most this long for a lock (WAL readers normally
#: never wait; only recovery after a crash can make them): better a 503 than a frozen server.
ON_LOOP_BUSY_MS = 2000


def _revision_of(sync_conn: Any) -> str | None:
    """The schema revision stamped in ``alembic_version`` (None: an empty database).

    One plain query, so that starting on a current schema never imports Alembic; anything
    but one row (several heads) is left to Alembic, which says what is wrong."""
    if not sync_conn.dialect.has_table(sync_conn, "alembic_version"):
        return None
    rows = sync_conn.execute(text("SELECT version_num FROM alembic_version")).scalars().all()
    if len(rows) == 1:
        return str(rows[0])
    if not rows:
        return None
    from alembic.runtime.migration import MigrationContext

    return MigrationContext.configure(sync_conn).get_current_revision()


def _sqlite_pragmas(engine: Any, *, immediate: bool, begin: bool = True, busy_ms: int = 60000) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Let us issue BEGIN ourselves (pysqlite's implicit transactions get in the way).
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute(f"PRAGMA busy_timeout={int(busy_ms)}")
        cur.close()

    if not begin:
        return

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def create_async_engine(url: str, **kwargs: Any) -> AsyncEngine:
    """SQLAlchemy's ``create_async_engine``, its extension imported when the first engine is made."""
    from sqlalchemy.ext.asyncio import create_async_engine as create

    return create(url, **kwargs)


class _SyncReader:
    """The ``await conn.execute(...)`` face of a synchronous SQLite connection."""

    __slots__ = ("_conn",)

    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    async def execute(self, statement: Any, *args: Any) -> Any:
        return self._conn.execute(statement, *args)

    async def run_sync(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """``AsyncConnection.run_sync``: ``fn(sync_conn, ...)`` (for DDL checks, Alembic helpers)."""
        return fn(self._conn, *args, **kwargs)


def _sqlite_writer_engine(path: str) -> Any:
    """The writer thread's engine: busy_timeout 0, since the writer retries ``BEGIN IMMEDIATE``
    itself at a short fixed interval instead of SQLite's sleeping back-off (writer.py)."""
    engine = create_engine(
        "sqlite:///" + path, connect_args={"check_same_thread": False, "timeout": 5}, pool_size=1, max_overflow=0
    )
    _sqlite_pragmas(engine, immediate=True, begin=False, busy_ms=0)
    return engine
