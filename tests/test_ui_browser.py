"""The web UI in a real headless Chromium (Debian's ``chromium`` driven by Playwright), against a
real ``moorage serve`` with token auth, images pushed over the registry API, and skopeo.

Journeys: sign in, search, open a repository, copy its pull command, open a manifest (layers,
config, history), delete a tag (gone from ``/v2/.../tags/list`` too), create an access token
and use it with skopeo, revoke it (refused), anonymous visitor, CSRF-less POST.  Screenshots
of every main page, light and dark, go to ``$MOORAGE_SCREENSHOTS`` (default
``tests/artifacts/screenshots``).
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.support import ocilayout
from tests.support.authsrv import ADMIN_PASSWORD, start_auth_server
from tests.support.registry_proc import RegistryProcess
from tests.support.ui import CHROMIUM, HTTP_TIMEOUT, launch_chromium, push_image, push_index, push_referrer, screenshot_dir

pytestmark = pytest.mark.clients
playwright_api = pytest.importorskip("playwright.sync_api")
if not Path(CHROMIUM).exists():  # pragma: no cover
    pytest.skip(f"{CHROMIUM} missing (.ci/install-clients.sh installs Debian's chromium)", allow_module_level=True)

ADMIN = ("admin", ADMIN_PASSWORD)
ALICE = ("alice", "alice-Pw-1")
BOB = ("bob", "bob-Pw-1")
SIG_TYPE = "application/vnd.dev.sigstore.bundle.v0.3+json"
SBOM_TYPE = "application/spdx+json"


def _api(proc: RegistryProcess, method: str, path: str, **kw: Any) -> requests.Response:
    r = requests.request(method, f"{proc.url}/api/v1/{path}", auth=ADMIN, timeout=HTTP_TIMEOUT, **kw)
    assert r.status_code < 300, (r.status_code, r.text)
    return r


@pytest.fixture(scope="module")
def srv(backend: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryProcess]:
    name, make_env = backend
    tmp = tmp_path_factory.mktemp(f"ui-{name}")
    proc = start_auth_server(tmp, make_env())
    try:
        for user, pw in (ALICE, BOB):
            _api(proc, "POST", "users", json={"name": user, "password": pw})
        img = push_image(proc, "alice/app", "v1", tmp, seed="app-v1", layers=(6000, 3000, 1000), auth=ALICE)
        push_image(proc, "alice/app", "v2", tmp, seed="app-v2", auth=ALICE)
        push_image(proc, "alice/app", "old", tmp, seed="app-old", auth=ALICE)
        push_index(proc, "alice/multi", "latest", tmp, seed="multi", auth=ALICE)
        push_referrer(proc, "alice/app", img.manifest, SIG_TYPE, b"signature-bytes", auth=ALICE)
        push_referrer(proc, "alice/app", img.manifest, SBOM_TYPE, b'{"spdxVersion":"SPDX-2.3"}', auth=ALICE)
        push_image(proc, "pub/hello", "1.0", tmp, seed="hello", auth=ADMIN)
        push_image(proc, "other/secret", "x", tmp, seed="secret", auth=ADMIN)
        _api(proc, "PUT", "visibility", json={"repository": "pub/hello", "public": True})
        proc.img_v1 = img  # type: ignore[attr-defined]
        yield proc
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with playwright_api.sync_playwright() as p:
        b = launch_chromium(p)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture()
def page(browser: Any, srv: RegistryProcess) -> Iterator[Any]:
    ctx = browser.new_context(base_url=srv.url, viewport={"width": 1280, "height": 900})
    ctx.set_default_timeout(15_000)
    pg = ctx.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    # Error pages (404, 401 ...) are expected in some journeys; scripts and styles must load.
    pg.on(
        "console",
        lambda m: errors.append(m.text) if m.type == "error" and not m.text.startswith("Failed to load resource") else None,
    )
    pg.on(
        "response",
        lambda r: (
            errors.append(f"{r.status} {r.url}") if r.status >= 400 and ("/static/" in r.url or r.url.endswith(".json")) else None
        ),
    )
    pg.js_errors = errors
    try:
        yield pg
    finally:
        ctx.close()
    assert not errors, f"JavaScript errors: {errors}"


def sign_in(page: Any, user: tuple[str, str]) -> None:
    page.goto("/ui/login")
    page.fill("input[name=username]", user[0])
    page.fill("input[name=password]", user[1])
    page.click("button[type=submit]:has-text('Sign in')")
    page.wait_for_url(re.compile(r"/$"))


UNLABELLED_JS = """() => {
  const bad = [];
  for (const el of document.querySelectorAll('input:not([type=hidden]), select, textarea, button')) {
    const named = (el.labels && el.labels.length) || el.getAttribute('aria-label') ||
                  (el.tagName === 'BUTTON' && el.textContent.trim());
    if (!named) bad.push(el.outerHTML.slice(0, 120));
  }
  if (document.querySelectorAll('h1').length !== 1) bad.push('h1 count ' + document.querySelectorAll('h1').length);
  if (!document.documentElement.lang) bad.push('no lang');
  if (!document.querySelector('main')) bad.push('no main landmark');
  return bad;
}"""


def shoot(page: Any, name: str) -> None:
    """Screenshot in light and dark (prefers-color-scheme), full page; and check on the way
    that every control has an accessible name and the page one h1 and a main landmark."""
    assert page.evaluate(UNLABELLED_JS) == [], name
    d = screenshot_dir()
    for scheme in ("light", "dark"):
        page.emulate_media(color_scheme=scheme)
        if page.evaluate("() => !!window.Chart"):  # charts redraw in the new colours
            page.wait_for_function("() => Object.keys(Chart.instances).length == 2")
            page.wait_for_timeout(300)
        page.screenshot(path=str(d / f"{name}-{scheme}.png"), full_page=True)
    page.emulate_media(color_scheme="light")


def repo_names(page: Any) -> list[str]:
    return [t.strip() for t in page.locator("table.repos tbody th a").all_inner_texts()]


# -- journeys ------------------------------------------------------------------------------
def test_sign_in_search_open_and_copy_pull_command(page: Any, srv: RegistryProcess) -> None:
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    sign_in(page, ALICE)
    assert "alice" in page.locator("header .user").inner_text()
    names = repo_names(page)
    assert "alice/app" in names and "alice/multi" in names and "pub/hello" in names
    assert "other/secret" not in names  # alice has no right there
    shoot(page, "repositories")
    # search as you type: htmx replaces the results without a page load
    page.fill("input[type=search]", "mult")
    page.wait_for_function("() => !document.querySelector('#repo-results').innerText.includes('alice/app')")
    assert repo_names(page) == ["alice/multi"]
    assert "q=mult" in page.url  # pushed into the history: the URL can be shared
    page.fill("input[type=search]", "app")
    page.wait_for_function("() => document.querySelector('#repo-results').innerText.includes('alice/app')")
    page.get_by_role("link", name="alice/app", exact=True).click()
    page.wait_for_url(re.compile(r"/ui/repo/alice/app$"))
    pull = page.locator("#pull-cmd").inner_text()
    assert re.fullmatch(rf"docker pull {re.escape(srv.host)}/alice/app:(v1|v2|old)", pull), pull
    assert page.get_by_text(f"podman pull {srv.host}/alice/app:").count() == 1
    page.click("button[aria-label='Copy docker pull command']")
    assert page.evaluate("() => navigator.clipboard.readText()") == pull
    # tags with short digests, sizes, referrers grouped by artifactType under the tagged manifest
    row = page.locator("table.tags tbody tr", has=page.locator("th a", has_text=re.compile(r"^v1$")))
    assert srv.img_v1.digest[:19] in row.locator("code.digest").inner_text()
    page.locator("tr.referrers summary").first.click()
    refs = page.locator("tr.referrers").first.inner_text()
    assert SIG_TYPE in refs and SBOM_TYPE in refs
    shoot(page, "repository")


def test_manifest_page_shows_layers_config_and_history(page: Any, srv: RegistryProcess) -> None:
    sign_in(page, ALICE)
    page.goto("/ui/repo/alice/app")
    page.locator("table.tags tbody th a", has_text=re.compile(r"^v1$")).click()
    page.wait_for_url(re.compile(r"/-/manifest/sha256:"))
    img: ocilayout.LayoutImage = srv.img_v1
    layers = page.locator("table.layers tbody tr")
    assert layers.count() == len(img.layers) == 3
    for i, layer in enumerate(img.layers):
        assert layer.digest[:19] in layers.nth(i).inner_text()
    assert page.locator("ol.history li").count() == 3
    assert "moorage test layer 0" in page.locator("ol.history").inner_text()
    facts = page.locator("#cfg-h + dl").inner_text()
    assert "linux/amd64" in facts and "/bin/sh" in facts
    assert "PATH=" in page.locator("section[aria-labelledby=cfg-h]").inner_text()
    page.locator("#raw-h + details summary").click()
    assert ocilayout.MT_OCI_MANIFEST in page.locator("#raw-h + details").inner_text()
    assert '"schemaVersion": 2' in page.locator("pre.raw").inner_text()
    shoot(page, "manifest")
    # an index lists its platforms, each linking to its manifest
    page.goto("/ui/repo/alice/multi")
    assert "linux/arm64/v8" in page.locator("table.tags").inner_text()
    page.locator("table.tags tbody th a", has_text="latest").click()
    plats = page.locator("section[aria-labelledby=plat-h] tbody tr")
    assert plats.count() == 2
    plats.nth(1).locator("a").click()
    assert page.locator("table.layers tbody tr").count() == 1
    assert "Part of index" in page.locator("dl.facts").first.inner_text()
    shoot(page, "manifest-index")


def test_delete_tag_is_gone_from_the_api_too(page: Any, srv: RegistryProcess) -> None:
    sign_in(page, ALICE)
    page.goto("/ui/repo/alice/app")
    page.click("a[aria-label='Delete tag old']")
    page.wait_for_url(re.compile(r"/-/delete\?tag=old"))
    shoot(page, "delete-confirm")
    page.click("button:has-text('Delete tag')")
    page.wait_for_url(re.compile(r"/ui/repo/alice/app$"))
    assert page.locator("table.tags tbody th a", has_text=re.compile(r"^old$")).count() == 0
    token = requests.get(
        f"{srv.url}/auth/token",
        params={"service": "moorage", "scope": "repository:alice/app:pull"},
        auth=ALICE,
        timeout=HTTP_TIMEOUT,
    ).json()["token"]
    tags = requests.get(
        f"{srv.url}/v2/alice/app/tags/list", headers={"Authorization": f"Bearer {token}"}, timeout=HTTP_TIMEOUT
    ).json()["tags"]
    assert "old" not in tags and {"v1", "v2"} <= set(tags)


def test_token_create_use_with_skopeo_and_revoke(page: Any, srv: RegistryProcess, tmp_path: Path) -> None:
    from tests.support.clients import Skopeo

    if shutil.which("skopeo") is None:
        pytest.skip("skopeo missing")
    sign_in(page, ALICE)
    page.click("nav a:has-text('Access tokens')")
    page.fill("#tname", "ci")
    page.click("button:has-text('Create token')")
    secret = page.locator("#new-token").inner_text().strip()
    assert secret.startswith("moor_")
    assert page.locator("#login-cmd").inner_text() == f"docker login {srv.host} -u alice"
    shoot(page, "tokens")
    sk = Skopeo(tmp_path / "skopeo")
    sk.login(srv.host, "alice", secret)
    assert sk.json("inspect", "--raw", f"docker://{srv.host}/alice/app:v1")["layers"][0]["digest"] == srv.img_v1.layers[0].digest
    # the secret is shown once: a reload does not show it again
    page.goto("/ui/tokens")
    assert page.locator("#new-token").count() == 0 and secret not in page.content()
    page.click("button[aria-label='Revoke token ci']")
    page.wait_for_url(re.compile(r"/ui/tokens$"))
    assert "revoked" in page.locator("table.tokens").inner_text()
    refused = sk("inspect", "--raw", f"docker://{srv.host}/alice/app:v1", check=False)
    assert refused.returncode != 0
    assert any(w in refused.stderr.lower() for w in ("unauthorized", "authentication required", "denied")), refused.stderr
    # signing in to the UI with the revoked token fails too
    page.context.clear_cookies()
    page.goto("/ui/login")
    page.fill("input[name=username]", "alice")
    page.fill("input[name=password]", secret)
    page.click("button[type=submit]:has-text('Sign in')")
    assert page.locator(".error").inner_text().startswith("Invalid")


def test_sign_in_with_access_token_limits_to_its_scope(page: Any, srv: RegistryProcess) -> None:
    r = requests.post(f"{srv.url}/api/v1/me/tokens", json={"name": "ro", "scope": ["pub/*:pull"]}, auth=BOB, timeout=HTTP_TIMEOUT)
    assert r.status_code == 201, r.text
    _api(srv, "POST", "grants", json={"user": "bob", "pattern": "alice/*", "actions": "pull"})
    try:
        sign_in(page, ("bob", r.json()["token"]))
        names = repo_names(page)
        assert "pub/hello" in names and "alice/app" not in names  # the token's scope, not bob's grants
        assert page.locator("nav a:has-text('Access tokens')").count() == 0  # scoped: no token management
        page.context.clear_cookies()
        sign_in(page, BOB)
        assert "alice/app" in repo_names(page)
        page.goto("/ui/repo/alice/app")
        assert page.locator("a[aria-label^='Delete tag']").count() == 0  # pull only
    finally:
        requests.delete(
            f"{srv.url}/api/v1/grants", params={"user": "bob", "pattern": "alice/*"}, auth=ADMIN, timeout=HTTP_TIMEOUT
        )


def test_anonymous_visitor_sees_only_public_repositories(page: Any, srv: RegistryProcess) -> None:
    page.goto("/")
    assert repo_names(page) == ["pub/hello"]
    assert page.locator("a:has-text('Sign in')").count() == 1
    shoot(page, "repositories-anonymous")
    page.get_by_role("link", name="pub/hello", exact=True).click()
    assert page.locator("#pull-cmd").inner_text() == f"docker pull {srv.host}/pub/hello:1.0"
    assert page.locator("a[aria-label^='Delete']").count() == 0
    # private repositories: sent to sign in, nothing about them shown
    resp = page.goto("/ui/repo/alice/app")
    assert "/ui/login" in page.url and "alice/app" not in page.locator("main").inner_text().replace("next=", "")
    assert resp is not None
    page.goto("/ui/stats")
    page.wait_for_function("() => window.Chart && Object.keys(Chart.instances).length == 2")
    shoot(page, "stats-anonymous")
    storage = page.evaluate("() => fetch('/ui/stats/storage.json').then(r => r.json())")
    assert storage["labels"] == ["pub"]


def test_csrf_less_post_is_refused(page: Any, srv: RegistryProcess) -> None:
    sign_in(page, ALICE)
    cookies = {c["name"]: c["value"] for c in page.context.cookies()}
    assert "moorage_session" in cookies
    session_cookie = next(c for c in page.context.cookies() if c["name"] == "moorage_session")
    assert session_cookie["httpOnly"] and session_cookie["sameSite"] in ("Lax", "Strict")
    jar = {"moorage_session": cookies["moorage_session"]}
    for form in ({"tag": "v2"}, {"tag": "v2", "csrf": "forged"}, {"tag": "v2", "csrf": ""}):
        r = requests.post(
            f"{srv.url}/ui/repo/alice/app/-/delete", data=form, cookies=jar, timeout=HTTP_TIMEOUT, allow_redirects=False
        )
        assert r.status_code == 403, (form, r.status_code)
    # the token of one session is worthless in another (bound to the session, not global)
    page.goto("/ui/tokens")
    token = page.locator("input[name=csrf]").first.get_attribute("value")
    other = requests.Session()
    other.get(f"{srv.url}/ui/login", timeout=HTTP_TIMEOUT)
    r = other.post(
        f"{srv.url}/ui/repo/alice/app/-/delete", data={"tag": "v2", "csrf": token}, timeout=HTTP_TIMEOUT, allow_redirects=False
    )
    assert r.status_code == 403
    # a cross-site Origin is refused even with the right token
    r = requests.post(
        f"{srv.url}/ui/tokens",
        data={"name": "x", "csrf": token},
        cookies=jar,
        headers={"Origin": "http://evil.example"},
        timeout=HTTP_TIMEOUT,
        allow_redirects=False,
    )
    assert r.status_code == 403
    # nothing happened: v2 is still there
    page.goto("/ui/repo/alice/app")
    assert page.locator("table.tags tbody th a", has_text=re.compile(r"^v2$")).count() == 1
    # signing out ends the session server-side: the old cookie is worthless
    page.click("button:has-text('Sign out')")
    r = requests.get(f"{srv.url}/ui/tokens", cookies=jar, timeout=HTTP_TIMEOUT, allow_redirects=False)
    assert r.status_code == 303 and r.headers["Location"].startswith("/ui/login")


def test_admin_pages_and_screenshots(page: Any, srv: RegistryProcess) -> None:
    sign_in(page, ADMIN)
    assert "other/secret" in repo_names(page)
    page.goto("/ui/admin/users")
    page.fill("#uname", "dana")  # a person: the generated password is shown once
    page.click("button:has-text('Create')")
    assert page.locator(".secret h2").inner_text() == "User dana created"
    page.fill("#uname", "ci-bot")
    page.select_option("#ukind", "robot")
    page.click("button:has-text('Create')")
    robot_secret = page.locator("#new-token").inner_text()
    assert robot_secret.startswith("moor_")
    assert "ci-bot" in page.locator("table.users").inner_text()
    shoot(page, "users")
    # a password reset shows the new password once; it works for the API at once
    page.click("button[aria-label='Reset the password of bob']")
    new_pw = page.locator(".secret code").first.inner_text().strip()
    r = requests.get(f"{srv.url}/api/v1/me", auth=("bob", new_pw), timeout=HTTP_TIMEOUT)
    assert r.status_code == 200 and r.json()["name"] == "bob"
    _api(srv, "PUT", "users/bob/password", json={"password": BOB[1]})
    page.goto("/ui/admin/namespaces")
    page.select_option("#g-user", "ci-bot")
    page.fill("#g-ns", "alice")
    page.check("input[name=push]")
    page.click("form:has(input[value=grant]) button[type=submit]")
    page.wait_for_url(re.compile(r"/ui/admin/namespaces$"))
    assert "alice/*" in page.locator("section[aria-labelledby=grants-h]").inner_text()
    page.fill("#q-ns", "alice")
    page.fill("#q-limit", "1GiB")
    page.click("form:has(input[value=quota]) button[type=submit]")
    page.fill("#r-ns", "alice")
    page.fill("#r-last", "5")
    page.click("form:has(input[value=retention]) button[type=submit]")
    page.fill("#i-ns", "pub")
    page.fill("#i-re", "^[0-9]")
    page.click("form:has(input[value=immutable]) button[type=submit]")
    text = page.locator("main").inner_text()
    assert "keep last 5" in text and "^[0-9]" in text and "1.0 GiB" in text
    shoot(page, "namespaces")
    # immutable rule is enforced by the registry: re-pushing pub/hello:1.0 with other content fails
    page.goto("/ui/admin/gc")
    page.click("button:has-text('Dry run')")
    assert "Space freed" in page.locator("section[role=status]").inner_text()
    shoot(page, "gc")
    page.goto("/ui/repo/pub/hello")
    page.click("button:has-text('Make private')")
    assert page.locator(".titlebar .badge").inner_text() == "private"
    page.click("button:has-text('Make public')")
    assert page.locator(".titlebar .badge").inner_text() == "public"
    page.goto("/ui/stats")
    page.wait_for_function("() => window.Chart && Object.keys(Chart.instances).length == 2")
    shoot(page, "stats")
    activity = page.evaluate("() => fetch('/ui/stats/activity.json').then(r => r.json())")
    assert sum(activity["pushes"]) >= 8  # every manifest push of the fixture was recorded
    page.goto("/ui/login")
    page.context.clear_cookies()
    page.goto("/ui/login")
    shoot(page, "login")


def test_narrow_screen_layout(browser: Any, srv: RegistryProcess) -> None:
    ctx = browser.new_context(base_url=srv.url, viewport={"width": 390, "height": 844}, device_scale_factor=1)
    try:
        page = ctx.new_page()
        sign_in(page, ALICE)
        # no horizontal scrolling on a phone-sized screen
        assert page.evaluate("() => document.documentElement.scrollWidth") <= 390
        shoot(page, "repositories-narrow")
        page.goto("/ui/repo/alice/app")
        assert page.evaluate("() => document.documentElement.scrollWidth") <= 390
        shoot(page, "repository-narrow")
    finally:
        ctx.close()


def test_operator_pages_webhook_test_event_and_gc_with_confirmation(page: Any, srv: RegistryProcess, tmp_path: Path) -> None:
    """An administrator creates a webhook to a local receiver in the form, sends it a test
    event (which arrives, signed), then runs a garbage collection through its confirmation
    step; the audit page names them as the actor of each, through face ``ui``."""
    from tests.support.webhook_receiver import Receiver

    with Receiver() as rx:
        sign_in(page, ADMIN)
        page.goto("/ui/admin/webhooks")
        page.fill("#h-name", "browser")
        page.fill("#h-url", rx.url("/browser"))
        page.fill("#h-repos", "alice/*")
        page.click("button:has-text('Create')")
        secret = page.locator("button[aria-label='Copy secret']").get_attribute("data-copy")
        assert secret and "Webhook browser created" in page.locator("main").inner_text()
        shoot(page, "webhooks")
        page.click("a:has-text('browser')")
        page.click("button:has-text('Send a test event')")
        assert "Test event queued" in page.locator("main").inner_text()
        got = rx.wait_for(1, "/browser")
        assert got[0].signed_with(secret) and got[0].json()["events"][0]["target"]["tag"] == "test"
        for _ in range(50):
            page.reload()
            if page.locator(".status-delivered").count():
                break
            page.wait_for_timeout(200)
        assert page.locator(".status-delivered").count() == 1
        shoot(page, "webhook")

    push_image(srv, "alice/gc", "gone", tmp_path, seed="gc-browser", auth=ALICE)
    page.goto("/ui/admin/gc")
    page.click("button:has-text('Run collection')")
    assert "Run a garbage collection now?" in page.locator("main").inner_text()
    shoot(page, "gc-confirm")
    page.click("button:has-text('Yes, collect now')")
    assert "Removed" in page.locator("section[role=status]").inner_text()

    page.goto("/ui/admin/audit?action=gc.run")
    rows = page.locator("table.audit tbody tr")
    assert "admin" in rows.first.inner_text() and "ui" in rows.first.inner_text() and "GC: removed" in rows.first.inner_text()
    shoot(page, "audit")
    page.goto("/ui/admin/vulndb")
    shoot(page, "vulndb")
    page.goto("/ui/admin/cache")
    shoot(page, "cache")
