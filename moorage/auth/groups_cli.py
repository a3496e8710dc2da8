"""``moorage grant --group GROUP PATTERN ACTIONS`` and ``moorage revoke --group GROUP PATTERN``:
grants to directory groups from the shell (the ``--group`` branch of moorage.auth.cli).

Parse -> the accounts service (``add_group_grant`` / ``revoke_group_grant``, face ``cli``:
authorized, validated and audited in the change's transaction there) -> one line.  The
arguments are checked here first only to name the offending one in click's usage error; the
service's own refusal is a one-line error too, never a traceback."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import click

from ..registry.access_rules import MAX_GROUP_NAME, parse_actions, valid_group_name, valid_pattern

if TYPE_CHECKING:
    from ..accounts.service import AccountsService

#: ``_change`` of moorage.auth.cli, bound to the command's --config/--data: runs one
#: accounts-service operation as the CLI's principal.
Changer = Callable[[Callable[["AccountsService", Any], Awaitable[Any]]], Any]


def _check_group(group: str) -> None:
    if not valid_group_name(group):
        raise click.BadParameter(f"1-{MAX_GROUP_NAME} printable characters, no surrounding spaces", param_hint="--group")


def _check_pattern(pattern: str) -> None:
    if not valid_pattern(pattern):
        raise click.BadParameter(f"invalid repository pattern {pattern[:100]!r}", param_hint="REPO_PATTERN")


def grant_group(change: Changer, group: str, pattern: str, actions: str) -> None:
    _check_group(group)
    _check_pattern(pattern)
    try:
        acts = parse_actions(actions)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="ACTIONS") from None
    if not acts:
        raise click.BadParameter("name at least one action", param_hint="ACTIONS")
    change(lambda service, who: service.add_group_grant(who, group, pattern, acts))
    click.echo(f"granted {','.join(sorted(acts))} on {pattern} to group {group}", err=True)


def revoke_group(change: Changer, group: str, pattern: str) -> None:
    _check_group(group)
    _check_pattern(pattern)
    change(lambda service, who: service.revoke_group_grant(who, group, pattern))
    click.echo(f"revoked group {group}'s grant on {pattern}", err=True)
