"""Database outages as one backend-neutral error: :class:`~moorage.errors.DatabaseUnavailable`.

SQLAlchemy, asyncpg and sqlite3 each say "the database is away" in their own types.  The metadata
layer translates them where connections are checked out and transactions run
(:meth:`Database.read`/:meth:`Database.write`, via :func:`translated`), so nothing above it -- the
API's error middleware, ``/readyz``, background jobs -- needs to know any driver's exceptions.

What counts as an outage (worth a retry, answered 503):

* a lost or refused connection: SQLAlchemy's ``connection_invalidated``, asyncpg's connection
  errors (also as the asyncpg dialect's adapted ``OperationalError``/``InterfaceError``), or the
  raw ``ConnectionError``/``TimeoutError``/DNS failure a connect attempt raises;
* the connection pool exhausted past its timeout;
* SQLite busy past its busy timeout (``database is locked``) or failing underneath
  (``disk I/O error``, ``database or disk is full``, ``unable to open database file``,
  ``attempt to write a readonly database``).

A SQL error (syntax, constraint, a missing table) is not an outage: it stays what it is (a 500
if nothing handles it), so bugs are not hidden behind "retry".

One more translation is no outage but the client's fault: text the database cannot store --
NUL, which PostgreSQL's ``text`` refuses (asyncpg ``CharacterNotInRepertoireError``, SQLSTATE
22021; ``UntranslatableCharacterError``, 22P05, for ``\\u0000`` in JSON), or a lone surrogate,
which no driver can encode as UTF-8.  Services validate their input before any query; this is
the net behind them, so a value they missed is :class:`~moorage.errors.TextUnstorable` (400),
not a 500.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator

from ..errors import DatabaseFull, DatabaseUnavailable, TextUnstorable

__all__ = ["DatabaseUnavailable", "outage_error", "outage_reason", "storable", "text_error", "translated"]

#: asyncpg exception class names (checked by name: SQLite deployments never import asyncpg).
_PG_OUTAGE = frozenset(
    {
        "ConnectionDoesNotExistError",
        "CannotConnectNowError",
        "TooManyConnectionsError",
        "ConnectionFailureError",
        "ConnectionRejectionError",
        "ClientCannotConnectError",
        "AdminShutdownError",
        "CrashShutdownError",
        "PostgresConnectionError",
        "InterfaceError",
        "OperationalError",
    }
)
#: Of those, the ones that say the disk (or quota) under the database is full: 507, not 503.
_SQLITE_FULL = "database or disk is full"
_PG_FULL = frozenset({"DiskFullError"})  # SQLSTATE 53100
#: sqlite3.OperationalError messages that mean "busy or failing", not "bad SQL".
_SQLITE_OUTAGE = (
    "database is locked",
    "database table is locked",
    "disk i/o error",
    "database or disk is full",
    "unable to open database file",
    "attempt to write a readonly database",
)


def outage_reason(exc: BaseException) -> str | None:
    """A short reason if ``exc`` says the database is unreachable or busy past its timeout, else None."""
    if isinstance(exc, DatabaseUnavailable):
        return exc.reason or str(exc)
    try:
        from sqlalchemy import exc as sa
    except ImportError:  # pragma: no cover - SQLAlchemy is a dependency
        sa = None  # type: ignore[assignment]
    if sa is not None:
        if isinstance(exc, sa.TimeoutError):  # QueuePool checkout timed out
            return f"connection pool exhausted: {exc}"
        if isinstance(exc, sa.DBAPIError):
            orig = exc.orig
            if exc.connection_invalidated:
                return f"connection lost: {orig!r}"
            names = {type(orig).__name__, type(getattr(orig, "__cause__", None)).__name__}
            module = type(orig).__module__
            if module.startswith("sqlite3") or "sqlite" in module:
                message = str(orig).lower()
                if any(m in message for m in _SQLITE_OUTAGE):
                    return f"sqlite: {orig}"
                return None
            if names & (_PG_OUTAGE | _PG_FULL):
                return f"{type(orig).__name__}: {orig}"
            return None
    if isinstance(exc, (ConnectionError, TimeoutError, socket.gaierror)):  # raised by a connect attempt
        return f"{type(exc).__name__}: {exc}"
    return None


#: asyncpg's exceptions for text PostgreSQL refuses, and their SQLSTATEs (22021, 22P05).
_PG_BAD_TEXT = frozenset({"CharacterNotInRepertoireError", "UntranslatableCharacterError"})
_PG_BAD_TEXT_STATES = frozenset({"22021", "22P05"})


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc``, the driver error SQLAlchemy wraps (``.orig``) and their causes, a few deep."""
    seen: list[BaseException] = []
    todo: list[BaseException | None] = [exc]
    while todo and len(seen) < 8:
        e = todo.pop(0)
        if e is None or any(e is s for s in seen):
            continue
        seen.append(e)
        yield e
        todo += [getattr(e, "orig", None), e.__cause__, e.__context__]


def storable(text: str) -> bool:
    """Whether the database can store ``text``: no NUL (PostgreSQL's ``text`` refuses it) and
    valid Unicode (a lone surrogate has no UTF-8)."""
    if "\x00" in text:
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def text_error(exc: BaseException) -> TextUnstorable | None:
    """:class:`TextUnstorable` if ``exc`` says a value was text the database cannot store
    (see the module docstring), else None."""
    if isinstance(exc, TextUnstorable):
        return exc
    for e in _chain(exc):
        if isinstance(e, UnicodeEncodeError) and "surrogate" in str(e):
            return TextUnstorable()
        if type(e).__name__ in _PG_BAD_TEXT or getattr(e, "sqlstate", None) in _PG_BAD_TEXT_STATES:
            return TextUnstorable()
    return None


def _is_full(exc: BaseException) -> bool:
    orig = getattr(exc, "orig", None)
    if orig is None:
        return False
    if _SQLITE_FULL in str(orig).lower():
        return True
    names = {type(orig).__name__, type(getattr(orig, "__cause__", None)).__name__}
    return bool(names & _PG_FULL)


def outage_error(exc: BaseException) -> DatabaseUnavailable | None:
    """``exc`` as the error to raise (:class:`DatabaseFull` when the disk is full), or None if
    it is no outage."""
    if isinstance(exc, DatabaseUnavailable):
        return exc
    reason = outage_reason(exc)
    if reason is None:
        return None
    return DatabaseFull(reason=reason) if _is_full(exc) else DatabaseUnavailable(reason=reason)


def translation(exc: Exception) -> Exception | None:
    """What :func:`translated` raises for ``exc`` instead (None: ``exc`` itself), for a hot path
    that catches without the context manager (:meth:`moorage.metadata.db.Database.first`)."""
    if isinstance(exc, (DatabaseUnavailable, TextUnstorable)):
        return None
    return outage_error(exc) or text_error(exc)


@contextlib.contextmanager
def translated() -> Iterator[None]:
    """Re-raise a database outage inside the block as :class:`DatabaseUnavailable`, and text the
    database refused as :class:`TextUnstorable` (cause chained)."""
    try:
        yield
    except Exception as exc:
        error = translation(exc)
        if error is None:
            raise
        raise error from exc
