"""OSV advisories: reading the files osv.dev publishes, severity, and version-range matching with
each ecosystem's own version order (univers: dpkg epochs and tildes, apk suffixes, PEP 440,
semver, rpm)."""

from __future__ import annotations

import functools
import io
import json
import re
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .packages import ALPINE, DEBIAN, NPM, PYPI, RPM, Package, normalize_pypi

SEVERITIES = ("UNKNOWN", "LOW", "MEDIUM", "HIGH", "CRITICAL")
_RANK = {s: i for i, s in enumerate(SEVERITIES)}
#: OSV ecosystem (before any ``:release``) -> our family.
_FAMILIES = {
    "debian": DEBIAN,
    "ubuntu": DEBIAN,
    "alpine": ALPINE,
    "pypi": PYPI,
    "npm": NPM,
    "red hat": RPM,
    "rocky linux": RPM,
    "almalinux": RPM,
    "opensuse": RPM,
    "suse": RPM,
    "mageia": RPM,
}
#: Largest single advisory file read (osv.dev's biggest are a few hundred KB).
MAX_ADVISORY_BYTES = 8 << 20


def severity_rank(severity: str) -> int:
    return _RANK.get(severity.upper(), 0)


def family_of(ecosystem: str) -> str | None:
    return _FAMILIES.get(ecosystem.split(":", 1)[0].strip().lower())


def package_key(family: str, name: str) -> str:
    """How a package name is stored and looked up (PyPI names are normalised, others exact)."""
    return normalize_pypi(name) if family == PYPI else name


@dataclass
class Advisory:
    id: str
    modified: str
    summary: str
    severity: str
    score: float | None
    aliases: list[str]
    #: (ecosystem, family, package name, {"ranges": [...], "versions": [...]})
    affected: list[tuple[str, str, str, dict[str, Any]]]


def _cvss_severity(vector: str) -> tuple[str, float] | None:
    import cvss

    try:
        if vector.startswith("CVSS:4"):
            c4 = cvss.CVSS4(vector)
            return c4.severity.upper(), float(c4.base_score)
        if vector.startswith("CVSS:3"):
            c3 = cvss.CVSS3(vector)
            return c3.severities()[0].upper(), float(c3.scores()[0])
        c2 = cvss.CVSS2(vector)
        score = float(c2.scores()[0])
        return ("HIGH" if score >= 7 else "MEDIUM" if score >= 4 else "LOW"), score
    except Exception:
        return None


def parse_advisory(doc: dict[str, Any]) -> Advisory | None:
    """An OSV record, or None when it names no package we can match."""
    if not isinstance(doc, dict) or not isinstance(doc.get("id"), str):
        return None
    severity, score = "UNKNOWN", None
    for sev in doc.get("severity") or []:
        if isinstance(sev, dict) and isinstance(sev.get("score"), str):
            got = _cvss_severity(sev["score"])
            if got and (score is None or got[1] > score):
                severity, score = got
    if score is None:
        text = str((doc.get("database_specific") or {}).get("severity") or "").upper()
        for aff in doc.get("affected") or []:
            if not text and isinstance(aff, dict):
                text = str(
                    (aff.get("ecosystem_specific") or {}).get("severity")
                    or (aff.get("database_specific") or {}).get("severity")
                    or ""
                ).upper()
        text = {"MODERATE": "MEDIUM", "IMPORTANT": "HIGH", "NEGLIGIBLE": "LOW", "UNIMPORTANT": "LOW"}.get(text, text)
        if text in _RANK:
            severity = text
    affected = []
    for aff in doc.get("affected") or []:
        pkg = aff.get("package") if isinstance(aff, dict) else None
        if not isinstance(pkg, dict):
            continue
        eco, name = pkg.get("ecosystem"), pkg.get("name")
        if not isinstance(eco, str) or not isinstance(name, str):
            continue
        family = family_of(eco)
        if family is None:
            continue
        spec = {
            "ranges": [r for r in aff.get("ranges") or [] if isinstance(r, dict)],
            "versions": [v for v in aff.get("versions") or [] if isinstance(v, str)],
        }
        affected.append((eco, family, package_key(family, name), spec))
    if not affected:
        return None
    aliases = [a for a in doc.get("aliases") or [] if isinstance(a, str)]
    return Advisory(
        doc["id"],
        str(doc.get("modified") or ""),
        str(doc.get("summary") or doc.get("details") or "")[:500],
        severity,
        score,
        aliases,
        affected,
    )


def read_advisories(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """(source name, JSON document) of every advisory in a file, a directory (recursively, also
    zips inside it) or a zip as osv.dev publishes them (``<Ecosystem>/all.zip``)."""
    if path.is_dir():
        for child in sorted(path.rglob("*")):
            if child.is_file() and child.suffix in (".json", ".zip"):
                yield from read_advisories(child)
        return
    if path.suffix == ".zip" or zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as zf:
            for info in zf.infolist():
                if info.is_dir() or not info.filename.endswith(".json") or info.file_size > MAX_ADVISORY_BYTES:
                    continue
                with zf.open(info) as fh:
                    data = fh.read(MAX_ADVISORY_BYTES + 1)
                yield from _documents(f"{path.name}:{info.filename}", data)
        return
    if path.stat().st_size <= MAX_ADVISORY_BYTES:
        yield from _documents(path.name, path.read_bytes())


def _documents(source: str, data: bytes) -> Iterator[tuple[str, dict[str, Any]]]:
    try:
        doc = json.load(io.BytesIO(data))
    except ValueError:
        return
    for item in doc if isinstance(doc, list) else [doc]:
        if isinstance(item, dict):
            yield source, item


# ------------------------------------------------------------------------------ matching
_APK = re.compile(r"^(\d+(?:\.\d+)*)([a-z]?)((?:_(?:alpha|beta|pre|rc|cvs|svn|git|hg|p)\d*)*)(?:-r(\d+))?$")
_APK_SUFFIX = {"alpha": 0, "beta": 1, "pre": 2, "rc": 3, "": 4, "cvs": 5, "svn": 6, "git": 7, "hg": 8, "p": 9}


@functools.total_ordering
class ApkVersion:
    """apk-tools' version order (``1.2.4_git20230717-r4``): numeric components, a letter, ``_alpha``
    < ``_beta`` < ``_pre`` < ``_rc`` < (none) < ``_cvs`` < ``_svn`` < ``_git`` < ``_hg`` < ``_p``
    suffixes with numbers, then the ``-rN`` package revision.  (univers refuses ``_git``.)"""

    def __init__(self, text: str) -> None:
        m = _APK.match(text.strip())
        if not m:
            raise ValueError(f"not an apk version: {text!r}")
        self.text = text
        suffixes = [
            (_APK_SUFFIX[s.rstrip("0123456789")], int(s[len(s.rstrip("0123456789")) :] or 0)) for s in m.group(3).split("_")[1:]
        ]
        self.key = (tuple(int(n) for n in m.group(1).split(".")), m.group(2), suffixes, int(m.group(4) or 0))

    def _cmp_key(self, other: ApkVersion) -> tuple[Any, Any]:
        a, b = list(self.key[2]), list(other.key[2])
        width = max(len(a), len(b))
        a += [(4, 0)] * (width - len(a))
        b += [(4, 0)] * (width - len(b))
        return (self.key[0], self.key[1], a, self.key[3]), (other.key[0], other.key[1], b, other.key[3])

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ApkVersion):
            return NotImplemented
        x, y = self._cmp_key(other)
        return bool(x == y)

    def __lt__(self, other: ApkVersion) -> bool:
        x, y = self._cmp_key(other)
        return bool(x < y)

    def __hash__(self) -> int:
        return hash(self.text)

    def __str__(self) -> str:
        return self.text


def _version_class(family: str, range_type: str) -> Any:
    from univers import versions as v

    if range_type == "SEMVER":
        return v.SemverVersion
    return {DEBIAN: v.DebianVersion, ALPINE: ApkVersion, PYPI: v.PypiVersion, NPM: v.SemverVersion, RPM: v.RpmVersion}[family]


@functools.lru_cache(maxsize=65536)
def _parse(cls: Any, text: str) -> Any:
    """A version object, or None when ``text`` is not a version of that scheme (cached: the same
    few thousand installed and fixed versions recur across every image and advisory)."""
    try:
        return cls(text)
    except Exception:
        return None


def affected_by(spec: dict[str, Any], family: str, version: str) -> tuple[bool, str]:
    """Whether ``version`` is affected by one OSV ``affected`` entry, and the fixed version
    (the first ``fixed`` above it, "" if none is known)."""
    if version in spec.get("versions", ()):
        hit, fixed = True, ""
    else:
        hit, fixed = False, ""
    for rng in spec.get("ranges", ()):
        rtype = str(rng.get("type") or "ECOSYSTEM")
        if rtype == "GIT":
            continue
        cls = _version_class(family, rtype)
        mine = _parse(cls, version)
        if mine is None:
            continue
        events = []
        for ev in rng.get("events") or []:
            if not isinstance(ev, dict) or len(ev) != 1:
                continue
            ((kind, value),) = ev.items()
            if kind not in ("introduced", "fixed", "last_affected", "limit") or not isinstance(value, str):
                continue
            parsed = None if (kind == "introduced" and value == "0") else _parse(cls, value)
            if parsed is None and not (kind == "introduced" and value == "0"):
                continue
            events.append((kind, value, parsed))
        # Evaluate in version order ("0" first); per the OSV spec an introduced opens, fixed or
        # last_affected closes the affected interval.
        events.sort(key=lambda e: (0,) if e[2] is None else (1, e[2]))
        affected = False
        for kind, _value, parsed in events:
            if kind == "introduced":
                if parsed is None or parsed <= mine:
                    affected = True
            elif kind == "fixed":
                if parsed <= mine:
                    affected = False
            elif kind == "last_affected":
                if parsed < mine:
                    affected = False
            elif kind == "limit" and parsed <= mine:
                affected = False
        if affected:
            hit = True
            later = [p for k, _, p in events if k == "fixed" and p is not None and p > mine]
            fixed = str(min(later)) if later else fixed or ""
    return hit, fixed


def release_matches(ecosystem: str, package: Package, os_id: str, os_version: str) -> bool:
    """``Debian:12`` applies to Debian 12 images only, ``Alpine:v3.18`` to Alpine 3.18.x,
    ``Ubuntu:22.04:LTS`` to Ubuntu 22.04; a bare ecosystem to every release."""
    if ":" not in ecosystem or package.ecosystem not in (DEBIAN, ALPINE):
        return True
    parts = [p.strip().lower() for p in ecosystem.split(":")]
    name, release = parts[0], parts[1]
    if os_id and name != os_id:
        return False
    if not os_version:
        return True
    if name == "alpine":
        return ".".join(os_version.split(".")[:2]) == release.lstrip("v")
    if name == "ubuntu":
        return os_version == release
    return os_version.split(".")[0] == release.split(".")[0]
