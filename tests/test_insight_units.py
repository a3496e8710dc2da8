"""Image insight without a server: real package databases parsed, layers walked with whiteouts,
hostile layers skipped, OSV ranges matched in each ecosystem's version order, SBOMs valid."""

from __future__ import annotations

import io
import json

import pytest

from moorage.insight import osv, sbom
from moorage.insight.layers import ImageWalker, Inventory, Limits
from moorage.insight.packages import (
    ALPINE,
    DEBIAN,
    NPM,
    PYPI,
    parse_apk_installed,
    parse_dpkg_status,
    parse_os_release,
    parse_rpm_header,
)
from tests.support.insight_images import (
    ALPINE_INSTALLED,
    ALPINE_OS_RELEASE,
    RealPackages,
    dpkg_stanzas,
    gz,
    real_packages,
    stanza_field,
    tar_bytes,
    zst,
)


@pytest.fixture(scope="module")
def real(tmp_path_factory: pytest.TempPathFactory) -> RealPackages:
    return real_packages(tmp_path_factory.mktemp("real-packages"))


def walk(layers: list[bytes], limits: Limits = Limits()) -> Inventory:
    walker = ImageWalker(limits)
    for i, layer in enumerate(layers):
        walker.add_layer(f"sha256:{i:064x}", io.BytesIO(layer))
    return walker.inventory()


def test_this_machines_dpkg_status_parses_completely(real: RealPackages) -> None:
    pkgs = parse_dpkg_status(real.dpkg_status)
    installed = [s for s in dpkg_stanzas(real.dpkg_status) if stanza_field(s, "Status").endswith(" installed")]
    assert len(pkgs) == len(installed) > 50
    by_name = {p.name: p for p in pkgs}
    for stanza in installed[:200]:
        name = stanza_field(stanza, "Package")
        assert by_name[name].version == stanza_field(stanza, "Version")
        source = stanza_field(stanza, "Source")
        if source:
            assert by_name[name].source == source.split()[0]
    assert all(p.ecosystem == DEBIAN for p in pkgs)
    assert parse_os_release(real.os_release).id in ("debian", "ubuntu")


def test_alpine_database_from_documented_fields() -> None:
    pkgs = parse_apk_installed(ALPINE_INSTALLED)
    assert [(p.name, p.version, p.source) for p in pkgs] == [
        ("musl", "1.2.4_git20230717-r4", "musl"),
        ("busybox", "1.36.1-r15", "busybox"),
        ("ssl_client", "1.36.1-r15", "busybox"),
    ]
    assert pkgs[0].purl == "pkg:apk/alpine/musl@1.2.4_git20230717-r4?arch=x86_64"


def test_layers_gzip_zstd_plain_and_whiteouts(real: RealPackages) -> None:
    stanzas = dpkg_stanzas(real.dpkg_status)
    removed = stanza_field(stanzas[0], "Package")
    pip_dir = next(p for p in real.python_files if "/pip-" in p).rsplit("/", 1)[0]
    base = {"etc/os-release": real.os_release, "var/lib/dpkg/status": real.dpkg_status, **real.python_files}
    layer1 = gz(tar_bytes(base))
    # dpkg rewrites its status without the removed package; the venv loses pip by a whiteout
    parent, name = pip_dir.rsplit("/", 1)
    layer2 = zst(tar_bytes({"var/lib/dpkg/status": "\n\n".join(stanzas[1:]).encode() + b"\n", f"{parent}/.wh.{name}": b""}))
    layer3 = tar_bytes(real.npm_files)  # uncompressed
    inv = walk([layer1, layer2, layer3])
    names = {(p.ecosystem, p.name) for p in inv.packages}
    assert (DEBIAN, removed) not in names
    assert (DEBIAN, stanza_field(stanzas[1], "Package")) in names
    assert (PYPI, "pip") not in names
    assert {(PYPI, n) for n in real.python_versions if n != "pip"} <= names
    assert {(NPM, "is-number"), (NPM, "ms")} <= names
    assert inv.os is not None and inv.os.id
    assert inv.layers_read == 3 and not inv.skipped
    assert all(p.distro == inv.os.id for p in inv.packages if p.ecosystem == DEBIAN)


def test_opaque_whiteout_empties_a_directory(real: RealPackages) -> None:
    layer1 = tar_bytes(real.npm_files)
    layer2 = tar_bytes({"srv/app/node_modules/.wh..wh..opq": b""})
    assert not [p for p in walk([layer1, layer2]).packages if p.ecosystem == NPM]


def test_hostile_layers_are_skipped_with_a_reason(real: RealPackages) -> None:
    good = gz(tar_bytes({"etc/os-release": real.os_release, "var/lib/dpkg/status": real.dpkg_status}))
    # 1. a gzip bomb: 64 MiB of zeros in a small layer, limit 8 MiB decompressed
    bomb = gz(tar_bytes({"zeros": b"\0" * (64 << 20), "lib/apk/db/installed": ALPINE_INSTALLED}))
    # 2. path tricks: escaping names are never used
    tricks = tar_bytes({"../../lib/apk/db/installed": ALPINE_INSTALLED, "/../etc/os-release": ALPINE_OS_RELEASE})
    # 3. a metadata file over the per-file limit (1 MiB here)
    huge = tar_bytes({"usr/lib/python3/site-packages/x-1.0.dist-info/METADATA": b"Name: x\nVersion: 1.0\n" + b"#" * (2 << 20)})
    # 4. not a tar at all
    garbage = gz(b"this is not a tar archive" * 100)
    inv = walk([good, bomb, tricks, huge, garbage], Limits(max_layer_bytes=8 << 20, max_file_bytes=1 << 20))
    eco = {p.ecosystem for p in inv.packages}
    assert eco == {DEBIAN}, eco  # nothing from the hostile layers, the good one intact
    reasons = " | ".join(s["reason"] for s in inv.skipped)
    assert "decompresses to more than" in reasons
    assert "path escapes the root" in reasons
    assert "over the limit" in reasons
    assert "layer skipped" in reasons and len(inv.skipped) >= 4
    assert inv.os is not None and inv.os.id != "alpine"


def test_rpm_header_blob_parsing() -> None:
    # Build a header per rpm's format: il, dl, then entries (tag, type, offset, count), then data.
    import struct

    strings = [
        (1000, b"openssl-libs"),
        (1001, b"3.0.7"),
        (1002, b"25.el9"),
        (1022, b"x86_64"),
        (1044, b"openssl-3.0.7-25.el9.src.rpm"),
    ]
    data, entries = b"", []
    for tag, value in strings:
        entries.append(struct.pack(">iiii", tag, 6, len(data), 1))
        data += value + b"\0"
    entries.append(struct.pack(">iiii", 1003, 4, len(data), 1))
    data += struct.pack(">i", 1)
    blob = struct.pack(">II", len(entries), len(data)) + b"".join(entries) + data
    h = parse_rpm_header(blob)
    assert h[1000] == "openssl-libs" and h[1001] == "3.0.7" and h[1003] == 1
    with pytest.raises(ValueError):
        parse_rpm_header(struct.pack(">II", 10**6, 10**9))


@pytest.mark.parametrize(
    "family,version,events,expected",
    [
        (DEBIAN, "1:2.0~rc1-1", [{"introduced": "0"}, {"fixed": "1:2.0-1"}], (True, "1:2.0-1")),  # tilde sorts before
        (DEBIAN, "2.0-1", [{"introduced": "0"}, {"fixed": "1:1.0-1"}], (True, "1:1.0-1")),  # epoch wins
        (DEBIAN, "1:2.0-1", [{"introduced": "0"}, {"fixed": "1:2.0-1"}], (False, "")),
        (
            ALPINE,
            "1.2.4_git20230717-r4",
            [{"introduced": "0"}, {"fixed": "1.2.4_git20230717-r5"}],
            (True, "1.2.4_git20230717-r5"),
        ),
        (ALPINE, "1.36.1-r15", [{"introduced": "0"}, {"fixed": "1.36.1-r2"}], (False, "")),  # r15 > r2 numerically
        (PYPI, "1.0rc1", [{"introduced": "0"}, {"fixed": "1.0"}], (True, "1.0")),
        (PYPI, "2.4", [{"introduced": "2.0"}, {"last_affected": "2.3"}], (False, "")),
        (PYPI, "2.3", [{"introduced": "2.0"}, {"last_affected": "2.3"}], (True, "")),
        (NPM, "7.0.0", [{"introduced": "0"}, {"fixed": "7.0.1"}], (True, "7.0.1")),
        (NPM, "7.0.0-beta.2", [{"introduced": "7.0.0-beta.1"}, {"fixed": "7.0.0"}], (True, "7.0.0")),
    ],
)
def test_version_order_of_each_ecosystem(family: str, version: str, events: list, expected: tuple) -> None:
    spec = {"ranges": [{"type": "ECOSYSTEM", "events": events}], "versions": []}
    assert osv.affected_by(spec, family, version) == expected


def test_severity_from_cvss_and_database_specific() -> None:
    crit = osv.parse_advisory(
        {
            "id": "X-1",
            "affected": [{"package": {"ecosystem": "PyPI", "name": "Foo_Bar"}}],
            "severity": [{"type": "CVSS_V3", "score": "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H"}],
        }
    )
    assert crit is not None and crit.severity == "CRITICAL" and crit.score == 9.8
    assert crit.affected[0][2] == "foo-bar"  # PEP 503 normalised
    mod = osv.parse_advisory(
        {"id": "X-2", "affected": [{"package": {"ecosystem": "npm", "name": "a"}}], "database_specific": {"severity": "MODERATE"}}
    )
    assert mod is not None and mod.severity == "MEDIUM"
    assert osv.parse_advisory({"id": "X-3", "affected": [{"package": {"ecosystem": "Go", "name": "x"}}]}) is None


def test_sboms_validate(real: RealPackages) -> None:
    from cyclonedx.schema import SchemaVersion
    from cyclonedx.validation.json import JsonStrictValidator
    from spdx_tools.spdx.parser.jsonlikedict.json_like_dict_parser import JsonLikeDictParser
    from spdx_tools.spdx.validation.document_validator import validate_full_spdx_document

    inv = walk(
        [
            gz(
                tar_bytes(
                    {
                        "etc/os-release": real.os_release,
                        "var/lib/dpkg/status": real.dpkg_status,
                        **real.python_files,
                        **real.npm_files,
                    }
                )
            )
        ]
    )
    cdx = sbom.cyclonedx(inv, "team/app", "sha256:" + "0" * 64)
    assert JsonStrictValidator(SchemaVersion.V1_5).validate_str(cdx.decode()) is None
    doc = json.loads(cdx)
    assert doc["specVersion"] == "1.5"
    purls = {c["purl"] for c in doc["components"]}
    assert "pkg:npm/is-number@7.0.0" in purls
    assert any(p.startswith("pkg:deb/") for p in purls) and any(p.startswith("pkg:pypi/pip@") for p in purls)
    spdx_doc = JsonLikeDictParser().parse(json.loads(sbom.spdx(inv, "team/app", "sha256:" + "0" * 64)))
    assert validate_full_spdx_document(spdx_doc) == []
    assert len(spdx_doc.packages) == len(inv.packages) + 1


def test_release_specific_ecosystems() -> None:
    from moorage.insight.packages import Package

    deb = Package("openssl", "3.0.11-1", DEBIAN)
    assert osv.release_matches("Debian:12", deb, "debian", "12")
    assert not osv.release_matches("Debian:11", deb, "debian", "12")
    assert not osv.release_matches("Ubuntu:22.04:LTS", deb, "debian", "12")
    apk = Package("musl", "1.2.4-r4", ALPINE)
    assert osv.release_matches("Alpine:v3.19", apk, "alpine", "3.19.1")
    assert not osv.release_matches("Alpine:v3.18", apk, "alpine", "3.19.1")
