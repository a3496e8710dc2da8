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


def settings_from(config: str | None, data: str | None, **more: Any) -> Settings:
    try:
        return load_settings(config, data=data, **more)
    except Exception as exc:  # pydantic / YAML errors: say what is wrong, no traceback
        raise click.ClickException(f"invalid configuration: {exc}") from None


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
    settings = settings_from(config, data, addr=addr, workers=workers)
    logging.basicConfig(level=settings.log_level.upper(), format="%(message)s", stream=sys.stderr)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    from .metadata.db import SchemaOutOfDate
    from .server import serve as run

    try:
        run(settings)
    except SchemaOutOfDate as exc:  # refuse to serve, with the reason and no traceback
        raise click.ClickException(str(exc)) from None


@main.command()
@data_options
def migrate(config: str | None, data: str | None) -> None:
    """Bring the metadata database's schema up to date."""
    settings = settings_from(config, data)
    from .metadata.db import Database

    async def run() -> tuple[str | None, str | None]:
        db = Database(settings.database_url)
        try:
            return await db.migrate()
        finally:
            await db.close()

    before, after = asyncio.run(run())
    click.echo(f"schema: {before or 'empty'} -> {after}")


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

    from .api.app import prepare_database
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
    for module in ("moorage.auth.cli", "moorage.gc.cli", "moorage.integrity.cli"):
        try:
            mod = __import__(module, fromlist=["commands"])
        except ImportError:
            continue
        for cmd in getattr(mod, "commands", []):
            main.add_command(cmd)


_load_plugins()

if __name__ == "__main__":
    main()
