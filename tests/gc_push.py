"""Helpers of the GC and policy tests: raw-HTTP push/pull, running ``moorage gc`` against a live
server's data, and looking into the server's storage through its own BlobStore (backend-agnostic).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import requests

from moorage.gc.quotas import QUOTA_CACHE_SECONDS
from tests.support.cli import cli_env, run_moorage, start_moorage_cli
from tests.support.registry_proc import RegistryProcess

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
TIMEOUT = 30


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def blob_bytes(label: str, size: int = 4096) -> bytes:
    """Deterministic bytes of ``size`` for ``label`` (distinct labels -> distinct digests)."""
    out = bytearray()
    seed = label.encode()
    i = 0
    while len(out) < size:
        out += hashlib.sha256(seed + i.to_bytes(8, "big")).digest()
        i += 1
    return bytes(out[:size])


@dataclass
class Image:
    config: bytes
    layers: list[bytes]
    subject: str | None = None
    manifest: bytes = field(init=False)

    def __post_init__(self) -> None:
        body: dict[str, Any] = {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": sha(self.config), "size": len(self.config)},
            "layers": [{"mediaType": OCI_LAYER, "digest": sha(b), "size": len(b)} for b in self.layers],
        }
        if self.subject:
            body["subject"] = {"mediaType": OCI_MANIFEST, "digest": self.subject, "size": 1}
            body["artifactType"] = "application/vnd.example.sig"
        self.manifest = json.dumps(body, sort_keys=True).encode()

    @property
    def digest(self) -> str:
        return sha(self.manifest)

    @property
    def blobs(self) -> list[bytes]:
        return [self.config, *self.layers]


def make_image(name: str, shared: list[bytes] = (), unique: int = 1, size: int = 4096) -> Image:  # type: ignore[assignment]
    config = json.dumps({"architecture": "amd64", "os": "linux", "name": name}).encode()
    return Image(config, [*shared, *(blob_bytes(f"{name}-layer-{i}", size) for i in range(unique))])


class PushError(AssertionError):
    pass


def push_blob(url: str, repo: str, data: bytes, session: requests.Session | None = None, *, tries: int = 50) -> str:
    """Monolithic push unless the repository has it already; retries 503 (blob being collected)."""
    s = session or requests
    digest = sha(data)
    for _ in range(tries):
        if s.head(f"{url}/v2/{repo}/blobs/{digest}", timeout=TIMEOUT).status_code == 200:
            return digest
        r = s.post(
            f"{url}/v2/{repo}/blobs/uploads/",
            params={"digest": digest},
            data=data,
            headers={"Content-Type": "application/octet-stream"},
            timeout=TIMEOUT,
        )
        if r.status_code == 201:
            return digest
        if r.status_code != 503:
            raise PushError(f"blob push {repo} {digest}: {r.status_code} {r.text}")
        time.sleep(0.1)
    raise PushError(f"blob push {repo} {digest}: still 503 after {tries} tries")


def push_manifest(
    url: str, repo: str, ref: str, body: bytes, media_type: str = OCI_MANIFEST, session: requests.Session | None = None
) -> requests.Response:
    s = session or requests
    return s.put(f"{url}/v2/{repo}/manifests/{ref}", data=body, headers={"Content-Type": media_type}, timeout=TIMEOUT)


def push_image(url: str, repo: str, tag: str, image: Image, session: requests.Session | None = None, *, tries: int = 40) -> str:
    """Push blobs then the manifest; a MANIFEST_BLOB_UNKNOWN (a collector took an unreferenced
    blob in between, legal with grace 0) or 503 means: push the blobs again and retry."""
    last = ""
    for _ in range(tries):
        for b in image.blobs:
            push_blob(url, repo, b, session)
        r = push_manifest(url, repo, tag, image.manifest, session=session)
        if r.status_code == 201:
            assert r.headers["Docker-Content-Digest"] == image.digest
            return image.digest
        last = f"{r.status_code} {r.text}"
        if r.status_code == 503 or (r.status_code == 400 and "MANIFEST_BLOB_UNKNOWN" in r.text):
            time.sleep(0.05)
            continue
        raise PushError(f"manifest push {repo}:{tag}: {last}")
    raise PushError(f"manifest push {repo}:{tag} kept failing: {last}")


def pull_image(url: str, repo: str, ref: str, expected: Image) -> None:
    """Pull manifest and every blob; assert byte-identical."""
    r = requests.get(f"{url}/v2/{repo}/manifests/{ref}", headers={"Accept": OCI_MANIFEST}, timeout=TIMEOUT)
    assert r.status_code == 200, f"{repo}:{ref}: {r.status_code} {r.text}"
    assert r.content == expected.manifest
    for b in expected.blobs:
        g = requests.get(f"{url}/v2/{repo}/blobs/{sha(b)}", timeout=TIMEOUT)
        assert g.status_code == 200, f"{repo} blob {sha(b)}: {g.status_code} {g.text}"
        assert g.content == b, f"{repo} blob {sha(b)} differs"


def delete_ref(url: str, repo: str, ref: str) -> int:
    return requests.delete(f"{url}/v2/{repo}/manifests/{ref}", timeout=TIMEOUT).status_code


# --------------------------------------------------------------------------- the CLI side
def server_env(proc: RegistryProcess) -> dict[str, str]:
    """The environment of a CLI process working on ``proc``'s data (same backend)."""
    return cli_env(getattr(proc, "backend_env", None) or {})


def moorage_cli(
    proc: RegistryProcess, *args: str, env: dict[str, str] | None = None, timeout: float = 120, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """``moorage COMMAND --data DIR ARGS`` on ``proc``'s data (tests/support/cli.py)."""
    return run_moorage(
        *args[:1],
        "--data",
        str(proc.data_dir),
        *args[1:],
        env={**(getattr(proc, "backend_env", None) or {}), **(env or {})},
        timeout=timeout,
        check=check,
    )


def sub_cli(proc: RegistryProcess, *args: str, **kw: Any) -> subprocess.CompletedProcess[str]:
    """``moorage GROUP SUBCOMMAND --data DIR ARGS`` (for retention/quota/immutable).

    After a quota change it waits until the server must have seen it (``wait=False``: not)."""
    res = run_moorage(
        *args[:2],
        "--data",
        str(proc.data_dir),
        *args[2:],
        env=getattr(proc, "backend_env", None) or {},
        timeout=kw.get("timeout", 60),
        check=kw.get("check", True),
    )
    if args[:1] == ("quota",) and args[1:2] in (("set",), ("rm",)) and res.returncode == 0 and kw.get("wait", True):
        # Another process changed the quota table: a server applies it within its quota cache
        # lifetime (gc.quota_cache_seconds, docs/gc.md), not at once.
        time.sleep(float(server_env(proc).get("MOORAGE_GC__QUOTA_CACHE_SECONDS", QUOTA_CACHE_SECONDS)) + 0.2)
    return res


def start_gc_paused(proc: RegistryProcess, hook: str, value: str, *args: str) -> subprocess.Popen[str]:
    """``moorage gc --data DIR --grace 0 ARGS`` with the collector's test hook ``hook`` set to ``value``
    (``MOORAGE_GC_TEST_PAUSE_*``: seconds to pause; ``..._WAIT_BEFORE_MANIFEST_DELETE``: a file to
    wait for), in a process group of its own; see :func:`tests.support.cli.wait_for_line`."""
    return start_moorage_cli(
        "gc", "--data", str(proc.data_dir), "--grace", "0", *args, env={**(getattr(proc, "backend_env", None) or {}), hook: value}
    )


def gc(proc: RegistryProcess, *args: str, **kw: Any) -> dict[str, Any]:
    """Run ``moorage gc --json ARGS`` against the server's data; returns the summary."""
    res = moorage_cli(proc, "gc", "--json", *args, **kw)
    return json.loads(res.stdout)


@contextlib.contextmanager
def _env(extra: dict[str, str]) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in extra}
    os.environ.update(extra)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _settings(proc: RegistryProcess) -> Any:
    from moorage.config_load import load_settings

    with _env(getattr(proc, "backend_env", None) or {}):
        return load_settings(data=proc.data_dir)


def stored(proc: RegistryProcess, digests: list[str]) -> dict[str, bool]:
    """Which digests the server's blob store holds (through its own driver, any backend)."""
    from moorage.storage import create_blob_store

    async def go() -> dict[str, bool]:
        store = create_blob_store(_settings(proc))
        await store.open()
        try:
            return {d: (await store.stat(d)) is not None for d in digests}
        finally:
            await store.close()

    return asyncio.run(go())


def put_orphan(proc: RegistryProcess, data: bytes) -> str:
    """Put bytes into the server's storage *without* a database row (a crash leftover)."""
    from moorage.storage import create_blob_store

    async def go() -> str:
        store = create_blob_store(_settings(proc))
        await store.open()
        try:
            state = await store.upload_create("orphan-test-" + sha(data)[7:19])

            async def body() -> Any:
                yield data

            state, size = await store.upload_append("orphan-test-" + sha(data)[7:19], state, 0, body())
            await store.upload_commit("orphan-test-" + sha(data)[7:19], state, size, sha(data))
            return sha(data)
        finally:
            await store.close()

    return asyncio.run(go())


def check(proc: RegistryProcess) -> list[str]:
    res = moorage_cli(proc, "gc", "--check", check=False)
    return [] if res.returncode == 0 else res.stdout.strip().splitlines()[:-1]
