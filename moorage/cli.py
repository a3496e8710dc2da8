"""The ``moorage`` command."""

from __future__ import annotations

import importlib
import logging
import sys
from typing import Any

import click

from .cli_common import CommandContext, data_options, settings_from

#: The other packages' commands: (module, short help).  A module is imported only when one of its
#: commands runs, so ``moorage --help`` and a quick command start without aiohttp, SQLAlchemy's
#: engines or the S3 client (tests/test_cli.py keeps this table equal to the modules' own).
PLUGIN_COMMANDS: dict[str, tuple[str, str]] = {
    "user": ("moorage.auth.cli", "Manage users and robot accounts."),
    "grant": ("moorage.auth.cli", "Give USER ACTIONS (pull,push,delete,admin) on repositories matching..."),
    "revoke": ("moorage.auth.cli", "Remove USER's grant on REPO_PATTERN."),
    "token": ("moorage.auth.cli", "Personal access tokens and robot tokens (usable as passwords)."),
    "repo": ("moorage.auth.cli", "Repository settings."),
    "namespace": ("moorage.auth.cli", "Organisations / namespaces (grant on 'NAME/*', make a whole namespace public)."),
    "gc": ("moorage.gc.cli", "Garbage-collect while the registry serves: images whose tag was deleted..."),
    "retention": ("moorage.gc.cli", "Retention policies: which tags `moorage gc` removes per repository/namespace..."),
    "immutable": ("moorage.gc.cli", "Immutable tags: tags that can't be moved to another manifest once pushed."),
    "quota": ("moorage.gc.cli", "Storage quotas per namespace (unique blob bytes)."),
    "sbom": ("moorage.insight.cli", "Inventory IMAGE (NAME:TAG or NAME@DIGEST) and store CycloneDX and SPDX SBOMs..."),
    "vulndb": ("moorage.insight.cli", "The offline vulnerability database (OSV advisories)."),
    "vulns": ("moorage.insight.cli", "Vulnerability findings of IMAGE (NAME:TAG or NAME@DIGEST; every platform of..."),
    "vuln-policy": ("moorage.insight.cli", "Set the pull policy of NAMESPACE (a namespace or repository name)."),
    "vuln-allow": ("moorage.insight.cli", "Accept ADVISORY in NAMESPACE's pull policy (until --days pass)."),
    "image-search": ("moorage.insight.cli", "Find images by package (and version range) or by advisory; one JSON object..."),
    "mirror": ("moorage.proxy.cli", "Copy SRC to DST: [docker://|http://|https://]HOST[:PORT]/REPO[:TAG] each."),
    "audit": ("moorage.events.cli", "Show the audit log: who did what, when, from where (oldest first)."),
    "webhooks": ("moorage.events.cli", "Webhook endpoints and their delivery history (dead letters included)."),
    "scrub": ("moorage.integrity.cli", "Re-hash stored blobs; quarantine those whose bytes do not match their digest."),
    "import-distribution": ("moorage.compat.cli", "Import a registry:2 (CNCF Distribution) storage tree into this registry."),
    "healthcheck": ("moorage.compat.healthcheck", "Exit 0 if the local server answers /healthz (or /readyz) with 200; for..."),
}


class LazyGroup(click.Group):
    """A group whose plugin commands are imported on first use (a failed import is an error)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(PLUGIN_COMMANDS))

    def invoke(self, ctx: click.Context) -> Any:
        """Every command: a database at a schema this Moorage can't use is one line, not a traceback."""
        from .extras import MissingExtra  # (stdlib only)
        from .metadata.schema_version import SchemaOutOfDate  # (stdlib only)

        try:
            return super().invoke(ctx)
        except (SchemaOutOfDate, MissingExtra) as exc:
            raise click.ClickException(str(exc)) from None

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        cmd = super().get_command(ctx, cmd_name)
        if cmd is not None or cmd_name not in PLUGIN_COMMANDS:
            return cmd
        module = importlib.import_module(PLUGIN_COMMANDS[cmd_name][0])
        cmd = next(c for c in module.commands if c.name == cmd_name)
        from .events.cli import wrap_commands  # the audit log of CLI changes

        wrap_commands(click.Group(commands={cmd_name: cmd}))
        if cmd_name == "repo" and isinstance(cmd, click.Group) and "delete" not in cmd.commands:
            from .repo_cli import repo_delete  # registry content: the registry service's operation

            cmd.add_command(repo_delete)
        self.add_command(cmd)
        return cmd

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        limit = formatter.width - 6 - max(len(n) for n in self.list_commands(ctx))
        rows = [
            (name, self.commands[name].get_short_help_str(limit) if name in self.commands else PLUGIN_COMMANDS[name][1])
            for name in self.list_commands(ctx)
        ]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="moorage")
@click.pass_context
def main(ctx: click.Context) -> None:
    """Moorage: a self-hosted OCI / Docker container image registry."""
    ctx.obj = CommandContext(components_for=_components_for, policies=_policies)


def _components_for(settings: Any, **kwargs: Any) -> Any:
    """The composition root's components (imported when a command opens the registry, not for ``--help``)."""
    from .composition import components_for

    return components_for(settings, **kwargs)


def _policies(database: Any) -> Any:
    """The composition root's policy hooks."""
    from .composition import policies

    return policies(database)


@main.command()
@data_options
@click.option("--addr", help="HOST:PORT to listen on (MOORAGE_ADDR, default 0.0.0.0:5000).")
@click.option("--workers", type=int, help="Worker processes sharing the port (0 = one per CPU).")
@click.option(
    "--log-format",
    type=click.Choice(["auto", "text", "json"]),
    help="text, json, or auto: text on a terminal, else JSON (MOORAGE_LOG_FORMAT, default auto).",
)
def serve(config: str | None, data: str | None, addr: str | None, workers: int | None, log_format: str | None) -> None:
    """Run the registry."""
    settings = settings_from(config, data, require_registry=False, addr=addr, workers=workers, log_format=log_format)
    from .logformat import configure as configure_logging

    configure_logging(settings.log_level, settings.log_format, sys.stderr)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    from .privileges import NOTES

    for level, note in NOTES:  # what was prepared as root, and who the server runs as
        logging.getLogger("moorage").log(level, "%s", note)
    from .metadata.schema_version import SchemaOutOfDate  # (not .db: SQLAlchemy is for the workers)
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
        import asyncio

        before, after = asyncio.run(run())
    except Exception as exc:  # noqa: BLE001 - one line, no traceback
        raise click.ClickException(describe(exc, settings)) from None
    click.echo(f"schema: {before or 'empty'} -> {after}")


@main.command("purge-uploads")
@data_options
@click.option(
    "--older-than",
    "older_than",
    type=float,
    default=24.0,
    show_default=True,
    help="Only touch leftovers untouched for this many hours.",
)
def purge_uploads(config: str | None, data: str | None, older_than: float) -> None:
    """Remove storage left behind by interrupted uploads.

    Upload data in storage whose session the database no longer knows, and (S3) incomplete
    multipart uploads, older than --older-than hours.  Idle sessions the database still knows
    expire through `moorage gc`.  Safe to run while replicas serve.
    """
    settings = settings_from(config, data)
    from .components import prepare_database
    from .metadata.db import Database
    from .metadata.gc_store import GCStore
    from .storage import create_blob_store

    async def run() -> dict[str, int]:
        db = Database(settings.database_url, pool_size=2)
        store = create_blob_store(settings)
        try:
            await prepare_database(settings, db)
            await store.open()

            return await store.purge_leftovers(older_than * 3600, GCStore(db).upload_session_exists)
        finally:
            await store.close()
            await db.close()

    import asyncio

    result = asyncio.run(run())
    click.echo(" ".join(f"{k}={v}" for k, v in result.items()))


def register(command: click.Command) -> None:
    """Let optional packages add a command directly."""
    main.add_command(command)


if __name__ == "__main__":
    main()
