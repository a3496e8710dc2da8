"""The built container image, kept between test sessions while its inputs stay the same.

``scripts/build-image.sh`` takes a minute or more (wheels, two build stages) even with its Debian
base cached; tests/test_image.py needs the image, not the build, once the inputs have not
changed.  The key is a hash of every file the image is made from (the build context that
.dockerignore lets through, the Dockerfile, the build script), so any change to the code or
the packaging builds afresh; a cache miss builds, runs the same checks and saves the result.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from pathlib import Path

from tests.support.registry_proc import REPO_ROOT

#: What the image is made of (deploy/Dockerfile's build context through .dockerignore, plus the
#: files that decide how it is built).
INPUTS = (
    "pyproject.toml",
    "README.md",
    "moorage",
    "deploy/Dockerfile",
    "deploy/registry-config.yml",
    "deploy/slim-venv.py",
    "deploy/runtime-root.py",
    "scripts/build-image.sh",
    ".dockerignore",
)


def inputs_key(root: Path = REPO_ROOT) -> str:
    h = hashlib.sha256()
    for name in INPUTS:
        path = root / name
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        for f in files:
            if "__pycache__" in f.parts or f.suffix in {".pyc", ".pyo"}:
                continue
            h.update(str(f.relative_to(root)).encode() + b"\0")
            h.update(hashlib.sha256(f.read_bytes()).digest() if f.exists() else b"-")
    return h.hexdigest()[:16]


def cached_image(
    cache: Path,
    image: str,
    build: Callable[[], None],
    save: Callable[[Path], None],
    load: Callable[[Path], None],
    variant: str = "",
) -> bool:
    """Load ``image`` from ``cache`` if it was saved for these inputs, else ``build()`` and
    ``save()`` it there (older entries of the same ``variant``, e.g. ``all`` for the image with
    every extra, are removed).  Returns True on a cache hit."""
    prefix = f"image-{variant}-" if variant else "image-"
    archive = cache / f"{prefix}{inputs_key()}.tar"
    if archive.is_file() and archive.stat().st_size > 0:
        load(archive)
        return True
    build()
    cache.mkdir(parents=True, exist_ok=True)
    partial = archive.with_suffix(".partial")
    partial.unlink(missing_ok=True)
    save(partial)
    for old in cache.glob(f"{prefix}*.tar"):
        if re.fullmatch(re.escape(prefix) + r"[0-9a-f]{16}\.tar", old.name):
            old.unlink(missing_ok=True)
    partial.rename(archive)
    return False
