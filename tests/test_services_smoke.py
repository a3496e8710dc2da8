"""Smoke tests for the throwaway Ceph RGW and PostgreSQL test services."""

from __future__ import annotations

import hashlib
import urllib.error
import urllib.request
import uuid

import pytest

# Fixtures rgw, ceph_cluster, postgres_url, postgres_server come from
# tests/support/service_fixtures.py via tests/conftest.py.
pytestmark = pytest.mark.services

MiB = 1024 * 1024


def test_rgw_s3_round_trip(rgw, ceph_cluster):
    from botocore.exceptions import ClientError

    print(f"ceph/rgw start-up: {ceph_cluster.timings}")
    assert rgw.endpoint_url.startswith("http://127.0.0.1:")
    s3 = rgw.boto3_client()
    bucket = f"smoke-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=bucket)
    assert bucket in [b["Name"] for b in s3.list_buckets()["Buckets"]]

    # plain object
    body = b"hello moorage"
    put = s3.put_object(Bucket=bucket, Key="dir/hello.txt", Body=body)
    assert put["ETag"] == f'"{hashlib.md5(body).hexdigest()}"'
    assert s3.get_object(Bucket=bucket, Key="dir/hello.txt")["Body"].read() == body
    assert s3.get_object(Bucket=bucket, Key="dir/hello.txt", Range="bytes=6-12")["Body"].read() == b"moorage"
    with pytest.raises(ClientError) as ei:
        s3.get_object(Bucket=bucket, Key="missing")
    assert ei.value.response["Error"]["Code"] == "NoSuchKey"

    # multipart: two 5 MiB parts + a short last part
    key = "blobs/sha256/big"
    parts_data = [b"a" * (5 * MiB), b"b" * (5 * MiB), b"tail"]
    mpu = s3.create_multipart_upload(Bucket=bucket, Key=key)
    parts = []
    for n, data in enumerate(parts_data, start=1):
        r = s3.upload_part(Bucket=bucket, Key=key, UploadId=mpu["UploadId"], PartNumber=n, Body=data)
        assert r["ETag"] == f'"{hashlib.md5(data).hexdigest()}"'
        parts.append({"PartNumber": n, "ETag": r["ETag"]})
    listed = s3.list_parts(Bucket=bucket, Key=key, UploadId=mpu["UploadId"])["Parts"]
    assert [(p["PartNumber"], p["Size"]) for p in listed] == [(1, 5 * MiB), (2, 5 * MiB), (3, 4)]
    done = s3.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=mpu["UploadId"], MultipartUpload={"Parts": parts})
    expected_etag = '"{}-3"'.format(hashlib.md5(b"".join(hashlib.md5(d).digest() for d in parts_data)).hexdigest())
    # radosgw 16.2 quirk: CompleteMultipartUpload answers with an empty ETag.
    assert done.get("ETag", "") in ("", expected_etag)
    head = s3.head_object(Bucket=bucket, Key=key)
    assert head["ContentLength"] == 10 * MiB + 4
    assert head["ETag"] == expected_etag
    got = s3.get_object(Bucket=bucket, Key=key, Range=f"bytes={5 * MiB - 2}-{5 * MiB + 1}")["Body"].read()
    assert got == b"aabb"

    # aborted upload: radosgw 16.2 says NoSuchKey (AWS: NoSuchUpload)
    mpu2 = s3.create_multipart_upload(Bucket=bucket, Key="aborted")
    s3.upload_part(Bucket=bucket, Key="aborted", UploadId=mpu2["UploadId"], PartNumber=1, Body=b"x")
    s3.abort_multipart_upload(Bucket=bucket, Key="aborted", UploadId=mpu2["UploadId"])
    with pytest.raises(ClientError) as ei:
        s3.list_parts(Bucket=bucket, Key="aborted", UploadId=mpu2["UploadId"])
    assert ei.value.response["Error"]["Code"] in ("NoSuchUpload", "NoSuchKey")

    # presigned GET, fetched without any credentials
    url = s3.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "dir/hello.txt"}, ExpiresIn=300)
    assert url.startswith(f"{rgw.endpoint_url}/{bucket}/dir/hello.txt?")  # path-style
    with urllib.request.urlopen(url, timeout=10) as resp:
        assert resp.status == 200
        assert resp.read() == body
    with pytest.raises(urllib.error.HTTPError) as he:
        urllib.request.urlopen(url.replace("Signature=", "Signature=0"), timeout=10)
    assert he.value.code == 403

    # cleanup
    s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": "dir/hello.txt"}, {"Key": key}]})
    s3.delete_bucket(Bucket=bucket)


async def test_postgres_connect(postgres_url, postgres_server):
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine

    print(f"postgres start-up: {postgres_server.timings}")
    assert postgres_url.startswith("postgresql+asyncpg://")
    assert "@127.0.0.1:" in postgres_url and postgres_url.endswith("/moorage")
    engine = create_async_engine(postgres_url)
    try:
        async with engine.begin() as conn:
            assert (await conn.execute(text("select 1"))).scalar_one() == 1
            assert (await conn.execute(text("select current_database()"))).scalar_one() == "moorage"
            await conn.execute(text("create temporary table t (id int primary key, v text)"))
            await conn.execute(text("insert into t values (1, 'x')"))
            assert (await conn.execute(text("select v from t where id = 1"))).scalar_one() == "x"
    finally:
        await engine.dispose()


async def test_postgres_asyncpg_direct(postgres_url):
    import asyncpg

    conn = await asyncpg.connect(postgres_url.replace("postgresql+asyncpg://", "postgresql://"), timeout=10)
    try:
        assert await conn.fetchval("select 1") == 1
    finally:
        await conn.close()


async def test_postgres_create_database(postgres_url):
    import asyncpg

    from tests.support.postgres import create_database

    url = create_database(postgres_url, f"smoke_{uuid.uuid4().hex[:8]}")
    assert url.startswith("postgresql+asyncpg://") and "/smoke_" in url
    conn = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"), timeout=10)
    try:
        assert await conn.fetchval("select current_database()") == url.rsplit("/", 1)[1]
    finally:
        await conn.close()
