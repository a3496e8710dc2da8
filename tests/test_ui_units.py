"""Pure parts of the web UI: formatting, config rendering of odd input, the visibility rules,
and migration 0006 matching the table definitions."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from sqlalchemy import inspect

from moorage.metadata.db import Database
from moorage.metadata.tables import ui_activity, ui_repo_stats, ui_sessions
from moorage.registry.access_rules import Grant, Principal
from moorage.ui import format as fmt
from moorage.ui.queries import Visibility, pattern_like
from moorage.ui.session import Viewer


def test_sizes_times_digests() -> None:
    assert fmt.human_size(0) == "0 B" and fmt.human_size(1536) == "1.5 KiB" and fmt.human_size(None) == "–"
    assert fmt.human_size(10 * 1024**3) == "10.0 GiB"
    assert fmt.relative_time(1000, now=1003) == "just now"
    assert fmt.relative_time(1000, now=1000 + 3 * 3600) == "3 hours ago"
    assert fmt.relative_time(1000, now=1000 + 86400) == "1 day ago"
    assert fmt.relative_time(2000, now=1000) == "just now"  # clock skew between replicas
    assert fmt.short_digest("sha256:" + "ab" * 32) == "sha256:abababababab"
    assert fmt.clean(" a\x00b\x7f\n ", 10) == "ab" and fmt.clean("x" * 50, 5) == "xxxxx"


@pytest.mark.parametrize(
    "config",
    [
        None,
        [],
        "text",
        {"config": "nope"},
        {"config": {"Env": "PATH=x", "Labels": [1], "ExposedPorts": ["80"]}},
        {"history": [1, None, {"created_by": None}], "config": {"Cmd": "sh -c x", "Entrypoint": [None, 3]}},
    ],
)
def test_config_view_survives_odd_configs(config: object) -> None:
    view = fmt.config_view(config)
    json.dumps(view)  # plain values only


def test_config_view_reads_a_docker_config() -> None:
    view = fmt.config_view(
        {
            "os": "linux",
            "architecture": "arm64",
            "variant": "v8",
            "created": "2024-01-01T00:00:00Z",
            "config": {
                "Entrypoint": ["/entry", "a b"],
                "Cmd": ["run"],
                "Env": ["A=1"],
                "Labels": {"k": "v"},
                "ExposedPorts": {"8080/tcp": {}},
                "User": "app",
            },
            "history": [{"created_by": "RUN x", "empty_layer": True}],
        }
    )
    assert view.platform == "linux/arm64/v8" and view.entrypoint == '/entry "a b"' and view.cmd == "run"
    assert view.ports == ["8080/tcp"] and view.labels == [("k", "v")] and view.history[0].empty_layer


def test_index_entries_and_platforms() -> None:
    doc = {
        "manifests": [
            {"digest": "sha256:1", "mediaType": "m", "size": 1, "platform": {"os": "linux", "architecture": "amd64"}},
            {
                "digest": "sha256:2",
                "platform": {"os": "unknown", "architecture": "unknown"},
                "annotations": {"vnd.docker.reference.type": "attestation-manifest"},
            },
            "garbage",
            {"platform": "x"},
        ]
    }
    entries = fmt.index_entries(doc)
    assert [e.platform for e in entries] == ["linux/amd64", "attestation", "unknown"]
    payload = json.dumps(doc).encode()
    assert fmt.platforms("application/vnd.oci.image.index.v1+json", payload) == ["linux/amd64", "unknown"]
    assert fmt.platforms("application/vnd.oci.image.manifest.v1+json", payload) == []
    assert fmt.index_entries({"manifests": "x"}) == [] and fmt.platforms(next(iter(fmt.INDEX_TYPES)), b"\xff") == []


def test_grant_patterns_become_safe_like_patterns() -> None:
    assert pattern_like("team/*") == "team/%"
    assert pattern_like("a_b%c/*") == "a\\_b\\%c/%"


def test_viewer_visibility_follows_the_api_rules() -> None:
    assert Viewer(mode="none").visibility().everything
    assert Viewer(mode="htpasswd").visibility() == Visibility(public_ok=False)
    assert Viewer(mode="htpasswd", name="carol").visibility().everything
    alice = Viewer(
        mode="token",
        name="alice",
        principal=Principal("alice", grants=[Grant("team/*", frozenset({"pull"})), Grant("x/*", frozenset({"push"}))]),
    )
    v = alice.visibility()
    assert v.pull_patterns == ["alice", "alice/*", "team/*"] and v.scope_patterns is None  # push alone: no pull
    robot = Viewer(
        mode="token", name="bot", principal=Principal("bot", is_robot=True, token_scope=[Grant("team/app", frozenset({"admin"}))])
    )
    assert robot.visibility().pull_patterns == [] and robot.visibility().scope_patterns == ["team/app"]
    admin = Viewer(mode="token", name="root", principal=Principal("root", is_admin=True))
    assert admin.visibility().everything
    scoped_admin = Viewer(mode="token", name="root", principal=Principal("root", is_admin=True, token_scope=[]))
    assert not scoped_admin.visibility().everything and scoped_admin.visibility().scope_patterns == []


def test_migrations_match_the_ui_tables(tmp_path: Path) -> None:
    async def columns() -> dict[str, set[str]]:
        db = Database(f"sqlite+aiosqlite:///{tmp_path / 'm.db'}")
        await db.migrate()
        async with db.write() as conn:
            found = await conn.run_sync(
                lambda c: {
                    t: {col["name"] for col in inspect(c).get_columns(t)} for t in ("ui_sessions", "ui_activity", "ui_repo_stats")
                }
            )
        await db.close()
        return found

    found = asyncio.run(columns())
    for table in (ui_sessions, ui_activity, ui_repo_stats):
        assert found[table.name] == {c.name for c in table.columns}


async def test_cookies_are_secure_under_tls(tmp_path: Path) -> None:
    """With ``tls`` configured every UI cookie carries ``Secure`` (in-process app: the TLS
    socket itself is the server's business, the cookie flags are the UI's)."""
    import re

    from aiohttp.test_utils import TestClient, TestServer

    from moorage.composition import build_app
    from moorage.config import Settings

    settings = Settings(data=tmp_path, tls={"certificate": tmp_path / "c.pem", "key": tmp_path / "k.pem"})
    async with TestClient(TestServer(build_app(settings))) as client:
        page = await client.get("/ui/login")
        assert page.status == 200
        csrf_cookie = page.headers.getall("Set-Cookie")[0]
        assert "Secure" in csrf_cookie and "HttpOnly" in csrf_cookie and "SameSite=Strict" in csrf_cookie
        token = re.search(r'name="csrf" value="([^"]+)"', await page.text()).group(1)
        # (the client rightly keeps a Secure cookie off plain HTTP: send it by hand)
        value = csrf_cookie.split(";", 1)[0]
        r = await client.post(
            "/ui/login", data={"username": "ann", "password": "", "csrf": token}, headers={"Cookie": value}, allow_redirects=False
        )
        assert r.status == 303
        session = next(c for c in r.headers.getall("Set-Cookie") if c.startswith("moorage_session="))
        assert "Secure" in session and "HttpOnly" in session and "SameSite=Lax" in session


async def _ui_sign_in(client, user: str, password: str):  # noqa: ANN001, ANN202
    import re

    page = await client.get("/ui/login")
    token = re.search(r'name="csrf" value="([^"]+)"', await page.text()).group(1)
    return await client.post("/ui/login", data={"username": user, "password": password, "csrf": token}, allow_redirects=False)


async def test_htpasswd_session_ends_when_the_password_changes(tmp_path: Path) -> None:
    """docs/ui.md: a session ends when the password changes.  In htpasswd mode the old code only
    checked that the name was still in the file (issue 21 item 4)."""
    import os
    import time

    from tests.support.inproc import app_client
    from tests.support.registry_proc import write_htpasswd

    htpasswd = write_htpasswd(tmp_path / "htpasswd", {"carol": "old-pw", "dave": "dave-pw"})
    auth = {"mode": "htpasswd", "htpasswd": {"path": htpasswd}}
    async with app_client(tmp_path / "data", auth=auth) as client:
        assert (await _ui_sign_in(client, "carol", "old-pw")).status == 303
        assert (await client.get("/", allow_redirects=False)).status == 200  # signed in
        # the same password written again is a new hash line (new salt): no session survives it
        later = time.time() + 5
        write_htpasswd(htpasswd, {"carol": "new-pw", "dave": "dave-pw"})
        os.utime(htpasswd, (later, later))
        r = await client.get("/", allow_redirects=False)
        assert r.status == 303 and r.headers["Location"] == "/ui/login"
        assert (await client.get("/", allow_redirects=False)).status == 303  # and stays ended
        assert (await _ui_sign_in(client, "carol", "old-pw")).status == 401
        assert (await _ui_sign_in(client, "carol", "new-pw")).status == 303
        assert (await client.get("/", allow_redirects=False)).status == 200
        # another user's change leaves carol's session alone
        lines = htpasswd.read_text().splitlines()
        carol_line = next(x for x in lines if x.startswith("carol:"))
        write_htpasswd(htpasswd, {"dave": "dave-pw2"})
        htpasswd.write_text(carol_line + "\n" + htpasswd.read_text())
        later += 5
        os.utime(htpasswd, (later, later))
        assert (await client.get("/", allow_redirects=False)).status == 200


def test_htpasswd_session_fingerprint_is_keyed_with_the_cookie() -> None:
    """The database holds an HMAC keyed with the cookie value, not a plain digest of the hash
    line: two sessions of one user store different values, neither equal to sha256(line)."""
    import hashlib

    from moorage.ui.session import htpasswd_fingerprint

    line = "$2b$05$abcdefghijklmnopqrstuuJ0mWcQ0lW3T3Z4c9Fz9Wc8J0Xx2m3Ae"
    a, b = htpasswd_fingerprint("sid-one", line), htpasswd_fingerprint("sid-two", line)
    assert a != b and len(a) == 64 and hashlib.sha256(line.encode()).hexdigest() not in (a, b)
    assert htpasswd_fingerprint("sid-one", line.replace("J0m", "J1m")) != a


#: ``next=`` values (as they arrive, percent-decoded) that must not leave the site after sign-in.
HOSTILE_NEXT = [
    "//x",
    "//x/y",
    "///x",
    "/\\x",
    "\\\\x",
    "/\\/x",
    "/\t/x",
    "/\n/x",
    "/\r/x",
    "\t//x",
    " //x",
    "/ /x",
    "/\x00/x",
    "/\x1b/x",
    "/\x7f/x",
    "/\u3000/x",
    "/\u00a0/x",
    "/\u2028/x",
    "/\u200b/x",
    "/\ufeff/x",
    "/\u202e/x",
    "/\uff0f/x",
    "https://x",
    "http:/x",
    "javascript:alert(1)",
    "x",
    "%2f%2fx",
    "",
    "/" + "a" * 1000,
]


@pytest.mark.parametrize("value", HOSTILE_NEXT)
def test_login_next_refuses_anything_but_a_local_path(value: str) -> None:
    from moorage.ui.pages import _safe_next

    assert _safe_next(value) == "/"


@pytest.mark.parametrize("value", ["/", "/ui/repo/team/app", "/ui/repo/a?tab=tags#x", "/ui/tokens", "/%2f%2fx", "/a//b"])
def test_login_next_keeps_local_paths(value: str) -> None:
    from moorage.ui.pages import _safe_next

    assert _safe_next(value) == value


async def test_login_redirect_never_leaves_the_site(tmp_path: Path) -> None:
    """Issue 21 item 6, end to end in-process: the query string as a browser sends it
    (percent-encoded), the sign-in form posts it back, the 303 goes to ``/``."""
    import re
    from urllib.parse import quote

    from tests.support.inproc import app_client

    async with app_client(tmp_path / "data") as client:
        for value in HOSTILE_NEXT:
            page = await client.get(f"/ui/login?next={quote(value, safe='')}")
            html = await page.text()
            assert page.status == 200
            assert 'name="next" value="/"' in html, value
            token = re.search(r'name="csrf" value="([^"]+)"', html).group(1)
            r = await client.post(
                "/ui/login", data={"username": "ann", "password": "", "csrf": token, "next": value}, allow_redirects=False
            )
            assert r.status == 303 and r.headers["Location"] == "/", (value, r.headers.get("Location"))
        # the issue's reproduction, as typed: ?next=/%09/host/x (a tab once decoded), and kin
        for raw in ("/%09/host/x", "/%0a/host/x", "/%5Chost/x", "/%E3%80%80/host/x", "%2f%2fhost"):
            page = await client.get(f"/ui/login?next={raw}")
            assert 'name="next" value="/"' in await page.text(), raw
