"""The ``moorage`` command."""

from __future__ import annotations

import asyncio
import logging
import sys
from typing import Any

import click

from .config import Settings, load_settings

_COMMON = [
    click.option("--config", "config", type=click.Path(dir_okay=False), help="YAML config file (MOORAGE_CONFIG)."),
    click.option("--data", "data", type=click.Path(file_okay=False), help="Data directory (MOORAGE_DATA, default ./data)."),
]


def data_options(fn: Any) -> Any:
    """``--config``/``--data``: accepted by every command that touches the registry's data."""
    for opt in reversed(_COMMON):
        fn = opt(fn)
    return fn


def _one_line(exc: Exception) -> str:
    """A configuration error as one line (pydantic's own message spans several)."""
    try:
        from pydantic import ValidationError
    except ImportError:  # pragma: no cover
        ValidationError = ()  # type: ignore[assignment,misc]  # noqa: N806
    if isinstance(exc, ValidationError):
        parts = []
        for err in exc.errors():
            loc = ".".join(str(p) for p in err.get("loc", ()))
            msg = str(err.get("msg", "")).removeprefix("Value error, ")
            if err.get("type") == "extra_forbidden":
                msg = "unknown key"
            parts.append(f"{loc}: {msg}" if loc else msg)
        return "; ".join(parts)
    return " ".join(str(exc).split())


def settings_from(config: str | None, data: str | None, *, require_registry: bool = True, **more: Any) -> Settings:
    """Settings for a command; ``require_registry`` (all but ``serve``/``migrate``) refuses a data
    directory or database that holds no registry, so a typo in --data creates nothing."""
    try:
        settings = load_settings(config, data=data, **more)
    except Exception as exc:  # pydantic / YAML errors: say what is wrong, no traceback
        raise click.ClickException(f"invalid configuration: {_one_line(exc)}") from None
    if require_registry:
        from .startup import StartupError, registry_missing

        try:
            missing = registry_missing(settings)
        except StartupError as exc:
            raise click.ClickException(str(exc)) from None
        if missing:
            raise click.ClickException(missing)
    return settings


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="moorage")
def main() -> None:
    """Moorage: a self-hosted OCI / Docker container image registry."""


@main.command()
@data_options
@click.option("--addr", help="HOST:PORT to listen on (MOORAGE_ADDR, default 0.0.0.0:5000).")
@click.option("--workers", type=int, help="Worker processes sharing the port (0 = one per CPU).")
def serve(config: str | None, data: str | None, addr: str | None, workers: int | None) -> None:
    """Run the registry."""
    settings = settings_from(config, data, require_registry=False, addr=addr, workers=workers)
    logging.basicConfig(level=settings.log_level.upper(), format="%(message)s", stream=sys.stderr)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    from .metadata.db import SchemaOutOfDate
    from .startup import StartupError

    try:
        from .server import serve as run

        run(settings)
    except (SchemaOutOfDate, StartupError) as exc:  # refuse to serve, with the reason and no traceback
        raise click.ClickException(str(exc)) from None


@main.command()
@data_options
def migrate(config: str | None, data: str | None) -> None:
    """Bring the metadata database's schema up to date."""
    settings = settings_from(config, data, require_registry=False)
    from .metadata.db import Database

    async def run() -> tuple[str | None, str | None]:
        db = Database(settings.database_url)
        try:
            return await db.migrate()
        finally:
            await db.close()

    from .startup import check_data_dir, describe

    try:
        if settings.is_sqlite and not settings.database.url:
            check_data_dir(settings)
        before, after = asyncio.run(run())
    except Exception as exc:  # noqa: BLE001 - one line, no traceback
        raise click.ClickException(describe(exc, settings)) from None
    click.echo(f"schema: {before or 'empty'} -> {after}")


@main.command()
@click.option("--config", "config", type=click.Path(dir_okay=False), help="YAML config file (MOORAGE_CONFIG).")
@click.option("--addr", help="HOST:PORT the server listens on (default: the configured addr).")
@click.option("--ready", is_flag=True, help="Check /readyz (database and storage) instead of /healthz.")
@click.option("--timeout", type=float, default=3.0, show_default=True, help="Seconds to wait for the answer.")
def healthcheck(config: str | None, addr: str | None, ready: bool, timeout: float) -> None:
    """Exit 0 if the local server answers /healthz (or /readyz) with 200; for container health checks.

    Follows the configured address and TLS (``https`` when ``tls.certificate`` is set; the
    certificate is not verified, as it names the public host, not 127.0.0.1).
    """
    import ssl
    import urllib.error
    import urllib.request

    from .config import split_addr

    settings = settings_from(config, None, require_registry=False, addr=addr)
    host, port = split_addr(settings.addr)
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)
    netloc = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    scheme = "https" if settings.tls.certificate else "http"
    url = f"{scheme}://{netloc}/{'readyz' if ready else 'healthz'}"
    ctx = ssl._create_unverified_context() if scheme == "https" else None  # noqa: S323 - local probe
    try:
        with urllib.request.urlopen(url, timeout=timeout, context=ctx) as resp:  # noqa: S310
            status = resp.status
    except urllib.error.HTTPError as exc:
        status = exc.code
    except (OSError, urllib.error.URLError) as exc:
        raise click.ClickException(f"{url}: {getattr(exc, 'reason', exc)}") from None
    if status != 200:
        raise click.ClickException(f"{url}: HTTP {status}")
    click.echo(f"{url}: ok")


@main.command("purge-uploads")
@data_options
@click.option("--older-than", "older_than", type=float, default=24.0, show_default=True,
              help="Only touch leftovers untouched for this many hours.")
def purge_uploads(config: str | None, data: str | None, older_than: float) -> None:
    """Remove storage left behind by interrupted uploads.

    Upload data in storage whose session the database no longer knows, and (S3) incomplete
    multipart uploads, older than --older-than hours.  Idle sessions the database still knows
    expire through `moorage gc`.  Safe to run while replicas serve.
    """
    settings = settings_from(config, data)
    from sqlalchemy import select

    from .components import prepare_database
    from .metadata.db import Database
    from .metadata.tables import uploads
    from .storage import create_blob_store

    async def run() -> dict[str, int]:
        db = Database(settings.database_url, pool_size=2)
        store = create_blob_store(settings)
        try:
            await prepare_database(settings, db)
            await store.open()

            async def session_exists(upload_id: str) -> bool:
                async with db.read() as conn:
                    return (await conn.execute(select(uploads.c.id).where(uploads.c.id == upload_id))).first() is not None

            return await store.purge_leftovers(older_than * 3600, session_exists)
        finally:
            await store.close()
            await db.close()

    result = asyncio.run(run())
    click.echo(" ".join(f"{k}={v}" for k, v in result.items()))


def register(command: click.Command) -> None:
    """Let optional packages (auth, gc ...) add their commands."""
    main.add_command(command)


def _load_plugins() -> None:
    for module in ("moorage.auth.cli", "moorage.gc.cli", "moorage.insight.cli", "moorage.proxy.cli", "moorage.events.cli",
                   "moorage.compat.cli"):
        try:
            mod = __import__(module, fromlist=["commands"])
        except ImportError:
            continue
        for cmd in getattr(mod, "commands", []):
            main.add_command(cmd)
        getattr(mod, "wrap_commands", lambda _group: None)(main)  # e.g. the audit log of CLI changes


_load_plugins()

if __name__ == "__main__":
    main()
