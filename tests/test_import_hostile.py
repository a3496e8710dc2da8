"""``moorage import-distribution`` over a hostile tree: links, FIFOs and shared inodes.

A Distribution tree is untrusted input.  The attack these tests replay: a blob ``data`` that is
a relative symbolic link ``../../../../auth/token-signing-key.pem``.  Read from the source tree it
resolves to a file the attacker wrote (so the digest checks out); linked or stored *as a link*
into ``<data>/storage/blobs/sha256/xx/<hex>`` it resolves to the registry's own token signing key,
served to anyone with pull on the imported repository.  Every path below the tree's root must be
a regular file (or directory) inside it; what is stored is the very inode or bytes that were
hashed, and never a link.  The trees are built by hand (no Distribution needed): the layout is
the one tests/test_import_distribution.py fills with Distribution 2.8.2 itself.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.support.cli import run_moorage
from tests.support.clients import http_request
from tests.support.registry_proc import start_moorage

pytestmark = pytest.mark.protocol

V2 = "docker/registry/v2"
SECRET = b"-----BEGIN EC PRIVATE KEY-----\nthe registry's own signing key\n-----END EC PRIVATE KEY-----\n"
DECOY = b"bytes the attacker wrote, so that the digest checks out\n"
MT_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def _digest(data: bytes) -> str:
    return f"sha256:{hashlib.sha256(data).hexdigest()}"


def _blob_dir(root: Path, digest: str) -> Path:
    hexd = digest.split(":", 1)[1]
    return root / V2 / "blobs" / "sha256" / hexd[:2] / hexd


def _put_blob(root: Path, data: bytes) -> str:
    digest = _digest(data)
    d = _blob_dir(root, digest)
    d.mkdir(parents=True, exist_ok=True)
    (d / "data").write_bytes(data)
    return digest


def _link(path: Path, digest: str) -> None:
    path.mkdir(parents=True, exist_ok=True)
    (path / "link").write_text(digest)


def _tree(root: Path, repo: str, layer_digest: str, *, layer_data: bytes | None) -> dict[str, str]:
    """A one-image repository ``repo:v1`` whose layer is ``layer_digest`` (its ``data`` written
    only if ``layer_data`` is given: the caller plants something else there)."""
    config = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}}).encode()
    cfg = _put_blob(root, config)
    if layer_data is not None:
        _put_blob(root, layer_data)
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": MT_MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cfg, "size": len(config)},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer_digest, "size": len(DECOY)}],
        }
    ).encode()
    man = _put_blob(root, manifest)
    repo_dir = root / V2 / "repositories" / repo
    for d in (cfg, layer_digest):
        _link(repo_dir / "_layers" / "sha256" / d.split(":")[1], d)
    _link(repo_dir / "_manifests" / "revisions" / "sha256" / man.split(":")[1], man)
    _link(repo_dir / "_manifests" / "tags" / "v1" / "current", man)
    return {"config": cfg, "manifest": man}


def _import(root: Path, data: Path, *extra: str) -> subprocess.CompletedProcess:
    return run_moorage("import-distribution", str(root), "--data", str(data), "--json", *extra, clean_env=True, timeout=120)


def _summary(cp: subprocess.CompletedProcess) -> dict:
    return json.loads(cp.stdout.strip().splitlines()[-1])


def _links_under(path: Path) -> list[Path]:
    return [Path(d) / n for d, dirs, files in os.walk(path) for n in dirs + files if (Path(d) / n).is_symlink()]


def _stored(data: Path, digest: str) -> Path:
    hexd = digest.split(":", 1)[1]
    return data / "storage" / "blobs" / "sha256" / hexd[:2] / hexd


@pytest.mark.parametrize("mode", ["--link", "copy"])
def test_symlinked_blob_data_is_refused_never_stored(tmp_path: Path, mode: str) -> None:
    """The critical finding: the relative link that would serve the registry's signing key."""
    src = tmp_path / "src"
    data = tmp_path / "srv" / "data"
    (data / "auth").mkdir(parents=True)
    (data / "auth" / "token-signing-key.pem").write_bytes(SECRET)
    # In the source tree the link resolves to the decoy (v2/auth/...): its digest checks out.
    (src / V2 / "auth").mkdir(parents=True)
    (src / V2 / "auth" / "token-signing-key.pem").write_bytes(DECOY)
    layer = _digest(DECOY)
    _tree(src, "evil/app", layer, layer_data=None)
    d = _blob_dir(src, layer)
    d.mkdir(parents=True)
    os.symlink("../../../../auth/token-signing-key.pem", d / "data")
    assert (d / "data").read_bytes() == DECOY  # what a path-following check would hash

    cp = _import(src, data, *(() if mode == "copy" else ("--link",)))
    assert cp.returncode == 2, (cp.stdout, cp.stderr)
    summary = _summary(cp)
    assert summary["refused"] == 1 and summary["blobs_linked"] + summary["blobs_copied"] == 1  # the config only
    assert "refused" in cp.stderr and "link" in cp.stderr
    assert not os.path.lexists(_stored(data, layer))
    assert _links_under(data) == []

    srv = start_moorage(tmp_path / "srv")
    try:
        status, _, body = http_request("GET", f"{srv.url}/v2/evil/app/blobs/{layer}")
        assert status == 404 and SECRET not in body
        assert http_request("GET", f"{srv.url}/v2/evil/app/manifests/v1")[0] == 404  # its layer is not there
    finally:
        srv.stop()


def test_links_anywhere_in_the_tree_are_not_followed(tmp_path: Path) -> None:
    """A repository directory, a link file and a ``_layers`` directory that are links to places
    outside the tree: nothing from outside is read, each is reported."""
    src = tmp_path / "src"
    outside = tmp_path / "outside"
    good = _tree(src, "good/app", _digest(DECOY), layer_data=DECOY)
    # A whole repository that lives outside the tree, reached through a link.
    _tree(outside, "stolen", _digest(b"outside layer"), layer_data=b"outside layer")
    os.symlink(outside / V2 / "repositories" / "stolen", src / V2 / "repositories" / "stolen")
    # A tag's current/link that is a link to a file outside.
    (outside / "tag-link").write_text(good["manifest"])
    bad_tag = src / V2 / "repositories" / "good" / "app" / "_manifests" / "tags" / "v2" / "current"
    bad_tag.mkdir(parents=True)
    os.symlink(outside / "tag-link", bad_tag / "link")

    data = tmp_path / "data"
    cp = _import(src, data, "--link")
    assert cp.returncode == 2, (cp.stdout, cp.stderr)
    summary = _summary(cp)
    assert summary["repositories"] == 1 and summary["tags"] == 1  # good/app:v1 only
    assert summary["refused"] == 2, cp.stderr
    assert _links_under(data) == []


def test_fifo_and_device_data_are_refused_without_hanging(tmp_path: Path) -> None:
    src = tmp_path / "src"
    layer = _digest(DECOY)
    _tree(src, "odd/app", layer, layer_data=None)
    d = _blob_dir(src, layer)
    d.mkdir(parents=True)
    os.mkfifo(d / "data")  # opening it for reading would block forever without O_NONBLOCK
    data = tmp_path / "data"
    cp = _import(src, data)
    assert cp.returncode == 2, (cp.stdout, cp.stderr)
    assert _summary(cp)["refused"] == 1
    assert not os.path.lexists(_stored(data, layer))


def test_link_mode_copies_a_file_others_can_write(tmp_path: Path) -> None:
    """A hard link shares the inode: a file whose owner is someone else, or that is group- or
    world-writable, could be rewritten after the import and change a stored blob.  It is copied;
    a file only root or this user can write is linked."""
    src = tmp_path / "src"
    layer = _digest(DECOY)
    _tree(src, "shared/app", layer, layer_data=DECOY)
    (_blob_dir(src, layer) / "data").chmod(0o666)
    data = tmp_path / "data"
    cp = _import(src, data, "--link")
    assert cp.returncode == 0, cp.stderr
    summary = _summary(cp)
    assert summary["blobs_copied"] == 1 and summary["blobs_linked"] == 1, summary  # the layer copied, the config linked
    source_ino = os.stat(_blob_dir(src, layer) / "data").st_ino
    assert os.stat(_stored(data, layer)).st_ino != source_ino
    assert _stored(data, layer).read_bytes() == DECOY
    # Rewriting the source afterwards changes nothing that is served.
    (_blob_dir(src, layer) / "data").write_bytes(b"changed later")
    assert _stored(data, layer).read_bytes() == DECOY
