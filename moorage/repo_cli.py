"""Registry-content commands of the CLI: ``moorage repo delete NAME``.

Attached to the ``repo`` group by :mod:`moorage.cli`; the work is the registry service's
operation (the same one ``DELETE /api/v1/repositories/NAME`` and the web UI call), made for the
operator through the ``cli`` face, with its audit entry and webhook event in its transaction.
"""

from __future__ import annotations

import getpass

import click

from .cli_common import command_context, data_options, settings_from


def _operator() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except Exception:  # noqa: BLE001 - no passwd entry (containers)
        return "cli:unknown"


@click.command("delete")
@data_options
@click.argument("name")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def repo_delete(config: str | None, data: str | None, name: str, yes: bool) -> None:
    """Delete repository NAME: every tag and manifest in it (layers only it used go at the next gc)."""
    import asyncio

    from .registry.names import is_valid_name

    if not is_valid_name(name):
        raise click.BadParameter(f"invalid repository name {name!r}", param_hint="NAME")
    if not yes:
        click.confirm(f"Delete repository {name} with every tag and manifest in it?", abort=True, err=True)
    settings = settings_from(config, data)

    async def run() -> dict[str, int]:
        from . import errors
        from .components import opened
        from .events.setup import command_recorder
        from .registry.principal import Principal

        async with opened(settings, policies=command_context().policies) as components:
            components.events.recorder = await command_recorder(settings, components.database)
            try:
                return await components.registry.delete_repository(name, Principal.operator("cli", _operator()))
            except errors.NameUnknown:
                raise click.ClickException(f"no repository {name!r}") from None
            except errors.Unsupported as exc:
                raise click.ClickException(exc.message) from None

    counts = asyncio.run(run())
    click.echo(
        f"deleted {name}: {counts['tags']} tag(s), {counts['manifests']} manifest(s), {counts['links']} layer link(s), "
        f"{counts['uploads']} upload session(s); run `moorage gc` to reclaim the space",
        err=True,
    )
