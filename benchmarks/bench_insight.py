#!/usr/bin/env python3
"""Image-insight benchmark (issue 14).

1. SBOM of a large image: ``--layers`` gzip layers of random files, ``--image-mb`` MB in all
   (default 500), the last holding a dpkg status of ``--packages`` packages (default 3,000, made
   from this machine's real stanzas under new names), pushed into a filesystem + SQLite registry;
   then ``moorage sbom`` is run as a user runs it: wall time and the command's peak RSS.
2. Matching: ``--advisories`` OSV advisories (default 50,000; Debian, PyPI and npm, about 1 in 20
   naming a package of the image) imported with ``moorage vulndb import`` from a zip, then
   ``--images`` stored inventories (default 100, copies of the image's under other digests)
   re-matched: time for all, per image.

    python benchmarks/bench_insight.py
    python benchmarks/bench_insight.py --image-mb 100 --advisories 5000 --images 20
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import hashlib
import io
import json
import os
import random
import resource
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from moorage.config_load import load_settings  # noqa: E402


def _cli(data: Path, *args: str) -> tuple[float, float, str]:
    """(seconds, peak RSS MiB of the child, stdout) of one ``moorage`` command."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    t = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "moorage.cli", *args, "--data", str(data)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    took = time.perf_counter() - t
    if proc.returncode:
        sys.exit(f"moorage {' '.join(args)} failed: {proc.stderr}")
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return took, max(peak, before) / 1024, proc.stdout


def _dpkg_status(n: int) -> bytes:
    real = [s for s in Path("/var/lib/dpkg/status").read_text().split("\n\n") if s.strip()]
    out = []
    for i in range(n):
        stanza = real[i % len(real)]
        lines = [line for line in stanza.splitlines() if not line.startswith(("Package:", "Source:"))]
        out.append(f"Package: benchpkg{i}\n" + "\n".join(lines))
    return ("\n\n".join(out) + "\n").encode()


def _layer(path: Path, size: int, files: dict[str, bytes], rng: random.Random) -> None:
    with gzip.open(path, "wb", compresslevel=1) as gz, tarfile.open(fileobj=gz, mode="w|") as tar:  # type: ignore[call-overload]
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        left, i = size, 0
        while left > 0:
            n = min(left, 8 << 20)
            info = tarfile.TarInfo(f"opt/filler/{i:05d}.bin")
            info.size = n
            tar.addfile(info, io.BytesIO(rng.randbytes(n)))
            left -= n
            i += 1


async def _push(settings, layers: list[Path], name: str, tag: str) -> str:  # type: ignore[no-untyped-def]
    from moorage.components import prepare_database
    from moorage.metadata.db import Database
    from moorage.metadata.store import MetadataStore
    from moorage.registry.service import RegistryService
    from moorage.storage import create_blob_store

    db = Database(settings.database_url)
    await prepare_database(settings, db)
    blobs = create_blob_store(settings)
    await blobs.open()
    svc = RegistryService(MetadataStore(db), blobs)

    async def chunks(path: Path):  # type: ignore[no-untyped-def]
        with open(path, "rb") as fh:
            while data := fh.read(1 << 20):
                yield data

    def digest_of(path: Path) -> str:
        h = hashlib.sha256()
        with open(path, "rb") as fh:
            while data := fh.read(1 << 20):
                h.update(data)
        return "sha256:" + h.hexdigest()

    descs = []
    for path in layers:
        d = await svc.put_blob(name, digest_of(path), chunks(path))
        descs.append({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": d, "size": path.stat().st_size})
    config = json.dumps({"architecture": "amd64", "os": "linux"}).encode()
    cd = "sha256:" + hashlib.sha256(config).hexdigest()

    async def one(b: bytes):  # type: ignore[no-untyped-def]
        yield b

    await svc.put_blob(name, cd, one(config))
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": len(config)},
            "layers": descs,
        }
    ).encode()
    result = await svc.put_manifest(name, tag, manifest, "application/vnd.oci.image.manifest.v1+json")
    await blobs.close()
    await db.close()
    return result.digest


def _advisories(path: Path, n: int, names: list[str], rng: random.Random) -> None:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for i in range(n):
            kind = i % 3
            if kind == 0:
                eco, name = "Debian:12", names[i % len(names)] if i % 20 == 0 else f"otherpkg{i}"
                events = [{"introduced": "0"}, {"fixed": f"{rng.randint(0, 9)}.{rng.randint(0, 99)}-1"}]
            elif kind == 1:
                eco, name = "PyPI", f"pypkg{i % 5000}"
                events = [{"introduced": "0"}, {"fixed": f"{rng.randint(0, 9)}.{rng.randint(0, 99)}"}]
            else:
                eco, name = "npm", f"npmpkg{i % 5000}"
                events = [{"introduced": "0"}, {"fixed": f"{rng.randint(0, 9)}.{rng.randint(0, 99)}.0"}]
            doc = {
                "id": f"BENCH-{i}",
                "modified": "2026-01-01T00:00:00Z",
                "summary": "bench",
                "affected": [{"package": {"ecosystem": eco, "name": name}, "ranges": [{"type": "ECOSYSTEM", "events": events}]}],
                "severity": [{"type": "CVSS_V3", "score": "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H"}],
            }
            zf.writestr(f"BENCH-{i}.json", json.dumps(doc))


async def _rematch(settings, digest: str, copies: int) -> tuple[float, int]:  # type: ignore[no-untyped-def]
    from moorage.insight.service import InsightService
    from moorage.insight.store import InsightStore
    from moorage.metadata.db import Database
    from moorage.metadata.store import MetadataStore
    from moorage.registry.service import RegistryService
    from moorage.storage import create_blob_store

    db = Database(settings.database_url)
    store = InsightStore(db)
    row = await store.get_image(digest)
    assert row is not None
    for i in range(copies - 1):
        await store.put_image(f"sha256:{i:064x}", row.repository, row.os, row.platform, row.packages, [], {})
    svc = InsightService(store, RegistryService(MetadataStore(db), create_blob_store(settings)), create_blob_store(settings))
    t = time.perf_counter()
    n = await svc.rematch_all()
    took = time.perf_counter() - t
    first = await store.get_image(digest)
    findings = len(first.findings) if first else 0
    await db.close()
    return took / max(n, 1), findings


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--image-mb", type=int, default=500)
    ap.add_argument("--layers", type=int, default=5)
    ap.add_argument("--packages", type=int, default=3000)
    ap.add_argument("--advisories", type=int, default=50000)
    ap.add_argument("--images", type=int, default=100)
    args = ap.parse_args()
    rng = random.Random(14)
    with tempfile.TemporaryDirectory(prefix="bench-insight-") as tmp:
        tmpdir = Path(tmp)
        data = tmpdir / "data"
        settings = load_settings(data=str(data))
        t = time.perf_counter()
        status = _dpkg_status(args.packages)
        per = args.image_mb * (1 << 20) // args.layers
        paths = []
        for i in range(args.layers):
            extra = (
                {"etc/os-release": Path("/etc/os-release").read_bytes(), "var/lib/dpkg/status": status}
                if i == args.layers - 1
                else {}
            )
            paths.append(tmpdir / f"layer{i}.tar.gz")
            _layer(paths[-1], per, extra, rng)
        digest = asyncio.run(_push(settings, paths, "bench/big", "1.0"))
        for p in paths:
            p.unlink()
        print(f"setup: {args.image_mb} MB image, {args.packages} dpkg packages, pushed in {time.perf_counter() - t:.1f} s")
        took, rss, out = _cli(data, "sbom", "bench/big:1.0")
        print(f"sbom: {out.strip()}")
        print(f"  moorage sbom: {took:.1f} s wall ({args.image_mb / took:.0f} MB/s of compressed layers), peak RSS {rss:.0f} MiB")
        names = [f"benchpkg{i}" for i in range(args.packages)]
        _advisories(tmpdir / "osv.zip", args.advisories, names, rng)
        took, rss, out = _cli(data, "vulndb", "import", str(tmpdir / "osv.zip"))
        print(f"vulndb import {args.advisories} advisories: {took:.1f} s, peak RSS {rss:.0f} MiB ({out.strip()})")
        per_image, findings = asyncio.run(_rematch(settings, digest, args.images))
        print(
            f"re-match {args.images} stored SBOMs of {args.packages} packages against {args.advisories} advisories: "
            f"{per_image * 1000:.0f} ms per image, {per_image * args.images:.1f} s in all ({findings} findings per image)"
        )


if __name__ == "__main__":
    main()
