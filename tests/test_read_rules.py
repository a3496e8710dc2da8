"""One read rule (issue 20): for each principal the web UI's repository list and ``/v2/_catalog``
name the same repositories -- anonymous, a user with grants, an administrator, a scoped access
token (a personal access token used as the password).

The UI used to list repositories the catalog hides: a repository with no manifest (a blob
pushed, or every manifest deleted) is not in the catalog -- there is nothing to pull -- but was
listed by the UI."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from tests.support.authsrv import ADMIN_PASSWORD, add_user, cli, get_token, push_image, start_auth_server
from tests.support.http import sha256

ADMIN = ("admin", ADMIN_PASSWORD)
ALICE = ("alice", "alice-Pw-123")
TIMEOUT = 30


def _csrf(html: str) -> str:
    m = re.search(r'name="csrf" value="([^"]+)"', html)
    assert m
    return m.group(1)


def _ui_names(url: str, creds: tuple[str, str] | None) -> set[str]:
    s = requests.Session()
    if creds is not None:
        page = s.get(f"{url}/ui/login", timeout=TIMEOUT)
        r = s.post(
            f"{url}/ui/login",
            data={"username": creds[0], "password": creds[1], "csrf": _csrf(page.text)},
            allow_redirects=False,
            timeout=TIMEOUT,
        )
        assert r.status_code == 303, r.text[:300]
    html = s.get(f"{url}/", timeout=TIMEOUT).text
    return set(re.findall(r'<th scope="row"><a href="/ui/repo/([^"]+)">', html))


def _catalog(url: str, creds: tuple[str, str] | None) -> set[str]:
    r = requests.get(f"{url}/v2/_catalog", auth=creds, timeout=TIMEOUT)
    if r.status_code == 401 and r.headers.get("WWW-Authenticate", "").startswith("Bearer"):
        params = {"service": "moorage", "scope": "registry:catalog:*"}
        t = requests.get(f"{url}/auth/token", params=params, auth=creds, timeout=TIMEOUT)
        assert t.status_code == 200, t.text
        r = requests.get(f"{url}/v2/_catalog", headers={"Authorization": f"Bearer {t.json()['token']}"}, timeout=TIMEOUT)
    assert r.status_code == 200, r.text
    return set(r.json()["repositories"])


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    proc = start_auth_server(tmp_path_factory.mktemp("read-rules"))
    try:
        add_user(proc, *ALICE)
        cli(proc, "grant", "alice", "team/*", "pull")
        admin_token = get_token(
            proc,
            [
                "repository:team/app:push,pull",
                "repository:team/empty:push,pull",
                "repository:pub/app:push,pull",
                "repository:secret/app:push,pull",
                "repository:alice/own:push,pull",
                "repository:team/gone:push,pull,delete",
            ],
            ADMIN,
        )
        for repo in ("team/app", "pub/app", "secret/app", "alice/own", "team/gone"):
            push_image(proc.url, repo, "1", admin_token)
        # a repository holding only a blob (an interrupted push), and one whose only manifest was deleted
        h = {"Authorization": f"Bearer {admin_token}"}
        blob = b"only a blob"
        r = requests.post(
            f"{proc.url}/v2/team/empty/blobs/uploads/", params={"digest": sha256(blob)}, data=blob, headers=h, timeout=TIMEOUT
        )
        assert r.status_code == 201, r.text
        digest = requests.head(
            f"{proc.url}/v2/team/gone/manifests/1",
            headers={**h, "Accept": "application/vnd.oci.image.manifest.v1+json"},
            timeout=TIMEOUT,
        ).headers["Docker-Content-Digest"]
        assert requests.delete(f"{proc.url}/v2/team/gone/manifests/{digest}", headers=h, timeout=TIMEOUT).status_code == 202
        cli(proc, "repo", "public", "pub/app")
        # a personal access token of alice's scoped to team/app only
        r = requests.post(
            f"{proc.url}/api/v1/me/tokens", auth=ALICE, json={"name": "ci", "scope": ["team/app:pull"]}, timeout=TIMEOUT
        )
        assert r.status_code < 300, r.text
        proc.alice_scoped = ("alice", r.json()["token"])  # type: ignore[attr-defined]
        yield proc
    finally:
        proc.stop()


@pytest.mark.parametrize("who", ["admin", "alice", "alice-scoped-token"])
def test_ui_list_equals_catalog(srv: Any, who: str) -> None:
    creds = {"admin": ADMIN, "alice": ALICE, "alice-scoped-token": srv.alice_scoped}[who]
    ui, catalog = _ui_names(srv.url, creds), _catalog(srv.url, creds)
    assert ui == catalog, (who, ui, catalog)
    assert "team/empty" not in ui and "team/gone" not in ui  # nothing to pull in them
    expected = {
        "admin": {"team/app", "pub/app", "secret/app", "alice/own"},
        "alice": {"team/app", "pub/app", "alice/own"},
        "alice-scoped-token": {"team/app", "pub/app"},
    }[who]
    assert catalog == expected


def test_anonymous_ui_lists_only_public(srv: Any) -> None:
    """Anonymous callers get no catalog in token mode (``registry:catalog:*`` needs an account);
    the UI shows them what they may pull: the public repositories, nothing the catalog would hide."""
    assert _ui_names(srv.url, None) == {"pub/app"}
    r = requests.get(f"{srv.url}/auth/token", params={"service": "moorage", "scope": "registry:catalog:*"}, timeout=TIMEOUT)
    assert r.status_code == 200 and not [a for a in (r.json().get("access") or []) if a.get("actions")]


@pytest.mark.parametrize("who", ["anonymous", "admin", "alice", "alice-scoped-token"])
def test_insight_sees_what_the_catalog_shows(srv: Any, who: str) -> None:
    """The insight API's per-repository results follow the same read rule: a repository's
    findings answer (200) exactly for the repositories this caller's catalog (the UI list, for
    anonymous) names, and 404 NAME_UNKNOWN for the others. A scoped access token sees what its
    scope lets it pull -- the insight API used to show such a token public content only, while
    the catalog honoured the scope."""
    creds = {"anonymous": None, "admin": ADMIN, "alice": ALICE, "alice-scoped-token": srv.alice_scoped}[who]
    shown = _ui_names(srv.url, None) if creds is None else _catalog(srv.url, creds)
    answered = set()
    for repo in ("team/app", "pub/app", "secret/app", "alice/own"):
        r = requests.get(f"{srv.url}/api/v1/insight/images/{repo}/1", auth=creds, timeout=TIMEOUT)
        assert r.status_code in (200, 404), (repo, r.status_code, r.text[:300])
        if r.status_code == 200:
            answered.add(repo)
        else:
            assert r.json()["errors"][0]["code"] == "NAME_UNKNOWN"
    assert answered == shown, (who, answered, shown)
