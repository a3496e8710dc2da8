"""The vulnerability pull policy is a rule of the registry service (issue 20): it applies to
every manifest served for a pull -- local, through a pull-through cache on the first pull (cold)
and later (warm), by tag and by digest, and to an index's child -- not only to local content
(it used to be an HTTP middleware with the cache inside it: a cached namespace served a known
CRITICAL image with 200 on its first pull).

Servers: an upstream Moorage holding the images, and the registry under test caching it under
``hub/``; the same images pushed there locally too (``local/app``), scanned on push against an
imported OSV advisory, so their digests are known-vulnerable."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from tests.support.cli import run_moorage
from tests.support.http import Client, sha256
from tests.support.insight_images import ALPINE_INSTALLED, ALPINE_OS_RELEASE, gz, osv, tar_bytes, write_osv
from tests.support.registry_proc import RegistryProcess, start_moorage

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
ACCEPT = f"{OCI_INDEX}, {OCI_MANIFEST}"
CRITICAL = "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H"


def cli(reg: RegistryProcess, *args: str) -> subprocess.CompletedProcess:
    env = {k: str(v) for k, v in (reg.env or {}).items() if v is not None}
    proc = run_moorage(*args, "--data", reg.data_dir, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return proc


def push_image(client: Client, repo: str) -> dict[str, Any]:
    """An Alpine image with a vulnerable busybox, and an index naming it: digests and bodies."""
    layer = gz(tar_bytes({"etc/os-release": ALPINE_OS_RELEASE, "lib/apk/db/installed": ALPINE_INSTALLED}))
    config = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}}).encode()
    doc = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": client.push_blob(repo, config),
            "size": len(config),
        },
        "layers": [
            {
                "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                "digest": client.push_blob(repo, layer),
                "size": len(layer),
            }
        ],
    }
    body = json.dumps(doc).encode()
    assert client.push_manifest(repo, "1", body).status_code == 201
    index = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [
                {
                    "mediaType": OCI_MANIFEST,
                    "digest": sha256(body),
                    "size": len(body),
                    "platform": {"os": "linux", "architecture": "amd64"},
                }
            ],
        }
    ).encode()
    assert client.push_manifest(repo, "multi", index, OCI_INDEX).status_code == 201
    return {"image": sha256(body), "index": sha256(index)}


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RegistryProcess, RegistryProcess, dict[str, Any]]]:
    up = start_moorage(tmp_path_factory.mktemp("policy-upstream"))
    tmp = tmp_path_factory.mktemp("policy-cache")
    config = tmp / "config.yml"
    config.write_text(
        yaml.safe_dump({"proxy": {"upstreams": [{"name": "up", "url": up.url, "namespace": "hub", "tag_ttl": 300}]}})
    )
    cache = start_moorage(tmp / "srv", env={"MOORAGE_INSIGHT__SCAN_ON_PUSH": "true"}, extra_args=["--config", str(config)])
    try:
        upstream_client = Client(up.url)
        digests = push_image(upstream_client, "lib/app")
        for repo in ("lib/bydigest", "lib/child"):
            assert push_image(upstream_client, repo) == digests
        # The same image pushed locally to the registry under test is scanned there ...
        assert push_image(Client(cache.url), "local/app") == digests
        osv_dir = write_osv(
            Path(tmp) / "osv",
            [osv("TEST-APK-VULN", "Alpine:v3.19", "busybox", [{"introduced": "0"}, {"fixed": "1.36.1-r16"}], cvss=CRITICAL)],
        )
        cli(cache, "vulndb", "import", str(osv_dir))
        deadline = time.monotonic() + 60
        while True:  # ... once the scan (on push) has run, the digest is known CRITICAL
            found = json.loads(cli(cache, "vulns", f"local/app@{digests['image']}", "--json").stdout)
            if any(f["id"] == "TEST-APK-VULN" for f in found.get("findings", [])):
                break
            assert time.monotonic() < deadline, found
            time.sleep(0.5)
        for namespace in ("local", "hub"):
            cli(cache, "vuln-policy", namespace, "--block", "LOW")
        yield up, cache, digests
    finally:
        cache.stop()
        up.stop()


def _get(reg: RegistryProcess, repo: str, ref: str) -> requests.Response:
    return requests.get(f"{reg.url}/v2/{repo}/manifests/{ref}", headers={"Accept": ACCEPT}, timeout=60)


def _refused(reg: RegistryProcess, repo: str, ref: str) -> requests.Response:
    """The GET's answer once the policy table is read (it is cached for up to 2 s)."""
    deadline = time.monotonic() + 10
    while True:
        r = _get(reg, "local/app", "1")
        if r.status_code == 403 or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    assert r.status_code == 403, "the local image is refused (the policy is on)"
    return _get(reg, repo, ref)


def test_local_pull_refused(servers: Any) -> None:
    _, cache, digests = servers
    r = _refused(cache, "local/app", digests["image"])
    assert r.status_code == 403 and r.json()["errors"][0]["code"] == "DENIED"


def test_cold_then_warm_cache_pull_by_tag_refused(servers: Any) -> None:
    _, cache, digests = servers
    cold = _refused(cache, "hub/lib/app", "1")
    assert cold.status_code == 403, cold.text  # was 200: the first pull went around the policy
    assert cold.json()["errors"][0]["code"] == "DENIED" and cold.json()["errors"][0]["detail"]["digest"] == digests["image"]
    warm = _get(cache, "hub/lib/app", "1")
    assert warm.status_code == 403, warm.text
    # HEAD is no pull: it still answers (clients resolve digests with it)
    head = requests.head(f"{cache.url}/v2/hub/lib/app/manifests/1", headers={"Accept": ACCEPT}, timeout=60)
    assert head.status_code == 200 and head.headers["Docker-Content-Digest"] == digests["image"]


def test_cold_cache_pull_by_digest_refused(servers: Any) -> None:
    _, cache, digests = servers
    r = _refused(cache, "hub/lib/bydigest", digests["image"])
    assert r.status_code == 403, r.text
    assert _get(cache, "hub/lib/bydigest", digests["image"]).status_code == 403


def test_index_child_through_cache_refused(servers: Any) -> None:
    _, cache, digests = servers
    index = _refused(cache, "hub/lib/child", "multi")
    assert (
        index.status_code == 200 and index.headers["Docker-Content-Digest"] == digests["index"]
    )  # the index itself is not scanned
    child = _get(cache, "hub/lib/child", digests["image"])
    assert child.status_code == 403, child.text
    assert child.json()["errors"][0]["detail"]["digest"] == digests["image"]
