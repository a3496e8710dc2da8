"""Manifests, tags, catalog and referrers endpoints (end-3, end-7, end-8a/b, end-9, end-12a/b)."""

from __future__ import annotations

import json
import os
import re
from urllib.parse import parse_qs

import pytest

from tests.support.http import DOCKER_LIST, DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST, Client, error_codes, sha256


@pytest.fixture()
def c(moorage) -> Client:  # noqa: ANN001
    return Client(moorage.url)


def test_put_get_head_by_tag_and_digest_bytes_exact(c: Client) -> None:
    digest, body = c.push_image("m/exact", "v1")
    for ref in ("v1", digest):
        r = c.req("GET", f"/v2/m/exact/manifests/{ref}", headers={"Accept": OCI_MANIFEST})
        assert r.status_code == 200
        assert r.content == body  # byte for byte, whitespace included
        assert r.headers["Content-Type"] == OCI_MANIFEST
        assert r.headers["Docker-Content-Digest"] == digest
        h = c.req("HEAD", f"/v2/m/exact/manifests/{ref}")
        assert h.status_code == 200
        assert int(h.headers["Content-Length"]) == len(body)
        assert h.headers["Docker-Content-Digest"] == digest


def test_put_returns_location_and_digest(c: Client) -> None:
    cfg = c.push_blob("m/loc", b"{}")
    doc = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cfg, "size": 2},
        "layers": [],
    }
    body = json.dumps(doc).encode()
    r = c.push_manifest("m/loc", "latest", body)
    assert r.status_code == 201
    assert r.headers["Docker-Content-Digest"] == sha256(body)
    assert r.headers["Location"].endswith(f"/v2/m/loc/manifests/{sha256(body)}")


def test_docker_schema2_and_manifest_list(c: Client) -> None:
    d1, _ = c.push_image("m/docker", None, media_type=DOCKER_MANIFEST)
    d2, _ = c.push_image("m/docker", None, media_type=DOCKER_MANIFEST)
    lst = {
        "schemaVersion": 2,
        "mediaType": DOCKER_LIST,
        "manifests": [
            {"mediaType": DOCKER_MANIFEST, "digest": d1, "size": 1, "platform": {"architecture": "amd64", "os": "linux"}},
            {"mediaType": DOCKER_MANIFEST, "digest": d2, "size": 1, "platform": {"architecture": "arm64", "os": "linux"}},
        ],
    }
    r = c.push_manifest("m/docker", "multi", lst, DOCKER_LIST)
    assert r.status_code == 201, r.text
    r = c.req("GET", "/v2/m/docker/manifests/multi", headers={"Accept": f"{DOCKER_LIST}, {DOCKER_MANIFEST}"})
    assert r.headers["Content-Type"] == DOCKER_LIST
    # a client that only accepts single manifests cannot read the list
    r = c.req("GET", "/v2/m/docker/manifests/multi", headers={"Accept": DOCKER_MANIFEST})
    assert r.status_code == 404 and error_codes(r) == ["MANIFEST_UNKNOWN"]


def test_index_requires_children_present(c: Client) -> None:
    child, _ = c.push_image("m/index", None)
    idx = {
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [
            {"mediaType": OCI_MANIFEST, "digest": child, "size": 10},
            {"mediaType": OCI_MANIFEST, "digest": sha256(b"not pushed"), "size": 10},
        ],
    }
    r = c.push_manifest("m/index", "bad", idx, OCI_INDEX)
    assert r.status_code == 400 and error_codes(r) == ["MANIFEST_BLOB_UNKNOWN"]
    idx["manifests"].pop()
    assert c.push_manifest("m/index", "good", idx, OCI_INDEX).status_code == 201


def test_tag_repoint_index_to_manifest_and_back(c: Client) -> None:
    child, _ = c.push_image("m/repoint", None)
    idx = json.dumps(
        {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [{"mediaType": OCI_MANIFEST, "digest": child, "size": 10}]}
    ).encode()
    assert c.push_manifest("m/repoint", "t", idx, OCI_INDEX).status_code == 201
    assert c.req("GET", "/v2/m/repoint/manifests/t").headers["Content-Type"] == OCI_INDEX
    other, _ = c.push_image("m/repoint", "t")
    r = c.req("GET", "/v2/m/repoint/manifests/t")
    assert r.headers["Content-Type"] == OCI_MANIFEST and r.headers["Docker-Content-Digest"] == other
    assert c.push_manifest("m/repoint", "t", idx, OCI_INDEX).status_code == 201
    assert c.req("GET", "/v2/m/repoint/manifests/t").headers["Docker-Content-Digest"] == sha256(idx)


def test_missing_blobs_reported_each(c: Client) -> None:
    missing = [sha256(os.urandom(8)) for _ in range(2)]
    doc = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": missing[0], "size": 2},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": missing[1], "size": 3}],
    }
    r = c.push_manifest("m/missing", "x", doc)
    assert r.status_code == 400
    assert error_codes(r) == ["MANIFEST_BLOB_UNKNOWN", "MANIFEST_BLOB_UNKNOWN"]
    assert {e["detail"]["digest"] for e in r.json()["errors"]} == set(missing)


def test_blob_of_another_repository_does_not_count(c: Client) -> None:
    layer = c.push_blob("m/other-a", b"layer in a only")
    cfg = c.push_blob("m/other-b", b"{}")
    doc = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cfg, "size": 2},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": layer, "size": 15}],
    }
    r = c.push_manifest("m/other-b", "x", doc)
    assert r.status_code == 400 and error_codes(r) == ["MANIFEST_BLOB_UNKNOWN"]


@pytest.mark.parametrize(
    "body,ctype",
    [
        (b"not json", OCI_MANIFEST),
        (b"[]", OCI_MANIFEST),
        (json.dumps({"schemaVersion": 1, "name": "x"}).encode(), "application/vnd.docker.distribution.manifest.v1+json"),
        (json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "layers": []}).encode(), OCI_MANIFEST),
        (json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []}).encode(), OCI_MANIFEST),
        (
            json.dumps(
                {
                    "schemaVersion": 2,
                    "mediaType": OCI_MANIFEST,
                    "config": {"mediaType": "x", "digest": "sha256:zz", "size": 1},
                    "layers": [],
                }
            ).encode(),
            OCI_MANIFEST,
        ),
        (
            json.dumps(
                {
                    "schemaVersion": 2,
                    "mediaType": OCI_MANIFEST,
                    "config": {"mediaType": "x", "digest": "sha256:" + "0" * 64, "size": -1},
                    "layers": [],
                }
            ).encode(),
            OCI_MANIFEST,
        ),
        (json.dumps({"schemaVersion": 2, "config": {}, "layers": []}).encode(), "text/plain"),
    ],
)
def test_malformed_manifests(c: Client, body: bytes, ctype: str) -> None:
    r = c.push_manifest("m/bad", "x", body, ctype)
    assert r.status_code == 400, r.text
    assert error_codes(r) == ["MANIFEST_INVALID"]


def test_oversized_manifest_413(c: Client) -> None:
    body = b'{"schemaVersion": 2, "pad": "' + b"x" * (4 * 1024 * 1024 + 10) + b'"}'
    r = c.push_manifest("m/big", "x", body)
    assert r.status_code == 413
    assert error_codes(r) == ["MANIFEST_INVALID"]


def test_put_by_digest_must_match(c: Client) -> None:
    cfg = c.push_blob("m/bydigest", b"{}")
    body = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cfg, "size": 2},
            "layers": [],
        }
    ).encode()
    r = c.push_manifest("m/bydigest", sha256(b"something else"), body)
    assert r.status_code == 400 and error_codes(r) == ["DIGEST_INVALID"]
    r = c.push_manifest("m/bydigest", sha256(body), body)
    assert r.status_code == 201
    assert c.req("GET", f"/v2/m/bydigest/manifests/{sha256(body)}").content == body


def test_unknown_manifest_and_repo(c: Client) -> None:
    c.push_image("m/known", "v1")
    r = c.req("GET", "/v2/m/known/manifests/nope")
    assert r.status_code == 404 and error_codes(r) == ["MANIFEST_UNKNOWN"]
    r = c.req("GET", "/v2/m/never/manifests/v1")
    assert r.status_code == 404 and error_codes(r)[0] in ("NAME_UNKNOWN", "MANIFEST_UNKNOWN")
    assert c.req("HEAD", "/v2/m/known/manifests/nope").status_code == 404
    r = c.req("GET", "/v2/m/known/manifests/bad tag!")
    assert r.status_code in (400, 404) and r.status_code != 500


def test_delete_tag_keeps_other_tags(c: Client) -> None:
    digest, _ = c.push_image("m/deltag", "a")
    for t in ("b", "c"):
        c.push_manifest("m/deltag", t, c.req("GET", f"/v2/m/deltag/manifests/{digest}").content)
    assert c.req("DELETE", "/v2/m/deltag/manifests/a").status_code == 202
    assert c.req("GET", "/v2/m/deltag/manifests/a").status_code == 404
    assert c.req("GET", "/v2/m/deltag/manifests/b").status_code == 200
    assert c.req("GET", f"/v2/m/deltag/manifests/{digest}").status_code == 200
    assert c.req("GET", "/v2/m/deltag/tags/list").json()["tags"] == ["b", "c"]
    assert c.req("DELETE", "/v2/m/deltag/manifests/a").status_code == 404


def test_delete_by_digest_removes_manifest_and_tags(c: Client) -> None:
    digest, _ = c.push_image("m/deldigest", "x")
    keep, _ = c.push_image("m/deldigest", "keep")
    r = c.req("DELETE", f"/v2/m/deldigest/manifests/{digest}")
    assert r.status_code == 202
    for ref in ("x", digest):
        assert c.req("GET", f"/v2/m/deldigest/manifests/{ref}").status_code == 404
        assert c.req("HEAD", f"/v2/m/deldigest/manifests/{ref}").status_code == 404
    assert c.req("GET", "/v2/m/deldigest/tags/list").json()["tags"] == ["keep"]
    assert c.req("DELETE", f"/v2/m/deldigest/manifests/{digest}").status_code == 404


_LINK = re.compile(r'^<(?P<path>/v2/[^?>]+)\?(?P<query>[^>]+)>; rel="next"$')


def _walk_pages(c: Client, path: str, key: str, n: int, everything: list[str]) -> list[list[str]]:
    """Follow ``Link`` from ``path?n=N``; assert every page's size and every Link exactly.

    A server that ignores ``n`` (one big page), pads or short-changes pages, loses or repeats
    an entry between pages, or writes a Link that is not RFC 5988 ``<path?n=N&last=X>;
    rel="next"`` fails here.  Returns the pages.
    """
    pages: list[list[str]] = []
    url: str | None = f"{path}?n={n}"
    while url is not None:
        assert len(pages) <= len(everything) // max(n, 1) + 1, f"more pages than {len(everything)} entries allow"
        r = c.req("GET", url)
        assert r.status_code == 200, r.text
        page = r.json()[key]
        pages.append(page)
        link = r.headers.get("Link")
        if link is None:
            url = None
            continue
        m = _LINK.match(link)
        assert m, f"Link header not RFC 5988 '<...?n=N&last=X>; rel=\"next\"': {link!r}"
        assert m["path"] == path, link
        query = parse_qs(m["query"], keep_blank_values=True, strict_parsing=True)
        assert query == {"n": [str(n)], "last": [page[-1]]}, (link, page)
        url = link[1 : link.index(">")]
    done = 0
    for i, page in enumerate(pages):
        rest = len(everything) - done
        assert len(page) == min(n, rest), f"page {i}: {len(page)} entries, expected {min(n, rest)} (n={n})"
        done += len(page)
    # the last page carries no Link; a Link is sent only when something follows (so a final
    # full page has none either, and no empty page is ever needed)
    assert len(pages) == max(1, -(-len(everything) // n)), [len(p) for p in pages]
    assert [x for p in pages for x in p] == everything
    return pages


def test_tags_pagination(c: Client) -> None:
    digest, body = c.push_image("m/tags", "t00")
    names = [f"t{i:02d}" for i in range(12)] + ["A", "Z", "_under", "v1.0", "v1.0-rc"]
    for t in names[1:]:
        assert c.push_manifest("m/tags", t, body).status_code == 201
    r = c.req("GET", "/v2/m/tags/tags/list")
    assert "Link" not in r.headers
    everything = r.json()
    assert everything["name"] == "m/tags"
    assert everything["tags"] == sorted(names)  # lexical (byte) order
    for n in (1, 5, 16, 17, 18, 100):  # 17 tags: 17 pages, 5+5+5+2, 16+1, one full page, ...
        pages = _walk_pages(c, "/v2/m/tags/tags/list", "tags", n, sorted(names))
        assert r.json()["name"] == "m/tags"
        if n == 5:
            assert [len(p) for p in pages] == [5, 5, 5, 2]
    r = c.req("GET", "/v2/m/tags/tags/list?n=0")
    assert r.status_code == 200 and r.json()["tags"] == [] and "Link" not in r.headers
    r = c.req("GET", "/v2/m/tags/tags/list", params={"n": 3, "last": "t05"})
    assert r.json()["tags"] == ["t06", "t07", "t08"]
    assert r.headers["Link"] == '</v2/m/tags/tags/list?n=3&last=t08>; rel="next"'
    r = c.req("GET", "/v2/m/tags/tags/list", params={"last": "t05"})  # no n: everything after last
    assert r.json()["tags"] == [t for t in sorted(names) if t > "t05"] and "Link" not in r.headers
    r = c.req("GET", "/v2/m/tags/tags/list", params={"last": "zzz"})
    assert r.json()["tags"] == []
    for bad in ("-1", "abc", "1e3", "5 "):
        r = c.req("GET", f"/v2/m/tags/tags/list?n={bad}")
        assert r.status_code == 400 and error_codes(r) == ["PAGINATION_NUMBER_INVALID"], (bad, r.text)
    r = c.req("GET", "/v2/m/no-such-repo/tags/list")
    assert r.status_code == 404 and error_codes(r) == ["NAME_UNKNOWN"]
    r = c.req("GET", "/v2/m/no-such-repo/tags/list?n=0")
    assert r.status_code == 404 and error_codes(r) == ["NAME_UNKNOWN"]


def test_catalog_pagination(c: Client) -> None:
    # names whose byte order differs from locale collation (-, ., _) and a "/" that the Link must escape
    names = [f"cat/r{i:02d}" for i in range(7)] + ["cat/r-dash", "cat/r_0", "cat/r.0", "cat/sub/deep"]
    for n in names:
        c.push_image(n, "v")
    r = c.req("GET", "/v2/_catalog")
    assert "Link" not in r.headers
    allnames = r.json()["repositories"]
    assert set(names) <= set(allnames)
    assert allnames == sorted(allnames, key=lambda s: s.encode())  # byte order, not collation
    assert len(allnames) == len(set(allnames))
    for n in (1, 3, len(allnames) - 1, len(allnames), len(allnames) + 1):
        pages = _walk_pages(c, "/v2/_catalog", "repositories", n, allnames)
        assert len(pages) == max(1, -(-len(allnames) // n))
    r = c.req("GET", "/v2/_catalog?n=0")
    assert r.status_code == 200 and r.json()["repositories"] == [] and "Link" not in r.headers
    i = allnames.index("cat/r02")
    r = c.req("GET", "/v2/_catalog", params={"n": 2, "last": "cat/r02"})
    assert r.json()["repositories"] == allnames[i + 1 : i + 3]
    assert r.headers["Link"] == f'</v2/_catalog?n=2&last={allnames[i + 2].replace("/", "%2F")}>; rel="next"'
    assert c.req("GET", "/v2/_catalog", params={"last": "zzzz"}).json()["repositories"] == []
    r = c.req("GET", "/v2/_catalog?n=x")
    assert r.status_code == 400 and error_codes(r) == ["PAGINATION_NUMBER_INVALID"]


def _artifact(c: Client, repo: str, subject_digest: str, subject_size: int, artifact_type: str, annotations=None):  # noqa: ANN001, ANN202
    empty = c.push_blob(repo, b"{}")
    blob = c.push_blob(repo, os.urandom(64))
    doc = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": artifact_type,
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": empty, "size": 2},
        "layers": [{"mediaType": "application/octet-stream", "digest": blob, "size": 64}],
        "subject": {"mediaType": OCI_MANIFEST, "digest": subject_digest, "size": subject_size},
    }
    if annotations:
        doc["annotations"] = annotations
    body = json.dumps(doc).encode()
    r = c.push_manifest(repo, sha256(body), body)
    assert r.status_code == 201, r.text
    assert r.headers["OCI-Subject"] == subject_digest
    return sha256(body), body


def test_referrers_api(c: Client) -> None:
    subject, sbody = c.push_image("m/ref", "v1")
    sig, sig_body = _artifact(c, "m/ref", subject, len(sbody), "application/vnd.example.sig", {"k": "v"})
    sbom, _ = _artifact(c, "m/ref", subject, len(sbody), "application/vnd.example.sbom")
    r = c.req("GET", f"/v2/m/ref/referrers/{subject}")
    assert r.status_code == 200
    assert r.headers["Content-Type"].startswith(OCI_INDEX)
    idx = r.json()
    assert idx["schemaVersion"] == 2 and idx["mediaType"] == OCI_INDEX
    by_digest = {m["digest"]: m for m in idx["manifests"]}
    assert set(by_digest) == {sig, sbom}
    assert by_digest[sig]["artifactType"] == "application/vnd.example.sig"
    assert by_digest[sig]["annotations"] == {"k": "v"}
    assert by_digest[sig]["size"] == len(sig_body)
    assert by_digest[sig]["mediaType"] == OCI_MANIFEST
    r = c.req("GET", f"/v2/m/ref/referrers/{subject}", params={"artifactType": "application/vnd.example.sbom"})
    assert r.headers["OCI-Filters-Applied"] == "artifactType"
    assert [m["digest"] for m in r.json()["manifests"]] == [sbom]
    # a subject with no referrers (even unknown) gives an empty index, not 404
    r = c.req("GET", f"/v2/m/ref/referrers/{sha256(b'nothing')}")
    assert r.status_code == 200 and r.json()["manifests"] == []
    r = c.req("GET", "/v2/m/ref/referrers/sha256:bad")
    assert r.status_code == 400 and error_codes(r) == ["DIGEST_INVALID"]
    # deleting a referrer removes it from the list
    assert c.req("DELETE", f"/v2/m/ref/manifests/{sig}").status_code == 202
    assert [m["digest"] for m in c.req("GET", f"/v2/m/ref/referrers/{subject}").json()["manifests"]] == [sbom]


def test_subject_may_be_pushed_before_its_subject(c: Client) -> None:
    absent = sha256(b"subject not here yet")
    d, _ = _artifact(c, "m/early", absent, 100, "application/vnd.example.early")
    assert [m["digest"] for m in c.req("GET", f"/v2/m/early/referrers/{absent}").json()["manifests"]] == [d]


def test_artifact_with_custom_config_media_type(c: Client) -> None:
    cfg = c.push_blob("m/art", b'{"x":1}')
    doc = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.acme.rocket.config", "digest": cfg, "size": 7},
        "layers": [],
    }
    assert c.push_manifest("m/art", "v1", doc).status_code == 201


def test_descriptor_size_must_match_blob(c: Client) -> None:
    layer = c.push_blob("m/size", b"twelve bytes")
    cfg = c.push_blob("m/size", b"{}")
    doc = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cfg, "size": 2},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": layer, "size": 13}],
    }
    r = c.push_manifest("m/size", "x", doc)
    assert r.status_code == 400 and error_codes(r) == ["SIZE_INVALID"]
    assert r.json()["errors"][0]["detail"] == {"digest": layer, "declared": 13, "actual": 12}
    doc["layers"][0]["size"] = 12
    assert c.push_manifest("m/size", "x", doc).status_code == 201


def test_foreign_layers_need_not_be_pushed(c: Client) -> None:
    """Windows images reference non-distributable base layers by URL (Distribution accepts them)."""
    cfg = c.push_blob("m/foreign", b"{}")
    own = c.push_blob("m/foreign", b"own layer")
    doc = {
        "schemaVersion": 2,
        "mediaType": DOCKER_MANIFEST,
        "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "digest": cfg, "size": 2},
        "layers": [
            {
                "mediaType": "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
                "digest": sha256(b"base"),
                "size": 4,
                "urls": ["https://example.invalid/base.tar.gz"],
            },
            {"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "digest": own, "size": 9},
        ],
    }
    assert c.push_manifest("m/foreign", "win", doc, DOCKER_MANIFEST).status_code == 201
    # without urls the same layer must be present
    del doc["layers"][0]["urls"]
    r = c.push_manifest("m/foreign", "win2", doc, DOCKER_MANIFEST)
    assert r.status_code == 400 and error_codes(r) == ["MANIFEST_BLOB_UNKNOWN"]
