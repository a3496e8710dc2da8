"""``moorage grant --group GROUP PATTERN ACTIONS`` and ``moorage revoke --group GROUP PATTERN``:
grants to directory groups from the shell (the ``--group`` branch of moorage.auth.cli)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Awaitable, Callable

import click

from .groups import valid_group_name
from .policy import parse_actions, valid_pattern

if TYPE_CHECKING:
    from ..config import Settings
    from ..metadata.auth_store import AuthStore

#: ``_run`` of moorage.auth.cli, bound to the command's --config/--data.
Runner = Callable[[Callable[["AuthStore", "Settings"], Awaitable[Any]]], Any]


def _group_store(store: AuthStore) -> Any:
    from ..metadata.group_store import GroupStore

    return GroupStore(store.db)


def _check_group(group: str) -> None:
    if not valid_group_name(group):
        raise click.BadParameter("1-255 printable characters, no surrounding spaces", param_hint="--group")


def grant_group(run: Runner, group: str, pattern: str, actions: str) -> None:
    _check_group(group)
    if not valid_pattern(pattern):
        raise click.BadParameter(f"invalid repository pattern {pattern!r}", param_hint="REPO_PATTERN")
    try:
        acts = parse_actions(actions)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="ACTIONS") from None
    if not acts:
        raise click.BadParameter("name at least one action", param_hint="ACTIONS")
    run(lambda store, _s: _group_store(store).grant(group, pattern, acts))
    click.echo(f"granted {','.join(sorted(acts))} on {pattern} to group {group}", err=True)


def revoke_group(run: Runner, group: str, pattern: str) -> None:
    _check_group(group)
    if not run(lambda store, _s: _group_store(store).revoke(group, pattern)):
        raise click.ClickException(f"group {group} has no grant on {pattern!r}")
    click.echo(f"revoked group {group}'s grant on {pattern}", err=True)
