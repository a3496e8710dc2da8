"""What the server and the CLI check before they run, and how a failure is told: one line.

A start-up problem (port in use, data directory not writable, database or S3 unreachable,
htpasswd file missing ...) is a :class:`StartupError` whose message names the thing and the
place (URLs without their password); the CLI prints it as one line and exits non-zero.
"""

from __future__ import annotations

import errno
import logging
import os
import resource
import sqlite3
import tempfile
from pathlib import Path

from .config import Settings

log = logging.getLogger("moorage")


class StartupError(RuntimeError):
    """The registry cannot start (or a command cannot run); the message is one plain line."""


def safe_url(url: str) -> str:
    """``url`` with any password replaced by ``***``."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - not an SQLAlchemy URL: strip userinfo by hand
        from urllib.parse import urlsplit, urlunsplit

        parts = urlsplit(url)
        if parts.password is None:
            return url
        netloc = f"{parts.username}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
        return urlunsplit(parts._replace(netloc=netloc))


def secrets_of(settings: Settings) -> list[str]:
    """Values that must never appear in a message."""
    out = [settings.storage.s3.secret_key, settings.auth.admin_password]
    try:
        from sqlalchemy.engine import make_url

        out.append(make_url(settings.database_url).password)
    except Exception:  # noqa: BLE001 - an unparsable URL has no password field to hide; the URL itself is never logged
        pass
    return [s for s in out if s]


def scrub(message: str, settings: Settings) -> str:
    for secret in secrets_of(settings):
        message = message.replace(secret, "***")
    return " ".join(message.split())  # one line


def storage_description(settings: Settings) -> str:
    if settings.storage.driver == "s3":
        s3 = settings.storage.s3
        return f"s3 bucket {s3.bucket!r} at {s3.endpoint_url or 'AWS'}"
    return f"filesystem {settings.storage_root}"


def describe(exc: BaseException, settings: Settings) -> str:
    """One line saying what failed to start and where, for any exception raised at start-up."""
    if isinstance(exc, StartupError) or type(exc).__name__ in ("SchemaOutOfDate", "MissingExtra"):
        return scrub(str(exc), settings)
    from .errors import DatabaseUnavailable, StorageUnavailable

    if isinstance(exc, DatabaseUnavailable):
        return scrub(f"cannot use the database {safe_url(settings.database_url)}: {exc.reason}", settings)
    if isinstance(exc, StorageUnavailable):
        return scrub(f"cannot use the storage ({storage_description(settings)}): {exc.reason}", settings)
    text = str(exc) or type(exc).__name__
    module = type(exc).__module__
    if module.startswith("sqlalchemy") or "asyncpg" in module or "sqlite" in module:
        orig = getattr(exc, "orig", None)
        detail = str(orig) if orig is not None else text.split("\n")[0]
        return scrub(f"cannot use the database {safe_url(settings.database_url)}: {detail}", settings)
    if module.startswith(("botocore", "aiobotocore")) or "S3 bucket" in text:
        return scrub(f"cannot use S3 storage ({storage_description(settings)}): {text}", settings)
    if isinstance(exc, (ConnectionError, OSError)) and settings.database.url and not settings.is_sqlite:
        return scrub(f"cannot reach the database {safe_url(settings.database_url)}: {text}", settings)
    return scrub(f"{type(exc).__name__}: {text}", settings)


def check_data_dir(settings: Settings) -> None:
    """The data directory exists (created if missing) and we can write to it."""
    data = settings.data
    try:
        if not data.exists():  # created private: it will hold the database and the signing key
            data.mkdir(parents=True, mode=0o700)
            os.chmod(data, 0o700)
        with tempfile.NamedTemporaryFile(dir=data, prefix=".write-test-"):
            pass
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise StartupError(f"data directory {data} is not usable: {reason}") from None


def check_auth_files(settings: Settings) -> None:
    """Files the configured auth mode needs are there (an htpasswd file that is missing
    would otherwise mean "nobody can log in", silently)."""
    if settings.auth.mode == "htpasswd":
        path = settings.auth.htpasswd.path
        if path is None:
            raise StartupError("auth.mode is htpasswd but auth.htpasswd.path is not set")
        try:
            with open(path, "rb"):
                pass
        except OSError as exc:
            raise StartupError(f"htpasswd file {path} cannot be read: {exc.strerror or exc}") from None


def check_sqlite_writable(settings: Settings) -> None:
    """SQLite: the database file can be opened and written (a read-only file, directory or
    ``mode=ro`` URL is told here, in one line, before the event loop and its threads start)."""
    if not settings.is_sqlite:
        return
    target = settings.database_url.split(":///", 1)[1]
    if target in ("", ":memory:"):
        return
    uri = target.startswith("file:")
    try:
        if not uri:
            from .filemodes import secure_sqlite

            secure_sqlite(Path(target.split("?", 1)[0]))  # made 0600 before SQLite first opens it
        conn = sqlite3.connect(target if uri else target.split("?", 1)[0], uri=uri, timeout=10)
        try:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("ROLLBACK")
        finally:
            conn.close()
    except (sqlite3.Error, OSError) as exc:
        raise StartupError(f"cannot write the database {safe_url(settings.database_url)}: {exc}") from None


def raise_nofile_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit (each connection is a descriptor); returns it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass  # not allowed here: the caller compares the unchanged limit and warns
    return soft


def bind_error(exc: OSError, settings: Settings) -> StartupError:
    if exc.errno == errno.EADDRINUSE:
        return StartupError(f"cannot listen on {settings.addr}: address already in use")
    if exc.errno == errno.EADDRNOTAVAIL:
        return StartupError(f"cannot listen on {settings.addr}: no such local address")
    if exc.errno == errno.EACCES:
        return StartupError(f"cannot listen on {settings.addr}: permission denied (ports below 1024 need privileges)")
    return StartupError(f"cannot listen on {settings.addr}: {exc.strerror or exc}")


# -- "is there a registry here?" (CLI commands other than serve/migrate) ---------------------
def registry_missing(settings: Settings) -> str | None:
    """Why ``settings`` point at no registry (None if they do).  Creates nothing."""
    url = settings.database_url
    if settings.is_sqlite:
        path = url.split(":///", 1)[1].split("?", 1)[0]
        if path.startswith("file:"):
            path = path[len("file:") :]
        if not Path(path).is_file():
            where = f"data directory {settings.data}" if not settings.database.url else f"database {safe_url(url)}"
            return f"no registry in {where} (no database at {path}); check --data/--config, or run `moorage serve` or `moorage migrate` to create one"
        try:
            conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
            try:
                row = conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='alembic_version'").fetchone()
            finally:
                conn.close()
        except sqlite3.Error as exc:
            return f"{path} is not a Moorage database: {exc}"
        if row is None:
            return f"{path} holds no Moorage registry (empty schema); run `moorage migrate` to create one"
        return None
    return _pg_registry_missing(settings)


def _pg_registry_missing(settings: Settings) -> str | None:
    import asyncio

    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine

    async def probe() -> str | None:  # the table's name, or None
        engine = create_async_engine(settings.database_url, pool_size=1)
        try:
            async with engine.connect() as conn:
                return (await conn.execute(text("SELECT to_regclass('alembic_version')"))).scalar()
        finally:
            await engine.dispose()

    try:
        found = asyncio.run(asyncio.wait_for(probe(), 30))
    except Exception as exc:  # noqa: BLE001 - said in one line
        raise StartupError(describe(exc, settings)) from None
    if found is None:
        return f"database {safe_url(settings.database_url)} holds no Moorage registry; run `moorage migrate` first"
    return None


def is_loopback(host: str) -> bool:
    import ipaddress

    if host in ("localhost",):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def plain_http_hint(settings: Settings) -> str:
    """What clients on other hosts need to push to this server over plain HTTP, with the lines
    to add (docker and podman refuse plain HTTP -- "server gave HTTP response to HTTPS client" --
    except to localhost), and the TLS alternative (docs/clients.md)."""
    import socket

    host = settings.host
    if host in ("", "0.0.0.0", "::"):
        host = socket.gethostname() or "HOST"
    name = f"[{host}]:{settings.port}" if ":" in host else f"{host}:{settings.port}"
    return (
        f"plain HTTP on {settings.addr}: docker and podman on other hosts refuse it "
        '("server gave HTTP response to HTTPS client") until each client host is told, or serve HTTPS '
        "(tls.certificate, tls.key: a certificate the clients trust; docs/clients.md).\n"
        "  podman, buildah, skopeo: /etc/containers/registries.conf.d/moorage.conf\n"
        f'    [[registry]]\n    location = "{name}"\n    insecure = true\n'
        "  docker: /etc/docker/daemon.json (then: systemctl restart docker)\n"
        f'    {{ "insecure-registries": ["{name}"] }}'
    )


def startup_line(settings: Settings) -> str:
    """The one log line that says how this server is set up (no secrets)."""
    if settings.is_sqlite:
        db = "sqlite " + settings.database_url.split(":///", 1)[1]
    else:
        db = "postgresql " + safe_url(settings.database_url)
    scheme = "https" if settings.tls.certificate else "http"
    return (
        f"moorage listening on {scheme}://{settings.addr} (pid {os.getpid()}): data={settings.data.resolve()} "
        f"storage={settings.storage.driver} ({storage_description(settings)}) database={db} "
        f"auth={settings.auth.mode}"
        + (
            " cache upstreams: "
            + ", ".join(f"{u.name}={safe_url(u.url)} as /{u.namespace or ''}" for u in settings.proxy.upstreams)
            if settings.proxy.upstreams
            else ""
        )
    )
