"""Image layers built from real package databases, for the image-insight tests.

* Debian: this machine's own ``/var/lib/dpkg/status`` and ``/etc/os-release``;
* Python: the ``*.dist-info`` of a virtual environment made with ``python3 -m venv`` (pip and
  whatever ensurepip installs);
* npm: ``node_modules`` of real packages installed with ``npm install``;
* Alpine: an ``installed`` database written from apk's documented fields (P, V, A, o).
"""

from __future__ import annotations

import gzip
import io
import json
import os
import re
import shutil
import subprocess
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path

import zstandard

NPM_PACKAGES = ("is-number@7.0.0", "ms@2.1.3")


def tar_bytes(files: dict[str, bytes | None]) -> bytes:
    """An uncompressed tar; a value of None writes a directory."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.mtime = 1700000000
            if data is None:
                info.type = tarfile.DIRTYPE
                info.mode = 0o755
                tar.addfile(info)
            else:
                info.size = len(data)
                info.mode = 0o644
                tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def gz(data: bytes) -> bytes:
    return gzip.compress(data, mtime=0)


def zst(data: bytes) -> bytes:
    return zstandard.ZstdCompressor().compress(data)


def dpkg_stanzas(status: bytes) -> list[str]:
    return [s for s in status.decode().split("\n\n") if s.strip()]


def stanza_field(stanza: str, name: str) -> str:
    m = re.search(rf"^{name}: (.*)$", stanza, re.M)
    return m.group(1).strip() if m else ""


@dataclass
class RealPackages:
    dpkg_status: bytes
    os_release: bytes
    #: ``path inside the layer -> bytes`` of every dist-info METADATA of the venv.
    python_files: dict[str, bytes]
    python_versions: dict[str, str]
    npm_files: dict[str, bytes]


def real_packages(workdir: Path) -> RealPackages:
    status = Path("/var/lib/dpkg/status").read_bytes()
    os_release = Path("/etc/os-release").read_bytes()
    venv = workdir / "venv"
    if not venv.exists():
        subprocess.run(["python3", "-m", "venv", str(venv)], check=True, timeout=120)
    site = next(venv.glob("lib/python3*/site-packages"))
    py_files: dict[str, bytes] = {}
    py_versions: dict[str, str] = {}
    for meta in site.glob("*.dist-info/METADATA"):
        rel = meta.relative_to(venv)
        py_files[f"opt/venv/{rel}"] = meta.read_bytes()
        text = meta.read_text()
        name = re.search(r"^Name: (.*)$", text, re.M).group(1).strip()  # type: ignore[union-attr]
        py_versions[name] = re.search(r"^Version: (.*)$", text, re.M).group(1).strip()  # type: ignore[union-attr]
    npm_dir = workdir / "npm"
    if not (npm_dir / "node_modules").exists():
        npm_dir.mkdir(exist_ok=True)
        (npm_dir / "package.json").write_text('{"name":"insight-test","version":"1.0.0","private":true}')
        npm = shutil.which("npm")
        assert npm, "npm is needed to install real npm packages (apt: npm, or Node.js with npm)"
        subprocess.run(
            [npm, "install", "--no-audit", "--no-fund", "--silent", *NPM_PACKAGES],
            cwd=npm_dir,
            check=True,
            timeout=300,
            env={**os.environ, "npm_config_update_notifier": "false"},
        )
    npm_files = {}
    for pj in (npm_dir / "node_modules").glob("**/package.json"):
        rel = pj.relative_to(npm_dir)
        npm_files[f"srv/app/{rel}"] = pj.read_bytes()
    return RealPackages(status, os_release, py_files, py_versions, npm_files)


ALPINE_OS_RELEASE = b'NAME="Alpine Linux"\nID=alpine\nVERSION_ID=3.19.1\nPRETTY_NAME="Alpine Linux v3.19"\n'
ALPINE_INSTALLED = (
    b"C:Q1abc=\nP:musl\nV:1.2.4_git20230717-r4\nA:x86_64\nS:407000\nI:663000\nT:the musl c library\n"
    b"U:https://musl.libc.org/\nL:MIT\no:musl\nm:Natanael Copa <ncopa@alpinelinux.org>\nt:1700000000\n\n"
    b"C:Q1def=\nP:busybox\nV:1.36.1-r15\nA:x86_64\nS:500000\nI:900000\nT:Size optimized toolbox\n"
    b"U:https://busybox.net/\nL:GPL-2.0-only\no:busybox\n\n"
    b"C:Q1ghi=\nP:ssl_client\nV:1.36.1-r15\nA:x86_64\nS:5000\nI:14000\nT:EXternal ssl_client for busybox wget\n"
    b"o:busybox\n\n"
)


def osv(
    id_: str,
    ecosystem: str,
    name: str,
    events: list[dict[str, str]],
    *,
    range_type: str = "ECOSYSTEM",
    cvss: str | None = None,
    db_severity: str | None = None,
) -> dict:
    doc: dict = {
        "schema_version": "1.6.0",
        "id": id_,
        "modified": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(1700000000)),
        "summary": f"test advisory {id_}",
        "affected": [{"package": {"ecosystem": ecosystem, "name": name}, "ranges": [{"type": range_type, "events": events}]}],
    }
    if cvss:
        doc["severity"] = [{"type": "CVSS_V3", "score": cvss}]
    if db_severity:
        doc["database_specific"] = {"severity": db_severity}
    return doc


def write_osv(directory: Path, docs: list[dict]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for doc in docs:
        (directory / f"{doc['id']}.json").write_text(json.dumps(doc))
    return directory
