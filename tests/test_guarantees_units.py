"""Documented guarantees that no fast test proved (issue 21, "Guarantees the suite does not yet
prove"): each test here fails when its guarantee breaks, and runs on the app in this process
(tests/support/inproc.py: SQLite in a temp dir, the in-memory blob store), so it belongs to the
unit tier.

* a scoped personal access token stays scoped after ``/auth/token`` made a bearer token of it
  (a repository-scoped admin token must not create users through the bearer path);
* the catalog honours a token's scope and lists only what the caller may *pull* (push-only and
  delete-only grants show nothing);
* the failed-login limit is checked *before* bcrypt runs (bcrypt calls counted, not time);
* every push route of the route table is refused in a cached (pull-through) namespace, the
  ``POST .../blobs/uploads?digest=`` without trailing slash included;
* a UI form posted with a valid CSRF token but a foreign ``Origin`` is refused;
* a webhook delivery carries the HMAC-SHA256 of exactly the bytes it posts.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.support.authsrv import bearer, claims_of, push_image
from tests.support.http import Client, error_codes, sha256
from tests.support.inproc import InProcessRegistry
from tests.support.webhook_receiver import Receiver

pytestmark = pytest.mark.unit

ADMIN_PW = "admin-Pw-for-guarantees"
ADMIN = ("admin", ADMIN_PW)
T = 30  # seconds: every request's timeout


def _token(reg: InProcessRegistry, scopes: list[str], auth: tuple[str, str] | None) -> requests.Response:
    params = [("service", "moorage"), *(("scope", s) for s in scopes)]
    return requests.get(f"{reg.url}/auth/token", params=params, auth=auth, timeout=T)


def _api(reg: InProcessRegistry, method: str, path: str, auth: Any = ADMIN, **kw: Any) -> requests.Response:
    return requests.request(method, f"{reg.url}/api/v1/{path}", auth=auth, timeout=T, **kw)


def _ok(r: requests.Response) -> requests.Response:
    assert r.status_code < 300, (r.status_code, r.text)
    return r


# -- token mode ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def token_reg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcessRegistry]:
    reg = InProcessRegistry(
        tmp_path_factory.mktemp("guarantees-token"),
        auth={"mode": "token", "admin_password": ADMIN_PW, "bcrypt_rounds": 4, "login_rate_limit": 5},
    ).start()
    try:
        for name in ("alice", "pusher", "deleter", "puller"):
            _ok(_api(reg, "POST", "users", json={"name": name, "password": f"{name}-pw"}))
        _ok(_api(reg, "POST", "grants", json={"user": "pusher", "pattern": "shared/*", "actions": "push"}))
        _ok(_api(reg, "POST", "grants", json={"user": "deleter", "pattern": "shared/*", "actions": "delete"}))
        _ok(_api(reg, "POST", "grants", json={"user": "puller", "pattern": "shared/*", "actions": "pull"}))
        admin_push = _token(reg, ["repository:shared/one:pull,push", "repository:priv/two:pull,push"], ADMIN).json()["token"]
        push_image(reg.url, "shared/one", "v1", admin_push, b"one")
        push_image(reg.url, "priv/two", "v1", admin_push, b"two")
        for repo in ("alice/a", "alice/b"):
            tok = _token(reg, [f"repository:{repo}:pull,push"], ("alice", "alice-pw")).json()["token"]
            push_image(reg.url, repo, "v1", tok, repo.encode())
        yield reg
    finally:
        reg.stop()


def _pat(reg: InProcessRegistry, user: str, scope: list[str] | None) -> str:
    body: dict[str, Any] = {"user": user, "name": "scoped"}
    if scope is not None:
        body["scope"] = scope
    return str(_ok(_api(reg, "POST", "tokens", json=body)).json()["token"])


def test_scoped_admin_token_stays_scoped_through_a_bearer_token(token_reg: InProcessRegistry) -> None:
    """An admin's token scoped to one repository, exchanged at /auth/token, administers nothing."""
    pat = _pat(token_reg, "admin", ["shared/one:pull"])
    # Basic with the PAT itself: scoped, so no administration
    r = _api(token_reg, "POST", "users", auth=("admin", pat), json={"name": "evil1", "password": "x-pw", "admin": True})
    assert r.status_code == 403, r.text
    # the bearer path: the JWT made from the PAT keeps the PAT's scope
    r = _token(token_reg, ["repository:shared/one:pull,push", "repository:priv/two:pull"], ("admin", pat))
    assert r.status_code == 200, r.text
    jwt = r.json()["token"]
    assert claims_of(jwt)["access"] == [{"type": "repository", "name": "shared/one", "actions": ["pull"]}]
    for method, path, body in (
        ("POST", "users", {"name": "evil2", "password": "x-pw", "admin": True}),
        ("POST", "grants", {"user": "alice", "pattern": "*", "actions": "admin"}),
        ("POST", "tokens", {"user": "admin"}),
        ("GET", "users", None),
    ):
        r = requests.request(method, f"{token_reg.url}/api/v1/{path}", json=body, headers=bearer(jwt), timeout=T)
        assert r.status_code == 403, (method, path, r.status_code, r.text)
        assert error_codes(r) == ["DENIED"]
    names = {u["name"] for u in _ok(_api(token_reg, "GET", "users")).json()["users"]}
    assert not names & {"evil1", "evil2"}
    # the same admin's unscoped token does administer (the refusal above is the scope's doing)
    full = _token(token_reg, [], ("admin", _pat(token_reg, "admin", None))).json()["token"]
    r = requests.get(f"{token_reg.url}/api/v1/users", headers=bearer(full), timeout=T)
    assert r.status_code == 200, r.text


def _catalog(reg: InProcessRegistry, auth: tuple[str, str]) -> list[str]:
    r = _token(reg, ["registry:catalog:*"], auth)
    assert r.status_code == 200, r.text
    c = requests.get(f"{reg.url}/v2/_catalog", headers=bearer(r.json()["token"]), timeout=T)
    assert c.status_code == 200, c.text
    return list(c.json()["repositories"])


def test_catalog_lists_only_pullable_repositories_within_a_tokens_scope(token_reg: InProcessRegistry) -> None:
    everything = ["alice/a", "alice/b", "priv/two", "shared/one"]
    assert _catalog(token_reg, ADMIN) == everything
    # grants without pull show nothing; a pull grant shows its repositories
    assert _catalog(token_reg, ("pusher", "pusher-pw")) == []
    assert _catalog(token_reg, ("deleter", "deleter-pw")) == []
    assert _catalog(token_reg, ("puller", "puller-pw")) == ["shared/one"]
    assert _catalog(token_reg, ("alice", "alice-pw")) == ["alice/a", "alice/b"]
    # a token's scope narrows the listing: the admin's and alice's, each to one repository
    assert _catalog(token_reg, ("admin", _pat(token_reg, "admin", ["shared/*:pull"]))) == ["shared/one"]
    assert _catalog(token_reg, ("alice", _pat(token_reg, "alice", ["alice/a:pull"]))) == ["alice/a"]
    # a scope granting push or delete but not pull shows nothing
    assert _catalog(token_reg, ("alice", _pat(token_reg, "alice", ["alice/*:push,delete"]))) == []


def test_login_rate_limit_is_checked_before_bcrypt(token_reg: InProcessRegistry, monkeypatch: pytest.MonkeyPatch) -> None:
    """Past ``auth.login_rate_limit`` (5 here) failed logins, a guess costs no bcrypt at all:
    the password checks are counted where the authenticator calls them."""
    from moorage.accounts import passwords

    calls: list[str] = []
    lock = threading.Lock()
    real = passwords.check_password

    def counting(password: str, hashed: str | None, rounds: int = 10) -> bool:
        with lock:
            calls.append(password)
        return real(password, hashed, rounds)

    monkeypatch.setattr(passwords, "check_password", counting)
    _ok(_api(token_reg, "POST", "users", json={"name": "mallory", "password": "right-Pw-1"}))
    codes = [_token(token_reg, [], ("mallory", f"guess{i}")).status_code for i in range(30)]
    assert codes[:5] == [401] * 5 and set(codes[5:]) == {429}, codes
    assert len(calls) == 5, f"{len(calls)} bcrypt checks for 30 guesses at a limit of 5"
    # an unknown name pays the same (dummy) bcrypt, and is limited the same way
    calls.clear()
    codes = [_token(token_reg, [], ("nobody-here", f"guess{i}")).status_code for i in range(12)]
    assert set(codes[5:]) == {429} and len(calls) == 5, (codes, len(calls))


# -- pull-through cache --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def cache_reg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcessRegistry]:
    """A registry whose ``cached/`` namespace is a pull-through cache of an upstream that is not
    there (port 9, discard): a push refused there never needs it."""
    reg = InProcessRegistry(
        tmp_path_factory.mktemp("guarantees-cache"),
        proxy={"upstreams": [{"name": "up", "url": "http://127.0.0.1:9", "namespace": "cached", "timeout": 2}]},
    ).start()
    try:
        yield reg
    finally:
        reg.stop()


def _push_requests(upload_id: str, digest: str) -> Iterator[tuple[str, str, str, dict[str, Any]]]:
    """(route name, method, path, requests kwargs) for every route declared PUSH,
    aimed at ``cached/app``; an upload route may have several shapes of request."""
    from moorage.api import routes as r

    body = b"pushed-into-a-cache"
    octet = {"Content-Type": "application/octet-stream"}
    shapes: dict[str, list[tuple[str, str, dict[str, Any]]]] = {
        r.MANIFEST_PUT: [
            (
                "PUT",
                "/v2/cached/app/manifests/v1",
                {"data": b"{}", "headers": {"Content-Type": "application/vnd.oci.image.manifest.v1+json"}},
            )
        ],
        r.UPLOAD_START: [
            ("POST", "/v2/cached/app/blobs/uploads/", {}),
            ("POST", "/v2/cached/app/blobs/uploads/", {"params": {"digest": digest}, "data": body, "headers": octet}),
            ("POST", "/v2/cached/app/blobs/uploads/", {"params": {"mount": digest, "from": "local/app"}}),
        ],
        r.UPLOAD_START_NOSLASH: [
            ("POST", "/v2/cached/app/blobs/uploads", {}),
            ("POST", "/v2/cached/app/blobs/uploads", {"params": {"digest": digest}, "data": body, "headers": octet}),
        ],
        r.UPLOAD_PATCH: [("PATCH", f"/v2/cached/app/blobs/uploads/{upload_id}", {"data": body, "headers": octet})],
        r.UPLOAD_PUT: [
            ("PUT", f"/v2/cached/app/blobs/uploads/{upload_id}", {"params": {"digest": digest}, "data": body, "headers": octet})
        ],
        r.UPLOAD_STATUS: [("GET", f"/v2/cached/app/blobs/uploads/{upload_id}", {})],
        r.UPLOAD_CANCEL: [("DELETE", f"/v2/cached/app/blobs/uploads/{upload_id}", {})],
    }
    from moorage.api.routing import ROUTE_REGISTRY
    from moorage.composition import build_app
    from moorage.config import Settings

    # every route the app declares PUSH (in any auth mode: one name per route)
    push_routes = build_app(Settings(data=Path("/nonexistent-not-opened")))[ROUTE_REGISTRY].names(r.Rule.PUSH)
    assert push_routes
    assert push_routes <= set(shapes), f"push routes without a request here: {push_routes - set(shapes)}"
    for name in sorted(push_routes):
        for method, path, kw in shapes[name]:
            yield name, method, path, kw


def test_every_push_route_is_refused_in_a_cached_namespace(cache_reg: InProcessRegistry) -> None:
    client = Client(cache_reg.url)
    body = b"pushed-into-a-cache"
    digest = sha256(body)
    # a session id that exists (in another repository) and one that does not: neither may be reached
    r = client.req("POST", "/v2/local/app/blobs/uploads/")
    assert r.status_code == 202, r.text
    existing = r.headers["Docker-Upload-UUID"]
    seen = set()
    for upload_id in (existing, "0f3c2a4e-5b6d-4e7f-8a9b-0c1d2e3f4a5b"):
        for name, method, path, kw in _push_requests(upload_id, digest):
            r = client.req(method, path, **kw)
            assert r.status_code == 405, (name, method, path, r.status_code, r.text)
            assert error_codes(r) == ["UNSUPPORTED"] and "pull-through cache" in r.text, (name, r.text)
            seen.add(name)
    assert len(seen) == 7  # the route table's push routes, each refused
    # nothing was stored anywhere, and the namespace outside the cache takes pushes as before
    assert client.req("HEAD", f"/v2/cached/app/blobs/{digest}").status_code in (404, 502, 503)
    assert client.req("GET", f"/v2/local/app/blobs/uploads/{existing}").status_code == 204
    assert client.req("HEAD", f"/v2/local/app/blobs/{digest}").status_code == 404
    assert client.push_blob("local/app", body) == digest


# -- UI forms: the Origin check --------------------------------------------------------------------
@pytest.fixture(scope="module")
def open_reg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcessRegistry]:
    reg = InProcessRegistry(tmp_path_factory.mktemp("guarantees-open")).start()
    try:
        yield reg
    finally:
        reg.stop()


def test_ui_form_with_a_valid_csrf_token_but_a_foreign_origin_is_refused(open_reg: InProcessRegistry) -> None:
    import re

    client = Client(open_reg.url)
    for tag, seed in (("gone", b"g"), ("kept", b"k")):
        client.push_image("lib/origin", tag, [seed])
    s = requests.Session()
    page = s.get(f"{open_reg.url}/ui/repo/lib/origin/-/delete", params={"tag": "gone"}, timeout=T)
    assert page.status_code == 200, page.text
    m = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert m
    form = {"tag": "gone", "csrf": m.group(1)}
    url = f"{open_reg.url}/ui/repo/lib/origin/-/delete"
    for origin in ("http://evil.example", f"http://{open_reg.host}.evil.example", "https://evil.example:443"):
        r = s.post(url, data=form, headers={"Origin": origin}, timeout=T, allow_redirects=False)
        assert r.status_code == 403 and "Cross-site" in r.text, (origin, r.status_code)
    assert sorted(client.req("GET", "/v2/lib/origin/tags/list").json()["tags"]) == ["gone", "kept"]
    # the same form from the registry's own origin goes through
    r = s.post(url, data=form, headers={"Origin": f"http://{open_reg.host}"}, timeout=T, allow_redirects=False)
    assert r.status_code == 303, (r.status_code, r.text[:300])
    assert client.req("GET", "/v2/lib/origin/tags/list").json()["tags"] == ["kept"]


# -- webhooks: the signature -----------------------------------------------------------------------
def test_webhook_delivery_is_signed_over_the_bytes_it_posts(tmp_path: Path) -> None:
    secret = "sig-secret-\u00e9"  # non-ASCII: the HMAC key is its UTF-8 bytes
    rx = Receiver()
    rx.start()
    reg = InProcessRegistry(
        tmp_path,
        webhooks=[
            {"name": "d", "url": rx.url("/d"), "secret": secret, "format": "distribution", "repositories": ["sig/*"]},
            {"name": "c", "url": rx.url("/c"), "secret": secret + "2", "format": "cloudevents", "repositories": ["sig/*"]},
        ],
        events={"delivery_poll_interval": 0.1, "retry_backoff": 0.1},
    ).start()
    try:
        Client(reg.url).push_image("sig/app", "v1", [b"signed"])
        deadline = time.monotonic() + 30
        while {r.path for r in rx.log} < {"/d", "/c"} and time.monotonic() < deadline:
            time.sleep(0.1)
        got = {r.path: r for r in rx.log}
        assert set(got) >= {"/d", "/c"}, [r.path for r in rx.log]
        for path, key in (("/d", secret), ("/c", secret + "2")):
            d = got[path]
            assert d.signed_with(key), (path, d.headers.get("X-Moorage-Signature"))
            want = "sha256=" + __import__("hmac").new(key.encode(), d.body, hashlib.sha256).hexdigest()
            assert d.headers["X-Moorage-Signature"] == want
            assert not d.signed_with(key + "x")  # the secret matters
        assert got["/d"].json()["events"][0]["target"]["repository"] == "sig/app"
    finally:
        reg.stop()
        rx.stop()
