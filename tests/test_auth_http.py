"""Token auth over raw HTTP: challenges, the token endpoint against the token spec's examples,
JWT verification, grants, public repositories, access tokens, rate limits, the admin API, the
CLI (run while the server is up) and htpasswd mode."""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator
from pathlib import Path

import jwt
import pytest
import requests

from tests.support.authsrv import (
    ADMIN_PASSWORD,
    HTTP_TIMEOUT,
    add_user,
    bearer,
    claims_of,
    cli,
    get_token,
    parse_challenge,
    push_image,
    start_auth_server,
    token_response,
)
from tests.support.registry_proc import RegistryProcess, start_moorage
from tests.support.tls import self_signed

ADMIN = ("admin", ADMIN_PASSWORD)
ALICE = ("alice", "alice-pw")
BOB = ("bob", "bob-pw")  # pull-only on alice/*
CAROL = ("carol", "carol-pw")  # pull,push on team/*


def api(proc: RegistryProcess, method: str, path: str, **kw) -> requests.Response:
    r = requests.request(method, f"{proc.url}/api/v1/{path}", auth=ADMIN, timeout=HTTP_TIMEOUT, **kw)
    assert r.status_code < 300, (r.status_code, r.text)
    return r


def api_user(proc: RegistryProcess, name: str, password: str | None = None, **more) -> None:
    api(proc, "POST", "users", json={"name": name, "password": password, **more})


@pytest.fixture(scope="module")
def srv(backend, tmp_path_factory) -> Iterator[RegistryProcess]:
    name, make_env = backend
    proc = start_auth_server(tmp_path_factory.mktemp(f"auth-{name}"), make_env())
    try:
        for user, pw in (ALICE, BOB, CAROL):
            api_user(proc, user, pw)
        api(proc, "POST", "grants", json={"user": "bob", "pattern": "alice/*", "actions": "pull"})
        api(proc, "POST", "grants", json={"user": "carol", "pattern": "team/*", "actions": ["pull", "push"]})
        push_image(proc.url, "alice/private", "v1", get_token(proc, ["repository:alice/private:pull,push"], ALICE))
        push_image(proc.url, "alice/public", "v1", get_token(proc, ["repository:alice/public:pull,push"], ALICE))
        push_image(proc.url, "team/app", "v1", get_token(proc, ["repository:team/app:pull,push"], CAROL), b"team")
        push_image(proc.url, "pubns/tool", "v1", get_token(proc, ["repository:pubns/tool:pull,push"], ADMIN), b"tool")
        api(proc, "PUT", "visibility", json={"repository": "alice/public", "public": True})
        api(proc, "POST", "namespaces", json={"name": "pubns", "public": True})
        yield proc
    finally:
        proc.stop()


def _challenge(r: requests.Response) -> dict[str, str]:
    scheme, params = parse_challenge(r.headers["WWW-Authenticate"])
    assert scheme == "Bearer"
    return params


# -- challenges ------------------------------------------------------------------------------
def test_challenges_name_realm_service_and_scope(srv: RegistryProcess) -> None:
    r = requests.get(f"{srv.url}/v2/", timeout=HTTP_TIMEOUT)
    assert r.status_code == 401 and r.json()["errors"][0]["code"] == "UNAUTHORIZED"
    ch = _challenge(r)
    assert ch == {"realm": f"{srv.url}/auth/token", "service": "moorage"}

    r = requests.get(f"{srv.url}/v2/alice/private/manifests/v1", timeout=HTTP_TIMEOUT)
    assert r.status_code == 401 and _challenge(r)["scope"] == "repository:alice/private:pull"
    r = requests.post(f"{srv.url}/v2/alice/private/blobs/uploads/", timeout=HTTP_TIMEOUT)
    assert r.status_code == 401 and _challenge(r)["scope"] == "repository:alice/private:pull,push"
    r = requests.delete(f"{srv.url}/v2/alice/private/manifests/v1", timeout=HTTP_TIMEOUT)
    assert r.status_code == 401 and _challenge(r)["scope"] == "repository:alice/private:delete"
    r = requests.get(f"{srv.url}/v2/_catalog", timeout=HTTP_TIMEOUT)
    assert r.status_code == 401 and _challenge(r)["scope"] == "registry:catalog:*"
    r = requests.head(f"{srv.url}/v2/alice/private/manifests/v1", timeout=HTTP_TIMEOUT)
    assert r.status_code == 401 and "scope=" in r.headers["WWW-Authenticate"] and not r.content
    # a token for /v2/ itself needs no scope at all
    r = requests.get(f"{srv.url}/v2/", headers=bearer(get_token(srv, [], ALICE)), timeout=HTTP_TIMEOUT)
    assert r.status_code == 200


# -- the token endpoint -------------------------------------------------------------------------
def test_token_response_and_claims(srv: RegistryProcess) -> None:
    r = token_response(srv, ["repository:alice/private:pull,push"], ALICE)
    assert r.status_code == 200 and r.headers["Cache-Control"] == "no-store"
    body = r.json()
    assert body["token"] == body["access_token"]
    assert 0 < body["expires_in"] <= 300
    assert time.strptime(body["issued_at"], "%Y-%m-%dT%H:%M:%SZ")
    header = jwt.get_unverified_header(body["token"])
    assert header["alg"] == "ES256" and header["kid"]
    c = claims_of(body["token"])
    assert c["iss"] == "moorage" and c["aud"] == "moorage" and c["sub"] == "alice"
    assert c["nbf"] <= c["iat"] < c["exp"] and len(c["jti"]) >= 16
    assert c["access"] == [{"type": "repository", "name": "alice/private", "actions": ["pull", "push"]}]
    # the signing key is in the data dir and verifies the token
    pem = (srv.data_dir / "auth" / "token-signing-key.pem").read_text()
    from cryptography.hazmat.primitives import serialization

    pub = serialization.load_pem_private_key(pem.encode(), None).public_key()
    assert jwt.decode(body["token"], pub, algorithms=["ES256"], audience="moorage")["sub"] == "alice"
    # and the JWKS endpoint publishes it under the same kid
    keys = requests.get(f"{srv.url}/auth/jwks", timeout=HTTP_TIMEOUT).json()["keys"]
    assert header["kid"] in [k["kid"] for k in keys]


def test_multiple_scopes_unknown_scopes_and_host_port_names(srv: RegistryProcess) -> None:
    r = token_response(
        srv,
        [
            "repository:alice/private:pull,push",
            "repository:team/app:pull",  # bob has nothing there: left out
            "repository:alice/public:pull,push,delete",
            "repository:localhost:5000/alice/x:pull",  # host:port inside the name: parsed, not granted
            "registry:catalog:*",
            "frobnicator:thing:twiddle",  # unknown type: nothing, no error
            "nonsense",  # malformed: ignored
        ],
        BOB,
    )
    assert r.status_code == 200, r.text
    access = claims_of(r.json()["token"])["access"]
    assert access == [
        {"type": "repository", "name": "alice/private", "actions": ["pull"]},
        {"type": "repository", "name": "alice/public", "actions": ["pull"]},
        {"type": "registry", "name": "catalog", "actions": ["*"]},
    ]
    # several scopes in one parameter (space-separated) are honoured too
    r = token_response(srv, ["repository:alice/private:pull repository:team/app:pull"], CAROL)
    assert claims_of(r.json()["token"])["access"] == [{"type": "repository", "name": "team/app", "actions": ["pull"]}]
    # the owner's own name with a host:port-prefixed scope gets the parsed name, granted nothing
    r = token_response(srv, ["repository:127.0.0.1:1234/alice/private:pull"], ALICE)
    assert r.status_code == 200 and claims_of(r.json()["token"])["access"] == []


def test_token_endpoint_refusals(srv: RegistryProcess) -> None:
    r = token_response(srv, ["repository:alice/private:pull"], ("alice", "wrong"))
    assert r.status_code == 401 and r.json()["errors"][0]["code"] == "UNAUTHORIZED"
    r = token_response(srv, ["repository:alice/private:pull"], ("nobody", "x"))
    assert r.status_code == 401
    r = requests.get(f"{srv.url}/auth/token", headers={"Authorization": "Basic !!!notbase64"}, timeout=HTTP_TIMEOUT)
    assert r.status_code == 401
    r = requests.get(f"{srv.url}/auth/token", params={"service": "someone-else"}, auth=ALICE, timeout=HTTP_TIMEOUT)
    assert r.status_code == 400 and r.json()["errors"]


def test_anonymous_tokens_carry_public_pull_only(srv: RegistryProcess) -> None:
    r = token_response(
        srv,
        [
            "repository:alice/public:pull,push",
            "repository:alice/private:pull",
            "repository:pubns/tool:pull",
            "registry:catalog:*",
        ],
    )
    c = claims_of(r.json()["token"])
    assert c["sub"] == ""
    assert c["access"] == [
        {"type": "repository", "name": "alice/public", "actions": ["pull"]},
        {"type": "repository", "name": "pubns/tool", "actions": ["pull"]},
    ]


def test_oauth2_post_password_and_refresh_token(srv: RegistryProcess) -> None:
    api_user(srv, "dave", "dave-pw-1")
    form = {
        "grant_type": "password",
        "username": "dave",
        "password": "dave-pw-1",
        "service": "moorage",
        "client_id": "docker",
        "access_type": "offline",
        "scope": "repository:dave/app:pull,push",
    }
    r = requests.post(f"{srv.url}/auth/token", data=form, timeout=HTTP_TIMEOUT)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["scope"] == "repository:dave/app:pull,push" and body["refresh_token"]
    assert claims_of(body["access_token"])["access"][0]["actions"] == ["pull", "push"]
    refresh = body["refresh_token"]
    # the refresh token is not a registry token
    r = requests.get(f"{srv.url}/v2/", headers=bearer(refresh), timeout=HTTP_TIMEOUT)
    assert r.status_code == 401
    r = requests.post(
        f"{srv.url}/auth/token",
        data={
            "grant_type": "refresh_token",
            "refresh_token": refresh,
            "service": "moorage",
            "client_id": "docker",
            "scope": "repository:dave/app:pull",
        },
        timeout=HTTP_TIMEOUT,
    )
    assert r.status_code == 200, r.text
    assert claims_of(r.json()["access_token"])["sub"] == "dave"
    # GET with offline_token=true also hands out a refresh token (docker login does this)
    r = token_response(srv, [], ("dave", "dave-pw-1"), offline_token="true", client_id="docker")
    assert r.json()["refresh_token"]
    # wrong password, unknown grant type
    r = requests.post(f"{srv.url}/auth/token", data={**form, "password": "nope"}, timeout=HTTP_TIMEOUT)
    assert r.status_code == 401
    r = requests.post(f"{srv.url}/auth/token", data={"grant_type": "magic"}, timeout=HTTP_TIMEOUT)
    assert r.status_code == 400
    # changing the password invalidates refresh tokens issued before
    api(srv, "PUT", "users/dave/password", json={"password": "dave-pw-2"})
    r = requests.post(
        f"{srv.url}/auth/token",
        data={"grant_type": "refresh_token", "refresh_token": refresh, "service": "moorage", "client_id": "docker"},
        timeout=HTTP_TIMEOUT,
    )
    assert r.status_code == 401
    assert token_response(srv, [], ("dave", "dave-pw-2")).status_code == 200


# -- the registry checks tokens ----------------------------------------------------------------
def test_token_for_repository_a_cannot_read_b(srv: RegistryProcess) -> None:
    token = get_token(srv, ["repository:alice/private:pull"], ALICE)
    ok = requests.get(f"{srv.url}/v2/alice/private/manifests/v1", headers=bearer(token), timeout=HTTP_TIMEOUT)
    assert ok.status_code == 200
    # alice may read alice/public too -- but not with this token
    r = requests.get(f"{srv.url}/v2/alice/public/manifests/v1", headers=bearer(token), timeout=HTTP_TIMEOUT)
    assert r.status_code == 401
    ch = _challenge(r)
    assert ch["error"] == "insufficient_scope" and ch["scope"] == "repository:alice/public:pull"
    r = requests.get(f"{srv.url}/v2/team/app/tags/list", headers=bearer(token), timeout=HTTP_TIMEOUT)
    assert r.status_code == 401


def test_pull_only_user_cannot_push(srv: RegistryProcess) -> None:
    token = get_token(srv, ["repository:alice/private:pull,push"], BOB)
    assert claims_of(token)["access"] == [{"type": "repository", "name": "alice/private", "actions": ["pull"]}]
    r = requests.get(f"{srv.url}/v2/alice/private/manifests/v1", headers=bearer(token), timeout=HTTP_TIMEOUT)
    assert r.status_code == 200
    r = requests.post(f"{srv.url}/v2/alice/private/blobs/uploads/", headers=bearer(token), timeout=HTTP_TIMEOUT)
    assert r.status_code == 403
    assert r.json()["errors"][0]["code"] == "DENIED"
    assert _challenge(r)["error"] == "insufficient_scope"
    r = requests.delete(
        f"{srv.url}/v2/alice/private/manifests/v1",
        headers=bearer(get_token(srv, ["repository:alice/private:delete"], BOB)),
        timeout=HTTP_TIMEOUT,
    )
    assert r.status_code == 401  # nothing granted for delete: fetch another token (which won't help)


def _sign(srv: RegistryProcess, claims: dict, **kw) -> str:
    from cryptography.hazmat.primitives import serialization

    pem = (srv.data_dir / "auth" / "token-signing-key.pem").read_bytes()
    key = serialization.load_pem_private_key(pem, None)
    kid = jwt.get_unverified_header(get_token(srv, [], ALICE))["kid"]
    return jwt.encode(claims, key, algorithm="ES256", headers={"kid": kid, **kw.get("headers", {})})


def test_expired_tampered_and_foreign_tokens_are_refused(srv: RegistryProcess) -> None:
    url = f"{srv.url}/v2/alice/private/manifests/v1"
    now = int(time.time())
    good = {
        "iss": "moorage",
        "sub": "alice",
        "aud": "moorage",
        "iat": now,
        "nbf": now - 1,
        "exp": now + 120,
        "jti": "x",
        "access": [{"type": "repository", "name": "alice/private", "actions": ["pull"]}],
    }
    assert requests.get(url, headers=bearer(_sign(srv, good)), timeout=HTTP_TIMEOUT).status_code == 200

    def refused(token: str) -> None:
        r = requests.get(url, headers=bearer(token), timeout=HTTP_TIMEOUT)
        assert r.status_code == 401, r.text
        assert _challenge(r)["error"] == "invalid_token"

    refused(_sign(srv, {**good, "iat": now - 3600, "nbf": now - 3600, "exp": now - 1800}))  # expired
    refused(_sign(srv, {**good, "aud": "another-registry"}))  # other service
    refused(_sign(srv, {**good, "iss": "someone"}))  # other issuer
    refused(_sign(srv, {**good, "nbf": now + 3600}))  # not yet valid
    # tampered: widen the access claim of a real token without re-signing
    real = get_token(srv, ["repository:alice/private:pull"], BOB)
    head, body, sig = real.split(".")
    payload = jwt.utils.base64url_decode(body).replace(b'"alice/private"', b'"team/app"')
    refused(f"{head}.{jwt.utils.base64url_encode(payload).decode()}.{sig}")
    # signed by another key (same kid), alg none, garbage
    from cryptography.hazmat.primitives.asymmetric import ec

    kid = jwt.get_unverified_header(real)["kid"]
    refused(jwt.encode(good, ec.generate_private_key(ec.SECP256R1()), algorithm="ES256", headers={"kid": kid}))
    refused(jwt.encode(good, None, algorithm="none", headers={"kid": kid}))
    refused(jwt.encode(good, "a-shared-secret-long-enough-for-hs256!", algorithm="HS256", headers={"kid": kid}))
    refused("garbage")
    r = requests.get(
        url, headers={"Authorization": "Basic " + base64.b64encode(b"alice:alice-pw").decode()}, timeout=HTTP_TIMEOUT
    )
    assert r.status_code == 401  # the registry takes bearer tokens only


def test_public_repositories_and_namespaces_anonymous_pull(srv: RegistryProcess) -> None:
    for repo in ("alice/public", "pubns/tool"):
        token = get_token(srv, [f"repository:{repo}:pull"])
        r = requests.get(f"{srv.url}/v2/{repo}/manifests/v1", headers=bearer(token), timeout=HTTP_TIMEOUT)
        assert r.status_code == 200, repo
        r = requests.post(
            f"{srv.url}/v2/{repo}/blobs/uploads/",
            headers=bearer(get_token(srv, [f"repository:{repo}:pull,push"])),
            timeout=HTTP_TIMEOUT,
        )
        assert r.status_code == 403  # public means pull, not push
    token = get_token(srv, ["repository:alice/private:pull"])
    r = requests.get(f"{srv.url}/v2/alice/private/manifests/v1", headers=bearer(token), timeout=HTTP_TIMEOUT)
    assert r.status_code == 401
    # private again: refused at once for new tokens
    api(srv, "PUT", "visibility", json={"repository": "alice/public", "public": False})
    try:
        assert claims_of(get_token(srv, ["repository:alice/public:pull"]))["access"] == []
    finally:
        api(srv, "PUT", "visibility", json={"repository": "alice/public", "public": True})


def _catalog(srv: RegistryProcess, auth: tuple[str, str] | None, **params: str) -> requests.Response:
    token = get_token(srv, ["registry:catalog:*"], auth)
    return requests.get(f"{srv.url}/v2/_catalog", params=params, headers=bearer(token), timeout=HTTP_TIMEOUT)


def test_catalog_shows_only_pullable_repositories(srv: RegistryProcess) -> None:
    everything = {"alice/private", "alice/public", "team/app", "pubns/tool"}
    assert everything <= set(_catalog(srv, ADMIN).json()["repositories"])
    assert set(_catalog(srv, ALICE).json()["repositories"]) == {"alice/private", "alice/public", "pubns/tool"}
    assert set(_catalog(srv, CAROL).json()["repositories"]) == {"alice/public", "team/app", "pubns/tool"}
    bob = _catalog(srv, BOB).json()["repositories"]
    assert set(bob) == {"alice/private", "alice/public", "pubns/tool"}
    assert bob == sorted(bob)
    # pagination over the filtered list: exact page sizes, an exact Link, nothing lost or repeated,
    # and never a hidden name (alice/private's neighbours in byte order are hidden from bob)
    for n in (1, 2, 3):
        seen: list[str] = []
        params: dict[str, str] = {"n": str(n)}
        for _ in range(len(bob) + 1):
            page = _catalog(srv, BOB, **params)
            names = page.json()["repositories"]
            assert len(names) == min(n, len(bob) - len(seen)), (n, seen, names)
            seen += names
            link = page.headers.get("Link")
            if len(seen) == len(bob):
                assert link is None, (n, link)
                break
            last = names[-1].replace("/", "%2F")
            assert link == f'</v2/_catalog?n={n}&last={last}>; rel="next"', link
            params = {"n": str(n), "last": names[-1]}
        assert seen == bob, (n, seen)
    assert _catalog(srv, None).status_code == 401  # anonymous callers get no catalog


def test_cross_repository_mount_needs_pull_on_the_source(srv: RegistryProcess) -> None:
    import hashlib

    digest = "sha256:" + hashlib.sha256(b"team").hexdigest()  # a layer of team/app
    token = get_token(srv, ["repository:alice/mnt:pull,push", "repository:team/app:pull"], ALICE)
    r = requests.post(
        f"{srv.url}/v2/alice/mnt/blobs/uploads/",
        params={"mount": digest, "from": "team/app"},
        headers=bearer(token),
        timeout=HTTP_TIMEOUT,
    )
    assert r.status_code == 202  # not mounted: alice can't read team/app; a plain upload starts instead
    token = get_token(srv, ["repository:team/mnt:pull,push", "repository:team/app:pull"], CAROL)
    r = requests.post(
        f"{srv.url}/v2/team/mnt/blobs/uploads/",
        params={"mount": digest, "from": "team/app"},
        headers=bearer(token),
        timeout=HTTP_TIMEOUT,
    )
    assert r.status_code == 201


# -- access tokens ----------------------------------------------------------------------------
def test_personal_access_token_scope_and_immediate_revocation(srv: RegistryProcess) -> None:
    out = cli(srv, "token", "create", "alice", "--name", "ci", "--scope", "alice/*:pull", "--expires", "1d")
    pat = out.stdout.strip()
    assert pat.startswith("moor_")
    token_id = pat.split("_")[1]
    # usable as a password; the token's scope narrows alice's rights
    token = get_token(srv, ["repository:alice/private:pull,push"], ("alice", pat))
    assert claims_of(token)["access"] == [{"type": "repository", "name": "alice/private", "actions": ["pull"]}]
    assert claims_of(token)["pat"] == token_id
    assert (
        requests.get(f"{srv.url}/v2/alice/private/manifests/v1", headers=bearer(token), timeout=HTTP_TIMEOUT).status_code == 200
    )
    # only with its owner's name
    assert token_response(srv, [], ("bob", pat)).status_code == 401
    listed = api(srv, "GET", "tokens", params={"user": "alice"}).text
    assert token_id in listed and pat not in listed
    # revoke: the PAT and every JWT issued with it stop working immediately
    cli(srv, "token", "revoke", token_id)
    r = requests.get(f"{srv.url}/v2/alice/private/manifests/v1", headers=bearer(token), timeout=HTTP_TIMEOUT)
    assert r.status_code == 401
    assert token_response(srv, [], ("alice", pat)).status_code == 401
    assert "token revoked" not in (srv.log(400))  # (no token text anywhere in logs, see below)
    assert pat not in srv.log(400)


def test_robot_account_token(srv: RegistryProcess) -> None:
    api_user(srv, "ci-robot", robot=True)
    api(srv, "POST", "grants", json={"user": "ci-robot", "pattern": "team/*", "actions": "pull,push"})
    pat = api(srv, "POST", "tokens", json={"user": "ci-robot", "name": "ci"}).json()["token"]
    token = get_token(srv, ["repository:team/built:pull,push", "repository:ci-robot/x:push"], ("ci-robot", pat))
    assert claims_of(token)["access"] == [{"type": "repository", "name": "team/built", "actions": ["pull", "push"]}]
    push_image(srv.url, "team/built", "1", token, b"robot")
    # a robot has no password to log in with
    assert token_response(srv, [], ("ci-robot", "")).status_code == 401


def test_expired_access_token_is_refused(srv: RegistryProcess) -> None:
    r = requests.post(f"{srv.url}/api/v1/tokens", json={"user": "carol", "expires_in": 3}, auth=ADMIN, timeout=HTTP_TIMEOUT)
    pat = r.json()["token"]
    token = get_token(srv, ["repository:team/app:pull"], ("carol", pat))
    assert claims_of(token)["exp"] - time.time() <= 4  # a JWT never outlives its PAT
    deadline = time.monotonic() + 10
    while token_response(srv, [], ("carol", pat)).status_code == 200:
        assert time.monotonic() < deadline
        time.sleep(0.3)


# -- rate limiting ------------------------------------------------------------------------------
def test_failed_logins_are_rate_limited(srv: RegistryProcess) -> None:
    api_user(srv, "mallory", "right-pw")
    codes = [token_response(srv, [], ("mallory", f"guess{i}")).status_code for i in range(10)]
    assert codes == [401] * 10
    r = token_response(srv, [], ("mallory", "right-pw"))
    assert r.status_code == 429 and r.json()["errors"][0]["code"] == "TOOMANYREQUESTS"
    assert 1 <= int(r.headers["Retry-After"]) <= 60
    # per user (and IP): others are unaffected
    assert token_response(srv, [], ALICE).status_code == 200
    # a successful login clears the count
    api_user(srv, "oscar", "oscar-pw")
    for _ in range(2):
        assert [token_response(srv, [], ("oscar", "typo")).status_code for _ in range(9)] == [401] * 9
        assert token_response(srv, [], ("oscar", "oscar-pw")).status_code == 200


def test_replicas_share_key_users_rate_limits_and_revocations(srv: RegistryProcess) -> None:
    """A second server on the same data/database: tokens, failed-login counts and revocations
    made on one replica hold on the other."""
    other = start_moorage(srv.workdir, env=srv.server_env)  # type: ignore[attr-defined]
    try:
        token = get_token(srv, ["repository:alice/private:pull"], ALICE)
        r = requests.get(f"{other.url}/v2/alice/private/manifests/v1", headers=bearer(token), timeout=HTTP_TIMEOUT)
        assert r.status_code == 200
        api_user(srv, "rita", "rita-pw")
        for proc in (srv, other) * 5:
            assert token_response(proc, [], ("rita", "x")).status_code == 401
        assert token_response(other, [], ("rita", "rita-pw")).status_code == 429
        assert token_response(srv, [], ("rita", "rita-pw")).status_code == 429
        pat = api(srv, "POST", "tokens", json={"user": "alice"}).json()
        token = get_token(other, ["repository:alice/private:pull"], ("alice", pat["token"]))
        api(srv, "DELETE", f"tokens/{pat['id']}")
        r = requests.get(f"{other.url}/v2/alice/private/manifests/v1", headers=bearer(token), timeout=HTTP_TIMEOUT)
        assert r.status_code == 401
    finally:
        other.stop()


# -- admin API and CLI --------------------------------------------------------------------------
def test_admin_api(srv: RegistryProcess) -> None:
    api = f"{srv.url}/api/v1"
    assert requests.get(f"{api}/users", timeout=HTTP_TIMEOUT).status_code == 401
    r = requests.get(f"{api}/users", auth=ALICE, timeout=HTTP_TIMEOUT)
    assert r.status_code == 403 and r.json()["errors"][0]["code"] == "DENIED"
    assert requests.get(f"{api}/me", auth=ALICE, timeout=HTTP_TIMEOUT).json()["name"] == "alice"
    names = [u["name"] for u in requests.get(f"{api}/users", auth=ADMIN, timeout=HTTP_TIMEOUT).json()["users"]]
    assert {"admin", "alice", "bob"} <= set(names)
    # bearer tokens from /auth/token work too
    tok = get_token(srv, [], ADMIN)
    assert requests.get(f"{api}/me", headers=bearer(tok), timeout=HTTP_TIMEOUT).json()["admin"] is True

    r = requests.post(f"{api}/users", json={"name": "erin", "password": "erin-pw"}, auth=ADMIN, timeout=HTTP_TIMEOUT)
    assert r.status_code == 201 and "password" not in r.json()
    r = requests.post(f"{api}/users", json={"name": "Bad Name"}, auth=ADMIN, timeout=HTTP_TIMEOUT)
    assert r.status_code == 400 and r.json()["errors"][0]["code"] == "NAME_INVALID"
    r = requests.post(f"{api}/users", data=b"{not json", auth=ADMIN, timeout=HTTP_TIMEOUT)
    assert r.status_code == 400
    r = requests.post(
        f"{api}/grants", json={"user": "erin", "pattern": "team/*", "actions": "pull"}, auth=ADMIN, timeout=HTTP_TIMEOUT
    )
    assert r.status_code == 201
    assert claims_of(get_token(srv, ["repository:team/app:pull,push"], ("erin", "erin-pw")))["access"][0]["actions"] == ["pull"]
    r = requests.post(
        f"{api}/grants", json={"user": "erin", "pattern": "team/*", "actions": "fly"}, auth=ADMIN, timeout=HTTP_TIMEOUT
    )
    assert r.status_code == 400
    r = requests.post(
        f"{api}/tokens",
        json={"user": "erin", "name": "api", "scope": ["team/*:pull"], "expires_in": 3600},
        auth=ADMIN,
        timeout=HTTP_TIMEOUT,
    )
    assert r.status_code == 201
    created = r.json()
    assert created["token"].startswith("moor_") and created["scope"] == ["team/*:pull"]
    listed = requests.get(f"{api}/tokens", params={"user": "erin"}, auth=ADMIN, timeout=HTTP_TIMEOUT).json()["tokens"]
    assert [t["id"] for t in listed] == [created["id"]] and "token" not in listed[0]
    assert requests.delete(f"{api}/tokens/{created['id']}", auth=ADMIN, timeout=HTTP_TIMEOUT).status_code == 204
    assert token_response(srv, [], ("erin", created["token"])).status_code == 401
    r = requests.put(f"{api}/visibility", json={"repository": "team/app", "public": True}, auth=ADMIN, timeout=HTTP_TIMEOUT)
    assert r.status_code == 200
    assert claims_of(get_token(srv, ["repository:team/app:pull"]))["access"] != []
    requests.put(f"{api}/visibility", json={"repository": "team/app", "public": False}, auth=ADMIN, timeout=HTTP_TIMEOUT)
    assert (
        requests.delete(
            f"{api}/grants", params={"user": "erin", "pattern": "team/*"}, auth=ADMIN, timeout=HTTP_TIMEOUT
        ).status_code
        == 204
    )
    assert requests.delete(f"{api}/users/erin", auth=ADMIN, timeout=HTTP_TIMEOUT).status_code == 204
    assert token_response(srv, [], ("erin", "erin-pw")).status_code == 401


def test_cli_while_serving(srv: RegistryProcess) -> None:
    """The CLI works on the live server's database (each call is a process: keep them few)."""
    import json

    add_user(srv, "frank", "frank-pw")
    cli(srv, "grant", "frank", "team/*", "pull")
    assert claims_of(get_token(srv, ["repository:team/app:pull,push"], ("frank", "frank-pw")))["access"] == [
        {"type": "repository", "name": "team/app", "actions": ["pull"]}
    ]
    users = {u["name"]: u for u in json.loads(cli(srv, "user", "list", "--json").stdout)}
    assert users["admin"]["admin"] is True
    assert users["frank"]["grants"] == [{"user": "frank", "pattern": "team/*", "actions": ["pull"]}]
    bad = cli(srv, "grant", "frank", "x/*", "fly", check=False)
    assert bad.returncode != 0 and "fly" in bad.stderr
    cli(srv, "revoke", "frank", "team/*")
    assert claims_of(get_token(srv, ["repository:team/app:pull"], ("frank", "frank-pw")))["access"] == []
    cli(srv, "user", "rm", "frank")
    assert token_response(srv, [], ("frank", "frank-pw")).status_code == 401
    cli(srv, "repo", "public", "team/app", "--on")
    try:
        assert claims_of(get_token(srv, ["repository:team/app:pull"]))["access"] != []
    finally:
        api(srv, "PUT", "visibility", json={"repository": "team/app", "public": False})


def test_logs_name_the_user_but_hold_no_secrets(srv: RegistryProcess) -> None:
    get_token(srv, [], ALICE)
    log = srv.log(5000)
    assert '"user":"alice"' in log
    for secret in (ADMIN_PASSWORD, ALICE[1], BOB[1], CAROL[1], "right-pw"):
        assert secret not in log


def test_admin_created_on_first_start_with_generated_password(tmp_path: Path) -> None:
    proc = start_moorage(
        tmp_path / "gen",
        env={"MOORAGE_AUTH__MODE": "token", "MOORAGE_AUTH__BCRYPT_ROUNDS": "4", "MOORAGE_AUTH__ADMIN_PASSWORD": None},
    )  # type: ignore[dict-item]
    try:
        import re

        deadline = time.monotonic() + 10
        while not (m := re.search(r"generated password: (\S+)", proc.log(200))):
            assert time.monotonic() < deadline, proc.log()
            time.sleep(0.1)
        assert token_response(proc, [], ("admin", m.group(1))).status_code == 200
        proc.stop()
        proc.start()  # printed once: not again on the next start, and the password still works
        assert token_response(proc, [], ("admin", m.group(1))).status_code == 200
        assert len(re.findall(r"generated password", proc.log(400))) == 1
    finally:
        proc.stop()


# -- htpasswd mode -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def htpasswd_srv(tmp_path_factory) -> Iterator[RegistryProcess]:
    from tests.support.registry_proc import write_htpasswd

    tmp = tmp_path_factory.mktemp("htpasswd")
    path = write_htpasswd(tmp / "htpasswd", {"hank": "hank-pw"})
    proc = start_auth_server(
        tmp / "srv", None, mode="htpasswd", MOORAGE_AUTH__HTPASSWD__PATH=str(path), MOORAGE_AUTH__HTPASSWD__REALM="Test Realm"
    )
    proc.username, proc.password = "hank", "hank-pw"
    try:
        yield proc
    finally:
        proc.stop()


def test_htpasswd_mode_basic_challenge_and_access(htpasswd_srv: RegistryProcess) -> None:
    url = htpasswd_srv.url
    r = requests.get(f"{url}/v2/", timeout=HTTP_TIMEOUT)
    assert r.status_code == 401 and r.headers["WWW-Authenticate"].startswith('Basic realm="Test Realm"')
    assert requests.get(f"{url}/v2/", auth=("hank", "nope"), timeout=HTTP_TIMEOUT).status_code == 401
    assert requests.get(f"{url}/v2/", auth=("hank", "hank-pw"), timeout=HTTP_TIMEOUT).status_code == 200
    # push/pull with basic auth on every request
    import hashlib

    data = b"htpasswd-blob"
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    r = requests.post(
        f"{url}/v2/h/app/blobs/uploads/", params={"digest": digest}, data=data, auth=("hank", "hank-pw"), timeout=HTTP_TIMEOUT
    )
    assert r.status_code == 201
    assert requests.get(f"{url}/v2/h/app/blobs/{digest}", auth=("hank", "hank-pw"), timeout=HTTP_TIMEOUT).content == data
    assert requests.get(f"{url}/v2/h/app/blobs/{digest}", timeout=HTTP_TIMEOUT).status_code == 401
    # no token endpoint in this mode
    assert requests.get(f"{url}/auth/token", auth=("hank", "hank-pw"), timeout=HTTP_TIMEOUT).status_code == 404


# -- TLS ---------------------------------------------------------------------------------------
def test_tls_serves_https_and_the_realm_says_so(tmp_path: Path) -> None:
    import os
    import signal
    import subprocess
    import sys

    from tests.support.authsrv import auth_env
    from tests.support.registry_proc import REPO_ROOT, free_port

    cert, key = self_signed(tmp_path)
    port = free_port()
    env = {
        **os.environ,
        **auth_env("token"),
        "MOORAGE_TLS__CERTIFICATE": str(cert),
        "MOORAGE_TLS__KEY": str(key),
        "PYTHONPATH": str(REPO_ROOT),
    }
    log = open(tmp_path / "tls.log", "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "moorage.cli", "serve", "--addr", f"127.0.0.1:{port}", "--data", str(tmp_path / "data")],
        env=env,
        cwd=REPO_ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"https://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                r = requests.get(f"{url}/v2/", verify=str(cert), timeout=5)
                break
            except requests.ConnectionError:
                assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "tls.log").read_text()
                time.sleep(0.2)
        assert r.status_code == 401
        assert parse_challenge(r.headers["WWW-Authenticate"])[1]["realm"] == f"{url}/auth/token"
        t = requests.get(
            f"{url}/auth/token",
            params={"service": "moorage", "scope": "repository:admin/x:pull"},
            auth=ADMIN,
            verify=str(cert),
            timeout=HTTP_TIMEOUT,
        )
        assert t.status_code == 200
        assert (
            requests.get(f"{url}/v2/", headers=bearer(t.json()["token"]), verify=str(cert), timeout=HTTP_TIMEOUT).status_code
            == 200
        )
        with pytest.raises(requests.exceptions.SSLError):  # it really is TLS with our certificate
            requests.get(f"{url}/v2/", timeout=5)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        log.close()


def test_bad_names_and_hosts_never_reach_headers(srv: RegistryProcess) -> None:
    r = requests.get(f"{srv.url}/v2/a%22b%0Ac/manifests/x", timeout=HTTP_TIMEOUT)
    assert r.status_code == 400 and r.json()["errors"][0]["code"] == "NAME_INVALID"
    token = get_token(srv, ["repository:alice/m2:pull,push"], ALICE)
    r = requests.post(
        f"{srv.url}/v2/alice/m2/blobs/uploads/",
        params={"mount": "sha256:" + "0" * 64, "from": 'x"\ny'},
        headers=bearer(token),
        timeout=HTTP_TIMEOUT,
    )
    assert r.status_code == 202  # invalid mount source: ignored, a plain upload starts
    r = requests.get(f"{srv.url}/v2/", headers={"Host": 'evil"host'}, timeout=HTTP_TIMEOUT)
    assert r.status_code == 401 and 'realm="http://evil\\"host/auth/token"' in r.headers["WWW-Authenticate"]


def test_self_service_tokens_and_repository_list(srv: RegistryProcess) -> None:
    me = f"{srv.url}/api/v1/me/tokens"
    r = requests.post(me, json={"name": "laptop", "scope": ["alice/*:pull"], "expires_in": 600}, auth=ALICE, timeout=HTTP_TIMEOUT)
    assert r.status_code == 201, r.text
    tok = r.json()
    assert tok["user"] == "alice" and tok["token"].startswith("moor_")
    ids = [t["id"] for t in requests.get(me, auth=ALICE, timeout=HTTP_TIMEOUT).json()["tokens"]]
    assert tok["id"] in ids
    # a scoped token can't mint more tokens; other users can't revoke alice's
    r = requests.post(me, json={"name": "x"}, auth=("alice", tok["token"]), timeout=HTTP_TIMEOUT)
    assert r.status_code == 403
    assert requests.delete(f"{me}/{tok['id']}", auth=BOB, timeout=HTTP_TIMEOUT).status_code == 404
    assert requests.delete(f"{me}/{tok['id']}", auth=ALICE, timeout=HTTP_TIMEOUT).status_code == 204
    assert token_response(srv, [], ("alice", tok["token"])).status_code == 401
    r = requests.post(me, json={"expires_in": True}, auth=ALICE, timeout=HTTP_TIMEOUT)
    assert r.status_code == 400
    # admins list repositories with their visibility
    repos = {x["name"]: x["public"] for x in api(srv, "GET", "repositories", params={"n": "1000"}).json()["repositories"]}
    assert repos["alice/public"] is True and repos["alice/private"] is False
    assert requests.get(f"{srv.url}/api/v1/repositories", auth=ALICE, timeout=HTTP_TIMEOUT).status_code == 403
    r = requests.get(f"{srv.url}/api/v1/repositories", params={"n": "x"}, auth=ADMIN, timeout=HTTP_TIMEOUT)
    assert r.status_code == 400
