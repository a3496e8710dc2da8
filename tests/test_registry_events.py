"""The EventBus: api/ handlers publish one event per successful content operation, with the actor;
a failing listener never fails the request.  In-process (aiohttp test server, filesystem + SQLite)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from moorage.api.common import EVENTS
from moorage.composition import build_app
from moorage.config import Settings
from moorage.registry.events import RegistryEvent


@pytest.fixture()
async def client(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    monkeypatch.delenv("MOORAGE_CONFIG", raising=False)  # another test's load_settings(config) may have set it
    settings = Settings(data=tmp_path, addr="127.0.0.1:5999", metrics_enabled=False)
    app = build_app(settings)
    seen: list[RegistryEvent] = []

    async def record(event: RegistryEvent) -> None:
        seen.append(event)

    async def broken(event: RegistryEvent) -> None:
        raise RuntimeError("listener failure must not reach the client")

    app[EVENTS].subscribe(broken)
    app[EVENTS].subscribe(record)
    async with TestClient(TestServer(app)) as c:
        c.seen = seen  # type: ignore[attr-defined]
        yield c


async def test_push_pull_delete_publish_events(client: TestClient) -> None:
    blob = b"layer bytes"
    digest = "sha256:" + hashlib.sha256(blob).hexdigest()
    r = await client.post(f"/v2/team/app/blobs/uploads/?digest={digest}", data=blob, headers={"User-Agent": "events-test/1"})
    assert r.status == 201
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": digest, "size": len(blob)},
            "layers": [],
        }
    ).encode()
    mdigest = "sha256:" + hashlib.sha256(manifest).hexdigest()
    r = await client.put(
        "/v2/team/app/manifests/1.0", data=manifest, headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"}
    )
    assert r.status == 201
    assert (await client.get("/v2/team/app/manifests/1.0")).status == 200
    assert (await client.head("/v2/team/app/manifests/1.0")).status == 200  # HEAD is no pull
    assert (await client.get(f"/v2/team/app/blobs/{digest}")).status == 200
    assert (await client.get("/v2/team/app/manifests/nope")).status == 404  # failures publish nothing
    assert (await client.delete("/v2/team/app/manifests/1.0")).status == 202

    seen: list[RegistryEvent] = client.seen  # type: ignore[attr-defined]
    got = [(e.action, e.kind, e.repository, e.digest, e.tag) for e in seen]
    assert got == [
        ("push", "blob", "team/app", digest, None),
        ("push", "manifest", "team/app", mdigest, "1.0"),
        ("pull", "manifest", "team/app", mdigest, "1.0"),
        ("pull", "blob", "team/app", digest, None),
        ("delete", "tag", "team/app", None, "1.0"),
    ]
    assert seen[0].actor.user_agent == "events-test/1"
    assert seen[0].actor.addr == "127.0.0.1"
    assert seen[1].media_type == "application/vnd.oci.image.manifest.v1+json"
    assert seen[1].size == len(manifest)
