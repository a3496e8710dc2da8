"""The SPDX 2.3 document Moorage writes directly is the one spdx-tools' model writes, and it parses
and validates with spdx-tools (a test dependency only: the insight extra no longer needs it)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from moorage.insight.layers import Inventory
from moorage.insight.packages import Package
from moorage.insight.sbom import TOOL_NAME, spdx

pytestmark = pytest.mark.unit

DIGEST = "sha256:" + "ab" * 32


def _library_spdx(inventory: Inventory, image: str, digest: str, created: str, namespace: str) -> dict:
    """What the previous implementation (spdx-tools' model and JSON converter) produced."""
    from datetime import datetime

    from spdx_tools.spdx.jsonschema.document_converter import DocumentConverter
    from spdx_tools.spdx.model import (
        Actor,
        ActorType,
        CreationInfo,
        Document,
        ExternalPackageRef,
        ExternalPackageRefCategory,
        Relationship,
        RelationshipType,
        SpdxNoAssertion,
    )
    from spdx_tools.spdx.model import Package as SpdxPackage

    info = CreationInfo(
        spdx_version="SPDX-2.3",
        spdx_id="SPDXRef-DOCUMENT",
        name=f"{image}@{digest}",
        document_namespace=namespace,
        creators=[Actor(ActorType.TOOL, TOOL_NAME)],
        created=datetime.strptime(created, "%Y-%m-%dT%H:%M:%SZ"),
    )
    packages = [
        SpdxPackage(
            spdx_id="SPDXRef-Image", name=image, version=digest, download_location=SpdxNoAssertion(), files_analyzed=False
        )
    ]
    relationships = [Relationship("SPDXRef-DOCUMENT", RelationshipType.DESCRIBES, "SPDXRef-Image")]
    for i, pkg in enumerate(inventory.packages):
        sid = f"SPDXRef-Package-{i}"
        packages.append(
            SpdxPackage(
                spdx_id=sid,
                name=pkg.name,
                version=pkg.version,
                download_location=SpdxNoAssertion(),
                files_analyzed=False,
                external_references=[ExternalPackageRef(ExternalPackageRefCategory.PACKAGE_MANAGER, "purl", pkg.purl)],
            )
        )
        relationships.append(Relationship("SPDXRef-Image", RelationshipType.CONTAINS, sid))
    return DocumentConverter().convert(Document(creation_info=info, packages=packages, relationships=relationships))


def _inventory() -> Inventory:
    return Inventory(
        packages=[
            Package("openssl", "3.0.11-1~deb12u2", "Debian", distro="debian-12", arch="amd64"),
            Package("busybox", "1.36.1-r15", "Alpine", distro="alpine-3.19", arch="aarch64"),
            Package("requests", "2.31.0", "PyPI"),
            Package("@scope/left-pad", "1.3.0", "npm"),
            Package("naïve-ünïcødé", "1.0+local.1", "PyPI"),
            Package("bash", "5.2.15", "RPM", distro="fedora-39", arch="x86_64"),
        ]
    )


def test_the_direct_spdx_is_the_librarys_document() -> None:
    inv = _inventory()
    doc = json.loads(spdx(inv, "team/app", DIGEST))
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", doc["creationInfo"]["created"])
    expected = _library_spdx(inv, "team/app", DIGEST, doc["creationInfo"]["created"], doc["documentNamespace"])
    assert doc == expected


def test_the_direct_spdx_parses_and_validates(tmp_path: Path) -> None:
    from spdx_tools.spdx.parser.json import json_parser
    from spdx_tools.spdx.validation.document_validator import validate_full_spdx_document

    path = tmp_path / "sbom.spdx.json"
    path.write_bytes(spdx(_inventory(), "team/app", DIGEST))
    document = json_parser.parse_from_file(str(path))
    assert validate_full_spdx_document(document) == []
    assert len(document.packages) == 7 and len(document.relationships) == 7


def test_an_empty_inventory_is_a_valid_document(tmp_path: Path) -> None:
    from spdx_tools.spdx.parser.json import json_parser
    from spdx_tools.spdx.validation.document_validator import validate_full_spdx_document

    path = tmp_path / "empty.spdx.json"
    path.write_bytes(spdx(Inventory(), "x", DIGEST))
    assert validate_full_spdx_document(json_parser.parse_from_file(str(path))) == []
