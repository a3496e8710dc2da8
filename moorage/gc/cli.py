"""``moorage gc``, ``moorage retention``, ``moorage immutable``, ``moorage quota``.

All take ``--config/--data`` like ``moorage serve`` and may run while the server serves.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from ..cli_common import command_context, data_options, settings_from
from ..config import Settings
from .patterns import human, parse_size

T = TypeVar("T")


@asynccontextmanager
async def _opened(settings: Settings, *, blobs: bool = False) -> AsyncIterator[tuple[Any, Any]]:
    from ..components import prepare_database

    components = command_context().components_for(settings, pool_size=2)
    try:
        await prepare_database(settings, components.database)
        if blobs:
            await components.blobs.open()
        yield components.database, components.blobs if blobs else None
    finally:
        if blobs:
            await components.blobs.close()
        await components.database.close()


def _run_job(settings: Settings, fn: Callable[[Any], Awaitable[T]], *, blobs: bool = True) -> T:
    """``fn(components)`` for a command whose deletes are registry changes (``moorage gc``,
    ``moorage retention apply``): the registry service records them -- audit entries, webhook
    outbox rows for the server to deliver -- as the server's would (``events.enabled``)."""

    async def main() -> T:
        from ..components import prepare_database
        from ..events.setup import command_recorder

        components = command_context().components_for(settings, pool_size=2)
        try:
            await prepare_database(settings, components.database)
            if blobs:
                await components.blobs.open()
            components.events.recorder = await command_recorder(settings, components.database)
            return await fn(components)
        finally:
            if blobs:
                await components.blobs.close()
            await components.database.close()

    try:
        return asyncio.run(main())
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None


def _run(settings: Settings, fn: Callable[[Any, Any], Awaitable[T]], *, blobs: bool = False) -> T:
    async def main() -> T:
        async with _opened(settings, blobs=blobs) as (db, store):
            return await fn(db, store)

    try:
        return asyncio.run(main())
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None


def _policy_change(config: str | None, data: str | None, change: Callable[[Any, Any], Awaitable[T]]) -> T:
    """``change(service, principal)`` on :class:`~moorage.gc.policy_admin.PolicyAdminService` as
    the person running the command: validated, changed and audited (face ``cli``) in one
    transaction, as the web UI's namespaces page does it; a refusal is one line."""
    from .. import errors
    from ..cli_common import cli_principal
    from .policy_admin import PolicyAdminService

    settings = settings_from(config, data)

    async def go(db: Any, _: Any) -> T:
        return await change(PolicyAdminService(db, settings), cli_principal())

    try:
        return _run(settings, go)
    except errors.RegistryError as exc:
        raise click.ClickException(exc.message) from None


class _RichProgress:
    """Adapts the collector's progress callbacks to one rich bar per phase."""

    def __init__(self, progress: Progress) -> None:
        self.p = progress
        self.task: Any = None

    def phase(self, name: str, total: int | None = None) -> None:
        if self.task is not None:
            t = self.p.tasks[-1]
            self.p.update(self.task, total=t.total if t.total is not None else 1, completed=t.total if t.total is not None else 1)
        self.task = self.p.add_task(name, total=total)

    def advance(self, n: int = 1) -> None:
        if self.task is not None:
            self.p.advance(self.task, n)

    def close(self) -> None:
        if self.task is not None:
            t = self.p.tasks[-1]
            self.p.update(self.task, total=t.total if t.total is not None else 1, completed=t.total if t.total is not None else 1)


# ------------------------------------------------------------------------------------ gc
@click.command("gc")
@data_options
@click.option(
    "--grace",
    type=float,
    default=None,
    help="Seconds an unreferenced upload/mount/manifest is protected (default gc.grace, 3600).",
)
@click.option("--dry-run", is_flag=True, help="Only show what would be removed (and how many bytes).")
@click.option(
    "--delete-untagged",
    is_flag=True,
    help="Also delete untagged manifests no tag delete left behind (pushed by digest, or left by a tag that moved). "
    "Without it, what a tag delete left untagged goes once the grace period has passed.",
)
@click.option("--repository", "repository", help="Collect one repository only (default: the whole registry).")
@click.option(
    "--upload-expiry",
    type=float,
    default=None,
    help="Abort upload sessions idle this many seconds (default gc.upload_expiry, 86400).",
)
@click.option("--no-retention", is_flag=True, help="Do not apply retention policies in this run.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON on stdout.")
@click.option(
    "--batch-size",
    type=click.IntRange(1, 10_000),
    default=500,
    show_default=True,
    help="Rows per delete transaction (manifests, blobs, links).",
)
@click.option("--check", is_flag=True, help="Only verify index/storage consistency (exit 1 on problems).")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
@click.option(
    "--loop",
    type=float,
    default=0,
    help="Repeat collections back to back for this many seconds (one summary line per run; for soak tests and cron-less setups).",
)
def gc_command(
    config: str | None,
    data: str | None,
    grace: float | None,
    dry_run: bool,
    delete_untagged: bool,
    repository: str | None,
    upload_expiry: float | None,
    no_retention: bool,
    as_json: bool,
    batch_size: int,
    check: bool,
    quiet: bool,
    loop: float,
) -> None:
    """Garbage-collect while the registry serves: images whose tag was deleted (after the grace
    period), unreferenced blobs, and with --delete-untagged every untagged manifest."""
    from ..registry.principal import Principal
    from .collector import Collector, GCOptions, check_consistency

    settings = settings_from(config, data)
    if check:
        problems = _run(settings, lambda db, store: check_consistency(db, store), blobs=True)
        for p in problems:
            click.echo(p)
        click.echo(f"{len(problems)} problem(s)" if problems else "consistent")
        sys.exit(1 if problems else 0)
    if repository is not None:
        from ..errors import RegistryError
        from ..registry.names import validate_name

        try:
            validate_name(repository)
        except RegistryError as exc:
            raise click.BadParameter(exc.message, param_hint="--repository") from None
    opts = GCOptions(
        grace=settings.gc.grace if grace is None else grace,
        dry_run=dry_run,
        delete_untagged=delete_untagged or settings.gc.delete_untagged,
        repository=repository,
        upload_expiry=settings.gc.upload_expiry if upload_expiry is None else upload_expiry,
        apply_retention=not no_retention,
        batch_size=batch_size,
    )
    if opts.grace < 0:
        raise click.BadParameter("must be >= 0", param_hint="--grace")
    by = Principal.job("gc", "cli")  # (its tag deletes: actor "retention")
    if loop > 0:

        async def repeat(c: Any) -> None:
            until = time.monotonic() + loop
            while time.monotonic() < until:
                result = await Collector(c.database, c.blobs, opts, registry=c.registry, by=by).run()
                line = json.dumps(result.summary()) if as_json else " ".join(f"{k}={v}" for k, v in result.summary().items())
                click.echo(line)

        _run_job(settings, repeat)
        return
    err = Console(stderr=True)
    progress = Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        disable=quiet or as_json or not err.is_terminal,
    )

    async def go(c: Any) -> Any:
        adapter = _RichProgress(progress)
        with progress:
            result = await Collector(c.database, c.blobs, opts, adapter, registry=c.registry, by=by).run()
            adapter.close()
        return result

    result = _run_job(settings, go)
    summary = result.summary()
    if as_json:
        out = dict(summary)
        if dry_run:
            out["would_remove"] = {
                "tags": result.tags,
                "manifests": result.manifests,
                "blobs": result.blobs,
                "orphans": result.orphans,
            }
        click.echo(json.dumps(out, indent=2))
        return
    console = Console()
    if not console.is_terminal:  # piped or redirected: one line per item, never cut to 80 columns
        console = Console(width=10_000)
    if dry_run:
        for repo, tag in result.tags:
            console.print(f"would untag     {repo}:{tag}", highlight=False)
        for repo, digest, _size in result.manifests:
            console.print(f"would delete    {repo}@{digest}", highlight=False)
        for digest, size in result.blobs:
            console.print(f"would delete    {digest}  {size} bytes", highlight=False)
        for digest, size in result.orphans:
            console.print(f"would delete    {digest}  {size} bytes (in storage only)", highlight=False)
    table = Table(title="moorage gc" + (" (dry run: nothing removed)" if dry_run else ""), show_header=False)
    verb = "would remove" if dry_run else "removed"
    table.add_row(f"tags {verb} (retention)", str(summary["tags_removed"]))
    table.add_row(f"manifests {verb}", str(summary["manifests_removed"]))
    table.add_row(f"blobs {verb}", f"{summary['blobs_removed']} ({summary['orphans_removed']} only in storage)")
    table.add_row(f"bytes {verb}", f"{summary['bytes_removed']} ({human(summary['bytes_removed'])})")
    table.add_row(f"stale links {verb}", str(summary["links_removed"]))
    table.add_row(f"stale uploads {'to abort' if dry_run else 'aborted'}", str(summary["uploads_aborted"]))
    if summary["tombstones_finished"]:
        table.add_row("interrupted sweep finished", f"{summary['tombstones_finished']} blobs")
    if summary["skipped_concurrent"]:
        table.add_row("kept (used concurrently)", str(summary["skipped_concurrent"]))
    table.add_row("time", f"{result.seconds:.2f} s")
    console.print(table)
    for kept in summary["kept"]:  # what no tag keeps, why, and what would collect it
        click.echo(f"kept: {kept['text']}")  # never wrapped: read by people and scripts


# ----------------------------------------------------------------------------- retention
@click.group("retention")
def retention_group() -> None:
    """Retention policies: which tags `moorage gc` removes per repository/namespace pattern."""


@retention_group.command("set")
@data_options
@click.argument("pattern")
@click.option("--keep-last", type=int, help="Keep the N most recently pushed tags.")
@click.option("--keep-regex", help="Always keep tags fully matching this regular expression.")
@click.option("--expire-days", type=float, help="Remove tags pushed more than D days ago.")
def retention_set(
    config: str | None, data: str | None, pattern: str, keep_last: int | None, keep_regex: str | None, expire_days: float | None
) -> None:
    """Set the policy of repositories matching PATTERN (``team/app``, ``team/*``, ``*``)."""
    from .retention import RetentionPolicy

    if keep_last is None and keep_regex is None and expire_days is None:
        raise click.UsageError("a retention policy needs at least one of --keep-last, --keep-regex, --expire-days")
    policy = RetentionPolicy(pattern, keep_last, keep_regex, expire_days)
    _policy_change(config, data, lambda service, who: service.set_retention(who, policy))
    click.echo(f"retention {pattern}: {policy.describe()}")


@retention_group.command("list")
@data_options
def retention_list(config: str | None, data: str | None) -> None:
    """Show the retention policies."""
    from .retention import list_policies

    policies = _run(settings_from(config, data), lambda db, _: list_policies(db))
    if not policies:
        click.echo("no retention policies")
    for p in policies:
        click.echo(f"{p.pattern}\t{p.describe()}")


@retention_group.command("rm")
@data_options
@click.argument("pattern")
def retention_rm(config: str | None, data: str | None, pattern: str) -> None:
    """Remove the policy of PATTERN."""
    _policy_change(config, data, lambda service, who: service.remove_retention(who, pattern))
    click.echo(f"removed retention policy {pattern}")


@retention_group.command("apply")
@data_options
@click.option("--dry-run", is_flag=True, help="Only show which tags would be removed.")
@click.option("--repository", help="Only this repository.")
def retention_apply(config: str | None, data: str | None, dry_run: bool, repository: str | None) -> None:
    """Remove the tags the policies select now (blobs go at the next `moorage gc --delete-untagged`)."""
    from ..registry.principal import Principal
    from . import retention

    async def go(c: Any) -> tuple[list[retention.TagInfo], int]:
        db = c.database
        policies = await retention.list_policies(db)
        by = Principal.job("retention", "cli")
        if not policies:
            return [], 0
        if repository is not None:
            # ranked by the database a batch at a time: a 100,000-tag repository costs its
            # doomed tags, each batch removed before the next is read
            doomed: list[retention.TagInfo] = []
            removed = 0
            async for part in retention.plan_repository_batches(db, policies, repository, time.time()):
                doomed += part
                removed += 0 if dry_run else await retention.remove_tags(c.registry, part, by)
            return doomed, removed
        doomed = await retention.plan_all(db, policies, time.time())  # only the repositories where a rule can remove something
        removed = 0 if dry_run else await retention.remove_tags(c.registry, doomed, by)
        return doomed, removed

    doomed, removed = _run_job(settings_from(config, data), go, blobs=False)
    for t in doomed:
        click.echo(f"{'would remove' if dry_run else 'removed'} {t.repository}:{t.name}")
    click.echo(f"{len(doomed)} tag(s) {'would be removed' if dry_run else f'selected, {removed} removed'}")


# ----------------------------------------------------------------------------- immutable
@click.group("immutable")
def immutable_group() -> None:
    """Immutable tags: tags that can't be moved to another manifest once pushed."""


@immutable_group.command("set")
@data_options
@click.argument("repo_pattern")
@click.argument("tag_regex")
def immutable_set(config: str | None, data: str | None, repo_pattern: str, tag_regex: str) -> None:
    """Make tags fully matching TAG_REGEX immutable in repositories matching REPO_PATTERN."""
    _policy_change(config, data, lambda service, who: service.set_immutable(who, repo_pattern, tag_regex))
    click.echo(f"immutable: {repo_pattern} tags {tag_regex}")


@immutable_group.command("list")
@data_options
def immutable_list(config: str | None, data: str | None) -> None:
    """Show the immutable-tag rules."""
    from .immutable import list_rules

    rules = _run(settings_from(config, data), lambda db, _: list_rules(db))
    if not rules:
        click.echo("no immutable-tag rules")
    for r in rules:
        click.echo(f"{r.repo_pattern}\t{r.tag_regex}")


@immutable_group.command("rm")
@data_options
@click.argument("repo_pattern")
@click.argument("tag_regex", required=False)
def immutable_rm(config: str | None, data: str | None, repo_pattern: str, tag_regex: str | None) -> None:
    """Remove the rule(s) of REPO_PATTERN (all of them, or the one with TAG_REGEX)."""
    n = _policy_change(config, data, lambda service, who: service.remove_immutable(who, repo_pattern, tag_regex))
    click.echo(f"removed {n} rule(s)")


# --------------------------------------------------------------------------------- quota
@click.group("quota")
def quota_group() -> None:
    """Storage quotas per namespace (unique blob bytes)."""


@quota_group.command("set")
@data_options
@click.argument("namespace")
@click.argument("size")
def quota_set(config: str | None, data: str | None, namespace: str, size: str) -> None:
    """Limit NAMESPACE (and everything below it) to SIZE bytes (e.g. 1073741824, 500M, 10GiB)."""
    try:
        limit = parse_size(size)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="SIZE") from None
    _policy_change(config, data, lambda service, who: service.set_quota(who, namespace, limit))
    click.echo(f"quota {namespace.strip('/')}: {limit} bytes ({human(limit)})")


@quota_group.command("list")
@data_options
def quota_list(config: str | None, data: str | None) -> None:
    """Show quotas and current usage."""
    from .quotas import list_quotas, usage

    async def go(db: Any, _: Any) -> list[tuple[str, int, int]]:
        return [(q.namespace, q.limit_bytes, await usage(db, q.namespace)) for q in await list_quotas(db)]

    rows = _run(settings_from(config, data), go)
    if not rows:
        click.echo("no quotas")
    for ns, limit, used in rows:
        click.echo(f"{ns}\t{used}/{limit} bytes\t({human(used)} of {human(limit)})")


@quota_group.command("rm")
@data_options
@click.argument("namespace")
def quota_rm(config: str | None, data: str | None, namespace: str) -> None:
    """Remove the quota of NAMESPACE."""
    _policy_change(config, data, lambda service, who: service.remove_quota(who, namespace))
    click.echo(f"removed quota {namespace}")


commands = [gc_command, retention_group, immutable_group, quota_group]
