"""``moorage sbom``, ``moorage vulndb import|status``, ``moorage vulns``, ``moorage vuln-policy``,
``moorage vuln-allow``, ``moorage image-search``: image insight from the command line (safe while
the server runs; they open the same database and storage)."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from .. import errors
from ..cli_common import command_context, data_options, settings_from
from ..config import Settings

T = TypeVar("T")

if TYPE_CHECKING:
    from rich.console import Console

#: Columns of a table written to a pipe or file: wide enough that rich never cuts or wraps a
#: row (it would use 80 columns when stdout is not a terminal).
PIPE_WIDTH = 10_000


def _console(*, stderr: bool = False) -> Console:
    """A rich console; writing to a pipe or a file, one as wide as its widest line."""
    from rich.console import Console

    console = Console(stderr=stderr)
    return console if console.is_terminal else Console(stderr=stderr, width=PIPE_WIDTH)


def _require_insight(what: str) -> None:
    """One line naming the extra when the insight libraries are not installed."""
    from ..extras import MissingExtra, require

    try:
        require("insight", what)
    except MissingExtra as exc:
        raise click.ClickException(str(exc)) from None


def _reference(text: str) -> tuple[str, str]:
    """``NAME:TAG`` or ``NAME@DIGEST`` (``NAME`` alone means ``:latest``)."""
    if "@" in text:
        name, _, ref = text.partition("@")
        return name, ref
    slash = text.rfind("/")
    colon = text.rfind(":")
    if colon > slash:
        return text[:colon], text[colon + 1 :]
    return text, "latest"


@asynccontextmanager
async def _insight(settings: Settings) -> AsyncIterator[Any]:
    from ..components import opened
    from .layers import Limits
    from .service import InsightService
    from .store import InsightStore

    async with opened(settings, policies=command_context().policies) as components:
        cfg = settings.insight
        yield InsightService(
            InsightStore(components.database),
            components.registry,
            components.blobs,
            limits=Limits.from_settings(cfg),
        )


def _run(settings: Settings, fn: Callable[[Any], Awaitable[T]]) -> T:
    async def main() -> T:
        async with _insight(settings) as insight:
            return await fn(insight)

    try:
        return asyncio.run(main())
    except errors.RegistryError as exc:
        raise click.ClickException(f"{exc.code}: {exc.message}") from None
    except (ValueError, OSError) as exc:
        raise click.ClickException(str(exc)) from None


def _admin_run(settings: Settings, change: Callable[[Any, Any], Awaitable[T]]) -> T:
    """``change(admin, principal)`` on the pull policy's admin service, as the person running the
    command (face ``cli``): validated, changed and audited in one transaction."""
    from ..cli_common import cli_principal
    from .policy_admin import PullPolicyAdmin

    return _run(settings, lambda insight: change(PullPolicyAdmin(insight, audited=settings.events.enabled), cli_principal()))


@click.command("sbom")
@data_options
@click.argument("image", required=False)
@click.option("--all", "all_", is_flag=True, help="Every tagged image of the registry.")
@click.option("--force", is_flag=True, help="Scan again even if an SBOM referrer exists.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per image.")
def sbom_command(config: str | None, data: str | None, image: str | None, all_: bool, force: bool, as_json: bool) -> None:
    """Inventory IMAGE (NAME:TAG or NAME@DIGEST) and store CycloneDX and SPDX SBOMs as its referrers."""
    _require_insight("moorage sbom")
    if bool(image) == all_:
        raise click.UsageError("give an IMAGE or --all")
    settings = settings_from(config, data)

    async def work(insight: Any) -> list[Any]:
        targets = [_reference(image)] if image else await _all_tags(insight)
        out = []
        for name, ref in targets:
            try:
                out += await insight.scan(name, ref, force=force)
            except errors.RegistryError as exc:
                if image:
                    raise
                click.echo(f"{name}:{ref}: {exc.message}", err=True)
        return out

    results = _run(settings, work)
    for r in results:
        if as_json:
            click.echo(
                json.dumps(
                    {
                        "repository": r.repository,
                        "digest": r.digest,
                        "platform": r.platform,
                        "packages": r.package_count,
                        "sboms": r.sboms,
                        "counts": r.counts,
                        "skipped": r.skipped,
                    }
                )
            )
        else:
            plat = f" [{r.platform}]" if r.platform else ""
            click.echo(
                f"{r.repository}@{r.digest}{plat}: {r.package_count} packages"
                + (f", findings {r.counts}" if r.counts else "")
                + (" (already scanned)" if r.cached else "")
            )
    if not results:
        click.echo("no image manifests to scan", err=True)


async def _all_tags(insight: Any) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    last = None
    while True:
        names = await insight.registry.catalog(1000, last)
        if not names:
            return out
        for name in names:
            for tag in await insight.registry.list_tags(name, None, None):
                out.append((name, tag))
        last = names[-1]


@click.group("vulndb")
def vulndb() -> None:
    """The offline vulnerability database (OSV advisories)."""


@vulndb.command("import")
@data_options
@click.argument("path", type=click.Path(exists=True, path_type=Path))
def vulndb_import(config: str | None, data: str | None, path: Path) -> None:
    """Load OSV advisories from PATH: a JSON file, a directory, or a zip as osv.dev publishes them
    (e.g. Debian/all.zip).  Only new or modified advisories are written; stored inventories are
    re-matched afterwards without reading any layer."""
    _require_insight("moorage vulndb import")
    from rich.console import Console
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    settings = settings_from(config, data)
    console = Console(stderr=True)

    async def work(insight: Any) -> tuple[dict[str, int], int, float]:
        started = time.monotonic()
        with Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            TimeElapsedColumn(),
            console=console,
            disable=not console.is_terminal,
        ) as progress:
            task = progress.add_task("reading advisories", total=None)
            counts = await insight.import_advisories(path, lambda n: progress.update(task, description=f"{n} advisories read"))
            progress.update(task, description="re-matching stored images")
            images = await insight.rematch_all() if counts["written"] else 0
        return counts, images, time.monotonic() - started

    counts, images, took = _run(settings, work)
    click.echo(
        f"advisories: {counts['read']} read, {counts['written']} new or changed, {counts['unchanged']} unchanged, "
        f"{counts['ignored']} for other ecosystems; {images} images re-matched in {took:.1f} s"
    )


@vulndb.command("status")
@data_options
@click.option("--json", "as_json", is_flag=True)
def vulndb_status(config: str | None, data: str | None, as_json: bool) -> None:
    """How many advisories are loaded, from where and when."""
    from .vulndb_status import vulndb_status

    settings = settings_from(config, data)

    async def work(insight: Any) -> dict[str, Any]:
        return {**await insight.status(), "vulndb": await vulndb_status(insight.store)}

    status = _run(settings, work)
    if as_json:
        click.echo(json.dumps(status))
        return
    last = status["last_import"]
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(last["at"])) + " UTC" if last else "never"
    click.echo(f"advisories: {status['advisories']}  generation: {status['generation']}  images scanned: {status['images']}")
    click.echo(f"last import: {when}" + (f" from {last['source']}" if last else ""))
    click.echo(status["vulndb"]["note"])


@click.command("vulns")
@data_options
@click.argument("image")
@click.option("--json", "as_json", is_flag=True, help="One JSON object with a findings list and the database's status.")
@click.option(
    "--fail-on",
    type=click.Choice(["LOW", "MEDIUM", "HIGH", "CRITICAL"], case_sensitive=False),
    help="For CI gates: exit 1 if a finding is at or above this severity, 4 if no vulnerability "
    "database is loaded (nothing can be known), 3 if the image was not scanned.",
)
def vulns(config: str | None, data: str | None, image: str, as_json: bool, fail_on: str | None) -> None:
    """Vulnerability findings of IMAGE (NAME:TAG or NAME@DIGEST; every platform of an index).

    Says whether a vulnerability database is loaded and how old it is: with none, "0 findings"
    means nothing.  Exit status: 0; 3 not scanned yet; with --fail-on, 1 and 4 (see there)."""
    from .osv import severity_rank
    from .vulndb_status import vulndb_status

    settings = settings_from(config, data)
    name, ref = _reference(image)

    async def work(insight: Any) -> dict[str, Any]:
        record = await insight.registry.get_manifest(name, ref)
        images, findings = [], []
        for digest, platform in await insight.platform_digests(name, record):
            row = await insight.store.get_image(digest)
            images.append(
                {"digest": digest, "platform": platform, "scanned": row is not None, "counts": row.counts if row else {}}
            )
            for f in row.findings if row else []:
                findings.append({**f, "digest": digest, "platform": platform})
        return {
            "repository": name,
            "reference": ref,
            "digest": record.digest,
            "images": images,
            "findings": findings,
            "vulndb": await vulndb_status(insight.store),
        }

    result = _run(settings, work)
    db = result["vulndb"]
    scanned = any(i["scanned"] for i in result["images"])
    if as_json:
        click.echo(json.dumps(result))
    elif not scanned:
        click.echo(f"{image} has not been scanned yet (moorage sbom {image})", err=True)
    else:
        from rich.table import Table

        count = f"{len(result['findings'])} findings" if db["loaded"] else "no vulnerability database loaded"
        table = Table(title=f"{image} ({count})")
        for col in ("severity", "id", "package", "installed", "fixed", "cvss", "platform"):
            table.add_column(col)
        for f in result["findings"]:
            table.add_row(
                f["severity"],
                f["id"],
                f["package"],
                f["installed"],
                f["fixed"] or "-",
                f"{f['cvss']:.1f}" if f.get("cvss") is not None else "-",
                f.get("platform") or "-",
            )
        _console().print(table)
        if db["loaded"] and not db["stale"]:
            click.echo(db["note"])
    if not db["loaded"] or db["stale"]:
        click.echo(f"warning: {db['note']}", err=True)
    if not scanned:
        sys.exit(3)
    if fail_on:
        if not db["loaded"]:
            click.echo(f"moorage vulns --fail-on {fail_on.upper()}: failing, nothing is known without advisories", err=True)
            sys.exit(4)
        worst = [f for f in result["findings"] if severity_rank(f["severity"]) >= severity_rank(fail_on)]
        if worst:
            ids = ", ".join(sorted({f["id"] for f in worst})[:10])
            click.echo(f"{len(worst)} findings at or above {fail_on.upper()}: {ids}", err=True)
            sys.exit(1)


@click.command("vuln-policy")
@data_options
@click.argument("namespace")
@click.option(
    "--block",
    "block",
    required=True,
    help="Refuse pulls of images with findings at or above LOW|MEDIUM|HIGH|CRITICAL; 'off' removes the policy.",
)
def vuln_policy(config: str | None, data: str | None, namespace: str, block: str) -> None:
    """Set the pull policy of NAMESPACE (a namespace or repository name)."""
    from ..registry.names import is_valid_name
    from .osv import SEVERITIES

    if not is_valid_name(namespace):
        raise click.UsageError(f"{namespace!r} is not a valid namespace")
    severity = block.upper()
    if severity != "OFF" and severity not in SEVERITIES[1:]:
        raise click.UsageError("--block takes LOW, MEDIUM, HIGH, CRITICAL or off")
    settings = settings_from(config, data)
    if severity == "OFF":
        _admin_run(settings, lambda admin, who: admin.remove_policy(who, namespace))
    else:
        _admin_run(settings, lambda admin, who: admin.set_policy(who, namespace, severity))
    click.echo(f"{namespace}: " + ("no pull policy" if severity == "OFF" else f"pulls refused at {severity} and above"))


@click.command("vuln-allow")
@data_options
@click.argument("namespace")
@click.argument("advisory")
@click.option("--days", type=float, help="Expire after this many days (default: never).")
@click.option("--reason", default="", help="Why it is accepted (kept with the entry).")
@click.option("--remove", is_flag=True, help="Take the advisory off the allow-list.")
def vuln_allow(
    config: str | None, data: str | None, namespace: str, advisory: str, days: float | None, reason: str, remove: bool
) -> None:
    """Accept ADVISORY in NAMESPACE's pull policy (until --days pass)."""
    settings = settings_from(config, data)
    if remove:
        _admin_run(settings, lambda admin, who: admin.disallow(who, namespace, advisory))
        click.echo(f"{namespace}: {advisory} removed from the allow-list")
        return
    if days is not None and not 0 < days <= 36500:
        raise click.UsageError("--days must be between 0 and 36500")
    _admin_run(settings, lambda admin, who: admin.allow(who, namespace, advisory, days, reason))
    click.echo(f"{namespace}: {advisory} allowed" + (f" for {days:g} days" if days else ""))


@click.command("image-search")
@data_options
@click.option("--package", help="Images containing this package.")
@click.option("--version", "version_range", help="With --package: a range such as '>=1.0,<2.0'.")
@click.option("--advisory", help="Images affected by this advisory id.")
def image_search(
    config: str | None, data: str | None, package: str | None, version_range: str | None, advisory: str | None
) -> None:
    """Find images by package (and version range) or by advisory; one JSON object per line.

    --advisory takes an advisory id or one of its aliases (a CVE id finds the Debian, Alpine or
    GHSA advisories that list it); each line names the advisory it matched."""
    if bool(package) == bool(advisory):
        raise click.UsageError("give --package or --advisory")
    if version_range:
        _require_insight("moorage image-search --version")
    if advisory is not None and len(advisory) > 255:
        raise click.UsageError("--advisory: at most 255 characters")
    settings = settings_from(config, data)

    from .search import search_advisory

    found = _run(
        settings,
        lambda insight: insight.search_package(package, version_range) if package else search_advisory(insight, advisory or ""),
    )
    for item in found:
        click.echo(json.dumps(item))


commands = [sbom_command, vulndb, vulns, vuln_policy, vuln_allow, image_search]
