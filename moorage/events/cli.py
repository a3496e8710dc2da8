"""``moorage audit``: read the audit log; and the audit entries of changes made from the CLI.

``moorage audit --json`` prints one JSON object per line (oldest first) with ``time`` (ISO 8601,
UTC), ``timestamp``, ``actor``, ``action``, ``repository``, ``target``, ``client_ip``,
``user_agent`` and ``detail``.  Works while the server runs (same database).

:func:`wrap_commands` gives ``moorage retention apply`` one entry for the run (``retention.apply``)
after it succeeds: actor ``cli:<OS user>``, face ``cli``, client_ip ``local``, an allow-list of
parameters (each tag it removes is an entry of its own, ``tag.expire``, written by the registry
service in the delete's transaction).  Every other change is audited by its service in the
change's own transaction, with the same actor and face: accounts (users, grants, tokens,
namespaces, visibility: :mod:`moorage.accounts`), policies (quotas, retention, immutable tags:
:mod:`moorage.gc.policy_admin`), webhooks.
"""

from __future__ import annotations

import getpass
import json
import sys
import time
import weakref
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

import click

from ..cli_common import data_options, settings_from
from ..config import Settings
from .query import iso, parse_time

if TYPE_CHECKING:
    from ..metadata.db import Database
    from ..metadata.events_store import AuditEntry, EventsStore

T = TypeVar("T")

#: Command paths (``group sub``) that change state outside an audited service, and their audit
#: action.  (``user``, ``grant``, ``revoke``, ``token``, ``repo public`` and ``namespace`` are
#: audited by :class:`moorage.accounts.service.AccountsService`: listing them here would write
#: every entry twice.)
CLI_ACTIONS = {
    "retention apply": "retention.apply",
}
SAFE_PARAMS = (
    "name",
    "user",
    "pattern",
    "actions",
    "namespace",
    "repository",
    "public",
    "admin",
    "robot",
    "scope",
    "expires",
    "limit",
    "keep_last",
    "keep_regex",
    "expire_days",
    "tag_regex",
    "token_id",
    "id",
    "dry_run",
    "private",
    "delivery_id",
)


async def _open(settings: Settings) -> Database:
    from ..metadata.db import Database

    db = Database(settings.database_url, pool_size=2)
    auto = settings.database.auto_migrate
    if auto if auto is not None else settings.is_sqlite:
        await db.migrate()
    else:
        await db.check_schema()
    return db


@click.command("audit")
@data_options
@click.option("--actor", help="Only entries by this user.")
@click.option("--repository", help="Only this repository (a trailing * matches a prefix: 'team/*').")
@click.option("--action", help="Only this action (push, pull, delete, login, login.failed, grant.add ...; 'grant.*').")
@click.option("--since", help="Not before: epoch seconds, ISO 8601, or a duration back from now (24h, 7d).")
@click.option("--until", help="Before: same forms as --since.")
@click.option("--limit", type=click.IntRange(1, 100_000), default=100, show_default=True, help="Newest N entries.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def audit_command(
    config: str | None,
    data: str | None,
    actor: str | None,
    repository: str | None,
    action: str | None,
    since: str | None,
    until: str | None,
    limit: int,
    as_json: bool,
) -> None:
    """Show the audit log: who did what, when, from where (oldest first)."""
    from ..metadata.events_store import AuditQuery, EventsStore
    from .api import public_entry

    settings = settings_from(config, data)
    try:
        q = AuditQuery(
            actor=actor,
            repository=repository,
            action=action,
            limit=limit,
            since=parse_time(since) if since else None,
            until=parse_time(until) if until else None,
        )
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None

    async def run() -> list[dict[str, Any]]:
        db = await _open(settings)
        try:
            return await EventsStore(db).query_audit(q)
        finally:
            await db.close()

    from ..metadata.schema_version import SchemaOutOfDate

    try:
        import asyncio

        entries = asyncio.run(run())
    except SchemaOutOfDate as exc:
        raise click.ClickException(str(exc)) from None
    ordered = [public_entry(e) for e in sorted(entries, key=lambda e: (e["time"], e["id"]))]  # buffered pulls/logins land late
    if as_json:
        for out in ordered:
            click.echo(json.dumps(out, separators=(",", ":"), ensure_ascii=False))
        return
    for line in audit_table(ordered):
        click.echo(line)


#: The columns of ``moorage audit`` (header, width; the last is not padded).
AUDIT_COLUMNS = (("TIME", 20), ("ACTOR", 16), ("FACE", 4), ("ACTION", 16), ("WHAT", 60), ("CLIENT", 0))


def _printable(value: Any) -> str:
    """A cell: control characters (a terminal's escape sequences) shown as ``?``."""
    return "".join(ch if ch.isprintable() else "?" for ch in str(value))


def audit_table(entries: list[dict[str, Any]]) -> list[str]:
    """The lines of the ``moorage audit`` table: a header row, then one row per entry (as
    :func:`.api.public_entry` gives it); ``WHAT`` is the entry's summary (a push's tag, whose
    token, what GC removed), cut to its column only when it would not fit."""
    lines = []
    header = [name.ljust(width) if width else name for name, width in AUDIT_COLUMNS]
    lines.append(" ".join(header).rstrip())
    for out in entries:
        outcome = "" if out.get("outcome") in (None, "ok") else f" ({out['outcome']})"
        cells = [
            str(out["time"])[:20],
            out["actor"] or "-",
            out.get("face") or "-",
            out["action"] + outcome,
            out.get("summary") or out["target"] or out["repository"] or "-",
            out["client_ip"] or "-",
        ]
        row = []
        for (_, width), cell in zip(AUDIT_COLUMNS, cells, strict=False):
            text = _printable(cell)
            if width:
                text = (text[: width - 1] + "…" if len(text) > width else text).ljust(width)
            row.append(text)
        lines.append(" ".join(row).rstrip())
    return lines


@click.group("webhooks")
def webhooks_group() -> None:
    """Webhook endpoints and their delivery history (dead letters included)."""


def _run_store(settings: Settings, fn: Callable[[EventsStore], Awaitable[T]]) -> T:
    from ..metadata.events_store import EventsStore
    from ..metadata.schema_version import SchemaOutOfDate

    async def run() -> T:
        db = await _open(settings)
        try:
            return await fn(EventsStore(db))
        finally:
            await db.close()

    try:
        import asyncio

        return asyncio.run(run())
    except SchemaOutOfDate as exc:
        raise click.ClickException(str(exc)) from None


@webhooks_group.command("list")
@data_options
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def webhooks_list(config: str | None, data: str | None, as_json: bool) -> None:
    """Endpoints from the config file and the admin API, with their open and dead deliveries."""
    from .endpoints import from_config, from_row

    settings = settings_from(config, data)

    async def fn(store: EventsStore) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        return await store.list_webhooks(), await store.counters()

    rows, counters = _run_store(settings, fn)
    backlog: dict[tuple[str, str], int] = {(e, st): n for e, st, n in counters["backlog"]}
    for ep in [from_config(c) for c in settings.webhooks] + [from_row(r) for r in rows]:
        info = {
            **ep.public_dict(),
            "pending": backlog.get((ep.name, "pending"), 0) + backlog.get((ep.name, "delivering"), 0),
            "dead": backlog.get((ep.name, "dead"), 0),
        }
        if as_json:
            click.echo(json.dumps(info, separators=(",", ":")))
        else:
            click.echo(
                f"{ep.name:<20} {ep.origin:<6} {ep.format:<12} {','.join(sorted(ep.actions)):<18} "
                f"{','.join(ep.repositories):<24} pending={info['pending']} dead={info['dead']}  {ep.url}"
            )


@webhooks_group.command("deliveries")
@data_options
@click.argument("name")
@click.option("--status", type=click.Choice(["pending", "delivering", "delivered", "dead"]))
@click.option("--limit", type=click.IntRange(1, 100_000), default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def webhooks_deliveries(config: str | None, data: str | None, name: str, status: str | None, limit: int, as_json: bool) -> None:
    """NAME's newest deliveries: status, attempts, last error."""
    settings = settings_from(config, data)
    rows = _run_store(settings, lambda store: store.deliveries(name, status=status, limit=limit))
    for d in rows:
        out = d.public_dict()
        if as_json:
            click.echo(json.dumps(out, separators=(",", ":")))
        else:
            click.echo(
                f"{out['id']:>8} {iso(out['created_at'])} {out['status']:<10} attempts={out['attempts']:<3} "
                f"{out['action']:<7} {out['repository']:<30} {out['last_error'] or ''}"
            )


@webhooks_group.command("retry")
@data_options
@click.argument("name")
@click.argument("delivery_id", type=int)
def webhooks_retry(config: str | None, data: str | None, name: str, delivery_id: int) -> None:
    """Put dead delivery DELIVERY_ID of NAME back in the queue."""
    from .. import errors
    from ..cli_common import cli_principal
    from .endpoints import EndpointSet
    from .webhooks import WebhookService

    settings = settings_from(config, data)

    async def fn(store: EventsStore) -> None:
        service = WebhookService(store.db, settings, store, EndpointSet(settings, store))
        await service.retry(cli_principal(), [], name, delivery_id)  # audited by the service

    try:
        _run_store(settings, fn)
    except errors.NotFound:
        raise click.ClickException(f"no dead delivery {delivery_id} of webhook {name!r}") from None
    click.echo(f"delivery {delivery_id} queued again (the running server sends it)")


commands = [audit_command, webhooks_group]


def _record_cli(path: str, params: dict[str, Any]) -> None:
    """Write the audit entry of a successful CLI change (a failure to do so only warns)."""
    from ..metadata.events_store import EventsStore

    detail = {
        k: v
        for k, v in params.items()
        if k in SAFE_PARAMS and v not in (None, (), []) and isinstance(v, (str, int, float, bool, list, tuple))
    }
    detail = {k: list(v) if isinstance(v, tuple) else v for k, v in detail.items()}
    if isinstance(params.get("repo_pattern"), str):  # ``immutable set|rm REPO_PATTERN``: the rule's target
        detail["pattern"] = params["repo_pattern"]
    repository = named if isinstance(named := detail.get("repository"), str) else None
    target = next((str(detail[k]) for k in ("pattern", "name", "user", "namespace", "token_id", "id") if k in detail), None)
    try:
        user = getpass.getuser()
    except Exception:  # noqa: BLE001 - no passwd entry (containers)
        user = "unknown"
    entry: AuditEntry = {
        "time": time.time(),
        "actor": f"cli:{user}",
        "action": CLI_ACTIONS[path],
        "repository": repository,
        "target": target,
        "client_ip": "local",
        "user_agent": "moorage-cli",
        "detail": detail or None,
        "face": "cli",
        "outcome": "ok",
    }
    try:
        settings = settings_from(params.get("config"), params.get("data"))

        async def run() -> None:
            db = await _open(settings)
            try:
                await EventsStore(db).audit([entry])
            finally:
                await db.close()

        import asyncio

        asyncio.run(run())
    except Exception as exc:  # noqa: BLE001 - the change itself succeeded
        print(f"warning: could not write the audit entry: {exc}", file=sys.stderr)


#: Callbacks that already write an audit entry (wrapping twice would write two).
_AUDITED: weakref.WeakSet[Callable[..., Any]] = weakref.WeakSet()


def _wrap(cmd: click.Command, path: str) -> None:
    original: Callable[..., Any] | None = cmd.callback
    if original is None or original in _AUDITED:
        return

    def callback(*args: Any, **kwargs: Any) -> Any:
        result = original(*args, **kwargs)
        _record_cli(path, kwargs)
        return result

    callback.__doc__ = original.__doc__
    _AUDITED.add(callback)
    cmd.callback = callback


def wrap_commands(group: click.Group) -> None:
    """Called by ``moorage.cli`` once every package's commands are registered."""
    for name, cmd in list(group.commands.items()):
        if isinstance(cmd, click.Group):
            for sub_name, sub in cmd.commands.items():
                if f"{name} {sub_name}" in CLI_ACTIONS:
                    _wrap(sub, f"{name} {sub_name}")
        elif name in CLI_ACTIONS:
            _wrap(cmd, name)
