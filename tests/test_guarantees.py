"""Documented guarantees that no test proved (issue 21, "Guarantees the suite does not yet
prove"), against a real ``moorage serve`` on every selected backend (fs + SQLite; S3 + PostgreSQL
with ``MOORAGE_TEST_BACKENDS=fs-sqlite,s3-postgres``).  Each fails when its guarantee breaks:

* the pull policy blocks *at* its threshold (an image whose worst finding is exactly HIGH under a
  HIGH policy), and an allow-list entry that has expired no longer lets a pull through;
* the quota holds on a chunked ``PATCH`` (no ``Content-Length``): the refusal comes while the
  body is still open, one byte past the headroom -- not when the body ends, nor at the ``PUT``;
* a ``PUT`` (or monolithic ``POST``) with a body and a wrong digest leaves no session and no bytes;
* a user deleted and created again never inherits the old user's tokens (password JWTs, access
  tokens, JWTs and refresh tokens made from them) -- on PostgreSQL, where ids are not reused, too.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.gc_push import _settings, sha, sub_cli
from tests.support.authsrv import ADMIN_PASSWORD, bearer, start_auth_server
from tests.support.backends import EnvFactory
from tests.support.cli import run_moorage
from tests.support.http import Client, error_codes
from tests.support.insight_images import gz, osv, tar_bytes, write_osv
from tests.support.registry_proc import RegistryProcess, start_moorage

pytestmark = pytest.mark.protocol

MiB = 1 << 20
T = 60


@pytest.fixture()
def srv(backend: tuple[str, EnvFactory], tmp_path: Path) -> Iterator[RegistryProcess]:
    """A server of the test's own (quotas and policies are global state)."""
    name, make_env = backend
    env = {**make_env(), "MOORAGE_GC__QUOTA_CACHE_SECONDS": "0"}
    proc = start_moorage(tmp_path / "srv", env=env)
    proc.backend = name  # type: ignore[attr-defined]
    proc.backend_env = env  # type: ignore[attr-defined]
    try:
        yield proc
    finally:
        proc.stop()


def upload_bytes(proc: RegistryProcess, upload_id: str | None = None) -> int:
    """Bytes the server's storage holds for one upload session (or for all of them), any driver."""
    from moorage.storage import create_blob_store

    async def go() -> int:
        store = create_blob_store(_settings(proc))
        await store.open()
        try:
            if store.name == "filesystem":
                root = Path(store.root) / "uploads"  # type: ignore[attr-defined]
                d = root / upload_id if upload_id else root
                return sum(p.stat().st_size for p in d.rglob("*") if p.is_file()) if d.is_dir() else 0
            prefix = store._upload_prefix(upload_id) if upload_id else store._key("uploads/")  # type: ignore[attr-defined]
            total = 0
            paginator = store._client.get_paginator("list_objects_v2")  # type: ignore[attr-defined]
            async for page in paginator.paginate(Bucket=store.bucket, Prefix=prefix):  # type: ignore[attr-defined]
                total += sum(int(o["Size"]) for o in page.get("Contents", ()))
            return total
        finally:
            await store.close()

    return asyncio.run(go())


def open_sessions(proc: RegistryProcess, repository: str) -> int:
    """Upload session rows of ``repository`` in the server's database."""
    from sqlalchemy import func, select

    from moorage.metadata.db import Database
    from moorage.metadata.tables import repositories, uploads

    settings = _settings(proc)

    async def go() -> int:
        db = Database(settings.database_url)
        try:
            async with db.read() as conn:
                q = (
                    select(func.count())
                    .select_from(uploads.join(repositories, repositories.c.id == uploads.c.repository_id))
                    .where(repositories.c.name == repository)
                )
                return int((await conn.execute(q)).scalar() or 0)
        finally:
            await db.close()

    return asyncio.run(go())


# -- pull policy -----------------------------------------------------------------------------------
def _scan(client: Client, repo: str, ref: str) -> dict[str, Any]:
    r = client.req("POST", f"/api/v1/insight/images/{repo}/{ref}")
    assert r.status_code in (200, 202), r.text
    deadline = time.monotonic() + 120
    while True:
        r = client.req("GET", f"/api/v1/insight/images/{repo}/{ref}")
        assert r.status_code == 200, r.text
        image = r.json()["images"][0]
        if image.get("scanned") or time.monotonic() > deadline:
            return dict(image)
        time.sleep(0.3)


def test_pull_policy_blocks_at_its_threshold_and_expired_allowances_stop_counting(srv: RegistryProcess, tmp_path: Path) -> None:
    client = Client(srv.url)
    pkg = json.dumps({"name": "is-number", "version": "6.0.0"}).encode()
    layer = gz(tar_bytes({"srv/app/node_modules/is-number/package.json": pkg}))
    client.push_image("edge/app", "v1", [layer])
    # the image's one finding is HIGH (no CRITICAL beside it): a HIGH policy must block it
    osv_dir = write_osv(
        tmp_path / "osv",
        [
            osv(
                "EDGE-HIGH-1",
                "npm",
                "is-number",
                [{"introduced": "0"}, {"fixed": "7.0.1"}],
                range_type="SEMVER",
                db_severity="HIGH",
            )
        ],
    )
    env = {k: str(v) for k, v in (getattr(srv, "backend_env", None) or {}).items()}
    out = run_moorage("vulndb", "import", str(osv_dir), "--data", str(srv.data_dir), env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    image = _scan(client, "edge/app", "v1")
    assert image["scanned"] and {f["id"]: f["severity"] for f in image["findings"]} == {"EDGE-HIGH-1": "HIGH"}, image
    manifest = {"Accept": "application/vnd.oci.image.manifest.v1+json"}
    r = client.req("PUT", "/api/v1/insight/policies/edge", json={"block_severity": "CRITICAL"})
    assert r.status_code == 200, r.text
    assert client.req("GET", "/v2/edge/app/manifests/v1", headers=manifest).status_code == 200  # below the threshold
    assert client.req("PUT", "/api/v1/insight/policies/edge", json={"block_severity": "HIGH"}).status_code == 200
    r = client.req("GET", "/v2/edge/app/manifests/v1", headers=manifest)
    assert r.status_code == 403 and error_codes(r) == ["DENIED"] and "EDGE-HIGH-1" in r.text, r.text
    # allow-listed for ~1.7 s: pulls go through; once it has expired they are refused again
    r = client.req("PUT", "/api/v1/insight/allowlist/edge/EDGE-HIGH-1", json={"expires_in_days": 2e-5, "reason": "t"})
    assert r.status_code == 200, r.text
    expires_at = float(r.json()["expires_at"])
    assert client.req("GET", "/v2/edge/app/manifests/v1", headers=manifest).status_code == 200
    while time.time() <= expires_at + 0.05:
        time.sleep(0.1)
    r = client.req("GET", "/v2/edge/app/manifests/v1", headers=manifest)
    assert r.status_code == 403 and "EDGE-HIGH-1" in r.text, r.text
    # an allowance without expiry lets it through for good
    assert client.req("PUT", "/api/v1/insight/allowlist/edge/EDGE-HIGH-1", json={"reason": "t"}).status_code == 200
    assert client.req("GET", "/v2/edge/app/manifests/v1", headers=manifest).status_code == 200


# -- quota on a chunked PATCH -------------------------------------------------------------------------
def _held_chunked_patch(proc: RegistryProcess, path: str, total: int, piece: int = 64 * 1024, end: bool = False) -> bytes:
    """``PATCH path`` with a chunked body of ``total`` bytes; unless ``end``, the body is left open
    (no last chunk).  Returns the response head, read with a bounded wait."""
    s = socket.create_connection((proc.host.split(":")[0], proc.port), timeout=T)
    try:
        s.sendall(
            f"PATCH {path} HTTP/1.1\r\nHost: {proc.host}\r\nContent-Type: application/octet-stream\r\n"
            "Transfer-Encoding: chunked\r\n\r\n".encode()
        )
        sent = 0
        try:
            while sent < total:
                n = min(piece, total - sent)
                s.sendall(f"{n:x}\r\n".encode() + os.urandom(n) + b"\r\n")
                sent += n
            if end:
                s.sendall(b"0\r\n\r\n")
        except OSError:
            pass  # the server answered and closed; read what it said
        s.settimeout(30)
        head = b""
        while b"\r\n\r\n" not in head:
            try:
                data = s.recv(65536)
            except TimeoutError:
                break  # no answer while the body is open: the refusal waited for the body's end
            if not data:
                break
            head += data
        return head
    finally:
        s.close()


def test_quota_holds_on_a_chunked_patch_while_its_body_is_still_open(srv: RegistryProcess) -> None:
    # The last byte past the headroom arrives on its own: body_chunks must pass it on rather than
    # wait for more (that made this test fail about one run in eight; tests/test_body_chunks.py).
    sub_cli(srv, "quota", "set", "qc", str(MiB), wait=False)
    r = requests.post(f"{srv.url}/v2/qc/app/blobs/uploads/", timeout=T)
    assert r.status_code == 202, r.text
    path, upload_id = r.headers["Location"], r.headers["Docker-Upload-UUID"]
    # one byte past the headroom, and the body never ends: the answer must come anyway
    head = _held_chunked_patch(srv, path, MiB + 1)
    assert head.startswith(b"HTTP/1.1 403"), head[:300]
    assert upload_bytes(srv, upload_id) == 0
    st = requests.get(f"{srv.url}{path}", timeout=T)
    assert st.status_code == 204 and st.headers["Range"] == "0-0", (st.status_code, st.headers)
    # exactly the headroom, chunked and ended, is taken (and can be completed)
    head = _held_chunked_patch(srv, path, MiB, end=True)
    assert head.startswith(b"HTTP/1.1 202"), head[:300]
    assert requests.get(f"{srv.url}{path}", timeout=T).headers["Range"] == f"0-{MiB - 1}"


# -- a wrong digest keeps nothing ---------------------------------------------------------------------
def test_put_with_a_body_and_a_wrong_digest_leaves_no_session_and_no_bytes(srv: RegistryProcess) -> None:
    data, other = os.urandom(300_000), b"something else"
    for repo, patch_first in (("wd/put", False), ("wd/patched", True)):
        r = requests.post(f"{srv.url}/v2/{repo}/blobs/uploads/", timeout=T)
        assert r.status_code == 202, r.text
        loc, upload_id = srv.url + r.headers["Location"], r.headers["Docker-Upload-UUID"]
        assert open_sessions(srv, repo) == 1  # (the count below is not vacuous)
        body = data
        if patch_first:
            half = len(data) // 2
            r = requests.patch(loc, data=data[:half], headers={"Content-Type": "application/octet-stream"}, timeout=T)
            assert r.status_code == 202, r.text
            loc, body = srv.url + r.headers["Location"], data[half:]
        r = requests.put(
            loc, params={"digest": sha(other)}, data=body, headers={"Content-Type": "application/octet-stream"}, timeout=T
        )
        assert r.status_code == 400 and error_codes(r) == ["DIGEST_INVALID"], r.text
        gone = requests.get(loc, timeout=T)
        assert gone.status_code == 404 and error_codes(gone) == ["BLOB_UPLOAD_UNKNOWN"], (repo, gone.status_code, gone.text)
        assert upload_bytes(srv, upload_id) == 0, repo
        assert open_sessions(srv, repo) == 0, repo
        for digest in (sha(data), sha(other)):
            assert requests.head(f"{srv.url}/v2/{repo}/blobs/{digest}", timeout=T).status_code == 404
    # the monolithic form: no session is left behind either
    r = requests.post(f"{srv.url}/v2/wd/mono/blobs/uploads/", params={"digest": sha(other)}, data=data, timeout=T)
    assert r.status_code == 400 and error_codes(r) == ["DIGEST_INVALID"], r.text
    assert open_sessions(srv, "wd/mono") == 0
    assert upload_bytes(srv) == 0


# -- a re-created user inherits nothing ------------------------------------------------------------------
def test_recreated_user_never_inherits_the_old_users_tokens(backend: tuple[str, EnvFactory], tmp_path: Path) -> None:
    name, make_env = backend
    proc = start_auth_server(tmp_path / "auth", make_env())
    admin = ("admin", ADMIN_PASSWORD)

    def api(method: str, path: str, **kw: Any) -> requests.Response:
        r = requests.request(method, f"{proc.url}/api/v1/{path}", auth=admin, timeout=T, **kw)
        assert r.status_code < 300, (r.status_code, r.text)
        return r

    def token(
        auth: tuple[str, str], scopes: tuple[str, ...] = ("repository:dora/app:pull,push",), **extra: str
    ) -> requests.Response:
        q = [("service", "moorage"), *(("scope", s) for s in scopes), *extra.items()]
        return requests.get(f"{proc.url}/auth/token", params=q, auth=auth, timeout=T)

    def refresh(rt: str) -> int:
        form = {"grant_type": "refresh_token", "refresh_token": rt, "service": "moorage", "client_id": "t"}
        return requests.post(f"{proc.url}/auth/token", data=form, timeout=T).status_code

    def usable(jwt: str) -> bool:
        r = requests.post(f"{proc.url}/v2/dora/app/blobs/uploads/", headers=bearer(jwt), timeout=T)
        return r.status_code == 202

    try:
        api("POST", "users", json={"name": "dora", "password": "dora-pw"})
        old_uid = None
        pw_jwt = token(("dora", "dora-pw")).json()["token"]
        pat = api("POST", "tokens", json={"user": "dora"}).json()["token"]
        pat_jwt = token(("dora", pat)).json()["token"]
        r = requests.post(
            f"{proc.url}/auth/token",
            data={
                "grant_type": "password",
                "username": "dora",
                "password": pat,
                "service": "moorage",
                "client_id": "t",
                "access_type": "offline",
            },
            timeout=T,
        )
        assert r.status_code == 200, r.text
        pat_refresh = r.json()["refresh_token"]
        r = requests.post(
            f"{proc.url}/auth/token",
            data={
                "grant_type": "password",
                "username": "dora",
                "password": "dora-pw",
                "service": "moorage",
                "client_id": "t",
                "access_type": "offline",
            },
            timeout=T,
        )
        pw_refresh = r.json()["refresh_token"]
        assert usable(pw_jwt) and usable(pat_jwt) and refresh(pat_refresh) == 200 and refresh(pw_refresh) == 200
        import jwt as pyjwt

        old_uid = pyjwt.decode(pw_jwt, options={"verify_signature": False}).get("uid")
        api("DELETE", "users/dora")
        # same name, same password; on SQLite even the same id (the last row's is reused), on
        # PostgreSQL a new one -- neither may make the old tokens good again
        api("POST", "users", json={"name": "dora", "password": "dora-pw"})
        api("POST", "tokens", json={"user": "dora"})  # the new dora has a token of her own
        for _ in range(3):  # (repeated: a cache must not answer for the old user either)
            assert not usable(pw_jwt) and not usable(pat_jwt)
            assert requests.get(f"{proc.url}/api/v1/me", headers=bearer(pat_jwt), timeout=T).status_code == 401
            assert token(("dora", pat)).status_code == 401
            assert refresh(pat_refresh) == 401 and refresh(pw_refresh) == 401
        listed = api("GET", "tokens", params={"user": "dora"}).json()
        assert pat.split("_")[1] not in json.dumps(listed)
        fresh = token(("dora", "dora-pw")).json()["token"]
        assert usable(fresh)
        new_uid = pyjwt.decode(fresh, options={"verify_signature": False}).get("uid")
        if name == "s3-postgres":
            assert new_uid != old_uid  # PostgreSQL never reuses the id: the check above was not SQLite's luck
    finally:
        proc.stop()
