"""Replication: copy repositories and tags from one registry to another over the ``/v2/`` API.

Either side may be this Moorage, Distribution or any OCI registry.  What makes a run cheap and
restartable:

* a blob is copied only if the destination lacks it (HEAD first); on the same registry it is
  cross-repository mounted instead of copied;
* manifests go last, children before their index, so an interrupted run leaves no tag
  pointing at missing content, and a rerun skips the blobs that made it (resume);
* a tag whose manifest digest is already at the destination is not walked again (a second
  run transfers nothing but a few HEADs and GETs of manifests).

Multi-arch indexes are copied with every child (``platforms`` narrows them: the index is then
rewritten with only those children, so its digest changes).  Referrers (signatures, SBOMs) of
every copied manifest come along: discovered with the referrers API, or the
``sha256-<hex>`` tag of the fallback tag schema; on a destination without the referrers API
(no ``OCI-Subject`` in the answer to the PUT), the fallback tag index there is updated.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from ..registry import mediatypes as mt
from ..registry.digests import Digest
from ..registry.manifests import parse_manifest
from ..registry.references import RegistryRef
from .client import RegistryClient, UpstreamError, UpstreamNotFound

_MAX_REFERRER_DEPTH = 4


@dataclass
class MirrorReport:
    tags: int = 0
    tags_up_to_date: int = 0
    manifests_copied: int = 0
    manifests_present: int = 0
    blobs_copied: int = 0
    blobs_mounted: int = 0
    blobs_present: int = 0
    bytes_copied: int = 0
    referrers: int = 0
    planned: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return (
            f"tags={self.tags} up_to_date={self.tags_up_to_date} manifests_copied={self.manifests_copied} "
            f"manifests_present={self.manifests_present} blobs_copied={self.blobs_copied} "
            f"blobs_mounted={self.blobs_mounted} blobs_present={self.blobs_present} "
            f"bytes_copied={self.bytes_copied} referrers={self.referrers}"
        )


class Progress:
    """What the mirror tells its caller (the CLI draws a rich progress bar from it)."""

    def blob_started(self, digest: str, size: int) -> None: ...
    def blob_advanced(self, digest: str, n: int) -> None: ...
    def blob_done(self, digest: str) -> None: ...
    def note(self, text: str) -> None: ...


class Mirror:
    def __init__(
        self,
        src: RegistryRef,
        dst: RegistryRef,
        *,
        src_client: RegistryClient,
        dst_client: RegistryClient,
        dry_run: bool = False,
        tags: str | None = None,
        platforms: list[str] | None = None,
        jobs: int = 4,
        progress: Progress | None = None,
    ) -> None:
        self.src, self.dst = src, dst
        self.sc, self.dc = src_client, dst_client
        self.dry_run = dry_run
        self.tag_filter = re.compile(tags) if tags else None
        self.platforms = [_platform(p) for p in platforms or []]
        self.jobs = asyncio.Semaphore(max(1, jobs))
        self.progress = progress or Progress()
        self.report = MirrorReport()
        self.same_registry = src.base_url == dst.base_url
        self._done_manifests: set[str] = set()
        self._blob_tasks: dict[str, asyncio.Task[None]] = {}
        self._push_scope = f"repository:{dst.repo}:pull,push"
        if self.same_registry:
            self._push_scope += f" repository:{src.repo}:pull"

    async def run(self) -> MirrorReport:
        if self.src.tag:
            tags = [self.src.tag]
        else:
            tags = [t for t in await self.sc.list_tags(self.src.repo) if not _is_fallback_tag(t)]
            if self.tag_filter is not None:
                tags = [t for t in tags if self.tag_filter.fullmatch(t)]
            tags.sort()
        for tag in tags:
            await self.copy_tag(tag, self.dst.tag if self.src.tag and self.dst.tag else tag)
        return self.report

    async def copy_tag(self, tag: str, dst_tag: str) -> None:
        self.report.tags += 1
        body, media_type = await self.sc.get_manifest(self.src.repo, tag)
        digest = str(Digest.of(body))
        if self.platforms and media_type in mt.INDEXES:
            body, media_type = await self._filtered_index(body, media_type)
            digest = str(Digest.of(body))
        try:
            info = await self.dc.head_manifest(self.dst.repo, dst_tag)
            current = info.digest
        except UpstreamNotFound:
            current = None
        if current == digest:
            self.report.tags_up_to_date += 1
            self.progress.note(f"{dst_tag}: up to date ({digest[:19]})")
            await self._copy_referrers(digest, depth=0)
            return
        self.progress.note(f"{dst_tag}: {'would copy' if self.dry_run else 'copying'} {digest[:19]}")
        await self._copy_manifest(body, media_type, digest, dst_tag)
        await self._copy_referrers(digest, depth=0)

    # ------------------------------------------------------------------ manifests
    async def _copy_manifest(self, body: bytes, media_type: str, digest: str, tag: str | None) -> dict[str, str]:
        """Copy everything the manifest references, then the manifest; the PUT's headers."""
        parsed = parse_manifest(body, media_type or None)
        for child in parsed.manifests:
            if child.digest in self._done_manifests:
                continue
            if await self._dst_has_manifest(child.digest):
                self.report.manifests_present += 1
                self._done_manifests.add(child.digest)
                continue
            child_body, child_type = await self.sc.get_manifest(self.src.repo, child.digest)
            await self._copy_manifest(child_body, child_type, child.digest, None)
            await self._copy_referrers(child.digest, depth=0)
        blob_jobs = [self._copy_blob(d.digest, d.size) for d in parsed.blobs]
        if blob_jobs:
            await asyncio.gather(*blob_jobs)
        self._done_manifests.add(digest)
        if self.dry_run:
            self.report.planned.append(f"manifest {digest}" + (f" as {tag}" if tag else ""))
            self.report.manifests_copied += 1
            return {}
        resp = await self.dc.request(
            "PUT",
            f"/v2/{self.dst.repo}/manifests/{tag or digest}",
            scope=self._push_scope,
            headers={"Content-Type": parsed.media_type},
            data=body,
            ok=(200, 201, 202),
        )
        headers = dict(resp.headers)
        resp.release()
        self.report.manifests_copied += 1
        if parsed.subject is not None and "OCI-Subject" not in headers:
            await self._update_fallback_tag(parsed.subject.digest, body, parsed, digest)
        return headers

    async def _dst_has_manifest(self, digest: str) -> bool:
        try:
            await self.dc.head_manifest(self.dst.repo, digest)
            return True
        except UpstreamNotFound:
            return False

    async def _filtered_index(self, body: bytes, media_type: str) -> tuple[bytes, str]:
        doc = json.loads(body)
        keep = [m for m in doc.get("manifests", []) if any(_matches(m.get("platform") or {}, p) for p in self.platforms)]
        if not keep:
            raise ValueError(f"no image in the index matches --platform {', '.join('/'.join(p) for p in self.platforms)}")
        doc["manifests"] = keep
        return json.dumps(doc, separators=(",", ":")).encode(), media_type

    # ------------------------------------------------------------------ referrers
    async def _copy_referrers(self, subject: str, depth: int) -> None:
        if depth >= _MAX_REFERRER_DEPTH:
            return
        found = await self.sc.referrers(self.src.repo, subject)
        if found is None:  # no referrers API: the fallback tag schema
            try:
                body, _ = await self.sc.get_manifest(self.src.repo, _fallback_tag(subject))
                found = json.loads(body).get("manifests") or []
            except (UpstreamNotFound, ValueError):
                found = []
        for desc in found:
            digest = desc.get("digest") if isinstance(desc, dict) else None
            if not isinstance(digest, str) or digest in self._done_manifests:
                continue
            self.report.referrers += 1
            if await self._dst_has_manifest(digest):
                self.report.manifests_present += 1
                self._done_manifests.add(digest)
            else:
                body, media_type = await self.sc.get_manifest(self.src.repo, digest)
                await self._copy_manifest(body, media_type, digest, None)
            await self._copy_referrers(digest, depth + 1)

    async def _update_fallback_tag(self, subject: str, body: bytes, parsed: Any, digest: str) -> None:
        """The destination has no referrers API: add the manifest to its ``sha256-<hex>`` index."""
        tag = _fallback_tag(subject)
        try:
            current, _ = await self.dc.get_manifest(self.dst.repo, tag)
            index = json.loads(current)
        except UpstreamNotFound:
            index = {"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": []}
        if any(m.get("digest") == digest for m in index.get("manifests", [])):
            return
        entry: dict[str, Any] = {"mediaType": parsed.media_type, "digest": digest, "size": len(body)}
        if parsed.artifact_type:
            entry["artifactType"] = parsed.artifact_type
        if parsed.annotations:
            entry["annotations"] = parsed.annotations
        index["manifests"].append(entry)
        resp = await self.dc.request(
            "PUT",
            f"/v2/{self.dst.repo}/manifests/{tag}",
            scope=self._push_scope,
            headers={"Content-Type": mt.OCI_INDEX},
            data=json.dumps(index, separators=(",", ":")).encode(),
            ok=(200, 201, 202),
        )
        resp.release()

    # ---------------------------------------------------------------------- blobs
    async def _copy_blob(self, digest: str, size: int) -> None:
        task = self._blob_tasks.get(digest)
        if task is None:
            task = asyncio.ensure_future(self._copy_blob_once(digest, size))
            self._blob_tasks[digest] = task
        await task

    async def _copy_blob_once(self, digest: str, size: int) -> None:
        async with self.jobs:
            if await self.dc.blob_exists(self.dst.repo, digest, scope=self._push_scope):
                self.report.blobs_present += 1
                return
            if self.dry_run:
                self.report.planned.append(f"blob {digest} ({size} bytes)")
                self.report.blobs_copied += 1
                self.report.bytes_copied += size
                return
            path = f"/v2/{self.dst.repo}/blobs/uploads/"
            params: dict[str, str] = {}
            if self.same_registry and self.src.repo != self.dst.repo:
                params = {"mount": digest, "from": self.src.repo}
            resp = await self.dc.request(
                "POST", path, scope=self._push_scope, params=params or None, ok=(201, 202), headers={"Content-Length": "0"}
            )
            status, location = resp.status, resp.headers.get("Location", "")
            resp.release()
            if status == 201:
                self.report.blobs_mounted += 1
                return
            if not location:
                raise UpstreamError(f"{self.dc.host} started an upload without a Location")
            self.progress.blob_started(digest, size)
            src = await self.sc.open_blob(self.src.repo, digest)
            try:
                sent = 0

                async def body() -> AsyncIterator[bytes]:
                    nonlocal sent
                    async for chunk in self.sc.iter_blob(src):
                        sent += len(chunk)
                        self.progress.blob_advanced(digest, len(chunk))
                        yield chunk

                put = await self.dc.request(
                    "PUT",
                    _with_digest(location, digest),
                    scope=self._push_scope,
                    data=body(),
                    ok=(201, 204),
                    headers={"Content-Type": "application/octet-stream", "Content-Length": str(size)},
                )
                put.release()
            finally:
                src.release()
                self.progress.blob_done(digest)
            self.report.blobs_copied += 1
            self.report.bytes_copied += sent


def _with_digest(location: str, digest: str) -> str:
    """The upload URL (absolute, or a path on the destination) with ``digest=`` added."""
    return location + ("&" if urlsplit(location).query else "?") + f"digest={digest}"


def _fallback_tag(digest: str) -> str:
    algorithm, _, hexpart = digest.partition(":")
    return f"{algorithm}-{hexpart}"[:128]


def _is_fallback_tag(tag: str) -> bool:
    return bool(re.fullmatch(r"sha(256|512)-[a-f0-9]{64,128}", tag))


def _platform(text: str) -> tuple[str, ...]:
    parts = tuple(p for p in text.split("/") if p)
    if not 2 <= len(parts) <= 3:
        raise ValueError(f"platform {text!r}: expected OS/ARCH[/VARIANT]")
    return parts


def _matches(platform: dict[str, Any], want: tuple[str, ...]) -> bool:
    have = (platform.get("os"), platform.get("architecture"), platform.get("variant"))
    return have[0] == want[0] and have[1] == want[1] and (len(want) < 3 or have[2] == want[2])


ProgressFactory = Callable[[], Progress]
