"""OCI Distribution v1.1 blob and upload endpoints against a real server (end-2, end-4a/b, end-5, end-6, end-10, end-11, end-13)."""

from __future__ import annotations

import json
import os

import pytest

from tests.support.http import Client, error_codes, sha256


@pytest.fixture()
def c(moorage) -> Client:  # noqa: ANN001
    return Client(moorage.url)


def test_base_endpoint(c: Client) -> None:
    r = c.req("GET", "/v2/")
    assert r.status_code == 200
    assert r.headers["Docker-Distribution-API-Version"] == "registry/2.0"


def test_monolithic_post_and_get_head(c: Client) -> None:
    data = os.urandom(300_000)
    digest = sha256(data)
    r = c.req("POST", "/v2/mono/app/blobs/uploads/", params={"digest": digest}, data=data)
    assert r.status_code == 201
    assert r.headers["Docker-Content-Digest"] == digest
    assert r.headers["Location"].endswith(f"/v2/mono/app/blobs/{digest}")
    h = c.req("HEAD", f"/v2/mono/app/blobs/{digest}")
    assert h.status_code == 200
    assert int(h.headers["Content-Length"]) == len(data)
    assert h.headers["Docker-Content-Digest"] == digest
    g = c.req("GET", f"/v2/mono/app/blobs/{digest}")
    assert g.status_code == 200 and g.content == data
    # the Location works as given (relative, resolved against the registry)
    assert c.req("GET", r.headers["Location"]).content == data


def test_post_then_put(c: Client) -> None:
    data = b"post-then-put" * 1000
    r = c.req("POST", "/v2/pp/blobs/uploads/")
    assert r.status_code == 202
    loc = r.headers["Location"]
    assert r.headers["Range"] == "0-0"
    assert r.headers.get("Docker-Upload-UUID")
    r = c.req("PUT", loc, params={"digest": sha256(data)}, data=data)
    assert r.status_code == 201, r.text
    assert c.req("GET", f"/v2/pp/blobs/{sha256(data)}").content == data


def test_chunked_upload_in_order_and_status(c: Client) -> None:
    data = os.urandom(3 * 65536 + 17)
    chunks = [data[i : i + 65536] for i in range(0, len(data), 65536)]
    loc = c.req("POST", "/v2/chunked/blobs/uploads/").headers["Location"]
    offset = 0
    for chunk in chunks:
        r = c.req(
            "PATCH",
            loc,
            data=chunk,
            headers={"Content-Range": f"{offset}-{offset + len(chunk) - 1}", "Content-Type": "application/octet-stream"},
        )
        assert r.status_code == 202, r.text
        offset += len(chunk)
        assert r.headers["Range"] == f"0-{offset - 1}"
        loc = r.headers["Location"]
    st = c.req("GET", loc)
    assert st.status_code == 204
    assert st.headers["Range"] == f"0-{len(data) - 1}"
    r = c.req("PUT", loc, params={"digest": sha256(data)})
    assert r.status_code == 201
    assert c.req("GET", f"/v2/chunked/blobs/{sha256(data)}").content == data


def test_out_of_order_chunk_is_416_and_upload_survives(c: Client) -> None:
    loc = c.req("POST", "/v2/ooo/blobs/uploads/").headers["Location"]
    assert c.req("PATCH", loc, data=b"a" * 10, headers={"Content-Range": "0-9"}).status_code == 202
    r = c.req("PATCH", loc, data=b"b" * 10, headers={"Content-Range": "20-29"})
    assert r.status_code == 416
    assert r.headers["Range"] == "0-9"
    # a malformed range is also refused
    r = c.req("PATCH", loc, data=b"b" * 10, headers={"Content-Range": "ten-twenty"})
    assert r.status_code == 416
    # a range that disagrees with Content-Length
    r = c.req("PATCH", loc, data=b"b" * 10, headers={"Content-Range": "10-30"})
    assert r.status_code == 416
    r = c.req("PATCH", loc, data=b"b" * 10, headers={"Content-Range": "10-19"})
    assert r.status_code == 202
    data = b"a" * 10 + b"b" * 10
    assert c.req("PUT", loc, params={"digest": sha256(data)}).status_code == 201


def test_streaming_patch_without_content_range(c: Client) -> None:
    """What docker and podman send: one PATCH, chunked transfer encoding, no Content-Range."""
    data = os.urandom(2_500_000)

    def gen():  # noqa: ANN202
        for i in range(0, len(data), 100_000):
            yield data[i : i + 100_000]

    loc = c.req("POST", "/v2/stream/blobs/uploads/").headers["Location"]
    r = c.req("PATCH", loc, data=gen())
    assert r.status_code == 202
    assert r.headers["Range"] == f"0-{len(data) - 1}"
    r = c.req("PUT", r.headers["Location"], params={"digest": sha256(data)})
    assert r.status_code == 201
    assert c.req("GET", f"/v2/stream/blobs/{sha256(data)}").content == data


def test_put_with_final_chunk(c: Client) -> None:
    loc = c.req("POST", "/v2/finalchunk/blobs/uploads/").headers["Location"]
    c.req("PATCH", loc, data=b"x" * 100, headers={"Content-Range": "0-99"})
    r = c.req("PUT", loc, params={"digest": sha256(b"x" * 100 + b"y" * 50)}, data=b"y" * 50, headers={"Content-Range": "100-149"})
    assert r.status_code == 201, r.text


def test_digest_mismatch_stores_nothing(c: Client) -> None:
    data = b"real content"
    wrong = sha256(b"other content")
    r = c.req("POST", "/v2/mismatch/blobs/uploads/", params={"digest": wrong}, data=data)
    assert r.status_code == 400
    assert error_codes(r) == ["DIGEST_INVALID"]
    assert c.req("HEAD", f"/v2/mismatch/blobs/{wrong}").status_code == 404
    assert c.req("HEAD", f"/v2/mismatch/blobs/{sha256(data)}").status_code == 404
    # chunked: the session is gone after a failed completion
    loc = c.req("POST", "/v2/mismatch/blobs/uploads/").headers["Location"]
    c.req("PATCH", loc, data=data)
    r = c.req("PUT", loc, params={"digest": wrong})
    assert error_codes(r) == ["DIGEST_INVALID"]
    assert c.req("GET", loc).status_code == 404


def test_sha512_digest(c: Client) -> None:
    import hashlib

    data = os.urandom(5000)
    digest = "sha512:" + hashlib.sha512(data).hexdigest()
    loc = c.req("POST", "/v2/sha512/blobs/uploads/").headers["Location"]
    c.req("PATCH", loc, data=data)
    r = c.req("PUT", loc, params={"digest": digest})
    assert r.status_code == 201, r.text
    assert r.headers["Docker-Content-Digest"] == digest
    assert c.req("GET", f"/v2/sha512/blobs/{digest}").content == data


def test_bad_digests_and_missing_digest(c: Client) -> None:
    for bad in ("sha256:xyz", "md5:" + "0" * 32, "sha256:" + "A" * 64, "nocolon"):
        r = c.req("HEAD", f"/v2/bd/blobs/{bad}")
        assert r.status_code in (400, 404), bad
        r = c.req("GET", f"/v2/bd/blobs/{bad}")
        assert r.status_code in (400, 404)
        assert error_codes(r)[0] in ("DIGEST_INVALID", "BLOB_UNKNOWN", "UNSUPPORTED")
    loc = c.req("POST", "/v2/bd/blobs/uploads/").headers["Location"]
    r = c.req("PUT", loc)
    assert r.status_code == 400 and error_codes(r) == ["DIGEST_INVALID"]


def test_unknown_blob_and_upload(c: Client) -> None:
    r = c.req("GET", f"/v2/unknown/blobs/{sha256(b'nope')}")
    assert r.status_code == 404 and error_codes(r) == ["BLOB_UNKNOWN"]
    r = c.req("GET", "/v2/unknown/blobs/uploads/00000000-0000-0000-0000-000000000000")
    assert r.status_code == 404 and error_codes(r) == ["BLOB_UPLOAD_UNKNOWN"]
    r = c.req("PATCH", "/v2/unknown/blobs/uploads/not-a-real-id", data=b"x")
    assert r.status_code == 404 and error_codes(r) == ["BLOB_UPLOAD_UNKNOWN"]


def test_upload_session_is_bound_to_its_repository(c: Client) -> None:
    loc = c.req("POST", "/v2/owner/blobs/uploads/").headers["Location"]
    upload_id = loc.rsplit("/", 1)[1]
    r = c.req("PATCH", f"/v2/intruder/blobs/uploads/{upload_id}", data=b"x")
    assert r.status_code == 404


def test_cancel_upload(c: Client) -> None:
    loc = c.req("POST", "/v2/cancel/blobs/uploads/").headers["Location"]
    c.req("PATCH", loc, data=b"abc")
    assert c.req("DELETE", loc).status_code == 204
    assert c.req("GET", loc).status_code == 404
    assert c.req("DELETE", loc).status_code == 404


def test_cross_repository_mount(c: Client) -> None:
    data = os.urandom(4096)
    digest = c.push_blob("mount/src", data)
    r = c.req("POST", "/v2/mount/dst/blobs/uploads/", params={"mount": digest, "from": "mount/src"})
    assert r.status_code == 201
    assert r.headers["Docker-Content-Digest"] == digest
    assert r.headers["Location"].endswith(f"/v2/mount/dst/blobs/{digest}")
    assert c.req("GET", f"/v2/mount/dst/blobs/{digest}").content == data
    # unknown source blob: falls back to a normal upload session
    r = c.req("POST", "/v2/mount/dst/blobs/uploads/", params={"mount": sha256(b"absent"), "from": "mount/src"})
    assert r.status_code == 202 and "/blobs/uploads/" in r.headers["Location"]
    # bad source name: fall back too, never a 500
    r = c.req("POST", "/v2/mount/dst/blobs/uploads/", params={"mount": digest, "from": "../etc"})
    assert r.status_code == 202


def test_repository_cannot_read_blobs_it_never_received(c: Client) -> None:
    digest = c.push_blob("private/a", b"secret layer bytes")
    assert c.req("HEAD", f"/v2/private/a/blobs/{digest}").status_code == 200
    assert c.req("HEAD", f"/v2/private/b/blobs/{digest}").status_code == 404
    assert c.req("GET", f"/v2/private/b/blobs/{digest}").status_code == 404


def test_range_reads(c: Client) -> None:
    data = bytes(range(256)) * 40
    digest = c.push_blob("ranges", data)
    r = c.req("GET", f"/v2/ranges/blobs/{digest}", headers={"Range": "bytes=10-19"})
    assert r.status_code == 206
    assert r.content == data[10:20]
    assert r.headers["Content-Range"] == f"bytes 10-19/{len(data)}"
    r = c.req("GET", f"/v2/ranges/blobs/{digest}", headers={"Range": "bytes=10000-"})
    assert r.status_code == 206 and r.content == data[10000:]
    r = c.req("GET", f"/v2/ranges/blobs/{digest}", headers={"Range": "bytes=-5"})
    assert r.status_code == 206 and r.content == data[-5:]
    r = c.req("GET", f"/v2/ranges/blobs/{digest}", headers={"Range": f"bytes={len(data) + 10}-"})
    assert r.status_code == 416
    r = c.req("GET", f"/v2/ranges/blobs/{digest}", headers={"Range": "bytes=zz-1"})
    assert r.status_code in (416, 200)
    assert r.status_code != 500


def test_blob_delete(c: Client) -> None:
    digest = c.push_blob("del/blob", b"to be deleted")
    assert c.req("DELETE", f"/v2/del/blob/blobs/{digest}").status_code == 202
    assert c.req("HEAD", f"/v2/del/blob/blobs/{digest}").status_code == 404
    r = c.req("DELETE", f"/v2/del/blob/blobs/{digest}")
    assert r.status_code == 404 and error_codes(r) == ["BLOB_UNKNOWN"]


def test_concurrent_pushes_of_the_same_blob(c: Client) -> None:
    from concurrent.futures import ThreadPoolExecutor

    data = os.urandom(1_000_000)

    def push(i: int) -> int:
        cl = Client(c.base)
        loc = cl.req("POST", f"/v2/same/r{i % 3}/blobs/uploads/").headers["Location"]
        cl.req("PATCH", loc, data=data)
        return cl.req("PUT", loc, params={"digest": sha256(data)}).status_code

    with ThreadPoolExecutor(8) as pool:
        assert set(pool.map(push, range(8))) == {201}
    for i in range(3):
        assert c.req("GET", f"/v2/same/r{i}/blobs/{sha256(data)}").content == data


@pytest.mark.parametrize(
    "name",
    [
        "..",
        "a/../b",
        "UPPER",
        "a//b",
        "-lead",
        "trail-",
        "a/./b",
        "x" * 300,
        "a%2F..%2Fb",
        "a\\b",
        "a%20b",
        "%2e%2e/x",
        "a/%2e%2e/b",
    ],
)
def test_hostile_names_rejected(c: Client, name: str) -> None:
    status, _, body = c.raw("POST", f"/v2/{name}/blobs/uploads/")
    assert status in (400, 404), (status, body)
    assert json.loads(body)["errors"][0]["code"] in ("NAME_INVALID", "UNSUPPORTED")


def test_nested_names_allowed(c: Client) -> None:
    digest = c.push_blob("a/b/c/d", b"deep")
    assert c.req("HEAD", f"/v2/a/b/c/d/blobs/{digest}").status_code == 200


def test_unknown_route_and_method(c: Client) -> None:
    r = c.req("GET", "/v2/foo/bar/baz/qux")
    assert r.status_code == 404 and error_codes(r) == ["UNSUPPORTED"]  # a spec code, not NOT_FOUND
    r = c.req("POST", f"/v2/foo/blobs/{sha256(b'x')}")
    assert r.status_code == 405 and error_codes(r) == ["UNSUPPORTED"]
