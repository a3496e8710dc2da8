"""``moorage import-distribution``: the command around :mod:`.distribution_import`."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
from typing import TYPE_CHECKING

import click

from ..cli_common import data_options, settings_from

if TYPE_CHECKING:
    from ..config import Settings
    from .distribution_import import ImportSummary, Source


@click.command("import-distribution")
@data_options
@click.argument("root", required=False, type=click.Path(file_okay=False))
@click.option("--from-s3", "bucket", metavar="BUCKET", help="Import from this S3 bucket instead of a directory.")
@click.option("--s3-prefix", default="", help="storage.s3.rootdirectory of the registry:2 (default: bucket root).")
@click.option("--s3-region", default=lambda: os.environ.get("AWS_DEFAULT_REGION", "us-east-1"), show_default="us-east-1")
@click.option("--s3-endpoint", help="storage.s3.regionendpoint (e.g. http://minio:9000).")
@click.option("--s3-virtual-host", is_flag=True, help="Virtual-hosted bucket addressing (default: path style).")
@click.option(
    "--link",
    is_flag=True,
    help="Don't copy blob bytes: hard-link the files (same filesystem) or copy server-side (S3); "
    "every blob is still read once to verify its digest.",
)
@click.option("--concurrency", default=4, show_default=True, type=click.IntRange(1, 64), help="Blobs copied at once.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@click.option("--no-progress", is_flag=True, help="No progress bar (automatic when stderr is not a terminal).")
def import_distribution(
    config: str | None,
    data: str | None,
    root: str | None,
    bucket: str | None,
    s3_prefix: str,
    s3_region: str,
    s3_endpoint: str | None,
    s3_virtual_host: bool,
    link: bool,
    concurrency: int,
    as_json: bool,
    no_progress: bool,
) -> None:
    """Import a registry:2 (CNCF Distribution) storage tree into this registry.

    ROOT is the registry:2 storage.filesystem.rootdirectory: the folder that holds
    docker/registry/v2.  With --from-s3 the tree is read from a bucket (credentials from
    AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY).  Blobs, repositories, manifests, tags and
    layer links are imported, every digest verified; running it again only adds what is
    missing, so an interrupted import is resumed by running the same command.
    """
    if bool(root) == bool(bucket):
        raise click.UsageError("give either ROOT or --from-s3 BUCKET")
    settings = settings_from(config, data, require_registry=False)  # importing into a new registry creates it
    logging.basicConfig(level=logging.WARNING, format="%(message)s", stream=sys.stderr)
    from .distribution_import import DistributionImportError, FilesystemSource, S3Source

    source: Source
    if bucket:
        from ..extras import require

        require("s3", "import-distribution --from-s3")
        source = S3Source(
            bucket,
            prefix=s3_prefix,
            region=s3_region,
            endpoint_url=s3_endpoint,
            access_key=os.environ.get("AWS_ACCESS_KEY_ID"),
            secret_key=os.environ.get("AWS_SECRET_ACCESS_KEY"),
            path_style=not s3_virtual_host,
        )
    else:
        assert root is not None  # either ROOT or --from-s3, checked above
        source = FilesystemSource(root)
    show = not no_progress and not as_json and sys.stderr.isatty()
    try:
        summary, problems = asyncio.run(_run(settings, source, link, concurrency, show))
    except DistributionImportError as exc:
        raise click.ClickException(str(exc)) from None
    for problem in problems:
        click.echo(f"warning: {problem}", err=True)
    if as_json:
        click.echo(json.dumps(summary, sort_keys=True))
    else:
        s = summary
        click.echo(
            f"imported {s['repositories']} repositories: "
            f"{s['blobs_copied']} blobs copied, {s['blobs_linked']} linked, {s['blobs_mounted']} mounted, "
            f"{s['blobs_skipped']} already present ({s['bytes'] / 1e6:.1f} MB verified); "
            f"{s['manifests']} manifests ({s['manifests_skipped']} already present); "
            f"{s['tags']} tags ({s['tags_skipped']} already present); "
            f"{s['seconds']:.1f} s, {s['mb_per_s']:.1f} MB/s, {s['blobs_per_s']:.1f} blobs/s"
            + (f"; copied, not linked, because {s['copied_because']}" if s["copied_because"] else "")
        )
    if summary["manifests_failed"] or summary["blobs_missing"] or summary["refused"]:
        sys.exit(2)


async def _run(settings: Settings, source: Source, link: bool, concurrency: int, show: bool) -> tuple[ImportSummary, list[str]]:
    from ..components import prepare_database
    from ..metadata.db import Database
    from ..metadata.store import MetadataStore
    from ..registry.service import RegistryService
    from ..storage import create_blob_store
    from .distribution_import import DistributionImporter

    db = Database(settings.database_url, pool_size=max(2, concurrency + 1))
    blobs = create_blob_store(settings)
    try:
        await prepare_database(settings, db)
        await blobs.open()
        await source.open()
        from ..events.setup import command_recorder
        from ..registry.events import EventBus

        bus = EventBus()
        bus.recorder = await command_recorder(settings, db)
        service = RegistryService(
            MetadataStore(db),
            blobs,
            delete_enabled=settings.delete_enabled,
            max_manifest_bytes=settings.max_manifest_bytes,
            events=bus,
        )
        importer = DistributionImporter(source, service, link=link, concurrency=concurrency)
        plans = await importer.plan()
        if not show:
            stats = await importer.run(plans)
        else:
            from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn

            total_bytes = await importer.bytes_to_verify(plans)
            counts = {"blob": 0, "manifest": 0, "tag": 0}
            totals = {"blob": sum(len(p.blobs) for p in plans), "manifest": sum(len(p.manifests) for p in plans)}

            def label() -> str:
                return (
                    f"blobs {counts['blob']}/{totals['blob']}  manifests {counts['manifest']}/{totals['manifest']}"
                    f"  tags {counts['tag']}"
                )

            with Progress(
                TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(), TimeRemainingColumn()
            ) as bar:
                task = bar.add_task(label(), total=total_bytes or None)

                def progress(event: str, amount: int) -> None:
                    if event == "bytes":
                        bar.advance(task, amount)
                    else:
                        counts[event] = counts.get(event, 0) + amount
                        bar.update(task, description=label())

                importer.progress = progress
                stats = await importer.run(plans)
        return stats.summary(), stats.problems
    finally:
        await source.close()
        await blobs.close()
        await db.close()


commands = [import_distribution]
