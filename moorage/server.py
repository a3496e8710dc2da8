"""Running the app: uvloop, TLS, and optional worker processes sharing one port (SO_REUSEPORT).

The app (aiohttp, SQLAlchemy, the extensions) is imported by the process that serves it, never
by the master of several workers, which only binds, forks and waits; a schema migration runs in
a short-lived child process, so no serving process carries Alembic (:func:`_prepare_apart`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import ssl
import sys

from .config import Settings
from .startup import (
    StartupError,
    bind_error,
    check_auth_files,
    check_data_dir,
    check_sqlite_writable,
    describe,
    is_loopback,
    plain_http_hint,
    raise_nofile_limit,
    startup_line,
)

log = logging.getLogger("moorage")


def _ssl_context(settings: Settings) -> ssl.SSLContext | None:
    if not settings.tls.certificate:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(str(settings.tls.certificate), str(settings.tls.key) if settings.tls.key else None)
    return ctx


def _bind(settings: Settings, reuse_port: bool, listen: bool = True) -> socket.socket:
    host = settings.host
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, settings.port))
        if listen:
            sock.listen(1024)
    except OSError as exc:
        sock.close()
        raise bind_error(exc, settings) from None
    except (UnicodeError, socket.gaierror) as exc:
        sock.close()
        raise StartupError(f"cannot listen on {settings.addr}: {exc}") from None
    sock.setblocking(False)
    return sock


async def _serve(settings: Settings, sock: socket.socket) -> None:
    from aiohttp import web

    from .api.connections import ConnectionGuard, GuardedSockSite
    from .api.logging import JsonAccessLogger

    try:
        from .composition import build_app

        app = build_app(settings)
        runner = web.AppRunner(
            app,
            access_log_class=JsonAccessLogger,
            access_log=logging.getLogger("moorage.access") if settings.access_log else None,
            handle_signals=False,
            keepalive_timeout=settings.http.keepalive_timeout,
            # SIGTERM: in-flight requests get 3 s to finish (container runtimes SIGKILL after 10 s);
            # an upload cut off here stays resumable, its session and hash state are in the database.
            shutdown_timeout=3.0,
        )
        await runner.setup()  # runs the cleanup_ctx start-up: database, migrations, storage
    except StartupError:
        raise
    except Exception as exc:  # noqa: BLE001 - told as one line by the CLI
        raise StartupError(describe(exc, settings)) from None
    guard = ConnectionGuard(settings.http)
    site = GuardedSockSite(runner, sock, guard=guard, ssl_context=_ssl_context(settings), backlog=1024)
    await site.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    if settings.auth.mode == "none" and not is_loopback(settings.host):
        log.warning(
            "WARNING: authentication is off (auth.mode=none) and %s is reachable from other hosts: "
            "anyone who can connect may push and delete",
            settings.addr,
        )
    log.info("%s", startup_line(settings))
    if not settings.tls.certificate and not is_loopback(settings.host):
        log.warning("%s", plain_http_hint(settings))
    await stop.wait()
    await runner.cleanup()


def _secure_data(settings: Settings) -> None:
    """Data dir (and its ``auth/``) 0700 before anything is created in it, so that no other
    local user can read the database, the signing keys or the blobs; the database and key
    files are made 0600 where they are created.

    A data directory that holds a registry:2 tree (``docker/registry/v2``: the volume of the
    ``registry:2`` this server replaces) is not Moorage's: its mode is left as it is (the
    registry:2 it may be rolled back to, a backup job, may read it).  Then only what Moorage
    creates in it is made private: ``auth/`` and ``storage/`` (the database file is 0600)."""
    from .filemodes import private_dir

    foreign = (settings.data / "docker" / "registry" / "v2").is_dir()  # not importing compat: see the module doc
    if not foreign:
        paths = [settings.data, settings.data / "auth"]
    else:
        paths = [settings.data / "auth"]
        if settings.storage.driver == "filesystem" and settings.storage.filesystem.root is None:
            private_dir(settings.storage_root)  # created 0700 (or tightened: it is ours)
        log.info("%s holds a registry:2 tree: its mode is left as it is", settings.data)
    for path in paths:
        if path.exists():
            private_dir(path)


def _preflight(settings: Settings) -> None:
    """Checks that need neither the event loop nor the database (cheap, before binding)."""
    check_data_dir(settings)
    check_sqlite_writable(settings)
    check_auth_files(settings)
    try:
        _ssl_context(settings)
    except (OSError, ssl.SSLError) as exc:
        raise StartupError(f"cannot load the TLS certificate/key ({settings.tls.certificate}): {exc}") from None
    limit = raise_nofile_limit()
    if limit < settings.http.max_connections + 64:
        log.warning(
            "WARNING: open-file limit %d is below http.max_connections (%d) + 64; raise `ulimit -n` "
            "or lower http.max_connections",
            limit,
            settings.http.max_connections,
        )


def _migration_due(settings: Settings) -> bool:
    """True if the SQLite database this server migrates itself is not at the code's schema yet
    (read with the standard library: a current database costs one query)."""
    auto = settings.database.auto_migrate
    if not (settings.is_sqlite and (auto is None or auto)):
        return False
    target = settings.database_url.split(":///", 1)[1]
    if target in ("", ":memory:") or target.startswith("file::memory:"):
        return False  # a private in-memory database: only the serving process can migrate it
    from .metadata.schema_version import script_head, sqlite_revision

    uri = target.startswith("file:")
    try:
        current = sqlite_revision(target if uri else target.split("?", 1)[0], uri=uri)
    except Exception:  # noqa: BLE001 - the migration will say what is wrong
        return True
    return current is None or current != script_head()


def _prepare_apart(settings: Settings) -> None:
    """Migrate (or check) the schema in a forked child process that exits when done.

    Alembic (and the code it loads) then stays out of the serving processes, and the master of
    several workers never imports SQLAlchemy.  The child's failure comes back as its one-line
    message (through a pipe) and is raised here as a :class:`StartupError`.
    """
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: no threads were started before the fork
        os.close(read_fd)
        status = 0
        try:
            asyncio.run(_prepare(settings))
        except BaseException as exc:  # noqa: BLE001 - told to the parent as one line
            os.write(write_fd, describe(exc, settings).encode(errors="replace")[:4000])
            status = 1
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(status)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as pipe:
        message = pipe.read().decode(errors="replace").strip()
    _, wait_status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(wait_status)
    if code != 0:
        raise StartupError(message or f"preparing the database failed (exit status {code})")


async def _prepare(settings: Settings) -> None:
    from .components import prepare_database
    from .metadata.db import Database

    db = Database(settings.database_url, pool_size=1)
    try:
        await prepare_database(settings, db)
    finally:
        await db.close()


def _run_worker(settings: Settings, sock: socket.socket) -> None:
    try:
        import uvloop

        uvloop.run(_serve(settings, sock))
    except ImportError:  # pragma: no cover
        asyncio.run(_serve(settings, sock))


def serve(settings: Settings) -> None:
    """Run the server; a :class:`StartupError` (one line) if it cannot start."""
    from .api.log_redaction import install as redact_credentials_in_logs

    redact_credentials_in_logs()  # e.g. aiohttp logs an unparsable Authorization line raw
    workers = settings.workers or (os.cpu_count() or 1)
    # The address first: a start that cannot listen (port in use) fails before it creates a
    # data directory or a database.  One worker serves on this socket; several bind their own.
    sock = _bind(settings, reuse_port=workers > 1, listen=workers <= 1)
    try:
        _preflight(settings)
        _secure_data(settings)
    except BaseException:
        sock.close()
        raise
    if workers <= 1:
        if _migration_due(settings):
            _prepare_apart(settings)
        _run_worker(settings, sock)
        return
    sock.close()
    # Migrate (or check) once, before the workers start, so they don't race on the schema.
    _prepare_apart(settings)
    children: list[int] = []
    for _ in range(workers):
        pid = os.fork()
        if pid == 0:
            try:
                sock = _bind(settings, reuse_port=True)
                _run_worker(settings, sock)
            except StartupError as exc:
                print(f"moorage: {exc}", file=sys.stderr, flush=True)
                os._exit(1)
            os._exit(0)
        children.append(pid)

    def _forward(signum: int, _frame: object) -> None:
        for pid in children:
            try:
                os.kill(pid, signum)
            except ProcessLookupError:
                pass

    signal.signal(signal.SIGTERM, _forward)
    signal.signal(signal.SIGINT, _forward)
    status = 0
    for pid in children:
        _, code = os.waitpid(pid, 0)
        status = status or os.waitstatus_to_exitcode(code)
    sys.exit(status if status > 0 else 0)
