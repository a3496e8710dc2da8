"""Raw-HTTP helpers for protocol tests (real server, real sockets; no mocks)."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from typing import Any

import requests

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def error_codes(resp: requests.Response) -> list[str]:
    return [e["code"] for e in resp.json()["errors"]]


def push_image(
    base: str,
    repo: str,
    ref: str,
    manifest: bytes,
    blobs: Iterable[bytes],
    *,
    media_type: str = OCI_MANIFEST,
    headers: Mapping[str, str] | None = None,
    session: requests.Session | None = None,
    timeout: float = 60,
) -> str:
    """Push ``blobs`` (one monolithic ``POST ?digest=`` each) and then ``manifest`` under ``ref``, as a
    client does; every answer must be 201.  Returns the manifest's digest.  The one raw-HTTP image
    push of the tests (``Client.push_image``, tests/support/authsrv.py and tests/support/ui.py use
    it); tests/gc_push.py adds the retries a push needs while a collector runs."""
    s = session or requests.Session()
    hdrs = dict(headers or {})
    for data in blobs:
        r = s.post(
            f"{base}/v2/{repo}/blobs/uploads/",
            params={"digest": sha256(data)},
            data=data,
            headers={**hdrs, "Content-Type": "application/octet-stream"},
            timeout=timeout,
            allow_redirects=False,
        )
        assert r.status_code == 201, (repo, r.status_code, r.text)
    r = s.put(
        f"{base}/v2/{repo}/manifests/{ref}",
        data=manifest,
        headers={**hdrs, "Content-Type": media_type},
        timeout=timeout,
        allow_redirects=False,
    )
    assert r.status_code == 201, (repo, ref, r.status_code, r.text)
    return sha256(manifest)


class Client:
    def __init__(self, base: str, auth: Any = None) -> None:
        self.base = base.rstrip("/")
        self.s = requests.Session()
        self.s.auth = auth

    def url(self, path: str) -> str:
        return path if path.startswith("http") else self.base + path

    def req(self, method: str, path: str, **kw: Any) -> requests.Response:
        kw.setdefault("timeout", 60)
        kw.setdefault("allow_redirects", False)
        return self.s.request(method, self.url(path), **kw)

    def raw(
        self, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        """Send ``path`` exactly as given (requests/urllib3 would normalise ``..`` away)."""
        import http.client
        from urllib.parse import urlsplit

        parts = urlsplit(self.base)
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            resp = conn.getresponse()
            return resp.status, dict(resp.getheaders()), resp.read()
        finally:
            conn.close()

    def push_blob(self, repo: str, data: bytes) -> str:
        digest = sha256(data)
        r = self.req("POST", f"/v2/{repo}/blobs/uploads/", params={"digest": digest}, data=data)
        assert r.status_code == 201, r.text
        return digest

    def push_manifest(
        self, repo: str, ref: str, doc: dict[str, Any] | bytes, media_type: str = OCI_MANIFEST
    ) -> requests.Response:
        body = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
        return self.req("PUT", f"/v2/{repo}/manifests/{ref}", data=body, headers={"Content-Type": media_type})

    def push_image(
        self,
        repo: str,
        tag: str | None,
        layers: list[bytes] | None = None,
        *,
        config: bytes | None = None,
        extra: dict[str, Any] | None = None,
        media_type: str = OCI_MANIFEST,
    ) -> tuple[str, bytes]:
        """Push config + layers + manifest; returns (manifest digest, manifest bytes)."""
        layers = layers if layers is not None else [os.urandom(1024)]
        config = (
            config
            if config is not None
            else json.dumps({"architecture": "amd64", "os": "linux", "rnd": os.urandom(4).hex()}).encode()
        )
        cfg_type = (
            "application/vnd.oci.image.config.v1+json"
            if media_type == OCI_MANIFEST
            else "application/vnd.docker.container.image.v1+json"
        )
        layer_type = (
            "application/vnd.oci.image.layer.v1.tar+gzip"
            if media_type == OCI_MANIFEST
            else "application/vnd.docker.image.rootfs.diff.tar.gzip"
        )
        doc: dict[str, Any] = {
            "schemaVersion": 2,
            "mediaType": media_type,
            "config": {"mediaType": cfg_type, "digest": sha256(config), "size": len(config)},
            "layers": [{"mediaType": layer_type, "digest": sha256(layer), "size": len(layer)} for layer in layers],
        }
        doc.update(extra or {})
        body = json.dumps(doc, indent=1).encode()
        push_image(self.base, repo, tag or sha256(body), body, [config, *layers], media_type=media_type, session=self.s)
        return sha256(body), body
