"""The image-insight service: scan an image (inventory -> SBOM referrers -> findings), import
advisories and re-match stored inventories, decide the pull policy, answer searches.

Used by the server extension (:mod:`moorage.insight.setup`) and the CLI alike; it holds no HTTP.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .. import errors
from ..registry import mediatypes as mt
from ..registry.digests import Digest
from ..registry.principal import Principal
from ..registry.safejson import UntrustedJSONError, loads_untrusted
from ..registry.service import RegistryService
from ..storage import BlobStore
from . import osv, sbom
from .fairness import ByteBudget, namespace_of
from .layers import AsyncToSyncReader, ImageWalker, Inventory, Limits
from .packages import ALPINE, DEBIAN, Package, clean_text
from .store import InsightStore

log = logging.getLogger("moorage.insight")
#: Who the SBOM referrers are pushed by (a scheduled job: audited and announced as such).
SCANNER = Principal.operator("job", "moorage-insight")

IMAGE_CONFIG_TYPES = {"application/vnd.oci.image.config.v1+json", "application/vnd.docker.container.image.v1+json"}
EMPTY_TYPE = "application/vnd.oci.empty.v1+json"
EMPTY_JSON = b"{}"
GENERATOR = "dev.moorage.insight"
#: One scan at a time per process: layer parsing is CPU work that must not crowd the server.
_POOL = ThreadPoolExecutor(max_workers=1, thread_name_prefix="moorage-insight")

#: Platforms of one index scanned (real indexes have a handful, with attestations a few dozen).
MAX_INDEX_CHILDREN = 256
#: Indexes nested in indexes followed this deep.
MAX_INDEX_DEPTH = 4
#: Layers of one image read (Docker and containerd stop at ~128; a 4 MiB manifest could name 30,000).
MAX_LAYERS = 1000

#: ``await notify(repository, digest, counts, worst)`` when an image's findings change.
Notify = Callable[[str, str, dict[str, int], str], Awaitable[None]]


@dataclass
class ScanResult:
    repository: str
    digest: str
    platform: str
    package_count: int = 0
    sboms: dict[str, str] = field(default_factory=dict)
    skipped: list[dict[str, str]] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    cached: bool = False


def _object(value: Any) -> dict[str, Any]:
    """``value`` if it is a JSON object, else an empty one: manifests, indexes and configs come
    from clients, and any field may hold any JSON type."""
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def platform_name(platform: Any) -> str:
    """``os/architecture[/variant]`` of a platform object; fields that are not strings are ignored
    (each part cleaned and cut so the whole fits the 255-character column)."""
    plat = _object(platform)
    parts = (clean_text(p, 80) for p in (plat.get("os"), plat.get("architecture"), plat.get("variant")) if isinstance(p, str))
    return "/".join(p for p in parts if p)


def _severity_counts(findings: list[dict[str, Any]]) -> tuple[dict[str, int], str]:
    counts = {s: 0 for s in osv.SEVERITIES}
    worst = ""
    for f in findings:
        counts[f["severity"]] = counts.get(f["severity"], 0) + 1
        if not worst or osv.severity_rank(f["severity"]) > osv.severity_rank(worst):
            worst = f["severity"]
    return {k: v for k, v in counts.items() if v}, worst


class InsightService:
    def __init__(
        self,
        store: InsightStore,
        registry: RegistryService,
        blobs: BlobStore,
        *,
        limits: Limits = Limits(),  # noqa: B008 - a frozen value, shared safely
        notify: Notify | None = None,
    ) -> None:
        self.store, self.registry, self.blobs, self.limits, self.notify = store, registry, blobs, limits, notify
        #: What all scans of this process keep together (one service per server process).
        self.budget = ByteBudget(limits.max_process_bytes)
        #: digest -> (lock, users): the image scans running in this process.
        self._scanning: dict[str, tuple[asyncio.Lock, list[int]]] = {}
        self._policies: tuple[float, dict[str, str]] = (0.0, {})
        #: Figures for /metrics (the server extension keeps them current).
        self.stats: dict[str, Any] = {"scans_ok": 0, "scans_failed": 0, "images_by_worst": {}, "advisories": 0}

    # -------------------------------------------------------------------------- scanning
    async def scan(self, repository: str, reference: str, *, force: bool = False) -> list[ScanResult]:
        """Scan the image a tag or digest names (every platform of an index)."""
        record = await self.registry.get_manifest(repository, reference)
        return await self.scan_manifest(repository, record.digest, record.media_type, record.payload, force=force)

    async def scan_manifest(
        self,
        repository: str,
        digest: str,
        media_type: str,
        payload: bytes,
        *,
        force: bool = False,
        platform: str = "",
        _depth: int = 0,
        _seen: set[str] | None = None,
    ) -> list[ScanResult]:
        """Scan one stored manifest.  Every field is read as untrusted: a field of the wrong JSON
        type is ignored (an index child without a digest, a platform that is a string ...).  Each
        manifest is visited once per call (an index naming one sub-index 256 times is not 256 scans)."""
        seen = set() if _seen is None else _seen
        if digest in seen:
            return []
        seen.add(digest)
        try:
            doc = _object(loads_untrusted(payload))
        except UntrustedJSONError:
            return []
        if media_type in mt.INDEXES:
            results: list[ScanResult] = []
            if _depth >= MAX_INDEX_DEPTH:
                return results
            for child in _list(doc.get("manifests"))[:MAX_INDEX_CHILDREN]:
                child = _object(child)
                child_digest = child.get("digest")
                if not isinstance(child_digest, str):
                    continue
                try:
                    rec = await self.registry.get_manifest(repository, child_digest)
                except errors.RegistryError:
                    continue
                results += await self.scan_manifest(
                    repository,
                    rec.digest,
                    rec.media_type,
                    rec.payload,
                    force=force,
                    platform=platform_name(child.get("platform")),
                    _depth=_depth + 1,
                    _seen=seen,
                )
            return results
        config = _object(doc.get("config"))
        if config.get("mediaType") not in IMAGE_CONFIG_TYPES:
            return []  # an artifact (a signature, an SBOM ...), not an image
        async with self._one_scan(digest):
            return await self._scan_image(repository, digest, media_type, payload, doc, config, force, platform)

    @contextlib.asynccontextmanager
    async def _one_scan(self, digest: str) -> AsyncIterator[None]:
        """One scan of an image at a time in this process: the scan on push and a ``POST`` for the
        same image wrote its row twice at once (a unique-key error, a 500); the second now waits
        and, unless forced, answers from the first."""
        entry = self._scanning.get(digest)
        if entry is None:
            entry = self._scanning[digest] = (asyncio.Lock(), [0])
        entry[1][0] += 1
        try:
            async with entry[0]:
                yield
        finally:
            entry[1][0] -= 1
            if not entry[1][0]:
                del self._scanning[digest]

    async def _scan_image(
        self,
        repository: str,
        digest: str,
        media_type: str,
        payload: bytes,
        doc: dict[str, Any],
        config: dict[str, Any],
        force: bool,
        platform: str,
    ) -> list[ScanResult]:
        if not force and await self._has_sbom(repository, digest):
            row = await self.store.get_image(digest)
            if row is not None:
                return [ScanResult(repository, digest, row.platform, row.package_count, row.sboms, row.skipped, row.counts, True)]
        # The image's time budget starts now: waiting for memory and reading layers both count.
        deadline = time.monotonic() + self.limits.max_seconds
        if not platform:
            platform = await self._platform(repository, config)
        layers = [
            (d["digest"], d["mediaType"] if isinstance(d.get("mediaType"), str) else "")
            for d in map(_object, _list(doc.get("layers")))
            if isinstance(d.get("digest"), str)
        ]
        inventory, held = await self._inventory(repository, layers, deadline)
        try:
            image = f"{repository}@{digest}"
            cdx = sbom.cyclonedx(inventory, image, digest)
            spdx_doc = await asyncio.get_running_loop().run_in_executor(_POOL, sbom.spdx, inventory, image, digest)
            subject = {"mediaType": media_type, "digest": digest, "size": len(payload)}
            sboms = {
                "cyclonedx": await self._push_referrer(repository, subject, sbom.CYCLONEDX_TYPE, cdx, len(inventory.packages)),
                "spdx": await self._push_referrer(repository, subject, sbom.SPDX_TYPE, spdx_doc, len(inventory.packages)),
            }
            os_name = f"{inventory.os.id}:{inventory.os.version_id}" if inventory.os else ""
            await self.store.put_image(
                digest, repository, os_name, platform, [p.to_json() for p in inventory.packages], inventory.skipped, sboms
            )
        finally:
            self.budget.release(held)
        counts, _ = await self.match(digest)
        return [ScanResult(repository, digest, platform, len(inventory.packages), sboms, inventory.skipped, counts)]

    async def _has_sbom(self, repository: str, digest: str) -> bool:
        found = await self.registry.referrers(repository, digest, sbom.CYCLONEDX_TYPE)
        return any((r.annotations or {}).get(GENERATOR) for r in found)

    async def _holds(self, repository: str, digest: str) -> bool:
        """Whether ``repository`` holds the blob (pushed or mounted there): the scanner reads
        nothing else, so a manifest naming another user's blob (as a "foreign" layer, which the
        push does not check) never turns that blob into this repository's SBOM."""
        return await self.registry.store.blob_size_in_repository(repository, digest) is not None

    async def _read_small(self, digest: str, limit: int = 4 << 20) -> bytes:
        out = bytearray()
        async for chunk in self.blobs.read(digest):
            out += chunk
            if len(out) > limit:
                raise errors.ManifestInvalid("config blob too large")
        return bytes(out)

    async def _platform(self, repository: str, config: dict[str, Any]) -> str:
        digest = config.get("digest")
        if not isinstance(digest, str) or not await self._holds(repository, digest):
            return ""
        try:
            cfg = loads_untrusted(await self._read_small(digest))
        except Exception:  # noqa: BLE001 - the platform is a label; an unreadable config leaves it empty
            return ""
        return platform_name(cfg)

    async def _inventory(self, repository: str, layers: list[tuple[str, str]], deadline: float) -> tuple[Inventory, int]:
        """The image's inventory and the bytes of the process budget it still holds (the caller
        releases them when the scan is stored)."""
        loop = asyncio.get_running_loop()
        pre = Inventory()
        readable: list[str] = []
        if len(layers) > MAX_LAYERS:
            pre.skip({"reason": f"{len(layers) - MAX_LAYERS} layers past the first {MAX_LAYERS} not read"})
        for digest, media_type in layers[:MAX_LAYERS]:
            if time.monotonic() > deadline:
                pre.skip({"layer": digest[:100], "reason": "layer not read: time budget for the image exceeded"})
            elif "tar" not in media_type and media_type:
                pre.skip({"layer": digest[:100], "reason": f"not a tar layer ({media_type[:100]})"})
            elif not await self._holds(repository, digest):
                foreign = "foreign" in media_type or "nondistributable" in media_type
                what = "foreign layer" if foreign else "layer"
                pre.skip(
                    {"layer": digest[:100], "reason": f"{what} not held by the repository: not read (clients fetch it elsewhere)"}
                )
            else:
                readable.append(digest)
        want = min(self.limits.max_image_bytes, self.budget.capacity)
        if readable and not await self.budget.acquire(want, namespace_of(repository), deadline - time.monotonic()):
            reason = (
                f"scanner memory budget of the process ({self.budget.capacity} bytes) stayed in use by other scans "
                f"for the image's whole time budget ({self.limits.max_seconds:g} s): layers not read"
            )
            pre.skip({"reason": reason})
            pre.close()
            return pre, 0
        if not readable:
            pre.close()
            return pre, 0
        walker = ImageWalker(self.limits, keep_bytes=want, deadline=deadline)
        walker.result = pre

        def walk() -> Inventory:
            for digest in readable:
                chunks = self.blobs.read(digest)
                try:
                    walker.add_layer(digest, AsyncToSyncReader(chunks, loop, deadline))
                finally:  # a layer left half-read (skipped, over a limit) releases its file or connection now
                    aclose = getattr(chunks, "aclose", None)
                    if aclose is not None:
                        asyncio.run_coroutine_threadsafe(_quietly(aclose()), loop)
            return walker.inventory()

        future = loop.run_in_executor(_POOL, walk)
        try:
            inventory = await asyncio.shield(future)
        except asyncio.CancelledError:
            # The thread cannot be interrupted: make the walk stop at its next check, and give the
            # memory back only when it really ended.
            walker.deadline = float("-inf")
            future.add_done_callback(lambda _: self.budget.release(want))
            raise
        except BaseException:
            self.budget.release(want)
            raise
        held = min(want, inventory.kept_bytes)
        self.budget.release(want - held)  # keep only what the inventory holds until it is stored
        return inventory, held

    async def _push_referrer(
        self, repository: str, subject: dict[str, Any], artifact_type: str, body: bytes, packages: int
    ) -> str:
        digest = str(Digest.of(body))
        await self.registry.put_blob(repository, digest, _once(body), by=SCANNER)
        await self.registry.put_blob(repository, str(Digest.of(EMPTY_JSON)), _once(EMPTY_JSON), by=SCANNER)
        manifest = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "artifactType": artifact_type,
                "config": {
                    "mediaType": EMPTY_TYPE,
                    "digest": str(Digest.of(EMPTY_JSON)),
                    "size": 2,
                    "data": base64.b64encode(EMPTY_JSON).decode(),
                },
                "layers": [{"mediaType": artifact_type, "digest": digest, "size": len(body)}],
                "subject": subject,
                "annotations": {
                    "org.opencontainers.image.created": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                    GENERATOR: "sbom",
                    "dev.moorage.sbom.packages": str(packages),
                },
            },
            separators=(",", ":"),
        ).encode()
        mdigest = str(Digest.of(manifest))
        await self.registry.put_manifest(repository, mdigest, manifest, "application/vnd.oci.image.manifest.v1+json", SCANNER)
        return mdigest

    # -------------------------------------------------------------------------- matching
    async def match(self, digest: str, generation: int | None = None) -> tuple[dict[str, int], str]:
        """Match a stored inventory against the advisories; store and return (counts, worst)."""
        row = await self.store.get_image(digest)
        if row is None:
            return {}, ""
        if generation is None:
            generation = await self.store.generation()
        os_id, _, os_version = row.os.partition(":")
        packages = [Package.from_json(p) for p in row.packages]
        lookups: list[tuple[Package, str, str, str]] = []  # (package, family, key, version tested)
        for pkg in packages:
            lookups.append((pkg, pkg.ecosystem, osv.package_key(pkg.ecosystem, pkg.name), pkg.version))
            if pkg.ecosystem in (DEBIAN, ALPINE) and pkg.source and pkg.source != pkg.name:
                lookups.append((pkg, pkg.ecosystem, pkg.source, pkg.source_version or pkg.version))
        affected = await self.store.affected_for({(fam, key) for _, fam, key, _ in lookups})
        hits: dict[tuple[str, str], dict[str, Any]] = {}
        for pkg, fam, key, version in lookups:
            for aff in affected.get((fam, key), ()):
                if not osv.release_matches(aff.ecosystem, pkg, os_id, os_version):
                    continue
                hit, fixed = osv.affected_by(aff.spec, fam, version)
                if hit and (aff.advisory_id, pkg.name) not in hits:
                    hits[(aff.advisory_id, pkg.name)] = {
                        "id": aff.advisory_id,
                        "package": pkg.name,
                        "installed": pkg.version,
                        "fixed": fixed,
                        "ecosystem": pkg.ecosystem,
                        "purl": pkg.purl,
                    }
        details = await self.store.advisories({h["id"] for h in hits.values()})
        findings = []
        for h in hits.values():
            adv = details.get(h["id"])
            h["severity"] = adv.severity if adv else "UNKNOWN"
            h["cvss"] = adv.score if adv else None
            h["summary"] = adv.summary if adv else ""
            findings.append(h)
        findings.sort(key=lambda f: (-osv.severity_rank(f["severity"]), -(f["cvss"] or 0), f["package"], f["id"]))
        counts, worst = _severity_counts(findings)
        changed = row.matched_generation >= 0 and (
            row.counts != counts or {(f["id"], f["package"]) for f in row.findings} != set(hits)
        )
        await self.store.set_findings(digest, findings, counts, worst, generation)
        if (changed or row.matched_generation < 0 and findings) and self.notify is not None:
            await self.notify(row.repository, digest, counts, worst)
        return counts, worst

    async def rematch_all(self) -> int:
        """Re-match every stored inventory (after the database changed), without reading layers."""
        generation = await self.store.generation()
        n = 0
        for digest in await self.store.image_digests():
            await self.match(digest, generation)
            n += 1
        return n

    async def import_advisories(self, path: Path, progress: Callable[[int], None] | None = None) -> dict[str, int]:
        """Load OSV advisories from a file, directory or zip; only new or modified ones are written."""
        total = written = unchanged = ignored = 0
        batch: list[osv.Advisory] = []
        source = str(path)

        async def flush() -> None:
            nonlocal written, unchanged
            known = await self.store.advisory_versions(a.id for a in batch)
            fresh = [a for a in batch if known.get(a.id) != a.modified or not a.modified]
            unchanged += len(batch) - len(fresh)
            await self.store.put_advisories(fresh, source)
            written += len(fresh)
            batch.clear()

        for _, doc in osv.read_advisories(path):
            total += 1
            adv = osv.parse_advisory(doc)
            if adv is None:
                ignored += 1
                continue
            batch.append(adv)
            if len(batch) >= 500:
                await flush()
                if progress:
                    progress(total)
        await flush()
        if progress:
            progress(total)
        if written:
            await self.store.bump_generation()
        await self.store.set_state(
            "last_import", json.dumps({"source": source, "at": time.time(), "read": total, "written": written})
        )
        return {"read": total, "written": written, "unchanged": unchanged, "ignored": ignored}

    async def platform_digests(self, repository: str, record: Any) -> list[tuple[str, str]]:
        """(digest, platform) of the image manifests a manifest record stands for (entries of an
        index that are not objects with a string digest are left out)."""
        if record.media_type not in mt.INDEXES:
            row = await self.store.get_image(record.digest)
            return [(record.digest, row.platform if row else "")]
        try:
            doc = _object(loads_untrusted(record.payload))
        except UntrustedJSONError:
            return []
        out = []
        for child in map(_object, _list(doc.get("manifests"))[:MAX_INDEX_CHILDREN]):
            if isinstance(child.get("digest"), str):
                out.append((child["digest"][:200], platform_name(child.get("platform"))))
        return out

    async def status(self) -> dict[str, Any]:
        last = await self.store.get_state("last_import")
        return {
            "advisories": await self.store.advisory_count(),
            "generation": await self.store.generation(),
            "last_import": json.loads(last) if last else None,
            "images": len(await self.store.image_digests()),
        }

    # ---------------------------------------------------------------------------- policy
    def forget_policies(self) -> None:
        """A policy changed in this process (:mod:`moorage.insight.policy_admin`): read the table
        again on the next pull (other processes within the 2 s of :meth:`_policy_table`)."""
        self._policies = (0.0, {})

    def no_policy_now(self) -> bool:
        """True when the policy table, read less than 2 s ago, is empty: no pull can be refused,
        and the pull rule need not even be awaited (every manifest GET asks)."""
        at, table = self._policies
        return not table and time.monotonic() - at <= 2.0

    async def _policy_table(self) -> dict[str, str]:
        at, table = self._policies
        if time.monotonic() - at > 2.0:  # bounded staleness across replicas: 2 s
            table = await self.store.policies()
            self._policies = (time.monotonic(), table)
        return table

    async def policy_for(self, repository: str) -> tuple[str, str] | None:
        """(namespace, block severity) of the most specific policy covering ``repository``."""
        table = await self._policy_table()
        if not table:
            return None
        parts = repository.split("/")
        for i in range(len(parts), 0, -1):
            ns = "/".join(parts[:i])
            if ns in table:
                return ns, table[ns]
        return None

    async def pull_refusal(self, repository: str, digest: str) -> str | None:
        """Why pulling ``digest`` from ``repository`` is refused, or None."""
        policy = await self.policy_for(repository)
        if policy is None:
            return None
        namespace, threshold = policy
        scanned = await self.store.worst_of(digest)
        if scanned is None:
            return None
        worst, findings = scanned
        if not worst or osv.severity_rank(worst) < osv.severity_rank(threshold):
            return None
        allowed = {k for k, exp in (await self.store.allowlist(namespace)).items() if exp is None or exp > time.time()}
        blocking = [
            f for f in findings if osv.severity_rank(f["severity"]) >= osv.severity_rank(threshold) and f["id"] not in allowed
        ]
        if not blocking:
            return None
        f = blocking[0]  # findings are sorted worst first
        fixed = f" (fixed in {f['fixed']})" if f.get("fixed") else ""
        return (
            f"image {digest[:19]} has {len(blocking)} finding(s) at or above {threshold}; the worst: {f['id']} "
            f"({f['severity']}) in {f['package']} {f['installed']}{fixed}; namespace '{namespace}' refuses pulls "
            f"of such images unless the advisory is allow-listed"
        )

    # ---------------------------------------------------------------------------- search
    async def search_package(self, name: str, version_range: str | None = None) -> list[dict[str, Any]]:
        """Images holding a package called ``name`` (optionally with a version in ``version_range``,
        a vers-like ``>=1.0,<2.0`` list of comparisons in the package's own version order)."""
        if version_range:
            _check_range(version_range)
        if clean_text(name, 512) != name:
            return []  # no stored name has control characters (or surrounding blanks)
        out = []
        for digest, repository, ecosystem, version in await self.store.images_with_package(name):
            if version_range and not _in_range(ecosystem, version, version_range):
                continue
            out.append({"repository": repository, "digest": digest, "ecosystem": ecosystem, "package": name, "version": version})
        return out

    async def search_advisory(self, advisory_id: str) -> list[dict[str, Any]]:
        out = []
        for row in await self.store.images():
            for f in row.findings:
                if f["id"] == advisory_id:
                    out.append(
                        {
                            "repository": row.repository,
                            "digest": row.digest,
                            "package": f["package"],
                            "installed": f["installed"],
                            "fixed": f["fixed"],
                            "severity": f["severity"],
                        }
                    )
        return out


_OPS = (">=", "<=", "==", "!=", ">", "<", "=")


def _check_range(spec: str) -> None:
    for part in spec.split(","):
        part = part.strip()
        op = next((o for o in _OPS if part.startswith(o)), None)
        if op is None or not part[len(op) :].strip():
            raise ValueError(f"bad version constraint {part[:100]!r} (use >=, <=, >, <, ==, != and a version)")


def _in_range(ecosystem: str, version: str, spec: str) -> bool:
    cls = osv._version_class(ecosystem, "ECOSYSTEM")
    mine = osv._parse(cls, version)
    if mine is None:
        return False
    for part in spec.split(","):
        part = part.strip()
        for op in (">=", "<=", "==", "!=", ">", "<", "="):
            if part.startswith(op):
                other = osv._parse(cls, part[len(op) :].strip())
                if other is None:
                    raise ValueError(f"not a version: {part[len(op) :]!r}")
                ok = {
                    ">=": mine >= other,
                    "<=": mine <= other,
                    "==": mine == other,
                    "=": mine == other,
                    "!=": mine != other,
                    ">": mine > other,
                    "<": mine < other,
                }[op]
                if not ok:
                    return False
                break
        else:
            if part:
                raise ValueError(f"bad version constraint {part!r} (use >=, <=, >, <, ==, !=)")
    return True


async def _quietly(aw: Awaitable[Any]) -> None:
    try:
        await aw
    except Exception:  # noqa: BLE001 - closing a reader that already failed
        pass


async def _once(body: bytes) -> AsyncIterator[bytes]:
    yield body
