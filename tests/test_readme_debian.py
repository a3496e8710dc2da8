"""The README's first command on a fresh Debian: ``bash scripts/serve.sh`` from a clean checkout in a
clean Debian 12 (Python 3.11) and Debian 13 (Python 3.13) container answers as a registry.

A fresh Debian has ``python3`` but neither ``pip`` nor ``python3-venv``, and its Python is
"externally managed" (PEP 668): ``pip install -e .`` fails there.  The script makes ``.venv``
(installing python3-venv with apt first) and runs ``moorage serve`` from it.  The containers are
made with mmdebstrap (``--variant=apt``: Debian's required and important packages, plus python3
and ca-certificates), cached in ~/.cache/moorage-image (``MOORAGE_IMAGE_CACHE``) like
tests/test_image.py's base; pip and apt reach their usual indexes (host network).

Slow (minutes: mmdebstrap on a cold cache, pip install of every dependency): ``-m "not slow"`` skips it.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.clients import PodmanService, http_json, run
from tests.support.fixtures import require_binary
from tests.support.registry_proc import REPO_ROOT, free_port

pytestmark = [pytest.mark.clients, pytest.mark.slow, pytest.mark.timeout(2400)]

CACHE = Path(os.environ.get("MOORAGE_IMAGE_CACHE") or Path.home() / ".cache" / "moorage-image")
#: What a fresh Debian server has that matters here: python3 (no pip, no python3-venv), apt.
PACKAGES = "python3,ca-certificates"
RELEASES = {"bookworm": "3.11", "trixie": "3.13"}


@pytest.fixture(scope="module")
def podman(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PodmanService]:
    require_binary("podman", "podman")
    require_binary("runc", "runc")
    require_binary("mmdebstrap", "mmdebstrap")
    svc = PodmanService(tmp_path_factory.mktemp("podman-run"), storage_driver="overlay")
    svc.start()
    try:
        yield svc
    finally:
        svc.stop()


def _mirror() -> str:
    mirror = os.environ.get("MOORAGE_DEBIAN_MIRROR")
    if mirror:
        return mirror
    for sources in sorted(Path("/etc/apt/sources.list.d").glob("*.sources")):
        for line in sources.read_text().splitlines():
            if line.startswith("URIs:") and "security" not in line:
                return line.split()[1]
    return "http://deb.debian.org/debian"


def _fresh_debian(podman: PodmanService, suite: str) -> str:
    """A clean Debian ``suite`` imported into podman (its rootfs tar cached between sessions)."""
    key = hashlib.sha256(f"{PACKAGES}|{suite}|v1".encode()).hexdigest()[:12]
    tar = CACHE / f"debian-{suite}-fresh-{key}.tar"
    if not tar.is_file() or tar.stat().st_size == 0:
        CACHE.mkdir(parents=True, exist_ok=True)
        partial = tar.with_name(tar.stem + ".partial.tar")
        partial.unlink(missing_ok=True)
        run(
            [
                "mmdebstrap",
                "--quiet",
                "--variant=apt",
                f"--include={PACKAGES}",
                "--dpkgopt=path-exclude=/usr/share/doc/*",
                "--dpkgopt=path-exclude=/usr/share/man/*",
                "--dpkgopt=path-exclude=/usr/share/locale/*",
                suite,
                str(partial),
                _mirror(),
            ],
            timeout=1200,
        )
        partial.rename(tar)
    name = f"localhost/moorage-fresh-debian:{suite}-{key}"
    podman.podman("import", "--change", 'CMD ["/bin/bash"]', str(tar), name, timeout=600)
    return name


def _host_trust() -> list[str]:
    """The host's CA bundle for pip in the container, when the host's pip is told to use it
    (PIP_CERT: e.g. a TLS-inspecting proxy between this machine and PyPI)."""
    cert = os.environ.get("PIP_CERT")
    if not cert or not Path(cert).is_file():
        return []
    return ["-v", f"{cert}:/host-ca.pem:ro", "-e", "PIP_CERT=/host-ca.pem"]


def _checkout(dst: Path) -> Path:
    """The working tree as a fresh clone has it (no .venv, data, caches, .git)."""
    ignore = shutil.ignore_patterns(".git", ".venv", "data", ".build", "__pycache__", "*.pyc", ".mypy_cache", ".ruff_cache")
    shutil.copytree(REPO_ROOT, dst, ignore=ignore)
    return dst


@pytest.mark.parametrize("suite", sorted(RELEASES))
def test_readme_first_command_on_a_fresh_debian(podman: PodmanService, tmp_path: Path, suite: str) -> None:
    base = _fresh_debian(podman, suite)
    src = _checkout(tmp_path / "moorage")
    # the command the README used to give fails on this system, which is what the script is for
    old = podman.podman("run", "--rm", base, "sh", "-c", "pip install -e . || python3 -m pip install -e .", check=False)
    assert old.returncode != 0, old.stdout
    port = free_port()
    name = f"readme-{suite}-{uuid.uuid4().hex[:8]}"
    podman.podman(
        "run",
        "-d",
        "--name",
        name,
        "--network=host",
        "-e",
        f"MOORAGE_ADDR=127.0.0.1:{port}",
        *_host_trust(),
        "-v",
        f"{src}:/src",
        "-w",
        "/src",
        base,
        "bash",
        "scripts/serve.sh",  # the README's first command, as written
    )
    try:
        deadline = time.monotonic() + 1500
        while True:
            try:
                status, _, body = http_json(f"http://127.0.0.1:{port}/v2/_catalog")
                break
            except OSError:
                pass
            state = podman.podman("container", "inspect", "-f", "{{.State.Running}}", name).stdout.strip()
            if state != "true" or time.monotonic() > deadline:
                logs = podman.podman("logs", name, check=False)
                raise AssertionError(f"scripts/serve.sh on {suite} did not serve:\n{logs.stdout[-4000:]}{logs.stderr[-4000:]}")
            time.sleep(2)
        assert status == 200 and body == {"repositories": []}
        version = podman.podman("exec", name, "/src/.venv/bin/python", "-c", "import sys; print(sys.version)").stdout
        assert version.startswith(RELEASES[suite] + "."), version
    finally:
        podman.podman("rm", "-f", name, check=False)
        # the container ran as root: hand the tree back to the test's user for tmp_path cleanup
        subprocess.run(["chown", "-R", f"{os.getuid()}:{os.getgid()}", str(src)], check=False)
