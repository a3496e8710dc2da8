"""``moorage user|grant|revoke|token|repo|namespace``: manage access control from the shell.

Every command opens the same metadata database as ``moorage serve`` (``--config``/``--data``
or ``MOORAGE_*``) and works while the server runs; changes take effect at the next token
request (revoking an access token: at once).  Changes are operations of the accounts service
(:class:`~moorage.accounts.service.AccountsService`) with the caller
:func:`~moorage.cli_common.cli_principal` (face ``cli``): audited by it, in the change's transaction.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

import click

from ..cli_common import cli_principal, data_options, settings_from
from ..registry.access_rules import parse_actions, parse_duration, parse_token_scope, valid_pattern, valid_username

if TYPE_CHECKING:  # imported where used: the listings on SQLite run without SQLAlchemy, asyncio or bcrypt
    from ..accounts.service import AccountsService
    from ..config import Settings
    from ..metadata.auth_store import AuthStore
    from ..metadata.records import UserRecord
    from ..metadata.sqlite_reads import SQLiteAuthReader

T = TypeVar("T")


def _run(config: str | None, data: str | None, fn: Callable[[AuthStore, Settings], Awaitable[T]]) -> T:
    return _run_with(settings_from(config, data), fn)


def _run_with(settings: Settings, fn: Callable[[AuthStore, Settings], Awaitable[T]]) -> T:
    import asyncio

    from ..metadata.auth_store import AuthStore, AuthStoreError

    async def go() -> T:
        from ..metadata.db import Database  # (not ..api.app: keep aiohttp & co out of the CLI)

        db = Database(settings.database_url, pool_size=2)
        try:
            auto = settings.database.auto_migrate
            if auto if auto is not None else settings.is_sqlite:
                await db.migrate()
            else:
                await db.check_schema()
            return await fn(AuthStore(db), settings)
        finally:
            await db.close()

    from ..metadata.schema_version import SchemaOutOfDate

    try:
        return asyncio.run(go())
    except (AuthStoreError, SchemaOutOfDate) as exc:  # one line, no traceback
        raise click.ClickException(str(exc)) from None


def _change(
    config: str | None, data: str | None, fn: Callable[[AccountsService, Any], Awaitable[T]], *, warn_inactive: bool = False
) -> T:
    """Run one accounts-service operation as the CLI's principal; its refusal as one line.
    ``warn_inactive``: after it, one warning line on stderr if the auth mode ignores accounts
    (:func:`~moorage.accounts.service.inactive_accounts_note`); the exit code stays 0."""
    from ..accounts.service import AccountsService, inactive_accounts_note
    from ..errors import RegistryError

    principal = cli_principal()
    settings = settings_from(config, data)
    try:
        result = _run_with(settings, lambda store, s: fn(AccountsService(store.db, s), principal))
    except RegistryError as exc:
        raise click.ClickException(exc.message) from None
    if warn_inactive and (note := inactive_accounts_note(settings)) is not None:
        click.echo(f"warning: {note}", err=True)
    return result


def _read(
    config: str | None,
    data: str | None,
    fast: Callable[[SQLiteAuthReader], T],
    fn: Callable[[AuthStore, Settings], Awaitable[T]],
) -> T:
    """A listing: ``fast`` on a SQLite database at the current schema (standard library only,
    :mod:`moorage.metadata.sqlite_reads`), else ``fn`` through the store as every command."""
    settings = settings_from(config, data)
    import sqlite3

    from ..metadata import sqlite_reads

    conn = sqlite_reads.open_current(settings.database_url) if settings.is_sqlite else None
    if conn is not None:
        reader = sqlite_reads.SQLiteAuthReader(conn)
        try:
            return fast(reader)
        except sqlite3.Error:  # (locked past the timeout ...): the full path retries and reports it
            pass
        finally:
            reader.close()
    return _run_with(settings, fn)  # PostgreSQL, or a schema to migrate or check


def _read_password(stdin: bool, prompt: str = "Password") -> str:
    pw = sys.stdin.readline().rstrip("\r\n") if stdin else click.prompt(prompt, hide_input=True, confirmation_prompt=True)
    if not pw:
        raise click.ClickException("empty password")
    return pw


def _when(ts: float | None) -> str:
    if ts is None:
        return "-"
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _check_user_name(name: str) -> None:
    if not valid_username(name):
        raise click.BadParameter(
            "lower-case letters, digits and single '.', '_' or '-' separators; at most 64", param_hint="NAME"
        )


# -- user ---------------------------------------------------------------------------------------
@click.group()
def user() -> None:
    """Manage users and robot accounts."""


@user.command("add")
@data_options
@click.argument("name")
@click.option("--password-stdin", is_flag=True, help="Read the password from the first line of stdin.")
@click.option("--admin", is_flag=True, help="May do anything, including the admin API.")
@click.option(
    "--robot",
    is_flag=True,
    help="A robot account: no password and no namespace of its own; log in with a token from `moorage token create`.",
)
def user_add(config: str | None, data: str | None, name: str, password_stdin: bool, admin: bool, robot: bool) -> None:
    """Create a user (prompts for the password unless --password-stdin)."""
    _check_user_name(name)
    password = None if robot else _read_password(password_stdin)
    _change(
        config, data, lambda service, who: service.add_user(who, name, password, admin=admin, robot=robot), warn_inactive=True
    )
    click.echo(f"created {'robot' if robot else 'admin' if admin else 'user'} {name}", err=True)


@user.command("passwd")
@data_options
@click.argument("name")
@click.option("--password-stdin", is_flag=True, help="Read the password from the first line of stdin.")
def user_passwd(config: str | None, data: str | None, name: str, password_stdin: bool) -> None:
    """Set a user's password (refresh tokens issued before stop working)."""
    password = _read_password(password_stdin, "New password")
    _change(config, data, lambda service, who: service.set_password(who, name, password))
    click.echo(f"password of {name} changed", err=True)


@user.command("rm")
@data_options
@click.argument("name")
def user_rm(config: str | None, data: str | None, name: str) -> None:
    """Delete a user with their grants and access tokens."""
    _change(config, data, lambda service, who: service.delete_user(who, name))
    click.echo(f"deleted {name}", err=True)


@user.command("list")
@data_options
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def user_list(config: str | None, data: str | None, as_json: bool) -> None:
    """List users with their grants."""

    def combine(users: list[UserRecord], grants: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [{**u.public_dict(), "grants": [g for g in grants if g["user"] == u.name]} for u in users]

    async def go(store: AuthStore, _s: Settings) -> list[dict[str, Any]]:
        return combine(await store.list_users(), await store.list_grants())

    rows = _read(config, data, lambda reader: combine(reader.list_users(), reader.list_grants()), go)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    for r in rows:
        kind = "admin" if r["admin"] else "robot" if r["robot"] else "user"
        grants = ", ".join(f"{g['pattern']}={','.join(g['actions'])}" for g in r["grants"]) or "-"
        click.echo(f"{r['name']:<24} {kind:<6} {grants}")


# -- grants ---------------------------------------------------------------------------------------
@click.command("grant")
@data_options
@click.option("--group", metavar="GROUP", help="Grant to every member of directory group GROUP instead of a USER.")
@click.argument("user_name", metavar="USER")
@click.argument("pattern", metavar="REPO_PATTERN")
@click.argument("actions", metavar="ACTIONS", required=False)
def grant(config: str | None, data: str | None, group: str | None, user_name: str, pattern: str, actions: str | None) -> None:
    """Give USER ACTIONS (pull,push,delete,admin) on repositories matching REPO_PATTERN
    (e.g. 'team/*'; '*' matches across '/'). Replaces an earlier grant on the same pattern.
    With --group GROUP: `grant --group GROUP REPO_PATTERN ACTIONS`."""
    if group is not None:  # (moorage.auth.groups_cli) the arguments shift: no USER
        from .groups_cli import grant_group

        if actions is not None:
            raise click.UsageError("with --group give REPO_PATTERN ACTIONS, no USER")
        grant_group(lambda fn: _change(config, data, fn, warn_inactive=True), group, user_name, pattern)
        return
    if actions is None:
        raise click.UsageError("Missing argument 'ACTIONS'.")
    if not valid_pattern(pattern):
        raise click.BadParameter(f"invalid repository pattern {pattern!r}", param_hint="REPO_PATTERN")
    try:
        acts = parse_actions(actions)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="ACTIONS") from None
    if not acts:
        raise click.BadParameter("name at least one action", param_hint="ACTIONS")
    _change(config, data, lambda service, who: service.add_grant(who, user_name, pattern, acts), warn_inactive=True)
    click.echo(f"granted {','.join(sorted(acts))} on {pattern} to {user_name}", err=True)


@click.command("revoke")
@data_options
@click.option("--group", metavar="GROUP", help="Revoke directory group GROUP's grant instead of a USER's.")
@click.argument("user_name", metavar="USER")
@click.argument("pattern", metavar="REPO_PATTERN", required=False)
def revoke(config: str | None, data: str | None, group: str | None, user_name: str, pattern: str | None) -> None:
    """Remove USER's grant on REPO_PATTERN.

    With --group GROUP: `revoke --group GROUP REPO_PATTERN` (a directory group's grant)."""
    if group is not None:  # (moorage.auth.groups_cli) the arguments shift: no USER
        from .groups_cli import revoke_group

        if pattern is not None:
            raise click.UsageError("with --group give REPO_PATTERN only, no USER")
        revoke_group(lambda fn: _change(config, data, fn), group, user_name)
        return
    if pattern is None:
        raise click.UsageError("Missing argument 'REPO_PATTERN'.")
    _change(config, data, lambda service, who: service.revoke_grant(who, user_name, pattern))
    click.echo(f"revoked {user_name}'s grant on {pattern}", err=True)


# -- access tokens --------------------------------------------------------------------------------
@click.group()
def token() -> None:
    """Personal access tokens and robot tokens (usable as passwords)."""


@token.command("create")
@data_options
@click.argument("user_name", metavar="USER")
@click.option("--name", "token_name", default="token", show_default=True, help="A label for the token.")
@click.option(
    "--scope",
    "scopes",
    multiple=True,
    metavar="PATTERN:ACTIONS",
    help="Restrict the token (repeatable), e.g. 'team/*:pull'. Default: all of USER's rights.",
)
@click.option("--expires", metavar="DURATION", help="Lifetime, e.g. 30d, 12h (default: never).")
def token_create(
    config: str | None, data: str | None, user_name: str, token_name: str, scopes: tuple[str, ...], expires: str | None
) -> None:
    """Create an access token and print it (the only time it is shown)."""
    try:
        parse_token_scope(scopes)
        expires_at = time.time() + parse_duration(expires) if expires else None
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    rec, text = _change(
        config,
        data,
        lambda service, who: service.create_token(who, user_name, token_name, list(scopes) or None, expires_at),
        warn_inactive=True,
    )
    click.echo(f"token {rec.id} for {user_name} (shown once; use it as the password):", err=True)
    click.echo(text)


@token.command("revoke")
@data_options
@click.argument("token_id", metavar="ID")
def token_revoke(config: str | None, data: str | None, token_id: str) -> None:
    """Revoke a token (effective at once, also for registry tokens issued with it)."""
    try:
        count = _change(config, data, lambda service, who: service.revoke_token(who, token_id))
    except click.ClickException:
        raise click.ClickException(f"no unrevoked token {token_id!r}") from None
    more = f" and {count - 1} token(s) made with it" if count > 1 else ""
    click.echo(f"revoked {token_id}{more}", err=True)


@token.command("list")
@data_options
@click.argument("user_name", metavar="USER", required=False)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def token_list(config: str | None, data: str | None, user_name: str | None, as_json: bool) -> None:
    """List access tokens (never their secrets)."""
    rows = _read(config, data, lambda reader: reader.list_tokens(user_name), lambda store, _s: store.list_tokens(user_name))
    if as_json:
        click.echo(json.dumps([r.public_dict() for r in rows], indent=2))
        return
    for r in rows:
        state = "revoked" if r.revoked_at else "expired" if not r.usable() else "active"
        scope = " ".join(r.scope) if r.scope else "(all)"
        click.echo(f"{r.id}  {r.user:<16} {r.name:<16} {state:<8} expires {_when(r.expires_at)}  {scope}")


# -- visibility -----------------------------------------------------------------------------------
@click.group()
def repo() -> None:
    """Repository settings."""


@repo.command("public")
@data_options
@click.argument("name")
@click.option("--on/--off", "public", default=True, help="Allow anonymous pull (default --on).")
def repo_public(config: str | None, data: str | None, name: str, public: bool) -> None:
    """Make repository NAME public (anonymous pull) or private again."""
    from ..registry.names import is_valid_name

    if not is_valid_name(name):
        raise click.BadParameter(f"invalid repository name {name!r}", param_hint="NAME")
    _change(config, data, lambda service, who: service.set_visibility(who, repository=name, public=public))
    click.echo(f"{name} is now {'public' if public else 'private'}", err=True)


@click.group()
def namespace() -> None:
    """Organisations / namespaces (grant on 'NAME/*', make a whole namespace public)."""


@namespace.command("add")
@data_options
@click.argument("name")
@click.option("--public", is_flag=True, help="Anyone may pull every repository under NAME/.")
def namespace_add(config: str | None, data: str | None, name: str, public: bool) -> None:
    """Create a namespace."""
    from ..registry.names import is_valid_name

    if not is_valid_name(name):
        raise click.BadParameter(f"invalid namespace {name!r}", param_hint="NAME")
    _change(config, data, lambda service, who: service.add_namespace(who, name, public))
    click.echo(f"created namespace {name}" + (" (public)" if public else ""), err=True)


@namespace.command("public")
@data_options
@click.argument("name")
@click.option("--on/--off", "public", default=True, help="Allow anonymous pull under NAME/ (default --on).")
def namespace_public(config: str | None, data: str | None, name: str, public: bool) -> None:
    """Make every repository under NAME/ public, or private again."""
    from ..registry.names import is_valid_name

    if not is_valid_name(name):
        raise click.BadParameter(f"invalid namespace {name!r}", param_hint="NAME")
    _change(config, data, lambda service, who: service.set_visibility(who, namespace=name, public=public))
    click.echo(f"namespace {name} is now {'public' if public else 'private'}", err=True)


@namespace.command("rm")
@data_options
@click.argument("name")
def namespace_rm(config: str | None, data: str | None, name: str) -> None:
    """Delete a namespace record (its repositories stay)."""
    _change(config, data, lambda service, who: service.delete_namespace(who, name))


@namespace.command("list")
@data_options
def namespace_list(config: str | None, data: str | None) -> None:
    """List namespaces."""
    for ns in _read(config, data, lambda reader: reader.list_namespaces(), lambda store, _s: store.list_namespaces()):
        click.echo(f"{ns['name']:<32} {'public' if ns['public'] else 'private'}")


commands = [user, grant, revoke, token, repo, namespace]
