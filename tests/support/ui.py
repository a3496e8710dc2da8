"""Helpers for the web UI tests and benchmark: push test images over plain HTTP with a
bearer token, a headless Chromium through Playwright, and screenshots."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import requests

from tests.support import http, ocilayout
from tests.support.registry_proc import REPO_ROOT, RegistryProcess

HTTP_TIMEOUT = 30
CHROMIUM = os.environ.get("MOORAGE_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def screenshot_dir() -> Path:
    d = Path(os.environ.get("MOORAGE_SCREENSHOTS") or REPO_ROOT / "tests" / "artifacts" / "screenshots")
    d.mkdir(parents=True, exist_ok=True)
    return d


def push_token(proc: RegistryProcess, repos: Iterable[str], auth: tuple[str, str] | None) -> dict[str, str]:
    """Authorization header for pushing to ``repos`` (none if the server has no token auth)."""
    if auth is None:
        return {}
    params = [("service", "moorage")] + [("scope", f"repository:{r}:pull,push,delete") for r in repos]
    r = requests.get(f"{proc.url}/auth/token", params=params, auth=auth, timeout=HTTP_TIMEOUT)
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['token']}"}


def put_blob(url: str, repo: str, data: bytes, headers: Mapping[str, str]) -> str:
    digest = ocilayout.sha256_digest(data)
    r = requests.post(
        f"{url}/v2/{repo}/blobs/uploads/",
        params={"digest": digest},
        data=data,
        headers={**headers, "Content-Type": "application/octet-stream"},
        timeout=HTTP_TIMEOUT,
    )
    assert r.status_code == 201, (r.status_code, r.text)
    return digest


def put_manifest(url: str, repo: str, ref: str, data: bytes, media_type: str, headers: Mapping[str, str]) -> str:
    r = requests.put(
        f"{url}/v2/{repo}/manifests/{ref}", data=data, headers={**headers, "Content-Type": media_type}, timeout=HTTP_TIMEOUT
    )
    assert r.status_code == 201, (r.status_code, r.text)
    return ocilayout.sha256_digest(data)


def push_image(
    proc: RegistryProcess,
    repo: str,
    tag: str,
    tmp: Path,
    *,
    seed: str,
    layers: Any = (4096, 2048),
    auth: tuple[str, str] | None = None,
) -> ocilayout.LayoutImage:
    img = ocilayout.build_image(
        tmp / f"{repo.replace('/', '_')}-{tag}",
        tag,
        layers=layers,
        seed=seed,
        labels={"org.opencontainers.image.source": "https://example.invalid/app"},
    )
    http.push_image(
        proc.url,
        repo,
        tag,
        img.manifest.data,
        [b.data for b in img.layers + [img.config]],
        media_type=img.manifest.media_type,
        headers=push_token(proc, [repo], auth),
        timeout=HTTP_TIMEOUT,
    )
    return img


def push_index(
    proc: RegistryProcess, repo: str, tag: str, tmp: Path, *, seed: str, auth: tuple[str, str] | None = None
) -> ocilayout.LayoutIndex:
    idx = ocilayout.build_index(
        tmp / f"{repo.replace('/', '_')}-{tag}-idx",
        tag,
        platforms=(("linux", "amd64"), ("linux", "arm64", "v8")),
        layers=(2048,),
        seed=seed,
    )
    h = push_token(proc, [repo], auth)
    for img in idx.images:
        for b in img.layers + [img.config]:
            put_blob(proc.url, repo, b.data, h)
        put_manifest(proc.url, repo, img.digest, img.manifest.data, img.manifest.media_type, h)
    put_manifest(proc.url, repo, tag, idx.index.data, idx.index.media_type, h)
    return idx


def push_referrer(
    proc: RegistryProcess,
    repo: str,
    subject: ocilayout.Blob,
    artifact_type: str,
    payload: bytes,
    auth: tuple[str, str] | None = None,
) -> str:
    """An OCI 1.1 artifact (empty config, one layer) whose ``subject`` is ``subject``."""
    h = push_token(proc, [repo], auth)
    empty = b"{}"
    put_blob(proc.url, repo, empty, h)
    layer = put_blob(proc.url, repo, payload, h)
    doc = {
        "schemaVersion": 2,
        "mediaType": ocilayout.MT_OCI_MANIFEST,
        "artifactType": artifact_type,
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": ocilayout.sha256_digest(empty), "size": 2},
        "layers": [{"mediaType": "application/octet-stream", "digest": layer, "size": len(payload)}],
        "subject": subject.descriptor(),
    }
    data = json.dumps(doc).encode()
    return put_manifest(proc.url, repo, ocilayout.sha256_digest(data), data, ocilayout.MT_OCI_MANIFEST, h)


def launch_chromium(playwright: Any) -> Any:
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
