"""``moorage import-distribution``: a real Distribution 2.8.2 tree, filled by skopeo, into Moorage.

The source registry holds several repositories (one nested name), tags that share layers, a
multi-arch index, a tag moved to another image (its old manifest stays a revision) and a
deleted manifest+tag.  After the import every tag pulls byte-identical from Moorage with skopeo,
the deleted one is absent, a second import changes nothing, a run killed half-way resumes, and
a blob whose bytes do not match its digest is refused.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support import ocilayout
from tests.support.cli import run_moorage
from tests.support.clients import Skopeo, http_json, http_request
from tests.support.fixtures import require_binary
from tests.support.registry_proc import (
    DISTRIBUTION_BIN,
    REPO_ROOT,
    RegistryAddress,
    RegistryProcess,
    start_distribution,
    start_moorage,
)

pytestmark = pytest.mark.clients


def _moorage_cli(*args: str, env: dict | None = None, check: bool = True) -> subprocess.CompletedProcess:
    cp = run_moorage(*args, env=env, clean_env=True, timeout=300)
    if check and cp.returncode != 0:
        raise AssertionError(f"moorage {' '.join(args)} -> {cp.returncode}\n{cp.stdout}\n{cp.stderr}")
    return cp


def _import(
    root: Path | None, data: Path, *extra: str, env: dict | None = None, check: bool = True
) -> tuple[subprocess.CompletedProcess, dict]:
    where = [str(root)] if root is not None else []
    cp = _moorage_cli("import-distribution", *where, "--data", str(data), "--json", *extra, env=env, check=check)
    summary = json.loads(cp.stdout.strip().splitlines()[-1]) if cp.returncode == 0 else {}
    return cp, summary


class Source:
    """What went into Distribution: ``{(repo, tag): expected blobs}`` and the catalog it served."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.expected: dict[tuple[str, str], dict[str, bytes]] = {}
        self.digests: dict[tuple[str, str], str] = {}
        self.untagged: dict[str, str] = {}  # digest -> repo (moved tag's old manifest)
        self.deleted: tuple[str, str, str] | None = None  # repo, tag, digest
        self.catalog: list[str] = []
        self.tags: dict[str, list[str]] = {}


@pytest.fixture(scope="module")
def filled_distribution(tmp_path_factory: pytest.TempPathFactory) -> Source:
    require_binary(DISTRIBUTION_BIN, "docker-registry")
    require_binary("skopeo", "skopeo")
    tmp = tmp_path_factory.mktemp("dist-src")
    sk = Skopeo(tmp / "skopeo")
    layouts = tmp / "layouts"
    reg = start_distribution(tmp / "registry")
    src = Source(reg.data_dir)
    try:

        def push(img, repo: str, tag: str, index: bool = False) -> None:
            sk.copy(img.oci_ref, f"docker://{reg.host}/{repo}:{tag}", all=index)
            src.expected[(repo, tag)] = img.blobs()
            src.digests[(repo, tag)] = img.digest

        base = ocilayout.build_image(layouts / "a", "v1", layers=[200_000, 50_000, 3_000], seed="base")
        v2 = ocilayout.build_image(layouts / "b", "v2", layers=[200_000, 70_000], seed="base")  # shares layer 0
        push(base, "team/app", "v1")
        push(v2, "team/app", "v2")
        push(v2, "team/app", "latest")
        push(base, "other", "stable")  # the same blobs in another repository
        idx = ocilayout.build_index(layouts / "c", "multi", seed="multi")
        push(idx, "deep/nested/multi", "multi", index=True)
        push(idx, "deep/nested/multi", "1.0", index=True)
        old = ocilayout.build_image(layouts / "d", "moving", layers=[10_000], seed="old")
        new = ocilayout.build_image(layouts / "e", "moving", layers=[12_000], seed="new")
        push(old, "team/app", "moving")
        push(new, "team/app", "moving")
        src.untagged[old.digest] = "team/app"
        gone = ocilayout.build_image(layouts / "f", "gone", layers=[9_000], seed="gone")
        push(gone, "team/app", "gone")
        sk("delete", f"docker://{reg.host}/team/app:gone")  # Distribution deletes manifest + tag
        del src.expected[("team/app", "gone")]
        src.deleted = ("team/app", "gone", src.digests.pop(("team/app", "gone")))
        _, _, cat = http_json(f"{reg.url}/v2/_catalog")
        src.catalog = cat["repositories"]
        for repo in src.catalog:
            src.tags[repo] = sorted(http_json(f"{reg.url}/v2/{repo}/tags/list")[2]["tags"])
    finally:
        reg.stop()
    assert src.deleted is not None
    tagdir = src.root / "docker/registry/v2/repositories/team/app/_manifests/tags"
    assert not (tagdir / "gone" / "current" / "link").exists()  # what "deleted tag" looks like on disk
    return src


def _check_served(src: Source, data: Path, tmp: Path, env: dict | None = None) -> None:
    """Serve ``data`` with Moorage and pull every tag with skopeo: byte-identical."""
    assert data == tmp / "srv" / "data"  # start_moorage serves DIR/data
    srv = start_moorage(tmp / "srv", env=env)
    try:
        _check_content(src, srv, tmp)
    finally:
        srv.stop()


def _check_content(src: Source, srv: RegistryAddress, tmp: Path) -> None:
    """Every tag of ``src`` pulls byte-identical from ``srv``; the catalog, the tag lists, the
    moved tag's old manifest and the deleted tag are as Distribution served them."""
    sk = Skopeo(tmp / "skopeo")
    _, _, cat = http_json(f"{srv.url}/v2/_catalog")
    assert cat["repositories"] == src.catalog
    for repo, tags in src.tags.items():
        assert sorted(http_json(f"{srv.url}/v2/{repo}/tags/list")[2]["tags"]) == tags
    for (repo, tag), blobs in src.expected.items():
        dst = tmp / "pulled" / repo.replace("/", "_") / tag
        dst.parent.mkdir(parents=True, exist_ok=True)
        sk.copy(f"docker://{srv.host}/{repo}:{tag}", f"oci:{dst}:{tag}", all=True)
        assert ocilayout.read_layout_blobs(dst) == blobs, (repo, tag)
        assert ocilayout.resolve_tag(dst, tag)["digest"] == src.digests[(repo, tag)]
    for digest, repo in src.untagged.items():  # a moved tag's old manifest: kept, untagged
        status, _, _ = http_request(
            "GET", f"{srv.url}/v2/{repo}/manifests/{digest}", headers={"Accept": ocilayout.MT_OCI_MANIFEST}
        )
        assert status == 200
    repo, tag, digest = src.deleted  # type: ignore[misc]
    assert http_request("GET", f"{srv.url}/v2/{repo}/manifests/{tag}")[0] == 404
    assert http_request("GET", f"{srv.url}/v2/{repo}/manifests/{digest}")[0] == 404


def test_import_pulls_byte_identical_and_is_idempotent(filled_distribution: Source, tmp_path: Path) -> None:
    src = filled_distribution
    data = tmp_path / "srv" / "data"
    cp, first = _import(src.root, data)
    assert first["manifests"] >= 7 and first["tags"] == sum(len(t) for t in src.tags.values())
    assert first["manifests_failed"] == 0 and first["blobs_missing"] == 0
    assert first["blobs_copied"] > 0 and first["blobs_mounted"] > 0  # "other" shares team/app's blobs
    print("first import:", first)
    _check_served(src, data, tmp_path)

    cp, second = _import(src.root, data)
    assert second["blobs_copied"] == second["blobs_linked"] == second["blobs_mounted"] == 0
    assert second["manifests"] == 0 and second["tags"] == 0
    assert second["blobs_skipped"] == first["blobs_copied"] + first["blobs_mounted"]
    assert second["manifests_skipped"] == first["manifests"]


def test_interrupted_import_resumes(filled_distribution: Source, tmp_path: Path) -> None:
    src = filled_distribution
    data = tmp_path / "srv" / "data"
    cp, _ = _import(src.root, data, env={"MOORAGE_IMPORT_CRASH_AFTER_BLOBS": "3"}, check=False)
    assert cp.returncode == 137, cp.stderr  # died like kill -9 after three blobs
    cp, resumed = _import(src.root, data)
    assert resumed["blobs_copied"] > 0 and resumed["manifests_failed"] == 0
    _check_served(src, data, tmp_path)


def test_link_hard_links_blob_files(filled_distribution: Source, tmp_path: Path) -> None:
    src = filled_distribution
    tree = tmp_path / "tree"  # a copy: the test must not add links to the shared source
    shutil.copytree(src.root, tree)
    data = tmp_path / "srv" / "data"
    cp, summary = _import(tree, data, "--link")
    assert summary["blobs_linked"] > 0 and summary["blobs_copied"] == 0
    digest = next(iter(src.expected[("team/app", "v1")]))
    layer = [d for d in src.expected[("team/app", "v1")] if d != src.digests[("team/app", "v1")]][0]
    hexd = layer.split(":")[1]
    source_file = tree / f"docker/registry/v2/blobs/sha256/{hexd[:2]}/{hexd}/data"
    stored = data / "storage" / "blobs" / "sha256" / hexd[:2] / hexd
    assert os.stat(source_file).st_ino == os.stat(stored).st_ino, digest
    _check_served(src, data, tmp_path)


def test_corrupt_blob_is_refused(filled_distribution: Source, tmp_path: Path) -> None:
    src = filled_distribution
    tree = tmp_path / "tree"
    shutil.copytree(src.root, tree)
    blobs = src.expected[("team/app", "v1")]
    layer = max((d for d in blobs), key=lambda d: len(blobs[d]))  # the big layer
    hexd = layer.split(":")[1]
    path = tree / f"docker/registry/v2/blobs/sha256/{hexd[:2]}/{hexd}/data"
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    path.write_bytes(bytes(raw))
    data = tmp_path / "srv" / "data"
    for extra in ((), ("--link",)):
        cp, _ = _import(tree, data, *extra, check=False)
        assert cp.returncode == 1, cp.stderr
        lines = [ln for ln in cp.stderr.splitlines() if ln.strip()]
        assert len(lines) == 1 and layer in lines[-1] and "does not match" in lines[-1], cp.stderr
        assert not (data / "storage" / "blobs" / "sha256" / hexd[:2] / hexd).exists()


def test_not_a_distribution_tree(tmp_path: Path) -> None:
    cp = _moorage_cli("import-distribution", str(tmp_path), "--data", str(tmp_path / "d"), check=False)
    assert cp.returncode == 1 and "docker/registry/v2" in cp.stderr
    assert len([ln for ln in cp.stderr.splitlines() if ln.strip()]) == 1
    cp = _moorage_cli("import-distribution", "--data", str(tmp_path / "d"), check=False)
    assert cp.returncode == 2 and "ROOT or --from-s3" in cp.stderr


@pytest.mark.services
def test_import_from_s3_bucket(filled_distribution: Source, tmp_path: Path, rgw) -> None:
    """The same tree in a bucket, laid out as Distribution's s3 driver writes it
    (``<rootdirectory>/docker/registry/v2/...``): imported into filesystem storage by copying,
    then into S3 storage with --link (server-side copies)."""
    import uuid

    s3 = rgw.boto3_client()
    bucket = f"dist-{uuid.uuid4().hex[:10]}"
    s3.create_bucket(Bucket=bucket)
    for path in filled_distribution.root.rglob("*"):
        if path.is_file() and "/_uploads/" not in str(path):
            s3.upload_file(str(path), bucket, f"reg/{path.relative_to(filled_distribution.root)}")
    creds = {"AWS_ACCESS_KEY_ID": rgw.access_key, "AWS_SECRET_ACCESS_KEY": rgw.secret_key}
    s3_args = ("--from-s3", bucket, "--s3-prefix", "/reg", "--s3-endpoint", rgw.endpoint_url, "--s3-region", rgw.region)

    data = tmp_path / "srv" / "data"
    cp, summary = _import(None, data, *s3_args, env=creds)
    assert summary["blobs_copied"] > 0 and summary["manifests_failed"] == 0
    _check_served(filled_distribution, data, tmp_path)
    cp, again = _import(None, data, *s3_args, env=creds)
    assert again["blobs_copied"] == again["manifests"] == again["tags"] == 0

    dest_bucket = f"moorage-{uuid.uuid4().hex[:10]}"
    store_env = {
        "MOORAGE_STORAGE__DRIVER": "s3",
        "MOORAGE_STORAGE__S3__BUCKET": dest_bucket,
        "MOORAGE_STORAGE__S3__ENDPOINT_URL": rgw.endpoint_url,
        "MOORAGE_STORAGE__S3__REGION": rgw.region,
        "MOORAGE_STORAGE__S3__ACCESS_KEY": rgw.access_key,
        "MOORAGE_STORAGE__S3__SECRET_KEY": rgw.secret_key,
    }
    tmp2 = tmp_path / "s3dest"
    data2 = tmp2 / "srv" / "data"
    cp, linked = _import(None, data2, *s3_args, "--link", env={**creds, **store_env})
    assert linked["blobs_linked"] > 0 and linked["blobs_copied"] == 0 and linked["manifests_failed"] == 0
    _check_served(filled_distribution, data2, tmp2, env=store_env)


# -- serving a registry:2 volume in place: imported on start, in the background ------------------------
def _tree_state(root: Path) -> dict[str, tuple[str, int]]:
    """Every entry under ``root`` -> (sha256 of a file's bytes or "dir", its mode)."""
    import hashlib

    out: dict[str, tuple[str, int]] = {".": ("dir", root.stat().st_mode)}
    for path in sorted(root.rglob("*")):
        st = path.lstat()
        kind = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "dir"
        out[str(path.relative_to(root))] = (kind, st.st_mode)
    return out


def _readyz(srv: RegistryAddress) -> tuple[int, dict]:
    status, _, body = http_json(f"{srv.url}/readyz")
    return status, body


def _serve_distribution_config(tmp: Path, volume: Path, env: dict[str, str] | None = None) -> RegistryProcess:
    """``moorage serve`` with the registry:2 config.yml of that volume (nothing else given)."""
    config = tmp / "config.yml"

    def prepare(port: int) -> None:
        config.write_text(
            "version: 0.1\nlog:\n  level: info\nstorage:\n  filesystem:\n"
            f"    rootdirectory: {volume}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n"
            "  secret: a-registry2-secret\n  headers:\n    X-Content-Type-Options: [nosniff]\n"
        )

    pp = os.environ.get("PYTHONPATH")
    full_env = {"PYTHONPATH": f"{REPO_ROOT}{os.pathsep}{pp}" if pp else str(REPO_ROOT), "PYTHONUNBUFFERED": "1", **(env or {})}
    full_env.update({k: None for k in os.environ if k.startswith(("MOORAGE_", "REGISTRY_")) and k not in full_env})  # type: ignore[misc]
    return RegistryProcess(
        argv=[sys.executable, "-m", "moorage.cli", "serve", "--config", str(config)],
        workdir=tmp,
        kind="moorage",
        env=full_env,
        cwd=REPO_ROOT,
        prepare=prepare,
        data_dir=volume,
    ).start()


def test_serve_on_a_registry2_volume_imports_it_in_place(filled_distribution: Source, tmp_path: Path) -> None:
    """registry:2 replaced by ``moorage serve`` on its volume with its config.yml: the images are
    there (imported in the background, progress in /readyz, served as they arrive), byte-identical;
    Distribution's files keep their bytes and modes (a rollback to registry:2 works); a second
    start imports nothing."""
    src = filled_distribution
    volume = tmp_path / "var-lib-registry"
    shutil.copytree(src.root, volume)  # the shared tree stays as the fixture made it
    volume.chmod(0o755)
    before = _tree_state(volume)
    srv = _serve_distribution_config(tmp_path / "srv", volume, env={"MOORAGE_TEST_IMPORT_PAUSE": "1"})
    try:
        seen: list[str] = []
        partial: set[int] = set()  # catalog sizes seen while importing
        deadline = time.monotonic() + 180
        while True:
            status, body = _readyz(srv)
            assert status == 200 and body["status"] == "ok", body  # ready while importing
            if "detail" not in body:
                break
            seen.append(body["detail"])
            partial.add(len(http_json(f"{srv.url}/v2/_catalog")[2]["repositories"]))
            if len(seen) == 1:  # the UI says it too
                page = http_request("GET", f"{srv.url}/")[2].decode()
                assert 'class="banner"' in page and "registry:2 storage" in page, page[:2000]
            assert time.monotonic() < deadline, seen[-1]
            time.sleep(0.2)
        assert any(re.search(r"importing \d+ of \d+ ", d) for d in seen), seen
        assert partial & set(range(1, len(src.catalog))), partial  # served as it arrives
        _check_content(src, srv, tmp_path)
        log = srv.log(400)
        assert "registry:2 import done" in log, log
        # blobs are hard links of Distribution's files, not copies
        blobs = src.expected[("team/app", "v1")]
        layer = max(blobs, key=lambda d: len(blobs[d]))
        hexd = layer.split(":")[1]
        stored = volume / "storage" / "blobs" / "sha256" / hexd[:2] / hexd
        assert os.stat(stored).st_ino == os.stat(volume / f"docker/registry/v2/blobs/sha256/{hexd[:2]}/{hexd}/data").st_ino
    finally:
        srv.stop()
    after = {k: v for k, v in _tree_state(volume).items() if k == "." or k.startswith("docker")}
    assert after == before  # Distribution's own files: same bytes, same modes (the volume not made 0700)
    assert stat.S_IMODE((volume / "storage").stat().st_mode) == 0o700  # what Moorage created is private
    assert stat.S_IMODE((volume / "moorage.db").stat().st_mode) == 0o600

    again = _serve_distribution_config(tmp_path / "srv2", volume)
    try:
        status, body = _readyz(again)
        assert status == 200 and "detail" not in body, body
        _check_content(src, again, tmp_path)
        assert "importing it in the background" not in again.log(400), again.log(400)  # a second start: nothing
    finally:
        again.stop()


def test_a_push_during_the_start_up_import_wins(filled_distribution: Source, tmp_path: Path) -> None:
    """The start-up import runs while clients push: a tag pushed to Moorage before the import
    reaches its repository is newer than registry:2's and stays."""
    src = filled_distribution
    volume = tmp_path / "var-lib-registry"
    shutil.copytree(src.root, volume)
    srv = _serve_distribution_config(tmp_path / "srv", volume, env={"MOORAGE_TEST_IMPORT_PAUSE": "3"})
    try:
        deadline = time.monotonic() + 60
        while "deep/nested/multi" not in http_json(f"{srv.url}/v2/_catalog")[2]["repositories"]:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        assert "team/app" not in http_json(f"{srv.url}/v2/_catalog")[2]["repositories"]  # not reached yet
        newer = ocilayout.build_image(tmp_path / "newer", "v1", layers=[5_000], seed="pushed-during-import")
        Skopeo(tmp_path / "skopeo").copy(newer.oci_ref, f"docker://{srv.host}/team/app:v1")
        while "detail" in _readyz(srv)[1]:
            assert time.monotonic() < deadline + 120
            time.sleep(0.2)
        status, headers, _ = http_request(
            "HEAD", f"{srv.url}/v2/team/app/manifests/v1", headers={"Accept": ocilayout.MT_OCI_MANIFEST}
        )
        assert status == 200 and headers["docker-content-digest"] == newer.digest
        assert (
            http_request("HEAD", f"{srv.url}/v2/team/app/manifests/v2", headers={"Accept": ocilayout.MT_OCI_MANIFEST})[0] == 200
        )
        assert "kept the tag pushed to Moorage" in srv.log(400)
    finally:
        srv.stop()
