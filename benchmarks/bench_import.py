"""Import rate of ``moorage import-distribution`` (blobs/s, MB/s), copy and ``--link``.

Writes a synthetic Distribution storage tree (the on-disk layout registry:2 writes: blob
``data`` files, ``_layers`` / ``_manifests/revisions`` / ``tags/*/current`` links) of
``--images`` images with ``--layers`` random layers of ``--size`` bytes each, then imports it
into a fresh Moorage data directory (filesystem + SQLite) with the real CLI::

    python3 benchmarks/bench_import.py --images 20 --layers 5 --size 2000000

The tests (tests/test_import_distribution.py) use a tree Distribution itself wrote; this only
measures speed, on bigger content.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _put_blob(v2: Path, data: bytes) -> str:
    hexd = hashlib.sha256(data).hexdigest()
    path = v2 / "blobs" / "sha256" / hexd[:2] / hexd / "data"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return f"sha256:{hexd}"


def _link(path: Path, digest: str) -> None:
    path.mkdir(parents=True, exist_ok=True)
    (path / "link").write_text(digest)


def make_tree(root: Path, images: int, layers: int, size: int) -> int:
    v2 = root / "docker" / "registry" / "v2"
    total = 0
    for i in range(images):
        repo = v2 / "repositories" / "bench" / f"app{i % 4}"
        descs = []
        for _j in range(layers):
            data = os.urandom(size)
            digest = _put_blob(v2, data)
            total += len(data)
            descs.append({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": digest, "size": len(data)})
            _link(repo / "_layers" / "sha256" / digest.split(":")[1], digest)
        config = json.dumps(
            {"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}, "n": i}
        ).encode()
        cdigest = _put_blob(v2, config)
        _link(repo / "_layers" / "sha256" / cdigest.split(":")[1], cdigest)
        manifest = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cdigest, "size": len(config)},
                "layers": descs,
            }
        ).encode()
        mdigest = _put_blob(v2, manifest)
        _link(repo / "_manifests" / "revisions" / "sha256" / mdigest.split(":")[1], mdigest)
        _link(repo / "_manifests" / "tags" / f"v{i}" / "current", mdigest)
    return total


def run_import(root: Path, data: Path, *extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MOORAGE_", "REGISTRY_"))}
    env["PYTHONPATH"] = str(REPO)
    t0 = time.monotonic()
    cp = subprocess.run(
        [sys.executable, "-m", "moorage.cli", "import-distribution", str(root), "--data", str(data), "--json", *extra],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    summary = json.loads(cp.stdout.strip().splitlines()[-1])
    summary["wall_seconds"] = round(time.monotonic() - t0, 2)
    return summary


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=20)
    ap.add_argument("--layers", type=int, default=5)
    ap.add_argument("--size", type=int, default=2_000_000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-import-") as tmp:
        root = Path(tmp) / "registry"
        total = make_tree(root, args.images, args.layers, args.size)
        print(f"tree: {args.images} images x {args.layers} layers x {args.size} B = {total / 1e6:.0f} MB")
        for label, extra in (("copy", ()), ("link", ("--link",))):
            s = run_import(root, Path(tmp) / f"data-{label}", *extra)
            print(
                f"{label:5} blobs={s['blobs_copied'] + s['blobs_linked']} bytes={s['bytes'] / 1e6:.0f}MB "
                f"import={s['seconds']}s ({s['mb_per_s']} MB/s, {s['blobs_per_s']} blobs/s) "
                f"manifests={s['manifests']} tags={s['tags']} wall(incl. start-up)={s['wall_seconds']}s"
            )
            again = run_import(root, Path(tmp) / f"data-{label}", *extra)
            print(
                f"{label:5} second run: {again['seconds']}s, changed nothing: "
                f"{again['blobs_copied'] + again['blobs_linked'] + again['manifests'] + again['tags'] == 0}"
            )


if __name__ == "__main__":
    main()
