"""Image insight through a real server: SBOM referrers on push (discoverable by the referrers API),
``moorage sbom`` / ``vulndb import`` / ``vulns --json`` as a user runs them, per-platform findings
of an index, search, and the pull policy refusing skopeo and podman until the advisory is
allow-listed."""

from __future__ import annotations

import json
import subprocess
import time
import zipfile
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.support.cli import run_moorage
from tests.support.http import Client, sha256
from tests.support.insight_images import (
    ALPINE_INSTALLED,
    ALPINE_OS_RELEASE,
    RealPackages,
    dpkg_stanzas,
    gz,
    osv,
    real_packages,
    stanza_field,
    tar_bytes,
    write_osv,
    zst,
)
from tests.support.registry_proc import RegistryProcess, start_moorage

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
CRITICAL = "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H"
MEDIUM = "CVSS:3.1/AV:N/AC:H/PR:L/UI:R/S:U/C:L/I:L/A:L"


def cli(reg: RegistryProcess, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    env = {k: str(v) for k, v in (reg.env or {}).items() if v is not None}
    proc = run_moorage(*args, "--data", reg.data_dir, env=env, timeout=300)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def _layer_type(data: bytes) -> str:
    if data[:2] == b"\x1f\x8b":
        return "application/vnd.oci.image.layer.v1.tar+gzip"
    if data[:4] == b"\x28\xb5\x2f\xfd":
        return "application/vnd.oci.image.layer.v1.tar+zstd"
    return "application/vnd.oci.image.layer.v1.tar"


def push(client: Client, repo: str, tag: str | None, layers: list[bytes], arch: str = "amd64") -> tuple[str, int]:
    config = json.dumps({"architecture": arch, "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}}).encode()
    doc = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": client.push_blob(repo, config),
            "size": len(config),
        },
        "layers": [
            {"mediaType": _layer_type(layer), "digest": client.push_blob(repo, layer), "size": len(layer)} for layer in layers
        ],
    }
    body = json.dumps(doc).encode()
    r = client.push_manifest(repo, tag or sha256(body), body)
    assert r.status_code == 201, r.text
    return sha256(body), len(body)


@pytest.fixture(scope="module")
def moorage(backend: tuple[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A server of this module's own, with SBOMs on push turned on."""
    name, make_env = backend
    env = {**make_env(), "MOORAGE_INSIGHT__SCAN_ON_PUSH": "true"}
    proc = start_moorage(tmp_path_factory.mktemp(f"moorage-insight-{name}"), env=env)
    proc.backend = name
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def real(tmp_path_factory: pytest.TempPathFactory) -> RealPackages:
    return real_packages(tmp_path_factory.mktemp("insight-real"))


@pytest.fixture(scope="module")
def world(moorage: RegistryProcess, real: RealPackages, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Two images (Debian-based with Python and npm packages; Alpine) and an index of both, plus
    OSV advisories on either side of the installed versions."""
    client = Client(moorage.url)
    stanzas = [s for s in dpkg_stanzas(real.dpkg_status) if stanza_field(s, "Status").endswith(" installed")]
    plain = [s for s in stanzas if not stanza_field(s, "Source")]
    vuln_deb, removed_deb, fixed_deb = plain[0], plain[1], plain[2]
    pip_dir = next(p for p in real.python_files if "/pip-" in p).rsplit("/", 1)[0]
    parent, name = pip_dir.rsplit("/", 1)
    layer1 = gz(tar_bytes({"etc/os-release": real.os_release, "var/lib/dpkg/status": real.dpkg_status, **real.python_files}))
    layer2 = zst(
        tar_bytes(
            {
                "var/lib/dpkg/status": "\n\n".join(s for s in stanzas if s is not removed_deb).encode() + b"\n",
                f"{parent}/.wh.{name}": b"",
            }
        )
    )
    layer3 = tar_bytes(real.npm_files)
    deb_digest, deb_size = push(client, "insight/app", "1.0", [layer1, layer2, layer3])
    alp_digest, alp_size = push(
        client,
        "insight/app",
        None,
        [gz(tar_bytes({"etc/os-release": ALPINE_OS_RELEASE, "lib/apk/db/installed": ALPINE_INSTALLED}))],
        arch="arm64",
    )
    index = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [
                {
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "digest": deb_digest,
                    "size": deb_size,
                    "platform": {"os": "linux", "architecture": "amd64"},
                },
                {
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "digest": alp_digest,
                    "size": alp_size,
                    "platform": {"os": "linux", "architecture": "arm64"},
                },
            ],
        }
    ).encode()
    assert client.push_manifest("insight/app", "multi", index, OCI_INDEX).status_code == 201
    setuptools_version = real.python_versions.get("setuptools")
    py_name, py_version = (
        ("setuptools", setuptools_version)
        if setuptools_version
        else next((n, v) for n, v in real.python_versions.items() if n != "pip")
    )
    deb_name, deb_version = stanza_field(vuln_deb, "Package"), stanza_field(vuln_deb, "Version")
    release = next(
        (line.split("=", 1)[1].strip('"') for line in real.os_release.decode().splitlines() if line.startswith("VERSION_ID=")),
        "12",
    )
    advisories = [
        osv(
            "TEST-DEB-VULN",
            f"Debian:{release.split('.')[0]}",
            deb_name,
            [{"introduced": "0"}, {"fixed": deb_version + "+moorage1"}],
            cvss=CRITICAL,
        ),
        osv(
            "TEST-DEB-OTHER-RELEASE",
            "Debian:3",
            deb_name,
            [{"introduced": "0"}, {"fixed": deb_version + "+moorage1"}],
            cvss=CRITICAL,
        ),
        osv(
            "TEST-DEB-FIXED",
            "Debian",
            stanza_field(fixed_deb, "Package"),
            [{"introduced": "0"}, {"fixed": stanza_field(fixed_deb, "Version")}],
            cvss=CRITICAL,
        ),
        osv("TEST-DEB-REMOVED", "Debian", stanza_field(removed_deb, "Package"), [{"introduced": "0"}], cvss=CRITICAL),
        osv("TEST-PY-VULN", "PyPI", py_name.upper().replace("-", "_"), [{"introduced": "0"}, {"fixed": "999.0"}], cvss=MEDIUM),
        osv("TEST-PIP-WHITED-OUT", "PyPI", "pip", [{"introduced": "0"}, {"fixed": "999.0"}], cvss=CRITICAL),
        osv(
            "TEST-NPM-VULN",
            "npm",
            "is-number",
            [{"introduced": "0"}, {"fixed": "7.0.1"}],
            range_type="SEMVER",
            db_severity="HIGH",
        ),
        osv("TEST-NPM-FIXED", "npm", "ms", [{"introduced": "0"}, {"fixed": "2.1.3"}], range_type="SEMVER", db_severity="HIGH"),
        osv("TEST-APK-VULN", "Alpine:v3.19", "busybox", [{"introduced": "0"}, {"fixed": "1.36.1-r16"}], cvss=CRITICAL),
        osv("TEST-APK-OTHER", "Alpine:v3.18", "busybox", [{"introduced": "0"}, {"fixed": "1.36.1-r16"}], cvss=CRITICAL),
    ]
    osv_dir = write_osv(tmp_path_factory.mktemp("osv") / "advisories", advisories[:5])
    osv_zip = osv_dir.parent / "all.zip"
    with zipfile.ZipFile(osv_zip, "w") as zf:  # the shape osv.dev publishes
        for doc in advisories[5:]:
            zf.writestr(f"{doc['id']}.json", json.dumps(doc))
    return {
        "client": client,
        "deb": deb_digest,
        "alpine": alp_digest,
        "deb_name": deb_name,
        "deb_version": deb_version,
        "removed": stanza_field(removed_deb, "Package"),
        "py": (py_name, py_version),
        "osv_dir": osv_dir,
        "osv_zip": osv_zip,
    }


def _referrers(client: Client, repo: str, digest: str) -> list[dict[str, Any]]:
    r = client.req("GET", f"/v2/{repo}/referrers/{digest}")
    assert r.status_code == 200
    assert r.headers["Content-Type"].split(";")[0] == OCI_INDEX
    return r.json()["manifests"]


def test_sbom_on_push_is_stored_as_referrers(world: dict[str, Any]) -> None:
    client: Client = world["client"]
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        found = _referrers(client, "insight/app", world["deb"])
        if len(found) >= 2:
            break
        time.sleep(0.5)
    types = {m["artifactType"] for m in found}
    assert types == {"application/vnd.cyclonedx+json", "application/spdx+json"}, found
    cdx = next(m for m in found if m["artifactType"] == "application/vnd.cyclonedx+json")
    manifest = client.req("GET", f"/v2/insight/app/manifests/{cdx['digest']}").json()
    assert manifest["subject"]["digest"] == world["deb"]
    doc = client.req("GET", f"/v2/insight/app/blobs/{manifest['layers'][0]['digest']}").json()
    names = {c["name"] for c in doc["components"]}
    assert world["deb_name"] in names and "is-number" in names and world["py"][0] in names
    assert world["removed"] not in names and "pip" not in names
    from cyclonedx.schema import SchemaVersion
    from cyclonedx.validation.json import JsonStrictValidator

    assert JsonStrictValidator(SchemaVersion.V1_5).validate_str(json.dumps(doc)) is None
    # filtered referrers
    r = client.req("GET", f"/v2/insight/app/referrers/{world['deb']}", params={"artifactType": "application/spdx+json"})
    assert [m["artifactType"] for m in r.json()["manifests"]] == ["application/spdx+json"]


def test_no_vulnerability_database_is_said_everywhere(moorage: RegistryProcess, world: dict[str, Any]) -> None:
    """Before any advisories are imported, "0 findings" must not read as "nothing known": the
    CLI, the API and the UI say no database is loaded, and a CI gate (--fail-on) fails."""
    cli(moorage, "sbom", "insight/app:1.0")  # scanned: an inventory, no advisories
    plain = cli(moorage, "vulns", "insight/app:1.0")
    assert "0 findings" not in plain.stdout and "no vulnerability database is loaded" in plain.stderr, plain
    doc = json.loads(cli(moorage, "vulns", "insight/app:1.0", "--json").stdout)
    assert doc["findings"] == [] and doc["vulndb"]["loaded"] is False and doc["vulndb"]["advisories"] == 0
    gate = cli(moorage, "vulns", "insight/app:1.0", "--fail-on", "high", check=False)
    assert gate.returncode == 4 and "no vulnerability database" in gate.stderr, gate
    api = world["client"].req("GET", "/api/v1/insight/images/insight/app/1.0").json()
    assert api["vulndb"]["loaded"] is False and "moorage vulndb import" in api["vulndb"]["note"]
    page = requests.get(f"{moorage.url}/ui/repo/insight/app/-/manifest/{world['deb']}", timeout=30).text
    assert "no vulnerability database is loaded" in page and "No known vulnerabilities" not in page


def test_cli_sbom_import_and_vulns(moorage: RegistryProcess, world: dict[str, Any]) -> None:
    out = cli(moorage, "sbom", "insight/app:multi").stdout
    assert "packages" in out and world["alpine"] in out and world["deb"] in out
    r1 = cli(moorage, "vulndb", "import", str(world["osv_dir"])).stdout
    assert "5 read" in r1
    cli(moorage, "vulndb", "import", str(world["osv_zip"]))
    again = cli(moorage, "vulndb", "import", str(world["osv_zip"])).stdout
    assert "0 new or changed" in again and "5 unchanged" in again  # incremental
    status = json.loads(cli(moorage, "vulndb", "status", "--json").stdout)
    assert status["advisories"] == 10
    result = json.loads(cli(moorage, "vulns", "insight/app:1.0", "--json").stdout)
    got = {f["id"]: f for f in result["findings"]}
    assert set(got) == {"TEST-DEB-VULN", "TEST-PY-VULN", "TEST-NPM-VULN"}, got
    deb = got["TEST-DEB-VULN"]
    assert (deb["package"], deb["installed"], deb["fixed"], deb["severity"]) == (
        world["deb_name"],
        world["deb_version"],
        world["deb_version"] + "+moorage1",
        "CRITICAL",
    )
    assert got["TEST-NPM-VULN"]["fixed"] == "7.0.1" and got["TEST-NPM-VULN"]["severity"] == "HIGH"
    assert got["TEST-PY-VULN"]["installed"] == world["py"][1] and got["TEST-PY-VULN"]["severity"] == "MEDIUM"
    # an index reports per platform
    multi = json.loads(cli(moorage, "vulns", "insight/app:multi", "--json").stdout)
    per = {(f["platform"], f["id"]) for f in multi["findings"]}
    assert ("linux/arm64", "TEST-APK-VULN") in per and ("linux/amd64", "TEST-DEB-VULN") in per
    assert not any(i == "TEST-APK-OTHER" for _, i in per)


def test_web_ui_shows_badges_and_findings(moorage: RegistryProcess, world: dict[str, Any]) -> None:
    """After import: a badge on the tag (worst first) and the findings table on the manifest page."""
    page = requests.get(f"{moorage.url}/ui/repo/insight/app", timeout=30).text
    assert 'class="badge sev-critical"' in page and "1 critical" in page
    manifest = requests.get(f"{moorage.url}/ui/repo/insight/app/-/manifest/{world['deb']}", timeout=30).text
    assert "TEST-DEB-VULN" in manifest and "TEST-NPM-VULN" in manifest and "TEST-DEB-FIXED" not in manifest
    assert world["deb_version"] + "+moorage1" in manifest  # the fixed-in version


def test_search_by_package_and_advisory(moorage: RegistryProcess, world: dict[str, Any]) -> None:
    client: Client = world["client"]
    r = client.req("GET", "/api/v1/insight/search", params={"package": "is-number", "version": ">=7.0.0,<7.0.1"})
    assert r.status_code == 200 and [x["digest"] for x in r.json()["results"]] == [world["deb"]]
    r = client.req("GET", "/api/v1/insight/search", params={"package": "is-number", "version": ">=8"})
    assert r.json()["results"] == []
    r = client.req("GET", "/api/v1/insight/search", params={"advisory": "TEST-APK-VULN"})
    # busybox and ssl_client are both built from the vulnerable busybox source package
    assert {(x["digest"], x["package"]) for x in r.json()["results"]} == {
        (world["alpine"], "busybox"),
        (world["alpine"], "ssl_client"),
    }
    assert client.req("GET", "/api/v1/insight/search", params={"package": "x", "version": "~~"}).status_code == 400
    assert client.req("GET", "/api/v1/insight/search").status_code == 400


def test_pull_policy_refuses_skopeo_and_podman_until_allow_listed(
    moorage: RegistryProcess, world: dict[str, Any], skopeo: Any, podman_socket: Any, tmp_path: Path
) -> None:
    client: Client = world["client"]
    # Self-contained: the advisories this test blocks on are imported here (again, if an earlier
    # test did; an import is incremental), so it passes run alone and fails for its own reasons.
    for source in ("osv_dir", "osv_zip"):
        cli(moorage, "vulndb", "import", str(world[source]))
    cli(moorage, "vuln-policy", "insight", "--block", "HIGH")
    ref = f"docker://{moorage.host}/insight/app:1.0"

    def refused() -> bool:
        r = client.req("GET", "/v2/insight/app/manifests/1.0", headers={"Accept": "application/vnd.oci.image.manifest.v1+json"})
        return r.status_code == 403

    deadline = time.monotonic() + 30  # the server re-reads policies every 2 s
    while not refused() and time.monotonic() < deadline:
        time.sleep(0.3)
    r = client.req("GET", "/v2/insight/app/manifests/1.0")
    assert r.status_code == 403 and r.json()["errors"][0]["code"] == "DENIED"
    assert "TEST-DEB-VULN" in r.json()["errors"][0]["message"]  # names the worst finding
    assert client.req("HEAD", "/v2/insight/app/manifests/1.0").status_code == 200
    proc = skopeo("copy", ref, f"oci:{tmp_path}/out:1.0", check=False)
    assert proc.returncode != 0 and "TEST-DEB-VULN" in proc.stderr, proc.stderr
    proc = podman_socket.podman("pull", "--tls-verify=false", f"{moorage.host}/insight/app:1.0", check=False)
    assert proc.returncode != 0 and "denied" in proc.stderr.lower(), proc.stderr
    for advisory in ("TEST-DEB-VULN", "TEST-NPM-VULN"):
        cli(moorage, "vuln-allow", "insight", advisory, "--days", "30", "--reason", "test")
    deadline = time.monotonic() + 30
    while refused() and time.monotonic() < deadline:
        time.sleep(0.3)
    skopeo("copy", ref, f"oci:{tmp_path}/out:1.0")
    proc = podman_socket.podman("pull", "--tls-verify=false", f"{moorage.host}/insight/app:1.0", check=False)
    assert proc.returncode == 0, proc.stderr
    cli(moorage, "vuln-policy", "insight", "--block", "off")


def test_hostile_input_to_the_api(moorage: RegistryProcess, world: dict[str, Any]) -> None:
    client: Client = world["client"]
    assert client.req("GET", "/api/v1/insight/images/insight/app/nope").status_code == 404
    assert client.req("GET", "/api/v1/insight/images/Bad..Name/1.0").status_code == 404
    assert client.req("PUT", "/api/v1/insight/policies/insight", data=b"[" * 60000).status_code == 400  # deep
    assert client.req("PUT", "/api/v1/insight/policies/insight", data=b"[" * 100000).status_code == 413  # big
    r = client.req("PUT", "/api/v1/insight/policies/insight", json={"block_severity": "EXTREME"})
    assert r.status_code == 400
    r = client.req("PUT", "/api/v1/insight/allowlist/insight/X-1", json={"expires_in_days": 1e300})
    assert r.status_code == 400
    deadline = time.monotonic() + 120
    while True:  # the push-time scan runs in the background
        r = client.req("GET", "/api/v1/insight/images/insight/app/1.0")
        assert r.status_code == 200
        if r.json()["images"][0]["scanned"] or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert r.json()["images"][0]["scanned"] is True


def test_metrics(moorage: RegistryProcess, world: dict[str, Any]) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    deadline = time.monotonic() + 60
    while True:
        text = requests.get(f"{moorage.url}/metrics", timeout=30).text
        families = {f.name: f for f in text_string_to_metric_families(text)}
        scans = {s.labels["outcome"]: s.value for s in families["moorage_insight_scans"].samples if s.name.endswith("_total")}
        if scans.get("ok", 0) >= 1 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert scans["ok"] >= 1 and scans["failed"] == 0
    assert "moorage_insight_scan_queue" in families


def test_vulns_gate_wide_pipe_and_advisory_aliases(moorage: RegistryProcess, world: dict[str, Any], tmp_path: Path) -> None:
    """With advisories loaded: --fail-on exits 1 at or above the severity; output written to a
    pipe keeps every row whole on one line; image-search --advisory finds an advisory by alias."""
    gate = cli(moorage, "vulns", "insight/app:1.0", "--fail-on", "CRITICAL", check=False)
    assert gate.returncode == 1 and "TEST-DEB-VULN" in gate.stderr, gate
    ok = cli(moorage, "vulns", "insight/app:1.0")
    fixed = world["deb_version"] + "+moorage1"
    rows = [line for line in ok.stdout.splitlines() if "TEST-DEB-VULN" in line]
    assert len(rows) == 1 and fixed in rows[0] and world["deb_name"] in rows[0], ok.stdout  # not cut to 80 columns
    assert "vulnerability database: 10 advisories" in ok.stdout
    aliased = osv("TEST-ALIASED", "Alpine:v3.19", "busybox", [{"introduced": "0"}, {"fixed": "1.36.1-r16"}], db_severity="LOW")
    aliased["aliases"] = ["CVE-2099-12345", "GHSA-test-alias"]
    cli(moorage, "vulndb", "import", str(write_osv(tmp_path / "aliased", [aliased])))
    found = [json.loads(line) for line in cli(moorage, "image-search", "--advisory", "cve-2099-12345").stdout.splitlines()]
    assert {(x["advisory"], x["digest"], x["package"]) for x in found} >= {("TEST-ALIASED", world["alpine"], "busybox")}, found
    assert cli(moorage, "image-search", "--advisory", "CVE-2099-1234").stdout == ""  # an exact alias, not a prefix
    assert cli(moorage, "image-search", "--advisory", "%").stdout == ""
