"""Real clients (skopeo, docker CLI through a podman socket, oras-py) against a
registry.

Every test takes the ``registry`` fixture (parametrised over
``tests.support.fixtures.REGISTRY_KINDS``: "distribution" today, "moorage"
once the server is ready), so the same client flows are run against CNCF
Distribution 2.8.2 (the reference) and against Moorage. Tests that need OCI
1.1 features Distribution 2.8.2 lacks (the referrers API) skip on it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.support import ocilayout
from tests.support.clients import (
    ACCEPT_MANIFESTS,
    ClientError,
    http_json,
    http_request,
    manifest_descriptor,
    oras_push_artifact,
)
from tests.support.refusal import assert_refused

# Fixtures (registry, skopeo, podman_socket, oci_image_layout, ...) come from
# tests.support.fixtures, star-imported by tests/conftest.py.

pytestmark = pytest.mark.clients


def _ref(registry, repo: str, tag: str) -> str:
    return f"docker://{registry.host}/{repo}:{tag}"


def _get_manifest(registry, repo: str, ref: str) -> tuple[int, dict, bytes]:
    return http_request(
        "GET", f"{registry.url}/v2/{repo}/manifests/{ref}", headers={"Accept": ACCEPT_MANIFESTS}, auth=registry.auth
    )


def _get_json(registry, url: str):
    """GET with the registry's credentials: basic auth, or (token mode) the Bearer token flow."""
    status, hdrs, doc = http_json(url, auth=registry.auth)
    challenge = hdrs.get("www-authenticate", "")
    if status == 401 and registry.auth and challenge.startswith("Bearer "):
        import re

        params = dict(re.findall(r'(\w+)="([^"]*)"', challenge))
        query = "&".join(f"{k}={v}" for k, v in params.items() if k in ("service", "scope"))
        tstatus, _, tok = http_json(f"{params['realm']}?{query}", auth=registry.auth)
        assert tstatus == 200, (tstatus, tok)
        status, hdrs, doc = http_json(url, headers={"Authorization": f"Bearer {tok['token']}"})
    return status, hdrs, doc


def _tags(registry, repo: str) -> set[str]:
    status, _, doc = _get_json(registry, f"{registry.url}/v2/{repo}/tags/list")
    assert status == 200, (status, doc)
    return set(doc.get("tags") or [])


def _catalog(registry) -> set[str]:
    status, _, doc = http_json(f"{registry.url}/v2/_catalog?n=1000", auth=registry.auth)
    assert status == 200, (status, doc)
    return set(doc["repositories"])


# --------------------------------------------------------------------------
# skopeo


def test_skopeo_copy_roundtrip_byte_for_byte(registry, skopeo, oci_image_layout, tmp_path, repo_name):
    img = oci_image_layout
    skopeo.copy(img.oci_ref, _ref(registry, repo_name, "v1"))

    # the registry serves exactly the bytes we built
    status, hdrs, body = _get_manifest(registry, repo_name, "v1")
    assert status == 200
    assert body == img.manifest.data
    assert hdrs["docker-content-digest"] == img.digest
    assert hdrs["content-type"].startswith(ocilayout.MT_OCI_MANIFEST)
    layer = img.layers[1]
    status, _, blob = http_request("GET", f"{registry.url}/v2/{repo_name}/blobs/{layer.digest}", auth=registry.auth)
    assert status == 200 and blob == layer.data

    dst = tmp_path / "dst"
    skopeo.copy(_ref(registry, repo_name, "v1"), f"oci:{dst}:v1")
    ocilayout.verify_layout(dst)
    assert ocilayout.read_layout_blobs(dst) == img.blobs()
    assert ocilayout.resolve_tag(dst, "v1")["digest"] == img.digest


def test_skopeo_multiarch_index_roundtrip(registry, skopeo, oci_index_layout, tmp_path, repo_name):
    idx = oci_index_layout
    skopeo.copy(idx.oci_ref, _ref(registry, repo_name, "multi"), all=True)

    status, hdrs, body = _get_manifest(registry, repo_name, "multi")
    assert status == 200
    assert hdrs["content-type"].startswith(ocilayout.MT_OCI_INDEX)
    assert body == idx.index.data
    children = json.loads(body)["manifests"]
    assert [(m["platform"]["os"], m["platform"]["architecture"]) for m in children] == [
        ("linux", "amd64"),
        ("linux", "arm64"),
    ]
    for child in idx.images:  # each platform manifest is addressable by digest
        status, _, cbody = _get_manifest(registry, repo_name, child.digest)
        assert status == 200 and cbody == child.manifest.data

    dst = tmp_path / "dst"
    skopeo.copy(_ref(registry, repo_name, "multi"), f"oci:{dst}:multi", all=True)
    ocilayout.verify_layout(dst)
    assert ocilayout.read_layout_blobs(dst) == idx.blobs()
    assert ocilayout.resolve_tag(dst, "multi")["digest"] == idx.digest

    # without --all skopeo picks one platform and writes just that manifest
    dst1 = tmp_path / "dst-arm64"
    skopeo("--override-arch", "arm64", "copy", "--quiet", _ref(registry, repo_name, "multi"), f"oci:{dst1}:one")
    arm = next(i for i in idx.images if i.platform["architecture"] == "arm64")
    assert ocilayout.resolve_tag(dst1, "one")["digest"] == arm.digest


def test_skopeo_list_tags_inspect_delete(registry, skopeo, tmp_path, repo_name):
    src = tmp_path / "src"
    a = ocilayout.build_image(src, "a", layers=[20_000, b"same-in-both"], seed="a")
    b = ocilayout.build_image(src, "b", layers=[30_000], seed="b", arch="arm64")
    for tag, layout_tag in (("v1", "a"), ("v2", "a"), ("v3", "b")):
        skopeo.copy(f"oci:{src}:{layout_tag}", _ref(registry, repo_name, tag))

    tags = skopeo.json("list-tags", f"docker://{registry.host}/{repo_name}")
    assert tags["Repository"] == f"{registry.host}/{repo_name}"
    assert set(tags["Tags"]) == {"v1", "v2", "v3"}
    assert _tags(registry, repo_name) == {"v1", "v2", "v3"}

    info = skopeo.json("inspect", _ref(registry, repo_name, "v1"))
    assert info["Digest"] == a.digest
    assert info["Layers"] == [layer.digest for layer in a.layers]
    assert (info["Os"], info["Architecture"]) == ("linux", "amd64")
    assert info["Labels"]["org.moorage.test.seed"] == "a"
    # skopeo inspect of a single-arch image picks no platform: arm64 is fine
    assert skopeo.json("inspect", _ref(registry, repo_name, "v3"))["Architecture"] == "arm64"
    raw = skopeo("inspect", "--raw", _ref(registry, repo_name, "v2")).stdout
    assert raw.encode() == a.manifest.data
    cfg = skopeo("inspect", "--config", "--raw", _ref(registry, repo_name, "v3")).stdout
    assert cfg.encode() == b.config.data

    # delete by tag -> skopeo resolves the digest and DELETEs the manifest
    skopeo("delete", _ref(registry, repo_name, "v3"))
    with pytest.raises(ClientError):
        skopeo("inspect", _ref(registry, repo_name, "v3"))
    status, _, _ = _get_manifest(registry, repo_name, b.digest)
    assert status == 404
    assert _tags(registry, repo_name) == {"v1", "v2"}

    # v1 and v2 share one manifest: deleting it removes both tags
    skopeo("delete", _ref(registry, repo_name, "v1"))
    for tag in ("v1", "v2"):
        assert_refused(skopeo("inspect", _ref(registry, repo_name, tag), check=False), "manifest unknown")


def test_docker_pulls_skopeo_pushed_layout(registry, skopeo, podman_socket, oci_image_layout, repo_name):
    """A layout built by ocilayout is a valid image for a real engine: pulling
    it verifies layer digests *and* the config's rootfs.diff_ids."""
    img = oci_image_layout
    skopeo.copy(img.oci_ref, _ref(registry, repo_name, "v1"))
    ref = f"{registry.host}/{repo_name}:v1"
    podman_socket.docker("image", "pull", "--quiet", ref)
    out = json.loads(podman_socket.docker("image", "inspect", ref).stdout)[0]
    assert out["Id"] == img.config.digest
    assert f"{registry.host}/{repo_name}@{img.digest}" in out["RepoDigests"]
    assert out["RootFS"]["Layers"] == img.diff_ids
    podman_socket.docker("image", "rm", ref)


# --------------------------------------------------------------------------
# docker CLI through the podman API socket


def _image_id(podman_socket, ref: str) -> str:
    return podman_socket.docker("image", "inspect", "--format", "{{.Id}}", ref).stdout.strip()


def test_docker_cli_import_tag_push_pull(registry, podman_socket, busybox_rootfs, tmp_path):
    d = podman_socket.docker
    host = registry.localhost  # what people type; 127.0.0.1 works the same

    d("image", "import", str(busybox_rootfs), "mynodeapp")
    app_id = _image_id(podman_socket, "mynodeapp")
    d("image", "tag", "mynodeapp", f"{host}/mynodeapp")
    push = d("image", "push", f"{host}/mynodeapp")
    assert "latest: digest: sha256:" in push.stdout

    # two tagged versions of another image (different top file -> different layer)
    webapp_ids = {}
    for version in ("1.0", "2.0"):
        rootfs = ocilayout.busybox_rootfs_tar(
            tmp_path / f"webapp-{version}.tar", extra_files={"srv/version.txt": f"{version}\n".encode()}
        )
        d("image", "import", str(rootfs), f"{host}/webapp:{version}")
        webapp_ids[version] = _image_id(podman_socket, f"{host}/webapp:{version}")
        d("image", "push", f"{host}/webapp:{version}")
    assert webapp_ids["1.0"] != webapp_ids["2.0"]

    # curl-equivalent checks of the registry's view
    assert {"mynodeapp", "webapp"} <= _catalog(registry)
    assert _tags(registry, "webapp") == {"1.0", "2.0"}
    assert _tags(registry, "mynodeapp") == {"latest"}
    status, hdrs, body = _get_manifest(registry, "mynodeapp", "latest")
    assert status == 200
    manifest = json.loads(body)
    assert manifest["config"]["digest"] == app_id
    assert len(manifest["layers"]) == 1

    # remove locally, pull back, same image
    d("image", "rm", f"{host}/mynodeapp", "mynodeapp")
    assert_refused(d("image", "inspect", f"{host}/mynodeapp", check=False), "no such image")
    d("image", "pull", f"{host}/mynodeapp")
    assert _image_id(podman_socket, f"{host}/mynodeapp") == app_id
    digests = json.loads(d("image", "inspect", f"{host}/mynodeapp").stdout)[0]["RepoDigests"]
    assert f"{host}/mynodeapp@{hdrs['docker-content-digest']}" in digests

    d("image", "rm", f"{host}/webapp:1.0")
    d("image", "pull", f"{host}/webapp:1.0")
    assert _image_id(podman_socket, f"{host}/webapp:1.0") == webapp_ids["1.0"]
    for ref in (f"{host}/mynodeapp", f"{host}/webapp:1.0", f"{host}/webapp:2.0"):
        d("image", "rm", ref)


def test_docker_and_skopeo_login(auth_registry, podman_socket, skopeo, busybox_rootfs):
    reg = auth_registry
    user, password = reg.auth
    d = podman_socket.docker
    status, hdrs, _ = http_json(f"{reg.url}/v2/")
    assert status == 401 and "www-authenticate" in hdrs

    bad = d("login", "--username", user, "--password-stdin", reg.localhost, input="wrong", check=False)
    assert_refused(bad, "401 Unauthorized")
    assert "Login Succeeded" in podman_socket.docker_login(reg.localhost, user, password).stdout
    try:
        ref = f"{reg.localhost}/private/app:1"
        d("image", "import", str(busybox_rootfs), ref)
        d("image", "push", ref)
        d("image", "rm", ref)
        d("image", "pull", ref)
        d("image", "rm", ref)
    finally:
        d("logout", reg.localhost)
    assert http_json(f"{reg.url}/v2/private/app/tags/list")[0] == 401
    assert _tags(reg, "private/app") == {"1"}

    # no credentials stored any more: refused by the registry (not a connection problem)
    assert_refused(skopeo("list-tags", f"docker://{reg.host}/private/app", check=False), "unauthorized:")
    skopeo.login(reg.host, user, password)
    try:
        assert skopeo.json("list-tags", f"docker://{reg.host}/private/app")["Tags"] == ["1"]
    finally:
        skopeo("logout", reg.host)


# --------------------------------------------------------------------------
# oras-py


def test_oras_push_pull_artifact(registry, oras, tmp_path, monkeypatch, repo_name):
    # oras-py push() wants the files under the current directory
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    (work / "hello.txt").write_bytes(b"hello from moorage tests\n")
    (work / "data.bin").write_bytes(os.urandom(50_000))
    target = f"{registry.host}/{repo_name}:v1"

    resp = oras.push(
        target,
        files=["hello.txt:text/plain", "data.bin"],
        manifest_config=":application/vnd.moorage.test.config.v1+json",
        manifest_annotations={"org.opencontainers.image.description": "oras round trip"},
        quiet=True,
    )
    assert resp.status_code == 201
    manifest = oras.get_manifest(target)
    assert manifest["config"]["mediaType"] == "application/vnd.moorage.test.config.v1+json"
    assert [layer["annotations"]["org.opencontainers.image.title"] for layer in manifest["layers"]] == ["hello.txt", "data.bin"]
    assert manifest["layers"][0]["mediaType"] == "text/plain"
    assert manifest["annotations"]["org.opencontainers.image.description"] == "oras round trip"

    out = tmp_path / "out"
    files = oras.pull(target, outdir=str(out))
    assert sorted(Path(f).name for f in files) == ["data.bin", "hello.txt"]
    for name in ("hello.txt", "data.bin"):
        assert (out / name).read_bytes() == (work / name).read_bytes()

    # an OCI 1.1 artifact: manifest.artifactType + empty config
    art = oras_push_artifact(
        oras,
        f"{registry.host}/{repo_name}:sbom",
        {"sbom.spdx.json": b'{"spdxVersion": "SPDX-2.3"}'},
        artifact_type="application/spdx+json",
        layer_media_type="application/spdx+json",
        workdir=tmp_path / "blobs",
    )
    got = oras.get_manifest(f"{registry.host}/{repo_name}:sbom")
    assert got["artifactType"] == "application/spdx+json"
    assert got["config"]["mediaType"] == ocilayout.MT_OCI_EMPTY
    status, hdrs, _ = _get_manifest(registry, repo_name, "sbom")
    assert status == 200 and hdrs["docker-content-digest"] == art.digest
    out2 = tmp_path / "out2"
    oras.pull(f"{registry.host}/{repo_name}:sbom", outdir=str(out2))
    assert (out2 / "sbom.spdx.json").read_bytes() == b'{"spdxVersion": "SPDX-2.3"}'
    assert _tags(registry, repo_name) == {"v1", "sbom"}


@pytest.fixture
def subject_image(registry, skopeo, oci_image_layout, repo_name):
    """An image pushed to ``repo_name:v1``; returns its descriptor."""
    skopeo.copy(oci_image_layout.oci_ref, _ref(registry, repo_name, "v1"))
    desc = manifest_descriptor(registry.url, repo_name, "v1", auth=registry.auth)
    assert desc["digest"] == oci_image_layout.digest
    return desc


def test_oras_artifact_with_subject_stored(registry, oras, subject_image, tmp_path, repo_name):
    """Pushing a manifest with ``subject`` works even on a pre-1.1 registry
    (the field is just stored); fetch it back by digest."""
    sig = oras_push_artifact(
        oras,
        f"{registry.host}/{repo_name}",
        {"signature.sig": b"not-really-a-signature"},
        artifact_type="application/vnd.moorage.test.signature",
        subject=subject_image,
        by_digest=True,
        workdir=tmp_path / "blobs",
    )
    status, hdrs, body = _get_manifest(registry, repo_name, sig.digest)
    assert status == 200
    doc = json.loads(body)
    assert doc["subject"] == subject_image
    assert doc["artifactType"] == "application/vnd.moorage.test.signature"
    assert _tags(registry, repo_name) == {"v1"}  # pushed by digest: no new tag


def test_referrers_api(registry, oras, subject_image, tmp_path, repo_name):
    if registry.kind == "distribution":
        pytest.skip("Distribution 2.8.2 has no referrers API (OCI 1.1)")
    pushed = {}
    for at, payload in (
        ("application/vnd.moorage.test.signature", b"sig"),
        ("application/spdx+json", b'{"spdxVersion": "SPDX-2.3"}'),
    ):
        art = oras_push_artifact(
            oras,
            f"{registry.host}/{repo_name}",
            {"payload": payload},
            artifact_type=at,
            subject=subject_image,
            annotations={"org.moorage.test": at},
            by_digest=True,
            workdir=tmp_path / "blobs",
        )
        # OCI 1.1: a registry that processed the subject says so
        assert art.headers.get("oci-subject") == subject_image["digest"]
        pushed[at] = art.digest

    url = f"{registry.url}/v2/{repo_name}/referrers/{subject_image['digest']}"
    status, hdrs, doc = http_json(url, auth=registry.auth)
    assert status == 200
    assert hdrs["content-type"].startswith(ocilayout.MT_OCI_INDEX)
    assert doc["schemaVersion"] == 2 and doc["mediaType"] == ocilayout.MT_OCI_INDEX
    got = {m["artifactType"]: m for m in doc["manifests"]}
    assert {at: m["digest"] for at, m in got.items()} == pushed
    for at, m in got.items():
        assert m["mediaType"] == ocilayout.MT_OCI_MANIFEST
        assert m["annotations"]["org.moorage.test"] == at

    status, hdrs, doc = http_json(url + "?artifactType=application/spdx%2Bjson", auth=registry.auth)
    assert status == 200
    assert [m["digest"] for m in doc["manifests"]] == [pushed["application/spdx+json"]]
    assert hdrs.get("oci-filters-applied") == "artifactType"

    # unknown subject: empty index, never 404
    status, _, doc = http_json(f"{registry.url}/v2/{repo_name}/referrers/sha256:{'0' * 64}", auth=registry.auth)
    assert status == 200 and doc["manifests"] == []
