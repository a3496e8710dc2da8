"""Package records and the parsers of the package databases found in image layers.

Every parser is a pure function from a file's bytes to :class:`Package` records, so each can be
tested on real databases (this machine's ``/var/lib/dpkg/status``, a virtual environment's
``*.dist-info``, npm's ``node_modules``) without an image around it.
"""

from __future__ import annotations

import email.parser
import json
import re
import sqlite3
import struct
import tempfile
from dataclasses import dataclass, field
from urllib.parse import quote

#: Ecosystem names as OSV spells them (the family; a release suffix like ``Debian:12`` is matched
#: against the image's os-release).
DEBIAN, ALPINE, RPM, PYPI, NPM = "Debian", "Alpine", "RPM", "PyPI", "npm"


@dataclass(frozen=True)
class Package:
    name: str
    version: str
    ecosystem: str
    #: Where it was found (``var/lib/dpkg/status``, ``.../foo-1.0.dist-info/METADATA`` ...).
    path: str = ""
    arch: str = ""
    #: Debian source package (``Source:``) and its version, which OSV's Debian advisories name.
    source: str = ""
    source_version: str = ""
    #: Distribution id from os-release (``debian``, ``ubuntu``, ``alpine``, ``rhel`` ...), for the purl.
    distro: str = ""

    @property
    def purl(self) -> str:
        name = quote(self.name, safe="")
        version = quote(self.version, safe="")
        if self.ecosystem == DEBIAN:
            ns = self.distro if self.distro in ("debian", "ubuntu") else "debian"
            q = f"?arch={quote(self.arch)}" if self.arch else ""
            return f"pkg:deb/{ns}/{name}@{version}{q}"
        if self.ecosystem == ALPINE:
            q = f"?arch={quote(self.arch)}" if self.arch else ""
            return f"pkg:apk/alpine/{name}@{version}{q}"
        if self.ecosystem == RPM:
            ns = quote(self.distro or "redhat")
            q = f"?arch={quote(self.arch)}" if self.arch else ""
            return f"pkg:rpm/{ns}/{name}@{version}{q}"
        if self.ecosystem == PYPI:
            return f"pkg:pypi/{quote(normalize_pypi(self.name), safe='')}@{version}"
        if self.ecosystem == NPM:
            if self.name.startswith("@") and "/" in self.name:
                scope, base = self.name.split("/", 1)
                return f"pkg:npm/{quote(scope, safe='@')}/{quote(base, safe='')}@{version}"
            return f"pkg:npm/{name}@{version}"
        return f"pkg:generic/{name}@{version}"

    def to_json(self) -> dict[str, str]:
        return {k: v for k, v in self.__dict__.items() if v}

    @classmethod
    def from_json(cls, data: dict[str, str]) -> "Package":
        return cls(**{k: str(v) for k, v in data.items() if k in cls.__dataclass_fields__})


@dataclass
class OSRelease:
    id: str = ""
    version_id: str = ""
    pretty_name: str = ""
    id_like: list[str] = field(default_factory=list)


def normalize_pypi(name: str) -> str:
    """PEP 503 normalised project name (what OSV's PyPI advisories use, case-insensitively)."""
    return re.sub(r"[-_.]+", "-", name).lower()


# -------------------------------------------------------------------------------- parsers
def parse_os_release(data: bytes) -> OSRelease:
    values: dict[str, str] = {}
    for line in data.decode("utf-8", "replace").splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, value = line.split("=", 1)
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        values[key.strip()] = value
    return OSRelease(
        values.get("ID", "").lower(),
        values.get("VERSION_ID", ""),
        values.get("PRETTY_NAME", ""),
        values.get("ID_LIKE", "").lower().split(),
    )


def _stanzas(text: str) -> list[dict[str, str]]:
    """RFC 822-style stanzas (dpkg status), continuation lines folded into their field."""
    out: list[dict[str, str]] = []
    cur: dict[str, str] = {}
    last = ""
    for line in text.splitlines():
        if not line.strip():
            if cur:
                out.append(cur)
            cur, last = {}, ""
        elif line[0] in " \t":
            if last:
                cur[last] += "\n" + line.strip()
        elif ":" in line:
            key, value = line.split(":", 1)
            last = key.strip()
            cur[last] = value.strip()
    if cur:
        out.append(cur)
    return out


def parse_dpkg_status(data: bytes, path: str = "var/lib/dpkg/status") -> list[Package]:
    """Installed packages of a dpkg status file (or one file of distroless ``status.d/``)."""
    found = []
    for st in _stanzas(data.decode("utf-8", "replace")):
        name, version = st.get("Package"), st.get("Version")
        if not name or not version:
            continue
        status = st.get("Status", "install ok installed").split()
        if status and status[-1] not in ("installed", "half-configured", "unpacked", "triggers-awaited", "triggers-pending"):
            continue  # config-files / not-installed: only leftovers
        source, source_version = name, version
        if st.get("Source"):
            m = re.match(r"^(\S+)(?:\s*\((\S+)\))?", st["Source"])
            if m:
                source = m.group(1)
                source_version = m.group(2) or version
        found.append(Package(name, version, DEBIAN, path, st.get("Architecture", ""), source, source_version))
    return found


def parse_apk_installed(data: bytes, path: str = "lib/apk/db/installed") -> list[Package]:
    """Alpine's installed database: blank-line separated records of ``X:value`` lines
    (``P`` name, ``V`` version, ``A`` arch, ``o`` origin = source package)."""
    found = []
    for block in re.split(r"\n\s*\n", data.decode("utf-8", "replace")):
        rec: dict[str, str] = {}
        for line in block.splitlines():
            if len(line) >= 2 and line[1] == ":" and line[0] not in rec:
                rec[line[0]] = line[2:].strip()
        if rec.get("P") and rec.get("V"):
            found.append(Package(rec["P"], rec["V"], ALPINE, path, rec.get("A", ""), rec.get("o", rec["P"]), rec["V"]))
    return found


def parse_python_metadata(data: bytes, path: str) -> list[Package]:
    """A ``*.dist-info/METADATA`` or ``*.egg-info/PKG-INFO`` (RFC 822 headers)."""
    msg = email.parser.BytesHeaderParser().parsebytes(data[: 1 << 20])
    name, version = msg.get("Name"), msg.get("Version")
    if not name or not version:
        return []
    return [Package(str(name).strip(), str(version).strip(), PYPI, path)]


def parse_npm_package(data: bytes, path: str) -> list[Package]:
    """``node_modules/<name>/package.json`` (or ``@scope/name``)."""
    try:
        doc = json.loads(data)
    except ValueError:
        return []
    if not isinstance(doc, dict):
        return []
    name, version = doc.get("name"), doc.get("version")
    if not isinstance(name, str) or not isinstance(version, str) or not name or not version:
        return []
    return [Package(name, version, NPM, path)]


# RPM header tags (rpm's lib/rpmtag.h) and types (STRING=6, INT32=4, STRING_ARRAY=8, I18NSTRING=9).
_RPMTAG_NAME, _RPMTAG_VERSION, _RPMTAG_RELEASE, _RPMTAG_EPOCH, _RPMTAG_ARCH, _RPMTAG_SOURCERPM = (
    1000,
    1001,
    1002,
    1003,
    1022,
    1044,
)


def parse_rpm_header(blob: bytes) -> dict[int, str | int]:
    """One header blob as rpmdb.sqlite's ``Packages.blob`` stores it: index count and data size
    (big-endian u32 each), 16-byte index entries (tag, type, offset, count), then the data."""
    if len(blob) < 8:
        raise ValueError("short header")
    il, dl = struct.unpack(">II", blob[:8])
    if il > 100_000 or 8 + il * 16 + dl > len(blob):
        raise ValueError("header sizes out of bounds")
    data = blob[8 + il * 16 : 8 + il * 16 + dl]
    out: dict[int, str | int] = {}
    for i in range(il):
        tag, typ, off, count = struct.unpack(">iiii", blob[8 + i * 16 : 24 + i * 16])
        if tag not in (_RPMTAG_NAME, _RPMTAG_VERSION, _RPMTAG_RELEASE, _RPMTAG_EPOCH, _RPMTAG_ARCH, _RPMTAG_SOURCERPM):
            continue
        if off < 0 or off >= len(data):
            continue
        if typ in (6, 8, 9):
            end = data.find(b"\0", off)
            out[tag] = data[off : end if end >= 0 else len(data)].decode("utf-8", "replace")
        elif typ == 4 and count >= 1 and off + 4 <= len(data):
            out[tag] = struct.unpack(">i", data[off : off + 4])[0]
    return out


def parse_rpmdb_sqlite(data: bytes, path: str) -> list[Package]:
    """rpm >= 4.16's ``rpmdb.sqlite``: the ``Packages`` table's header blobs."""
    found = []
    with tempfile.NamedTemporaryFile(suffix=".sqlite") as tmp:
        tmp.write(data)
        tmp.flush()
        conn = sqlite3.connect(f"file:{tmp.name}?mode=ro", uri=True)
        try:
            rows = conn.execute("SELECT blob FROM Packages").fetchall()
        finally:
            conn.close()
    for (blob,) in rows:
        try:
            h = parse_rpm_header(bytes(blob))
        except ValueError:
            continue
        name, version, release = h.get(_RPMTAG_NAME), h.get(_RPMTAG_VERSION), h.get(_RPMTAG_RELEASE)
        if not isinstance(name, str) or not isinstance(version, str) or name == "gpg-pubkey":
            continue
        full = f"{version}-{release}" if isinstance(release, str) and release else version
        epoch = h.get(_RPMTAG_EPOCH)
        if isinstance(epoch, int) and epoch:
            full = f"{epoch}:{full}"
        srpm = h.get(_RPMTAG_SOURCERPM)
        source = re.sub(r"-[^-]+-[^-]+\.src\.rpm$", "", srpm) if isinstance(srpm, str) else name
        arch = h.get(_RPMTAG_ARCH)
        found.append(Package(name, full, RPM, path, arch if isinstance(arch, str) else "", source, full))
    return found
