"""Handler checks against the whole app in-process (aiohttp's test client over SQLite in a temp dir and
the in-memory blob store, tests/support/inproc.py): pagination page sizes, the upload state
machine, error bodies and media types -- and, through the memory store, what storage holds
afterwards.  The unit tier: no process is started.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient

from tests.support.inproc import app_client

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@pytest.fixture()
async def client(tmp_path: Path) -> AsyncIterator[TestClient]:
    async with app_client(tmp_path) as c:
        yield c


async def push_blob(client: TestClient, repo: str, data: bytes) -> str:
    r = await client.post(f"/v2/{repo}/blobs/uploads/", params={"digest": sha256(data)}, data=data)
    assert r.status == 201, await r.text()
    return sha256(data)


async def push_manifest(client: TestClient, repo: str, tag: str, layer: bytes = b"layer") -> bytes:
    config = json.dumps({"architecture": "amd64", "os": "linux"}).encode()
    doc = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": await push_blob(client, repo, config),
            "size": len(config),
        },
        "layers": [
            {
                "mediaType": "application/vnd.oci.image.layer.v1.tar",
                "digest": await push_blob(client, repo, layer),
                "size": len(layer),
            }
        ],
    }
    body = json.dumps(doc).encode()
    r = await client.put(f"/v2/{repo}/manifests/{tag}", data=body, headers={"Content-Type": OCI_MANIFEST})
    assert r.status == 201, await r.text()
    return body


async def pages(client: TestClient, path: str, key: str, n: int) -> list[list[str]]:
    """Every page of a paginated listing, following ``Link`` as a client does."""
    out: list[list[str]] = []
    url: str | None = f"{path}?n={n}"
    while url:
        r = await client.get(url)
        assert r.status == 200, await r.text()
        out.append((await r.json())[key])
        link = r.headers.get("Link")
        url = link.split(";")[0].strip("<> ") if link else None
        assert len(out) < 50, "pagination does not end"
    return out


async def test_catalog_pages_hold_exactly_n_and_cover_every_repository(client: TestClient) -> None:
    repos = [f"team/app{i}" for i in range(5)]
    for repo in repos:
        await push_manifest(client, repo, "v1")
    got = await pages(client, "/v2/_catalog", "repositories", 2)
    assert [len(p) for p in got] == [2, 2, 1]  # a server ignoring n fails here
    assert [r for p in got for r in p] == sorted(repos)


async def test_tag_pages_hold_exactly_n(client: TestClient) -> None:
    for tag in ("a", "b", "c", "d"):
        await push_manifest(client, "team/tags", tag)
    got = await pages(client, "/v2/team/tags/tags/list", "tags", 3)
    assert got == [["a", "b", "c"], ["d"]]


async def test_upload_state_machine(client: TestClient) -> None:
    """POST -> 202 Range 0-0; in-order PATCH moves Range; an out-of-order PATCH is 416 and leaves
    the session as it was; a PUT whose digest does not match stores nothing."""
    blobs = client.blobs.space.blobs  # type: ignore[attr-defined]
    r = await client.post("/v2/sm/blobs/uploads/")
    assert r.status == 202 and r.headers["Range"] == "0-0"
    loc = r.headers["Location"]
    r = await client.patch(loc, data=b"0123456789", headers={"Content-Range": "0-9", "Content-Type": "application/octet-stream"})
    assert r.status == 202 and r.headers["Range"] == "0-9"
    loc = r.headers["Location"]
    r = await client.patch(loc, data=b"x" * 10, headers={"Content-Range": "20-29", "Content-Type": "application/octet-stream"})
    assert r.status == 416
    status = await client.get(loc)
    assert status.status == 204 and status.headers["Range"] == "0-9"
    wrong = sha256(b"something else")
    r = await client.put(loc, params={"digest": wrong}, data=b"abc")
    assert r.status == 400 and (await r.json())["errors"][0]["code"] == "DIGEST_INVALID"
    assert wrong not in blobs and sha256(b"0123456789abc") not in blobs


async def test_errors_are_spec_json_with_their_codes(client: TestClient) -> None:
    await push_manifest(client, "team/known", "v1")
    cases = [
        ("GET", f"/v2/team/none/blobs/{sha256(b'absent')}", 404, "BLOB_UNKNOWN"),
        ("GET", "/v2/team/known/manifests/v2", 404, "MANIFEST_UNKNOWN"),
        ("GET", "/v2/team/none/manifests/latest", 404, "NAME_UNKNOWN"),
        ("DELETE", f"/v2/team/known/manifests/{sha256(b'absent')}", 404, "MANIFEST_UNKNOWN"),
        ("GET", "/v2/team/none/blobs/sha256:nothex", 400, "DIGEST_INVALID"),
        ("GET", "/v2/Bad..Name/tags/list", 400, "NAME_INVALID"),
    ]
    for method, path, status, code in cases:
        r = await client.request(method, path)
        assert r.status == status, (path, r.status, await r.text())
        assert r.headers["Content-Type"].startswith("application/json"), path
        assert code in [e["code"] for e in (await r.json())["errors"]], (path, await r.text())


async def test_manifest_is_served_byte_for_byte_with_its_media_type(client: TestClient) -> None:
    body = await push_manifest(client, "team/media", "v1")
    for method in ("GET", "HEAD"):
        r = await client.request(method, "/v2/team/media/manifests/v1", headers={"Accept": OCI_MANIFEST})
        assert r.status == 200
        assert r.headers["Content-Type"] == OCI_MANIFEST
        assert r.headers["Docker-Content-Digest"] == sha256(body)
        assert int(r.headers["Content-Length"]) == len(body)
        if method == "GET":
            assert await r.read() == body


async def test_a_re_push_never_replaces_the_stored_blob(client: TestClient) -> None:
    """Storage keeps the first bytes object: the second push of one digest only drops its upload."""
    blobs = client.blobs.space.blobs  # type: ignore[attr-defined]
    digest = await push_blob(client, "team/keep", b"same bytes")
    first = blobs[digest]
    await push_blob(client, "team/other", b"same bytes")
    assert blobs[digest] is first
    assert client.blobs.space.uploads == {}  # type: ignore[attr-defined]
