"""``storage.redirect: true`` with S3: blob GETs answer 307 to a presigned URL (Range included)."""

from __future__ import annotations

import hashlib
import os
import uuid
from pathlib import Path

import pytest
import requests

from tests.support.postgres import create_database
from tests.support.registry_proc import start_moorage

pytestmark = pytest.mark.services


def test_blob_get_redirects_to_presigned_url(rgw, postgres_url: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    suffix = uuid.uuid4().hex[:10]
    env = {
        "MOORAGE_STORAGE__DRIVER": "s3",
        "MOORAGE_STORAGE__REDIRECT": "true",
        "MOORAGE_STORAGE__S3__BUCKET": f"redirect-{suffix}",
        "MOORAGE_STORAGE__S3__PREFIX": "some/prefix",
        "MOORAGE_STORAGE__S3__ENDPOINT_URL": rgw.endpoint_url,
        "MOORAGE_STORAGE__S3__ACCESS_KEY": rgw.access_key,
        "MOORAGE_STORAGE__S3__SECRET_KEY": rgw.secret_key,
        "MOORAGE_STORAGE__S3__REGION": rgw.region,
        "MOORAGE_DATABASE__URL": create_database(postgres_url, f"redirect_{suffix}"),
        "MOORAGE_DATABASE__AUTO_MIGRATE": "true",
    }
    srv = start_moorage(tmp_path / "srv", env=env)
    try:
        data = os.urandom(300_000)
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        r = requests.post(
            f"{srv.url}/v2/r/blobs/uploads/",
            params={"digest": digest},
            data=data,
            headers={"Content-Type": "application/octet-stream"},
            timeout=30,
        )
        assert r.status_code == 201, r.text
        r = requests.get(f"{srv.url}/v2/r/blobs/{digest}", allow_redirects=False, timeout=30)
        assert r.status_code == 307
        location = r.headers["Location"]
        assert location.startswith(f"{rgw.endpoint_url}/redirect-{suffix}/some/prefix/blobs/sha256/")
        assert r.headers["Docker-Content-Digest"] == digest
        # the presigned URL needs no credentials; Range works against S3 directly
        assert requests.get(location, timeout=30).content == data
        part = requests.get(location, headers={"Range": "bytes=10-19"}, timeout=30)
        assert part.status_code == 206 and part.content == data[10:20]
        # a client following the redirect gets the bytes
        assert requests.get(f"{srv.url}/v2/r/blobs/{digest}", timeout=30).content == data
        # HEAD is answered by the registry itself; unknown blobs are 404, not a redirect
        head = requests.head(f"{srv.url}/v2/r/blobs/{digest}", timeout=30)
        assert head.status_code == 200 and int(head.headers["Content-Length"]) == len(data)
        missing = "sha256:" + "0" * 64
        assert requests.get(f"{srv.url}/v2/r/blobs/{missing}", allow_redirects=False, timeout=30).status_code == 404
    finally:
        srv.stop()
