"""``moorage mirror SRC DST``: copy repositories/tags between registries (see :mod:`.mirror`)."""

from __future__ import annotations

import asyncio
from types import TracebackType
from typing import TYPE_CHECKING

import click

from ..registry.references import RegistryRef
from .client import RegistryClient, UpstreamError, split_creds
from .mirror import Mirror, MirrorReport, Progress

if TYPE_CHECKING:
    from rich.progress import TaskID


class _RichProgress(Progress):
    """One bar per blob in flight plus a total, drawn by rich (plain lines without a terminal)."""

    def __init__(self, quiet: bool) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )
        from rich.progress import (
            Progress as Bars,
        )

        self.console = Console(stderr=True, quiet=quiet)
        self.bars = Bars(
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=self.console,
            transient=False,
            disable=quiet or not self.console.is_terminal,
        )
        self.tasks: dict[str, TaskID] = {}
        self.total = self.bars.add_task("total", total=0)
        self.total_bytes = 0

    def __enter__(self) -> _RichProgress:
        self.bars.__enter__()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.bars.__exit__(exc_type, exc, tb)

    def blob_started(self, digest: str, size: int) -> None:
        self.tasks[digest] = self.bars.add_task(digest[7:19], total=size)
        self.total_bytes += size
        self.bars.update(self.total, total=self.total_bytes)
        if not self.console.is_terminal:
            self.console.print(f"copying blob {digest} ({size} bytes)")

    def blob_advanced(self, digest: str, n: int) -> None:
        task = self.tasks.get(digest)
        if task is not None:
            self.bars.advance(task, n)
        self.bars.advance(self.total, n)

    def blob_done(self, digest: str) -> None:
        task = self.tasks.pop(digest, None)
        if task is not None:
            self.bars.remove_task(task)

    def note(self, text: str) -> None:
        self.console.print(text)


@click.command("mirror")
@click.argument("src")
@click.argument("dst")
@click.option("--src-creds", metavar="USER:PASSWORD", help="Credentials for the source registry.")
@click.option("--dest-creds", metavar="USER:PASSWORD", help="Credentials for the destination registry.")
@click.option("--dry-run", is_flag=True, help="Say what would be copied; change nothing.")
@click.option("--tags", "tags", metavar="REGEX", help="Only tags matching this regular expression (whole tag).")
@click.option(
    "--platform",
    "platforms",
    multiple=True,
    metavar="OS/ARCH[/VARIANT]",
    help="Only these platforms of multi-arch images (the index is rewritten: new digest). Repeatable.",
)
@click.option(
    "--src-tls-verify",
    type=click.BOOL,
    default=True,
    is_flag=False,
    flag_value=True,
    show_default=True,
    help="--src-tls-verify=false (as skopeo): SRC may be plain HTTP (tried when HTTPS fails) or HTTPS "
    "with a certificate that is not verified.",
)
@click.option(
    "--dest-tls-verify",
    type=click.BOOL,
    default=True,
    is_flag=False,
    flag_value=True,
    show_default=True,
    help="The same for DST.",
)
@click.option("--src-no-tls-verify", "src_no_verify", is_flag=True, hidden=True)  # the older spelling
@click.option("--dest-no-tls-verify", "dest_no_verify", is_flag=True, hidden=True)
@click.option("--jobs", type=click.IntRange(1, 32), default=4, show_default=True, help="Blobs copied at once.")
@click.option("--quiet", "-q", is_flag=True, help="No progress output, only the summary line.")
def mirror(
    src: str,
    dst: str,
    src_creds: str | None,
    dest_creds: str | None,
    dry_run: bool,
    tags: str | None,
    platforms: tuple[str, ...],
    src_tls_verify: bool,
    dest_tls_verify: bool,
    src_no_verify: bool,
    dest_no_verify: bool,
    jobs: int,
    quiet: bool,
) -> None:
    """Copy SRC to DST: [docker://|http://|https://]HOST[:PORT]/REPO[:TAG] each.

    Without a scheme HTTPS is used; for a registry on plain HTTP write http://, or pass
    --src-tls-verify=false / --dest-tls-verify=false as with skopeo.

    Without a tag, every tag of REPO (filtered by --tags) is copied to the same tag at DST.
    Only blobs DST lacks are copied (mounted on the same registry); manifests go last, so a
    rerun after an interruption resumes; multi-arch children and referrers come along.
    """
    try:
        s, d = RegistryRef.parse(src), RegistryRef.parse(dst)
        su, sp = split_creds(src_creds)
        du, dp = split_creds(dest_creds)
        if tags:
            import re

            re.compile(tags)
    except Exception as exc:  # noqa: BLE001 - bad arguments (refs, creds, regex): one line
        raise click.UsageError(str(exc)) from None
    if d.tag and not s.tag:
        raise click.UsageError("DST may name a tag only when SRC does")
    src_tls_verify = src_tls_verify and not src_no_verify
    dest_tls_verify = dest_tls_verify and not dest_no_verify

    async def run() -> MirrorReport:
        nonlocal s, d
        if not src_tls_verify and not s.explicit:
            s = await _reachable_scheme(s)
        if not dest_tls_verify and not d.explicit:
            d = await _reachable_scheme(d)
        sc = RegistryClient(s.base_url, username=su, password=sp, tls_verify=src_tls_verify, user_agent="moorage-mirror")
        dc = RegistryClient(d.base_url, username=du, password=dp, tls_verify=dest_tls_verify, user_agent="moorage-mirror")
        try:
            with _RichProgress(quiet) as progress:
                m = Mirror(
                    s,
                    d,
                    src_client=sc,
                    dst_client=dc,
                    dry_run=dry_run,
                    tags=tags,
                    platforms=list(platforms),
                    jobs=jobs,
                    progress=progress,
                )
                return await m.run()
        finally:
            await sc.close()
            await dc.close()

    try:
        report = asyncio.run(run())
    except UpstreamError as exc:
        raise click.ClickException(_with_hint(str(exc), s, d, src_tls_verify, dest_tls_verify)) from None
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    if dry_run:
        for line in report.planned:
            click.echo(f"would copy {line}")
    click.echo(("dry run: " if dry_run else "mirrored: ") + report.summary())


async def _reachable_scheme(ref: RegistryRef) -> RegistryRef:
    """HTTPS if ``ref``'s host answers it (certificate not checked), else plain HTTP: what
    skopeo does with ``--tls-verify=false`` for a reference without a scheme."""
    import dataclasses

    import aiohttp

    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15)) as session,
            session.get(f"https://{ref.host}/v2/", ssl=False) as resp,
        ):
            resp.release()
        return ref
    except (TimeoutError, aiohttp.ClientError, OSError):
        return dataclasses.replace(ref, scheme="http", explicit=True)


def _with_hint(message: str, s: RegistryRef, d: RegistryRef, src_verify: bool, dest_verify: bool) -> str:
    """``message``, plus what to do when a scheme-less reference met a plain-HTTP registry."""
    tls_words = ("ssl", "wrong_version_number", "record layer failure", "certificate", "tls")
    if not any(w in message.lower() for w in tls_words):
        return message
    for ref, flag, verify in ((s, "--src-tls-verify=false", src_verify), (d, "--dest-tls-verify=false", dest_verify)):
        if ref.host in message and not ref.explicit and verify:
            return (
                f"{message} -- {ref.host} was asked over HTTPS (no scheme given); if it serves plain HTTP, "
                f"write http://{ref.host}/{ref.repo}{':' + ref.tag if ref.tag else ''} or add {flag} (as with skopeo)"
            )
    return message


commands = [mirror]
