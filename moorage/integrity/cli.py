"""``moorage scrub``: re-hash stored blobs, quarantine the corrupt ones (see :mod:`.scrub`).

Exit status: 0 when every blob visited matched its digest, 1 when corruption (or a blob missing
from storage) was found, so a cron job or CI step can alert on it.
"""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING

import click
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from ..cli_common import data_options, settings_from

if TYPE_CHECKING:
    from .scrub import ScrubResult


class _RichProgress:
    def __init__(self, progress: Progress) -> None:
        self.p = progress
        self.task: TaskID | None = None
        self.blobs = 0
        self.total_blobs = 0

    def start(self, blobs: int, nbytes: int) -> None:
        self.total_blobs = blobs
        self.task = self.p.add_task(self._label(), total=nbytes or None)

    def _label(self) -> str:
        return f"scrubbing blobs {self.blobs}/{self.total_blobs}"

    def advance(self, nbytes: int, blobs: int = 0) -> None:
        if self.task is None:
            return
        self.blobs += blobs
        self.p.update(self.task, advance=nbytes, description=self._label())


@click.command("scrub")
@data_options
@click.option("--repository", help="Only the blobs of this repository.")
@click.option("--namespace", help="Only the blobs of this namespace (the repository NAME and everything under NAME/).")
@click.option(
    "--rate",
    type=float,
    default=0.0,
    show_default=True,
    help="Read at most this many MB/s (MB = 10^6 bytes; 0 = unlimited), to spare a serving registry.",
)
@click.option("--restart", is_flag=True, help="Start a new pass instead of resuming an interrupted one.")
@click.option("--max-blobs", type=int, default=None, help="Stop after this many blobs (the next run resumes).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON on stdout.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
def scrub_command(
    config: str | None,
    data: str | None,
    repository: str | None,
    namespace: str | None,
    rate: float,
    restart: bool,
    max_blobs: int | None,
    as_json: bool,
    quiet: bool,
) -> None:
    """Re-hash stored blobs; quarantine those whose bytes do not match their digest.

    Resumable (progress is kept in the database per scope), rate-limited, safe while the
    registry serves.  A quarantined blob is unknown to pulls and manifest pushes until its
    genuine bytes are pushed again.  Exits 1 if corruption was found.
    """
    if repository and namespace:
        raise click.UsageError("give --repository or --namespace, not both")
    if rate < 0:
        raise click.BadParameter("must be >= 0", param_hint="--rate")
    settings = settings_from(config, data)
    from ..errors import RegistryError
    from ..registry.names import validate_name

    try:
        if repository:
            validate_name(repository)
        if namespace:
            validate_name(namespace.strip("/"))
    except RegistryError as exc:
        raise click.BadParameter(exc.message) from None
    from ..gc.cli import _opened
    from .scrub import scrub

    err = Console(stderr=True)
    bar = Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=err,
        disable=quiet or as_json or not err.is_terminal,
    )

    async def main() -> ScrubResult:
        async with _opened(settings, blobs=True) as (db, store):
            with bar:
                return await scrub(
                    db,
                    store,
                    repository=repository,
                    namespace=namespace,
                    rate=rate * 1e6,
                    restart=restart,
                    progress=_RichProgress(bar),
                    max_blobs=max_blobs,
                )

    result = asyncio.run(main())
    summary = result.summary()
    if as_json:
        click.echo(json.dumps(summary, indent=2))
    else:
        out = Console()
        for f in result.pass_corrupt:
            out.print(
                f"CORRUPT  {f.digest}  stored bytes hash to {f.actual} ({f.actual_size} bytes, expected {f.size}): quarantined",
                highlight=False,
            )
        for f in result.missing:
            out.print(f"MISSING  {f.digest}  ({f.size} bytes): no bytes in storage", highlight=False)
        table = Table(title="moorage scrub", show_header=False)
        table.add_row("scope", summary["scope"])
        if result.resumed_from:
            table.add_row("resumed after", result.resumed_from)
        table.add_row("blobs checked (this run)", f"{result.checked} ({result.checked_bytes} bytes)")
        table.add_row("blobs checked (this pass)", str(result.pass_checked))
        table.add_row("corrupt (quarantined)", str(len(result.pass_corrupt)))
        table.add_row("missing from storage", str(len(result.missing)))
        table.add_row("time", f"{result.seconds:.2f} s")
        out.print(table)
    if not result.ok:
        raise SystemExit(1)


commands = [scrub_command]
