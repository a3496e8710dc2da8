"""OpenID Connect sign-in (``auth.oidc``) against a real provider nobody here wrote --
django-oidc-provider from PyPI in a small Django site (tests/support/oidc_provider.py) -- in a
real browser (Playwright + Debian's chromium) and with plain HTTP following the same redirects.

Journey: sign in with the provider, land on the repository list with the group's repositories,
make an access token in the UI, skopeo login/push with it, sign out.  Refusals: a replayed
state, a callback from another browser, an ID token for another client (wrong audience), a
tampered one, an expired one; a user removed from the group or deleted at the provider loses
the token's rights within the cache time.  The last test stops the provider (break-glass).
"""

from __future__ import annotations

import asyncio
import base64
import html
import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest
import requests
import yaml

from tests.support import ocilayout
from tests.support.authsrv import ADMIN_PASSWORD, HTTP_TIMEOUT, claims_of, cli, start_auth_server, token_response
from tests.support.clients import Skopeo
from tests.support.refusal import assert_refused
from tests.support.registry_proc import RegistryProcess
from tests.support.require import require_binary, require_module

pytestmark = [pytest.mark.clients, pytest.mark.one_backend]

ADMIN = ("admin", ADMIN_PASSWORD)
CACHE_TTL = 2.0
DISPLAY = "Example SSO"


@pytest.fixture(scope="module")
def op(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    require_module("django", "django")
    require_module("oidc_provider", "django-oidc-provider")
    require_module("authlib", "authlib")
    from tests.support.oidc_provider import start_provider

    with start_provider(tmp_path_factory.mktemp("op"), ["http://127.0.0.1:1/auth/oidc/callback"]) as provider:
        yield provider


@pytest.fixture(scope="module")
def srv(backend, op: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryProcess]:
    from tests.support.oidc_provider import CLIENT_ID, CLIENT_SECRET, OTHER_CLIENT_ID

    _name, make_env = backend
    tmp = tmp_path_factory.mktemp("auth-oidc")
    config = tmp / "moorage.yml"
    config.write_text(
        yaml.safe_dump(
            {
                "auth": {
                    "oidc": {
                        "issuer": op.issuer,
                        "client_id": CLIENT_ID,
                        "client_secret": CLIENT_SECRET,
                        "scopes": ["openid", "profile"],
                        "username_claim": "preferred_username",
                        "groups_claim": "groups",
                        "admin_groups": ["registry-admins"],
                        "display_name": DISPLAY,
                        "cache_ttl": CACHE_TTL,
                        "timeout": 5,
                    }
                }
            }
        )
    )
    proc = start_auth_server(tmp, make_env(), MOORAGE_CONFIG=str(config))
    try:
        callback = f"{proc.url}/auth/oidc/callback"
        op.set_redirect_uris(CLIENT_ID, [callback])
        op.set_redirect_uris(OTHER_CLIENT_ID, [callback])
        cli(proc, "grant", "--group", "developers", "team/*", "pull,push")
        img = ocilayout.build_image(tmp / "img", "v1", layers=[8 * 1024], seed="oidc")
        for repo in ("team/app", "other/secret"):
            Skopeo(tmp / "sk").copy(
                f"oci:{img.dir}:v1", f"docker://{proc.host}/{repo}:v1", "--dest-creds", "admin:" + ADMIN_PASSWORD
            )
        yield proc
    finally:
        proc.stop()


def _provider_login(s: requests.Session, page: requests.Response, user: str, password: str) -> requests.Response:
    """Fill in the provider's own sign-in form (as a person would), following its redirects."""
    assert "Example SSO" in page.text, page.text[:500]
    csrf = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text)
    nxt = re.search(r'name="next" value="([^"]*)"', page.text)
    assert csrf and nxt
    login = page.url.split("?", 1)[0]
    return s.post(
        login,
        data={"csrfmiddlewaretoken": csrf.group(1), "username": user, "password": password, "next": html.unescape(nxt.group(1))},
        timeout=HTTP_TIMEOUT,
    )


def sso_session(srv: RegistryProcess, user: str) -> requests.Session:
    from tests.support.oidc_provider import PEOPLE

    s = requests.Session()
    page = s.get(f"{srv.url}/auth/oidc/login", params={"next": "/ui/tokens"}, timeout=HTTP_TIMEOUT)
    r = _provider_login(s, page, user, PEOPLE[user][0])
    assert r.status_code == 200 and r.url == f"{srv.url}/ui/tokens", (r.status_code, r.url, r.text[:300])
    return s


def ui_token(srv: RegistryProcess, s: requests.Session, name: str) -> str:
    page = s.get(f"{srv.url}/ui/tokens", timeout=HTTP_TIMEOUT)
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert csrf, page.text[:300]
    r = s.post(f"{srv.url}/ui/tokens", data={"csrf": csrf.group(1), "name": name}, timeout=HTTP_TIMEOUT)
    m = re.search(r'<code id="new-token">([^<]+)</code>', r.text)
    assert r.status_code == 200 and m, (r.status_code, r.text[:500])
    return m.group(1)


def _access(proc: RegistryProcess, scope: str, auth: tuple[str, str]) -> list[str]:
    r = token_response(proc, [scope], auth)
    assert r.status_code == 200, (r.status_code, r.text)
    access = claims_of(r.json()["token"])["access"]
    return access[0]["actions"] if access else []


def _within(seconds: float, check: Any, what: str) -> None:
    start = time.monotonic()
    while not check():
        assert time.monotonic() - start < seconds, f"{what}: not within {seconds} s"
        time.sleep(0.3)


# -- the browser journey -------------------------------------------------------------------------
def test_browser_sign_in_token_push_sign_out_and_replayed_state(srv: RegistryProcess, op: Any, tmp_path: Path) -> None:
    playwright_api = pytest.importorskip("playwright.sync_api")
    from tests.support.oidc_provider import PEOPLE
    from tests.support.ui import CHROMIUM, launch_chromium

    require_binary(CHROMIUM, "chromium")
    require_binary("skopeo", "skopeo")
    callbacks: list[str] = []
    with playwright_api.sync_playwright() as p:
        browser = launch_chromium(p)
        try:
            ctx = browser.new_context(base_url=srv.url)
            ctx.set_default_timeout(20_000)
            page = ctx.new_page()
            page.on("request", lambda req: callbacks.append(req.url) if "/auth/oidc/callback" in req.url else None)
            page.goto("/ui/login")
            page.get_by_role("link", name=f"Sign in with {DISPLAY}").click()
            page.wait_for_url(re.compile(r".*/accounts/login/.*"))
            page.fill("#id_username", "olivia")
            page.fill("#id_password", PEOPLE["olivia"][0])
            page.click("#sso-submit")
            page.wait_for_url(f"{srv.url}/")
            body = page.content()
            assert "team/app" in body and "other/secret" not in body  # the group's repositories only
            # an access token for registry clients, shown once with the docker login line
            page.goto("/ui/tokens")
            page.fill("#tname", "laptop")
            page.get_by_role("button", name=re.compile("Create", re.I)).click()
            secret = page.locator("#new-token").inner_text()
            assert secret.startswith("moor_")
            assert (
                "docker login" in page.locator("#login-cmd").inner_text()
                and "-u olivia" in page.locator("#login-cmd").inner_text()
            )
            # sign out ends the Moorage session
            page.get_by_role("button", name=re.compile("Sign out", re.I)).click()
            page.goto("/ui/tokens")
            assert "/ui/login" in page.url
            # the callback URL replayed in the same browser: refused
            assert callbacks
            replay = page.goto(callbacks[0])
            assert replay is not None and replay.status == 400
            assert "already used" in page.content()
        finally:
            browser.close()
    # the state replayed with its cookie from elsewhere: the stored request is gone too
    state = parse_qs(urlparse(callbacks[0]).query)["state"][0]
    r = requests.get(callbacks[0], cookies={"moorage_oidc_state": state}, timeout=HTTP_TIMEOUT, allow_redirects=False)
    assert r.status_code == 400 and "expired or was already used" in r.text
    # skopeo with the token made in the UI
    sk = Skopeo(tmp_path / "sk")
    sk.login(srv.host, "olivia", secret)
    img = ocilayout.build_image(tmp_path / "img", "v1", layers=[4 * 1024], seed="olivia")
    sk.copy(f"oci:{img.dir}:v1", f"docker://{srv.host}/team/olivia:v1")
    cp = sk("copy", "--quiet", f"oci:{img.dir}:v1", f"docker://{srv.host}/other/olivia:v1", check=False)
    assert_refused(cp, "denied: requested access to the resource is denied", "unauthorized")


def test_callback_not_started_in_this_browser_is_refused(srv: RegistryProcess) -> None:
    s = requests.Session()
    r = s.get(f"{srv.url}/auth/oidc/login", timeout=HTTP_TIMEOUT, allow_redirects=False)
    assert r.status_code == 303
    location = r.headers["Location"]
    q = parse_qs(urlparse(location).query)
    assert q["code_challenge_method"] == ["S256"] and len(q["code_challenge"][0]) == 43
    assert q["nonce"][0] and q["state"][0] and q["redirect_uri"] == [f"{srv.url}/auth/oidc/callback"]
    # the victim's browser (no state cookie) gets an attacker's callback: refused
    r = requests.get(f"{srv.url}/auth/oidc/callback", params={"state": q["state"][0], "code": "x"}, timeout=HTTP_TIMEOUT)
    assert r.status_code == 400 and "not started in this browser" in r.text
    # a wrong state with a cookie
    r = s.get(f"{srv.url}/auth/oidc/callback", params={"state": "forged", "code": "x"}, timeout=HTTP_TIMEOUT)
    assert r.status_code == 400


def test_password_sign_in_of_an_oidc_user_says_to_use_sso(srv: RegistryProcess) -> None:
    sso_session(srv, "oscar")
    r = token_response(srv, [], ("oscar", "anything"))
    assert r.status_code == 401 and "signs in through the web UI" in r.text


# -- ID tokens: only this provider's, for this client, unexpired ------------------------------------
def _real_id_token(op: Any, client_id: str, secret: str, redirect: str) -> str:
    """An ID token the provider issues to ``client_id`` (its own code flow, by hand)."""
    from tests.support.oidc_provider import PEOPLE

    s = requests.Session()
    page = s.get(
        f"{op.issuer}/authorize",
        params={
            "response_type": "code",
            "client_id": client_id,
            "redirect_uri": redirect,
            "scope": "openid",
            "state": "s",
            "nonce": "n",
        },
        timeout=HTTP_TIMEOUT,
    )
    s.max_redirects = 5
    r = _provider_login_no_follow(s, page, "olivia", PEOPLE["olivia"][0])
    code = parse_qs(urlparse(r).query)["code"][0]
    t = requests.post(
        f"{op.issuer}/token",
        data={"grant_type": "authorization_code", "code": code, "redirect_uri": redirect},
        auth=(client_id, secret),
        timeout=HTTP_TIMEOUT,
    )
    assert t.status_code == 200, t.text
    return t.json()["id_token"]


def _provider_login_no_follow(s: requests.Session, page: requests.Response, user: str, password: str) -> str:
    csrf = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text)
    nxt = re.search(r'name="next" value="([^"]*)"', page.text)
    assert csrf and nxt
    r = s.post(
        page.url.split("?", 1)[0],
        data={"csrfmiddlewaretoken": csrf.group(1), "username": user, "password": password, "next": html.unescape(nxt.group(1))},
        timeout=HTTP_TIMEOUT,
        allow_redirects=False,
    )
    while r.status_code in (301, 302, 303) and "/auth/oidc/callback" not in r.headers["Location"]:
        r = s.get(requests.compat.urljoin(r.url, r.headers["Location"]), timeout=HTTP_TIMEOUT, allow_redirects=False)
    return r.headers["Location"]


def _b64(data: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def test_id_token_for_another_client_tampered_or_expired_is_refused(srv: RegistryProcess, op: Any) -> None:
    from moorage.auth.oidc import OidcClient, SignInRefused
    from moorage.config import OidcSettings
    from tests.support.oidc_provider import CLIENT_ID, CLIENT_SECRET, OTHER_CLIENT_ID, OTHER_SECRET

    callback = f"{srv.url}/auth/oidc/callback"
    ours = _real_id_token(op, CLIENT_ID, CLIENT_SECRET, callback)
    theirs = _real_id_token(op, OTHER_CLIENT_ID, OTHER_SECRET, callback)
    settings = OidcSettings(issuer=op.issuer, client_id=CLIENT_ID, client_secret=CLIENT_SECRET)

    async def verify(raw: str, nonce: str | None = "n") -> dict:
        client = OidcClient(settings)
        try:
            return await client.verify_id_token(raw, nonce=nonce)
        finally:
            await client.close()

    claims = asyncio.run(verify(ours))
    assert claims["aud"] == CLIENT_ID and claims["preferred_username"] == "olivia"
    with pytest.raises(SignInRefused):  # the nonce of another sign-in
        asyncio.run(verify(ours, "other-nonce"))
    with pytest.raises(SignInRefused):  # wrong audience: a real token of the provider, for another client
        asyncio.run(verify(theirs))
    head, payload, sig = theirs.split(".")
    forged = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    forged["aud"] = CLIENT_ID
    with pytest.raises(SignInRefused):  # tampered: audience rewritten, signature kept
        asyncio.run(verify(f"{head}.{_b64(forged)}.{sig}"))
    with pytest.raises(SignInRefused):  # unsigned
        asyncio.run(verify(f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(forged)}."))
    # expired: the provider's own key, an exp in the past (a token from the provider's key set
    # cannot be made to expire early, so sign with a key the client is given as the JWKS)
    from joserfc import jwt as jose_jwt
    from joserfc.jwk import KeySet, RSAKey

    key = RSAKey.generate_key(2048, parameters={"kid": "k1"})
    now = int(time.time())
    base = {"iss": op.issuer, "aud": CLIENT_ID, "sub": "1", "nonce": "n", "iat": now - 4000}
    expired = jose_jwt.encode({"alg": "RS256", "kid": "k1"}, {**base, "exp": now - 3600}, key)
    fresh = jose_jwt.encode({"alg": "RS256", "kid": "k1"}, {**base, "iat": now, "exp": now + 600}, key)

    async def verify_with_key(raw: str) -> dict:
        client = OidcClient(settings)
        client._jwks = (KeySet([key]), time.monotonic())  # the provider's keys, pinned for this check
        client._metadata = ({"issuer": op.issuer}, time.monotonic())
        try:
            return await client.verify_id_token(raw, nonce="n")
        finally:
            await client.close()

    assert asyncio.run(verify_with_key(fresh))["sub"] == "1"
    with pytest.raises(SignInRefused, match="expired"):
        asyncio.run(verify_with_key(expired))


# -- the provider's word, re-read: groups and deletion ------------------------------------------------
def test_removed_from_group_then_deleted_at_the_provider(srv: RegistryProcess, op: Any) -> None:
    s = sso_session(srv, "otto")
    token = ("otto", ui_token(srv, s, "ci"))
    assert _access(srv, "repository:team/otto:pull,push", token) == ["pull", "push"]
    op.remove_member("developers", "otto")
    _within(CACHE_TTL + 15, lambda: _access(srv, "repository:team/otto:pull,push", token) == [], "group removal")
    assert _access(srv, "repository:otto/own:push", token) == ["push"]  # their namespace stays
    op.delete_user("otto")
    _within(CACHE_TTL + 15, lambda: token_response(srv, [], token).status_code == 401, "deletion at the provider")
    # and the UI session ends too
    assert "/ui/login" in s.get(f"{srv.url}/ui/tokens", timeout=HTTP_TIMEOUT).url


def test_admin_groups_member_administers(srv: RegistryProcess) -> None:
    s = sso_session(srv, "opal")
    token = ("opal", ui_token(srv, s, "admin-ci"))
    assert requests.get(f"{srv.url}/api/v1/users", auth=token, timeout=HTTP_TIMEOUT).status_code == 200
    s2 = sso_session(srv, "oscar")
    token2 = ("oscar", ui_token(srv, s2, "ci"))
    assert requests.get(f"{srv.url}/api/v1/users", auth=token2, timeout=HTTP_TIMEOUT).status_code == 403
    assert _access(srv, "repository:team/app:pull", token2) == []  # in no group: nothing of team/*


# -- break-glass (stops the provider: keep last) --------------------------------------------------------
def test_provider_down_local_admin_works_and_sso_says_so(srv: RegistryProcess, op: Any) -> None:
    assert requests.get(f"{srv.url}/readyz", timeout=HTTP_TIMEOUT).json()["identity"] == {"oidc": "ok"}
    op.kill()
    r = requests.get(f"{srv.url}/auth/oidc/login", timeout=HTTP_TIMEOUT, allow_redirects=False)
    # the discovery document may still be cached: then the browser is sent on to a dead provider
    if r.status_code != 303:
        assert r.status_code == 503 and "does not answer" in r.text
    assert token_response(srv, ["repository:any/thing:push"], ADMIN).status_code == 200
    ready = requests.get(f"{srv.url}/readyz", timeout=HTTP_TIMEOUT)
    assert ready.status_code == 200 and f"the OpenID provider at {op.issuer} does not answer" in ready.json()["identity"]["oidc"]
    metrics = requests.get(f"{srv.url}/metrics", auth=ADMIN, timeout=HTTP_TIMEOUT).text
    assert f'moorage_oidc_up{{issuer="{op.issuer}"}} 0.0' in metrics
