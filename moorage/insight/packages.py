"""Package records and the parsers of the package databases found in image layers.

Every parser is a pure function from a file's bytes to :class:`Package` records, so each can be
tested on real databases (this machine's ``/var/lib/dpkg/status``, a virtual environment's
``*.dist-info``, npm's ``node_modules``) without an image around it.
"""

from __future__ import annotations

import email.parser
import re
import sqlite3
import struct
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

from ..registry.safejson import UntrustedJSONError, loads_untrusted

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
    def from_json(cls, data: dict[str, str]) -> Package:
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
        values[key.strip()] = clean_text(value, 100)  # ``id:version_id`` goes into a 255-character column
    return OSRelease(
        values.get("ID", "").lower(),
        values.get("VERSION_ID", ""),
        values.get("PRETTY_NAME", ""),
        values.get("ID_LIKE", "").lower().split(),
    )


#: Longest line a streamed database parser looks at; the rest of a longer line is dropped (no
#: field Moorage reads is anywhere near it, and a 60 MiB line of spaces must not be held).
MAX_LINE = 64 * 1024
#: Longest field value kept from a package database (names, versions, architectures): what the
#: database columns hold (``insight_image_packages.version`` is 255 characters); real ones are short.
MAX_VALUE = 255

#: The dpkg fields the inventory uses; every other field (and every continuation line) is skipped.
_DPKG_FIELDS = frozenset({"Package", "Version", "Status", "Source", "Architecture"})


def iter_lines(chunks: Iterable[bytes], max_line: int = MAX_LINE) -> Iterator[bytes]:
    """Lines (without the newline) of a byte stream given as chunks, each cut to ``max_line``
    bytes: memory is bounded by the chunk size plus ``max_line`` whatever the input."""
    pending = bytearray()
    overflow = False  # dropping the rest of an over-long line
    for chunk in chunks:
        start = 0
        while True:
            nl = chunk.find(b"\n", start)
            piece = chunk[start:] if nl < 0 else chunk[start:nl]
            if not overflow:
                room = max_line - len(pending)
                pending += piece[:room]
                overflow = len(piece) > room
            if nl < 0:
                break
            yield bytes(pending)
            pending.clear()
            overflow = False
            start = nl + 1
    if pending:
        yield bytes(pending)


#: Control characters (C0 and DEL) dropped from every value read out of a layer: PostgreSQL
#: refuses NUL in text, and no package name or version has any.
_CONTROL = dict.fromkeys([*range(0, 32), 127])


def clean_text(text: str, limit: int = MAX_VALUE) -> str:
    """A value from an image, fit to store: no control characters, trimmed, at most ``limit``."""
    return text.translate(_CONTROL).strip()[:limit]


def _value(text: str) -> str:
    return clean_text(text)


def iter_dpkg_status(lines: Iterable[bytes], path: str = "var/lib/dpkg/status") -> Iterator[Package]:
    """Installed packages of a dpkg status file, one stanza at a time (streamed: only the
    current stanza's few interesting fields are held)."""
    cur: dict[str, str] = {}
    for raw in lines:
        line = raw.decode("utf-8", "replace").rstrip("\r")
        if not line.strip():
            if cur:
                pkg = _dpkg_package(cur, path)
                if pkg is not None:
                    yield pkg
            cur = {}
        elif line[0] not in " \t" and ":" in line:
            key, value = line.split(":", 1)
            key = key.strip()
            if key in _DPKG_FIELDS:
                cur[key] = _value(value)
    if cur:
        pkg = _dpkg_package(cur, path)
        if pkg is not None:
            yield pkg


def _dpkg_package(st: dict[str, str], path: str) -> Package | None:
    name, version = st.get("Package"), st.get("Version")
    if not name or not version:
        return None
    status = st.get("Status", "install ok installed").split()
    if status and status[-1] not in ("installed", "half-configured", "unpacked", "triggers-awaited", "triggers-pending"):
        return None  # config-files / not-installed: only leftovers
    source, source_version = name, version
    if st.get("Source"):
        m = re.match(r"^(\S+)(?:\s*\((\S+)\))?", st["Source"])
        if m:
            source = m.group(1)
            source_version = m.group(2) or version
    return Package(name, version, DEBIAN, path, st.get("Architecture", ""), source, source_version)


def parse_dpkg_status(data: bytes, path: str = "var/lib/dpkg/status") -> list[Package]:
    """Installed packages of a dpkg status file (or one file of distroless ``status.d/``)."""
    return list(iter_dpkg_status(iter_lines([data]), path))


def iter_apk_installed(lines: Iterable[bytes], path: str = "lib/apk/db/installed") -> Iterator[Package]:
    """Alpine's installed database: blank-line separated records of ``X:value`` lines
    (``P`` name, ``V`` version, ``A`` arch, ``o`` origin = source package); streamed."""
    rec: dict[str, str] = {}
    for raw in lines:
        line = raw.decode("utf-8", "replace").rstrip("\r")
        if not line.strip():
            if rec.get("P") and rec.get("V"):
                yield _apk_package(rec, path)
            rec = {}
        elif len(line) >= 2 and line[1] == ":" and line[0] in "PVAo" and line[0] not in rec:
            rec[line[0]] = _value(line[2:])
    if rec.get("P") and rec.get("V"):
        yield _apk_package(rec, path)


def _apk_package(rec: dict[str, str], path: str) -> Package:
    return Package(rec["P"], rec["V"], ALPINE, path, rec.get("A", ""), rec.get("o", rec["P"]), rec["V"])


def parse_apk_installed(data: bytes, path: str = "lib/apk/db/installed") -> list[Package]:
    return list(iter_apk_installed(iter_lines([data]), path))


def parse_python_metadata(data: bytes, path: str) -> list[Package]:
    """A ``*.dist-info/METADATA`` or ``*.egg-info/PKG-INFO`` (RFC 822 headers)."""
    msg = email.parser.BytesHeaderParser().parsebytes(data[: 1 << 20])
    name, version = msg.get("Name"), msg.get("Version")
    if not name or not version:
        return []
    return [Package(_value(str(name)), _value(str(version)), PYPI, path)]


def parse_npm_package(data: bytes, path: str) -> list[Package]:
    """``node_modules/<name>/package.json`` (or ``@scope/name``)."""
    try:
        doc = loads_untrusted(data)
    except UntrustedJSONError:  # syntax, encoding, or ``[[[[...`` nested past the recursion limit
        return []
    if not isinstance(doc, dict):
        return []
    name, version = doc.get("name"), doc.get("version")
    if not isinstance(name, str) or not isinstance(version, str) or not name or not version:
        return []
    return [Package(_value(name), _value(version), NPM, path)]


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


#: SQLite virtual-machine steps (in thousands) one rpm database may take: reading the blobs of
#: thousands of packages takes a few hundred; a hostile ``Packages`` view (a recursive CTE) stops here.
RPMDB_MAX_KSTEPS = 20_000


def iter_rpmdb_sqlite(db_file: Path, path: str, stop: Callable[[], bool] = lambda: False) -> Iterator[Package]:
    """rpm >= 4.16's ``rpmdb.sqlite`` (a file on disk): the ``Packages`` table's header blobs, one
    row at a time.  ``stop()`` is polled by SQLite's progress handler and between rows, so a
    hostile database cannot run past the scan's time budget; its steps are bounded too."""
    conn = sqlite3.connect(f"file:{db_file}?mode=ro&immutable=1", uri=True)
    steps = [0]

    def progress() -> int:
        steps[0] += 1
        return 1 if stop() or steps[0] > RPMDB_MAX_KSTEPS else 0

    try:
        conn.set_progress_handler(progress, 1000)
        for (blob,) in conn.execute("SELECT blob FROM Packages"):
            if not isinstance(blob, bytes) or len(blob) > (16 << 20):
                continue
            pkg = _rpm_package(blob, path)
            if pkg is not None:
                yield pkg
            if stop():
                raise TimeoutError("time budget exceeded while reading the rpm database")
    except sqlite3.DatabaseError as exc:
        if stop():
            raise TimeoutError("time budget exceeded while reading the rpm database") from None
        if steps[0] > RPMDB_MAX_KSTEPS:
            raise ValueError(f"rpm database takes more than {RPMDB_MAX_KSTEPS * 1000} SQLite steps") from None
        raise ValueError(f"rpm database: {exc}") from None
    finally:
        conn.close()


def _rpm_package(blob: bytes, path: str) -> Package | None:
    try:
        h = parse_rpm_header(bytes(blob))
    except ValueError:
        return None
    name, version, release = h.get(_RPMTAG_NAME), h.get(_RPMTAG_VERSION), h.get(_RPMTAG_RELEASE)
    if not isinstance(name, str) or not isinstance(version, str) or name == "gpg-pubkey":
        return None
    full = f"{version}-{release}" if isinstance(release, str) and release else version
    epoch = h.get(_RPMTAG_EPOCH)
    if isinstance(epoch, int) and epoch:
        full = f"{epoch}:{full}"
    srpm = h.get(_RPMTAG_SOURCERPM)
    source = re.sub(r"-[^-]+-[^-]+\.src\.rpm$", "", srpm) if isinstance(srpm, str) else name
    arch = h.get(_RPMTAG_ARCH)
    return Package(
        _value(name),
        _value(full),
        RPM,
        path,
        _value(arch) if isinstance(arch, str) else "",
        _value(source),
        _value(full),
    )


def parse_rpmdb_sqlite(data: bytes, path: str) -> list[Package]:
    """rpm >= 4.16's ``rpmdb.sqlite`` given as bytes (tests; the scanner streams it to disk)."""
    with tempfile.NamedTemporaryFile(suffix=".sqlite") as tmp:
        tmp.write(data)
        tmp.flush()
        return list(iter_rpmdb_sqlite(Path(tmp.name), path))
