"""Repository delete in the web UI and the CLI (issue 20): the registry service's operation, as
``DELETE /api/v1/repositories/NAME`` -- attacked: no CSRF token, a non-administrator, a wrong
confirmation, an unknown repository, hostile names; ``delete_enabled: false``."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from tests.support.authsrv import ADMIN_PASSWORD, add_user, cli, get_token, push_image, start_auth_server

ADMIN = ("admin", ADMIN_PASSWORD)
BOB = ("bob", "bob-Pw-12345")
TIMEOUT = 30


def _login(url: str, creds: tuple[str, str]) -> requests.Session:
    s = requests.Session()
    page = s.get(f"{url}/ui/login", timeout=TIMEOUT)
    r = s.post(
        f"{url}/ui/login",
        data={"username": creds[0], "password": creds[1], "csrf": _csrf(page.text)},
        allow_redirects=False,
        timeout=TIMEOUT,
    )
    assert r.status_code == 303
    return s


def _csrf(html: str) -> str:
    m = re.search(r'name="csrf" value="([^"]+)"', html)
    assert m, html[:300]
    return m.group(1)


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    proc = start_auth_server(tmp_path_factory.mktemp("repo-delete"))
    try:
        add_user(proc, *BOB)
        cli(proc, "grant", "bob", "team/*", "pull,push,delete")
        token = get_token(proc, [f"repository:team/{n}:push,pull" for n in ("a", "b", "c")], ADMIN)
        for n in ("a", "b", "c"):
            push_image(proc.url, f"team/{n}", "1", token)
        yield proc
    finally:
        proc.stop()


def _exists(proc: Any, repo: str) -> bool:
    token = get_token(proc, [f"repository:{repo}:pull"], ADMIN)
    r = requests.get(f"{proc.url}/v2/{repo}/tags/list", headers={"Authorization": f"Bearer {token}"}, timeout=TIMEOUT)
    return r.status_code == 200


def test_ui_repository_delete_is_guarded(srv: Any) -> None:
    path = f"{srv.url}/ui/repo/team/a/-/delete-repository"
    admin = _login(srv.url, ADMIN)
    page = admin.get(path, timeout=TIMEOUT)
    assert page.status_code == 200 and "Delete repository" in page.text
    token = _csrf(page.text)
    # no CSRF token, a wrong one, another site's Origin
    assert admin.post(path, data={"confirm": "team/a"}, allow_redirects=False, timeout=TIMEOUT).status_code == 403
    assert (
        admin.post(path, data={"confirm": "team/a", "csrf": "x" * 40}, allow_redirects=False, timeout=TIMEOUT).status_code == 403
    )
    r = admin.post(
        path,
        data={"confirm": "team/a", "csrf": token},
        headers={"Origin": "https://evil.example"},
        allow_redirects=False,
        timeout=TIMEOUT,
    )
    assert r.status_code == 403
    # the name must be typed exactly
    for wrong in (
        "",
        "team/b",
        "TEAM/A",
        "team/a\u200b",
        "team",
        "x" * 10_000,
    ):  # (surrounding blanks are trimmed, as in every form)
        r = admin.post(path, data={"confirm": wrong, "csrf": token}, allow_redirects=False, timeout=TIMEOUT)
        assert r.status_code == 400, (wrong[:20], r.status_code)
    assert _exists(srv, "team/a")
    # a user who may delete manifests in team/* is no administrator: no button, no delete
    bob = _login(srv.url, BOB)
    repo_page = bob.get(f"{srv.url}/ui/repo/team/a", timeout=TIMEOUT)
    assert repo_page.status_code == 200 and "delete-repository" not in repo_page.text
    assert bob.get(path, timeout=TIMEOUT).status_code == 403
    r = bob.post(path, data={"confirm": "team/a", "csrf": _csrf(repo_page.text)}, allow_redirects=False, timeout=TIMEOUT)
    assert r.status_code == 403 and _exists(srv, "team/a")
    # the administrator, confirmed: gone, and a second time 404
    assert "delete-repository" in admin.get(f"{srv.url}/ui/repo/team/a", timeout=TIMEOUT).text
    r = admin.post(path, data={"confirm": "team/a", "csrf": token}, allow_redirects=False, timeout=TIMEOUT)
    assert r.status_code == 303 and not _exists(srv, "team/a")
    assert admin.post(path, data={"confirm": "team/a", "csrf": token}, allow_redirects=False, timeout=TIMEOUT).status_code == 404
    # hostile names are 404s, never 500s
    for name in ("..%2F..%2Fetc", "a" * 300, "%00", "team/%E2%80%AE"):
        r = admin.get(f"{srv.url}/ui/repo/{name}/-/delete-repository", timeout=TIMEOUT)
        assert r.status_code in (400, 404), (name, r.status_code)


def test_cli_repository_delete(srv: Any) -> None:
    out = cli(srv, "repo", "delete", "team/b", "--yes")
    assert "deleted team/b" in out.stderr and not _exists(srv, "team/b")
    again = cli(srv, "repo", "delete", "team/b", "--yes", check=False)
    assert again.returncode != 0 and "no repository 'team/b'" in again.stderr
    bad = cli(srv, "repo", "delete", "../etc", "--yes", check=False)
    assert bad.returncode == 2 and "invalid repository name" in bad.stderr
    # without --yes it asks; "n" keeps the repository
    kept = cli(srv, "repo", "delete", "team/c", input="n\n", check=False)
    assert kept.returncode != 0 and _exists(srv, "team/c")
    entries = requests.get(f"{srv.url}/api/v1/audit", params={"action": "repository.delete"}, auth=ADMIN, timeout=TIMEOUT).json()
    faces = {(e["repository"], e["detail"]["face"]) for e in entries["entries"]}
    assert ("team/b", "cli") in faces and ("team/a", "ui") in faces and ("team/c", "cli") not in faces
