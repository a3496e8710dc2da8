"""The web UI over plain HTTP (no browser): every auth mode, ``ui.enabled: false``, sessions,
CSRF, permissions and hostile input.  Each case drives a real ``moorage serve``."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.support.authsrv import ADMIN_PASSWORD, add_user, cli, start_auth_server
from tests.support.registry_proc import RegistryProcess, start_moorage, write_htpasswd
from tests.support.ui import HTTP_TIMEOUT, push_image

ADMIN = ("admin", ADMIN_PASSWORD)


def csrf_of(html: str) -> str:
    m = re.search(r'name="csrf" value="([^"]+)"', html)
    assert m, "no CSRF field in the page"
    return m.group(1)


def ui_login(proc: RegistryProcess, user: str, password: str, session: requests.Session | None = None) -> requests.Session:
    s = session or requests.Session()
    page = s.get(f"{proc.url}/ui/login", timeout=HTTP_TIMEOUT)
    assert page.status_code == 200
    assert 'name="username"' in page.text and 'name="password"' in page.text
    r = s.post(
        f"{proc.url}/ui/login",
        data={"username": user, "password": password, "csrf": csrf_of(page.text)},
        timeout=HTTP_TIMEOUT,
        allow_redirects=False,
    )
    assert r.status_code == 303, (r.status_code, r.text[:500])
    return s


# -- auth.mode: none ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def open_srv(backend: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryProcess]:
    name, make_env = backend
    tmp = tmp_path_factory.mktemp(f"ui-none-{name}")
    proc = start_moorage(tmp / "srv", env=make_env())
    try:
        push_image(proc, "lib/web", "1.0", tmp, seed="web1")
        push_image(proc, "lib/web", "2.0", tmp, seed="web2")
        push_image(proc, "top", "latest", tmp, seed="top")
        yield proc
    finally:
        proc.stop()


def test_open_registry_shows_everything_at_root(open_srv: RegistryProcess) -> None:
    r = requests.get(f"{open_srv.url}/", timeout=HTTP_TIMEOUT)
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/html")
    assert '<input type="search"' in r.text
    assert re.search(r'<a href="/ui/repo/lib/web">lib/web</a>', r.text)
    assert re.search(r'<a href="/ui/repo/top">top</a>', r.text)
    assert "frame-ancestors 'none'" in r.headers["Content-Security-Policy"]
    page = requests.get(f"{open_srv.url}/ui/repo/lib/web", timeout=HTTP_TIMEOUT).text
    assert f"docker pull {open_srv.host}/lib/web:2.0" in page
    # the pull command follows the Host the browser used
    other = requests.get(f"{open_srv.url}/ui/repo/lib/web", headers={"Host": "registry.example:5443"}, timeout=HTTP_TIMEOUT).text
    assert "docker pull registry.example:5443/lib/web:2.0" in other
    evil = requests.get(f"{open_srv.url}/ui/repo/lib/web", headers={"Host": 'x"><script>alert(1)</script>'}, timeout=HTTP_TIMEOUT)
    assert evil.status_code in (200, 400) and "<script>alert(1)" not in evil.text


def test_open_registry_forms_need_csrf(open_srv: RegistryProcess, tmp_path: Path) -> None:
    push_image(open_srv, "lib/tmp", "gone", tmp_path, seed="gone")
    push_image(open_srv, "lib/tmp", "kept", tmp_path, seed="kept")
    r = requests.post(
        f"{open_srv.url}/ui/repo/lib/tmp/-/delete", data={"tag": "gone"}, timeout=HTTP_TIMEOUT, allow_redirects=False
    )
    assert r.status_code == 403
    s = requests.Session()
    page = s.get(f"{open_srv.url}/ui/repo/lib/tmp/-/delete", params={"tag": "gone"}, timeout=HTTP_TIMEOUT)
    assert page.status_code == 200 and "Delete tag" in page.text
    r = s.post(
        f"{open_srv.url}/ui/repo/lib/tmp/-/delete",
        data={"tag": "gone", "csrf": csrf_of(page.text)},
        timeout=HTTP_TIMEOUT,
        allow_redirects=False,
    )
    assert r.status_code == 303
    tags = requests.get(f"{open_srv.url}/v2/lib/tmp/tags/list", timeout=HTTP_TIMEOUT).json()["tags"]
    assert tags == ["kept"]
    # the double-submit cookie is HttpOnly and SameSite=Strict
    raw = page.headers.get("Set-Cookie", "") or ""
    jar = [c for c in s.cookies if c.name == "moorage_csrf"]
    assert jar and jar[0].has_nonstandard_attr("HttpOnly") and "SameSite=Strict" in raw


def test_sort_by_size_and_last_push_follow_pushes(open_srv: RegistryProcess, tmp_path: Path) -> None:
    """The kept sort figures are refreshed from push events (within a flush interval)."""
    import time

    push_image(open_srv, "lib/huge", "1", tmp_path, seed="huge", layers=(300_000,))
    deadline = time.monotonic() + 20
    while True:
        page = requests.get(f"{open_srv.url}/", params={"sort": "size"}, timeout=HTTP_TIMEOUT).text
        first = re.search(r'<a href="/ui/repo/([^"]+)">', page)
        pushed = re.search(
            r'<a href="/ui/repo/([^"]+)">', requests.get(f"{open_srv.url}/", params={"sort": "pushed"}, timeout=HTTP_TIMEOUT).text
        )
        if first and first.group(1) == "lib/huge" and pushed and pushed.group(1) == "lib/huge":
            break
        assert time.monotonic() < deadline, "sort figures were not refreshed after a push"
        time.sleep(0.5)
    assert "Traceback" not in (open_srv.log_path.read_text() if open_srv.log_path else "")


def test_open_registry_sign_in_is_accepted_and_shown(open_srv: RegistryProcess) -> None:
    s = ui_login(open_srv, "someone", "")
    assert ">someone<" in s.get(f"{open_srv.url}/", timeout=HTTP_TIMEOUT).text


def test_activity_is_recorded_from_registry_events(open_srv: RegistryProcess, tmp_path: Path) -> None:
    before = requests.get(f"{open_srv.url}/ui/stats/activity.json", timeout=HTTP_TIMEOUT).json()
    push_image(open_srv, "lib/act", "a", tmp_path, seed="act")
    for _ in range(3):
        r = requests.get(
            f"{open_srv.url}/v2/lib/act/manifests/a",
            headers={"Accept": "application/vnd.oci.image.manifest.v1+json"},
            timeout=HTTP_TIMEOUT,
        )
        assert r.status_code == 200
    after = requests.get(f"{open_srv.url}/ui/stats/activity.json", timeout=HTTP_TIMEOUT).json()
    assert sum(after["pushes"]) == sum(before["pushes"]) + 1
    assert sum(after["pulls"]) == sum(before["pulls"]) + 3
    assert len(after["hours"]) == 7 * 24
    storage = requests.get(f"{open_srv.url}/ui/stats/storage.json", timeout=HTTP_TIMEOUT).json()
    assert "lib" in storage["labels"] and "(top level)" in storage["labels"]


HOSTILE_PATHS = [
    "/?q=" + "a" * 20_000,
    "/?q=%25%25%25_",
    "/?q=%F0%9F%90%B3%E2%80%AEevil",
    "/?q=%00",
    "/?ns=a%00b&q=%01%7F",
    "/ui/repo/lib/web?tag=%00",
    "/ui/repo/lib/web/-/manifest/v%00",
    "/ui/repo/lib/web/-/delete?tag=%00",
    "/?sort=DROP%20TABLE&page=-5",
    "/?page=99999999999999999999999",
    "/?sort=pushed&after=nan%3Ax&page=3",
    "/?sort=size&before=1e999%3Aa&page=5",
    "/?after=%00&before=zz&page=2",
    "/?sort=pushed&after=" + "9" * 400 + "%3Ab",
    "/?sort=name&before=%F0%9F%92%A9%ED%A0%80&page=2",
    "/?ns=lib%2F..%2F..",
    # search through SQLite's trigram index (issue 24): FTS5 query syntax, broken UTF-8, combining marks
    "/?q=%22%22%22",
    "/?q=a%22b%22c%22",
    "/?q=NEAR(web%20lib)%20OR%20*",
    "/?q=%ED%A0%80web",
    "/?q=%FF%FEweb",
    "/?q=e%CC%81%CC%81%CC%81%E2%80%8F",
    "/?q=%5C%5C%5C&sort=size",
    "/?q=web%00lib",
    # keyset pages of the repository page's tags (tampered keys: the first page)
    "/ui/repo/lib/web?after=nan%3A1.0&page=2",
    "/ui/repo/lib/web?before=1e999%3Aa&page=3",
    "/ui/repo/lib/web?after=%00&before=zz&page=2",
    "/ui/repo/lib/web?after=" + "9" * 400 + "%3Ab",
    "/ui/repo/lib/web?before=1.0%3A%F0%9F%92%A9%ED%A0%80&page=2",
    "/ui/repo/lib/web?after=-1e308%3A%25&tag=%25_",
    "/ui/repo/lib/web/-/manifest/sha256:" + "0" * 64,
    "/ui/repo/lib/web/-/manifest/sha256:zz",
    "/ui/repo/lib/web/-/manifest/nosuchtag",
    "/ui/repo/lib/web/-/manifest/" + "x" * 5000,
    "/ui/repo/LIB/WEB",
    "/ui/repo/lib//web",
    "/ui/repo/lib/web?tag=%25&page=0",
    "/ui/repo/" + "a/" * 300 + "b",
    "/ui/repo/lib/web/-/delete",
    "/ui/login?next=//evil.example/x",
    "/ui/tokens",
    "/ui/admin/users",
    "/ui/stats/storage.json",
    "/static/../../pyproject.toml",
    "/static/app.js",
]


@pytest.mark.parametrize("path", HOSTILE_PATHS)
def test_hostile_requests_get_a_page_not_a_crash(open_srv: RegistryProcess, path: str) -> None:
    r = requests.get(open_srv.url + path, timeout=HTTP_TIMEOUT, allow_redirects=False)
    assert r.status_code < 500, (path, r.status_code, r.text[:300])
    assert "Traceback" not in r.text


def test_hostile_posts(open_srv: RegistryProcess) -> None:
    s = requests.Session()
    token = csrf_of(s.get(f"{open_srv.url}/ui/login", timeout=HTTP_TIMEOUT).text)
    url = f"{open_srv.url}/ui/repo/lib/web/-/delete"
    cases = [
        {"tag": "1.0", "digest": "sha256:" + "0" * 64, "csrf": token},  # both
        {"csrf": token},  # neither
        {"tag": "bad tag!", "csrf": token},
        {"digest": "sha256:nothex", "csrf": token},
        {"digest": "sha256:" + "0" * 64, "csrf": token},  # unknown
    ]
    for form in cases:
        r = s.post(url, data=form, timeout=HTTP_TIMEOUT, allow_redirects=False)
        assert 400 <= r.status_code < 500, (form, r.status_code, r.text[:300])
    r = s.post(
        f"{open_srv.url}/ui/login",
        data={"username": "a\x00b", "password": "x\x00", "csrf": token},
        timeout=HTTP_TIMEOUT,
        allow_redirects=False,
    )
    assert r.status_code < 500
    r = s.post(
        f"{open_srv.url}/ui/admin/namespaces",
        data={"action": "quota", "namespace": "\x00", "limit": "1G", "csrf": token},
        timeout=HTTP_TIMEOUT,
        allow_redirects=False,
    )
    assert r.status_code == 400
    big = s.post(url, data={"tag": "x" * 400_000, "csrf": token}, timeout=HTTP_TIMEOUT, allow_redirects=False)
    assert big.status_code == 413
    # login's "next" only ever leads to a local path
    r = s.post(
        f"{open_srv.url}/ui/login",
        data={"username": "x", "password": "", "csrf": token, "next": "//evil.example/"},
        timeout=HTTP_TIMEOUT,
        allow_redirects=False,
    )
    assert r.status_code == 303 and r.headers["Location"] == "/"
    assert requests.get(f"{open_srv.url}/v2/lib/web/tags/list", timeout=HTTP_TIMEOUT).json()["tags"] == ["1.0", "2.0"]


def test_concurrent_page_loads(open_srv: RegistryProcess) -> None:
    results: list[int] = []

    def load() -> None:
        for path in ("/", "/?q=web&sort=size", "/ui/repo/lib/web", "/ui/stats"):
            results.append(requests.get(open_srv.url + path, timeout=HTTP_TIMEOUT).status_code)

    threads = [threading.Thread(target=load) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert results == [200] * 32


# -- auth.mode: htpasswd -----------------------------------------------------------------------
def test_htpasswd_mode(backend: Any, tmp_path: Path) -> None:
    name, make_env = backend
    htpasswd = write_htpasswd(tmp_path / "htpasswd", {"carol": "carol-pw"})
    env = {**make_env(), "MOORAGE_AUTH__MODE": "htpasswd", "MOORAGE_AUTH__HTPASSWD__PATH": str(htpasswd)}
    proc = start_moorage(tmp_path / "srv", env=env)
    try:
        # pushes go through basic auth
        import base64

        basic = {"Authorization": "Basic " + base64.b64encode(b"carol:carol-pw").decode()}
        from tests.support import ocilayout
        from tests.support.ui import put_blob, put_manifest

        img = ocilayout.build_image(tmp_path / "img", "v1", layers=(1000,), seed="htp")
        for b in img.layers + [img.config]:
            put_blob(proc.url, "carol/app", b.data, basic)
        put_manifest(proc.url, "carol/app", "v1", img.manifest.data, img.manifest.media_type, basic)
        r = requests.get(f"{proc.url}/", timeout=HTTP_TIMEOUT, allow_redirects=False)
        assert r.status_code == 303 and r.headers["Location"] == "/ui/login"
        assert requests.get(f"{proc.url}/v2/", timeout=HTTP_TIMEOUT).status_code == 401  # API still protected
        s = requests.Session()
        page = s.get(f"{proc.url}/ui/login", timeout=HTTP_TIMEOUT).text
        bad = s.post(
            f"{proc.url}/ui/login",
            data={"username": "carol", "password": "nope", "csrf": csrf_of(page)},
            timeout=HTTP_TIMEOUT,
            allow_redirects=False,
        )
        assert bad.status_code == 401 and "Invalid username or password" in bad.text
        ui_login(proc, "carol", "carol-pw", s)
        home = s.get(f"{proc.url}/", timeout=HTTP_TIMEOUT).text
        assert '<a href="/ui/repo/carol/app">carol/app</a>' in home
        assert f"docker pull {proc.host}/carol/app:v1" in s.get(f"{proc.url}/ui/repo/carol/app", timeout=HTTP_TIMEOUT).text
        import os
        import time

        # a password change ends the session (issue 21 item 4: it used to survive)
        write_htpasswd(htpasswd, {"carol": "carol-pw2"})
        os.utime(htpasswd, (time.time() + 5, time.time() + 5))
        r = s.get(f"{proc.url}/", timeout=HTTP_TIMEOUT, allow_redirects=False)
        assert r.status_code == 303 and r.headers["Location"] == "/ui/login"
        # signing in again with the new one works; a hostile next= lands on / (issue 21 item 6)
        page = s.get(f"{proc.url}/ui/login", params={"next": "/\t/host/x"}, timeout=HTTP_TIMEOUT).text
        assert 'name="next" value="/"' in page
        r = s.post(
            f"{proc.url}/ui/login",
            data={"username": "carol", "password": "carol-pw2", "csrf": csrf_of(page), "next": "/\t/host/x"},
            timeout=HTTP_TIMEOUT,
            allow_redirects=False,
        )
        assert r.status_code == 303 and r.headers["Location"] == "/"
        assert s.get(f"{proc.url}/", timeout=HTTP_TIMEOUT, allow_redirects=False).status_code == 200
        # a user removed from the htpasswd file loses the session
        write_htpasswd(htpasswd, {"dave": "dave-pw"})
        os.utime(htpasswd, (time.time() + 10, time.time() + 10))
        r = s.get(f"{proc.url}/", timeout=HTTP_TIMEOUT, allow_redirects=False)
        assert r.status_code == 303
    finally:
        proc.stop()


def test_ui_can_be_turned_off(backend: Any, tmp_path: Path) -> None:
    name, make_env = backend
    proc = start_moorage(tmp_path / "srv", env={**make_env(), "MOORAGE_UI__ENABLED": "false"})
    try:
        assert requests.get(f"{proc.url}/", timeout=HTTP_TIMEOUT).status_code == 404
        assert requests.get(f"{proc.url}/static/app.js", timeout=HTTP_TIMEOUT).status_code == 404
        assert requests.get(f"{proc.url}/ui/login", timeout=HTTP_TIMEOUT).status_code == 404
        assert requests.get(f"{proc.url}/v2/", timeout=HTTP_TIMEOUT).status_code == 200
    finally:
        proc.stop()


# -- auth.mode: token: sessions end when the credentials do -------------------------------------
def test_token_mode_sessions_and_permissions(backend: Any, tmp_path: Path) -> None:
    name, make_env = backend
    proc = start_auth_server(tmp_path / "srv", make_env(), MOORAGE_AUTH__LOGIN_RATE_LIMIT="3")
    try:
        add_user(proc, "erin", "erin-pw-1")
        add_user(proc, "frank", "frank-pw-1")
        push_image(proc, "erin/app", "v1", tmp_path, seed="erin", auth=("erin", "erin-pw-1"))
        erin = ui_login(proc, "erin", "erin-pw-1")
        cookie = next(c for c in erin.cookies if c.name == "moorage_session")
        assert cookie.has_nonstandard_attr("HttpOnly") and not cookie.secure
        assert "erin/app" in erin.get(f"{proc.url}/", timeout=HTTP_TIMEOUT).text
        # another user sees nothing of it, and cannot delete there even with a valid form token
        frank = ui_login(proc, "frank", "frank-pw-1")
        assert "erin/app" not in frank.get(f"{proc.url}/", timeout=HTTP_TIMEOUT).text
        assert frank.get(f"{proc.url}/ui/repo/erin/app", timeout=HTTP_TIMEOUT).status_code == 404
        token = csrf_of(frank.get(f"{proc.url}/ui/tokens", timeout=HTTP_TIMEOUT).text)
        r = frank.post(
            f"{proc.url}/ui/repo/erin/app/-/delete",
            data={"tag": "v1", "csrf": token},
            timeout=HTTP_TIMEOUT,
            allow_redirects=False,
        )
        assert r.status_code == 404
        assert frank.get(f"{proc.url}/ui/admin/users", timeout=HTTP_TIMEOUT).status_code == 403
        r = frank.post(
            f"{proc.url}/ui/admin/users",
            data={"name": "evil", "csrf": token, "admin": "1"},
            timeout=HTTP_TIMEOUT,
            allow_redirects=False,
        )
        assert r.status_code == 403
        # anonymous: nothing private, management pages send to sign-in
        anon = requests.get(f"{proc.url}/ui/tokens", timeout=HTTP_TIMEOUT, allow_redirects=False)
        assert anon.status_code == 303 and anon.headers["Location"].startswith("/ui/login")
        assert "erin/app" not in requests.get(f"{proc.url}/", timeout=HTTP_TIMEOUT).text
        # changing the password ends the sessions opened with the old one
        cli(proc, "user", "passwd", "erin", "--password-stdin", input="erin-pw-2\n")
        r = erin.get(f"{proc.url}/ui/tokens", timeout=HTTP_TIMEOUT, allow_redirects=False)
        assert r.status_code == 303
        # deleting a user ends theirs
        cli(proc, "user", "rm", "frank")
        assert frank.get(f"{proc.url}/ui/tokens", timeout=HTTP_TIMEOUT, allow_redirects=False).status_code == 303
        # failed sign-ins are rate limited like the API's
        s = requests.Session()
        page = s.get(f"{proc.url}/ui/login", timeout=HTTP_TIMEOUT).text
        codes = [
            s.post(
                f"{proc.url}/ui/login",
                data={"username": "erin", "password": f"wrong{i}", "csrf": csrf_of(page)},
                timeout=HTTP_TIMEOUT,
            ).status_code
            for i in range(5)
        ]
        assert codes[0] == 401 and codes[-1] == 429
    finally:
        proc.stop()


def test_tag_pages_link_by_key(open_srv: RegistryProcess) -> None:
    """The repository page's Next link carries the last tag's key (``after=``), and following
    it shows exactly the remaining tags; a bare ``page=2`` (an old link) shows the same."""
    url = open_srv.url
    accept = {"Accept": "application/vnd.oci.image.manifest.v1+json"}
    r = requests.get(f"{url}/v2/lib/web/manifests/1.0", headers=accept, timeout=HTTP_TIMEOUT)
    assert r.status_code == 200
    doc = r.json()
    for desc in [doc["config"], *doc["layers"]]:  # the blobs, mounted from lib/web
        mount = requests.post(f"{url}/v2/lib/many/blobs/uploads/?mount={desc['digest']}&from=lib/web", timeout=HTTP_TIMEOUT)
        assert mount.status_code == 201, mount.text
    names = [f"k{i:02d}" for i in range(61)]
    for tag in names:
        put = requests.put(
            f"{url}/v2/lib/many/manifests/{tag}",
            data=r.content,
            headers={"Content-Type": r.headers["Content-Type"]},
            timeout=HTTP_TIMEOUT,
        )
        assert put.status_code == 201, put.text

    def shown(html: str) -> list[str]:
        return re.findall(r'/-/manifest/sha256:[0-9a-f]+">(k\d\d)</a>', html)

    first = requests.get(f"{url}/ui/repo/lib/many", timeout=HTTP_TIMEOUT)
    assert first.status_code == 200
    m = re.search(r'href="([^"]*after=[^"]*)" rel="next"', first.text)
    assert m, first.text[-2000:]
    nxt = m.group(1).replace("&amp;", "&")
    second = requests.get(url + nxt, timeout=HTTP_TIMEOUT)
    old = requests.get(f"{url}/ui/repo/lib/many?page=2", timeout=HTTP_TIMEOUT)
    assert second.status_code == 200 and old.status_code == 200
    page1, page2 = set(shown(first.text)), set(shown(second.text))
    assert len(page1) == 50 and len(page2) == 11 and page1 | page2 == set(names), (sorted(page1), sorted(page2))
    assert set(shown(old.text)) == page2
