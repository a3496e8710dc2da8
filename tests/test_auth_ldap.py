"""Directory sign-in (``auth.ldap``) and grants to groups, against a real OpenLDAP (Debian's
slapd, started by tests/support/slapd.py with people, groups and a service account), driven by
real clients (skopeo, podman) and plain HTTP.

Each server reads groups with a ``(member={dn})`` search and a cache of ``CACHE_TTL`` seconds,
so removals are observed within a bounded wait; the outage test has a directory of its own
(it kills it).
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
import yaml

from tests.support import ocilayout
from tests.support.authsrv import ADMIN_PASSWORD, HTTP_TIMEOUT, bearer, claims_of, cli, start_auth_server, token_response
from tests.support.clients import Skopeo, run
from tests.support.refusal import assert_refused
from tests.support.registry_proc import RegistryProcess
from tests.support.require import require_binary, require_module
from tests.support.slapd import PEOPLE, SERVICE_DN, SERVICE_PASSWORD, Slapd, start_slapd

pytestmark = [pytest.mark.clients, pytest.mark.one_backend]

ADMIN = ("admin", ADMIN_PASSWORD)
CACHE_TTL = 2.0
INJECTION = "*)(uid=*))(|(uid=*"


def creds(name: str) -> tuple[str, str]:
    return name, PEOPLE[name][0]


def _ldap_config(ldap: Slapd, path: Path, **more: object) -> Path:
    section = {
        "url": ldap.url,
        "bind_dn": SERVICE_DN,
        "bind_password": SERVICE_PASSWORD,
        "user_base": "ou=people,dc=example,dc=org",
        "user_filter": "(&(objectClass=inetOrgPerson)(uid={username}))",
        "group_base": "ou=groups,dc=example,dc=org",
        "group_filter": "(&(objectClass=groupOfNames)(member={dn}))",
        "admin_groups": ["registry-admins"],
        "cache_ttl": CACHE_TTL,
        "connect_timeout": 2,
        "timeout": 3,
        **more,
    }
    path.write_text(yaml.safe_dump({"auth": {"ldap": section}}))
    return path


def _start(tmp: Path, backend_env: dict[str, str], ldap: Slapd, **more: object) -> RegistryProcess:
    tmp.mkdir(parents=True, exist_ok=True)
    config = _ldap_config(ldap, tmp / "moorage.yml", **more)
    return start_auth_server(tmp, backend_env, MOORAGE_CONFIG=str(config))


def _slapd(tmp: Path) -> Iterator[Slapd]:
    require_binary("/usr/sbin/slapd", "slapd")
    require_binary("ldapadd", "ldap-utils")
    require_module("ldap3", "ldap3")
    with start_slapd(tmp) as ldap:
        yield ldap


@pytest.fixture(scope="module")
def ldap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Slapd]:
    yield from _slapd(tmp_path_factory.mktemp("slapd"))


@pytest.fixture(scope="module")
def srv(backend, ldap: Slapd, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryProcess]:
    _name, make_env = backend
    proc = _start(tmp_path_factory.mktemp("auth-ldap"), make_env(), ldap)
    try:
        cli(proc, "grant", "--group", "developers", "team/*", "pull,push")
        r = requests.post(
            f"{proc.url}/api/v1/users", json={"name": "localdup", "password": "local-Pw-1"}, auth=ADMIN, timeout=HTTP_TIMEOUT
        )
        assert r.status_code == 201, r.text
        yield proc
    finally:
        proc.stop()


@pytest.fixture()
def sk(tmp_path: Path) -> Skopeo:
    require_binary("skopeo", "skopeo")
    return Skopeo(tmp_path / "skopeo")


def _image(tmp_path: Path, seed: str) -> ocilayout.LayoutImage:
    return ocilayout.build_image(tmp_path / "src", "v1", layers=[16 * 1024], seed=seed)


def _access(proc: RegistryProcess, scope: str, auth: tuple[str, str]) -> list[str]:
    r = token_response(proc, [scope], auth)
    assert r.status_code == 200, (r.status_code, r.text)
    access = claims_of(r.json()["token"])["access"]
    return access[0]["actions"] if access else []


# -- sign-in with real clients -----------------------------------------------------------------
def test_skopeo_login_push_by_group_grant_and_refusals(srv: RegistryProcess, sk: Skopeo, tmp_path: Path) -> None:
    img = _image(tmp_path, "ldap-skopeo")
    # wrong directory password: the client's "invalid username/password"
    assert_refused(
        sk("login", "--username", "alice", "--password-stdin", srv.host, input="wrong", check=False), "invalid username/password"
    )
    sk.login(srv.host, *creds("alice"))
    # the group grant (developers -> team/*) gives push; her own namespace too
    sk.copy(f"oci:{img.dir}:v1", f"docker://{srv.host}/team/app:v1")
    sk.copy(f"oci:{img.dir}:v1", f"docker://{srv.host}/alice/own:v1")
    assert sk.json("inspect", "--raw", f"docker://{srv.host}/team/app:v1")["layers"][0]["digest"] == img.layers[0].digest
    sk("logout", srv.host)
    # bob is in no group: he signs in, has his own namespace, and nothing of team/*
    cp = sk(
        "copy",
        "--quiet",
        "--dest-creds",
        "bob:" + PEOPLE["bob"][0],
        f"oci:{img.dir}:v1",
        f"docker://{srv.host}/team/bobs:v1",
        check=False,
    )
    assert_refused(cp, "denied: requested access to the resource is denied", "unauthorized")
    sk.copy(f"oci:{img.dir}:v1", f"docker://{srv.host}/bob/own:v1", "--dest-creds", "bob:" + PEOPLE["bob"][0])
    assert _access(srv, "repository:team/app:pull,push", creds("bob")) == []
    # the first sign-in provisioned them as directory users
    users = {u["name"]: u for u in requests.get(f"{srv.url}/api/v1/users", auth=ADMIN, timeout=HTTP_TIMEOUT).json()["users"]}
    assert users["alice"].get("source") == "ldap" and users["bob"].get("source") == "ldap"
    assert users["alice"]["admin"] is False


def test_podman_login_with_directory_password(srv: RegistryProcess, podman_socket, tmp_path: Path) -> None:
    authfile = tmp_path / "podman-auth.json"
    argv = podman_socket.podman_argv(
        "login", "--tls-verify=false", "--authfile", str(authfile), "--username", "alice", "--password-stdin", srv.host
    )
    env = podman_socket.service_env
    assert_refused(run(argv, env=env, input="wrong\n", check=False, timeout=60), "invalid username/password")
    ok = run(argv, env=env, input=PEOPLE["alice"][0] + "\n", check=False, timeout=60)
    assert ok.returncode == 0, ok.stderr
    assert "Login Succeeded" in ok.stdout
    assert srv.host in json.loads(authfile.read_text())["auths"]


def test_docker_cli_login_push_with_directory_password(srv: RegistryProcess, podman_socket, busybox_rootfs) -> None:
    d = podman_socket.docker
    host = f"localhost:{srv.port}"
    ref = f"{host}/team/busybox:1"
    assert_refused(d("login", "--username", "alice", "--password-stdin", host, input="wrong", check=False), "401 Unauthorized")
    assert "Login Succeeded" in podman_socket.docker_login(host, *creds("alice")).stdout
    try:
        d("image", "import", str(busybox_rootfs), ref)
        d("image", "push", ref)  # by the developers group's grant on team/*
    finally:
        d("logout", host)
    podman_socket.docker_login(host, *creds("bob"))  # in no group
    try:
        d("image", "tag", ref, f"{host}/team/busybox:2")
        assert_refused(d("image", "push", f"{host}/team/busybox:2", check=False), "denied", "unauthorized")
    finally:
        d("logout", host)
        d("image", "rm", ref, check=False)


# -- what the directory's answers grant ----------------------------------------------------------
def test_admin_groups_member_administers_and_others_do_not(srv: RegistryProcess) -> None:
    r = requests.get(f"{srv.url}/api/v1/users", auth=creds("carol"), timeout=HTTP_TIMEOUT)
    assert r.status_code == 200, r.text
    me = requests.get(f"{srv.url}/api/v1/me", auth=creds("carol"), timeout=HTTP_TIMEOUT).json()
    assert me["may_administer"] is True
    assert requests.get(f"{srv.url}/api/v1/users", auth=creds("alice"), timeout=HTTP_TIMEOUT).status_code == 403
    # and carol's registry token reaches anything
    assert _access(srv, "repository:someone/else:pull,push", creds("carol")) == ["pull", "push"]


def test_group_grants_admin_api_and_namespace_admin_by_group(srv: RegistryProcess) -> None:
    url = f"{srv.url}/api/v1/group-grants"
    r = requests.post(
        url, json={"group": "developers", "pattern": "shared/*", "actions": "admin"}, auth=ADMIN, timeout=HTTP_TIMEOUT
    )
    assert r.status_code == 201, r.text
    try:
        listed = requests.get(url, params={"group": "developers"}, auth=ADMIN, timeout=HTTP_TIMEOUT).json()["grants"]
        assert {"group": "developers", "pattern": "shared/*", "actions": ["admin"]} in listed
        assert sorted(_access(srv, "repository:shared/x:pull,push,delete", creds("alice"))) == ["delete", "pull", "push"]
        assert _access(srv, "repository:shared/x:pull", creds("bob")) == []
        # only administrators manage them; bad bodies are 400, never 500
        assert requests.get(url, auth=creds("alice"), timeout=HTTP_TIMEOUT).status_code == 403
        for bad in (
            {"group": "", "pattern": "a", "actions": "pull"},
            {"group": "g", "pattern": "a b", "actions": "pull"},
            {"group": "g\x00", "pattern": "a", "actions": "pull"},
            {"group": "g" * 300, "pattern": "a", "actions": "pull"},
        ):
            assert requests.post(url, json=bad, auth=ADMIN, timeout=HTTP_TIMEOUT).status_code == 400, bad
    finally:
        r = requests.delete(url, params={"group": "developers", "pattern": "shared/*"}, auth=ADMIN, timeout=HTTP_TIMEOUT)
        assert r.status_code == 204
    assert _access(srv, "repository:shared/x:pull", creds("alice")) == []
    assert (
        requests.delete(url, params={"group": "developers", "pattern": "shared/*"}, auth=ADMIN, timeout=HTTP_TIMEOUT).status_code
        == 404
    )


def test_cli_group_grant_and_revoke(srv: RegistryProcess) -> None:
    cli(srv, "grant", "--group", "registry-admins", "ops/*", "pull")
    listed = requests.get(f"{srv.url}/api/v1/group-grants", auth=ADMIN, timeout=HTTP_TIMEOUT).json()["grants"]
    assert {"group": "registry-admins", "pattern": "ops/*", "actions": ["pull"]} in listed
    cli(srv, "revoke", "--group", "registry-admins", "ops/*")
    cp = cli(srv, "revoke", "--group", "registry-admins", "ops/*", check=False)
    assert cp.returncode != 0 and "has no grant" in cp.stderr
    cp = cli(srv, "grant", "--group", "developers", "team/*", "fly", check=False)
    assert cp.returncode != 0 and "unknown action" in cp.stderr


# -- refusals --------------------------------------------------------------------------------------
def test_wrong_empty_and_injected_credentials_get_nothing(srv: RegistryProcess) -> None:
    assert token_response(srv, ["repository:team/app:pull"], ("alice", "wrong")).status_code == 401
    # an empty password would be an unauthenticated (anonymous) bind: "success" to slapd
    assert token_response(srv, ["repository:team/app:pull"], ("alice", "")).status_code == 401
    for name in (INJECTION, "*", "alice*", "al*", "alice)(uid=*"):
        for pw in (PEOPLE["alice"][0], "x", ""):
            r = token_response(srv, ["repository:team/app:pull"], (name, pw))
            assert r.status_code == 401, (name, r.status_code, r.text)
    users = requests.get(f"{srv.url}/api/v1/users", auth=ADMIN, timeout=HTTP_TIMEOUT).json()["users"]
    assert not any("*" in u["name"] or "(" in u["name"] for u in users)


def test_name_of_a_local_user_is_never_merged(srv: RegistryProcess) -> None:
    # "localdup" is a local user (local password) and a directory user (another password)
    assert token_response(srv, [], ("localdup", "local-Pw-1")).status_code == 200
    r = token_response(srv, [], creds("localdup"))
    assert r.status_code == 401
    assert "belongs to a local Moorage user" in r.text
    users = {u["name"]: u for u in requests.get(f"{srv.url}/api/v1/users", auth=ADMIN, timeout=HTTP_TIMEOUT).json()["users"]}
    assert "source" not in users["localdup"]


def test_login_rate_limit_applies_to_directory_users(srv: RegistryProcess) -> None:
    codes = [token_response(srv, [], ("frank", f"wrong-{i}")).status_code for i in range(12)]
    assert codes[:10] == [401] * 10 and codes[10:] == [429, 429], codes
    # the right password is refused too while the budget is spent (no bind is tried)
    assert token_response(srv, [], creds("frank")).status_code == 429


# -- removals take effect within the cache time ------------------------------------------------------
def _within(seconds: float, check, what: str) -> float:
    start = time.monotonic()
    while not check():
        assert time.monotonic() - start < seconds, f"{what}: not within {seconds} s"
        time.sleep(0.2)
    return time.monotonic() - start


def test_removal_from_a_group_takes_effect_within_the_cache_time(srv: RegistryProcess, ldap: Slapd) -> None:
    erin = creds("erin")
    assert _access(srv, "repository:team/erin:pull,push", erin) == ["pull", "push"]
    old = token_response(srv, ["repository:team/erin:pull"], erin).json()["token"]
    tok = requests.post(f"{srv.url}/api/v1/me/tokens", json={"name": "ci"}, auth=erin, timeout=HTTP_TIMEOUT).json()
    pat = ("erin", tok["token"])
    assert _access(srv, "repository:team/erin:push", pat) == ["push"]
    ldap.remove_member("developers", "erin")
    try:
        waited = _within(CACHE_TTL + 10, lambda: _access(srv, "repository:team/erin:pull,push", erin) == [], "password sign-in")
        # the access token made before, and the registry token issued before, follow at once
        assert _access(srv, "repository:team/erin:push", pat) == []
        r = requests.get(f"{srv.url}/v2/team/erin/tags/list", headers=bearer(old), timeout=HTTP_TIMEOUT)
        assert r.status_code == 401 and 'error="invalid_token"' in r.headers["WWW-Authenticate"]
        # her own namespace stays hers
        assert _access(srv, "repository:erin/x:push", erin) == ["push"]
        assert waited < CACHE_TTL + 10
    finally:
        ldap.add_member("developers", "erin")


def test_user_removed_from_the_directory_loses_tokens_within_the_cache_time(srv: RegistryProcess, ldap: Slapd) -> None:
    dave = creds("dave")
    tok = requests.post(f"{srv.url}/api/v1/me/tokens", json={"name": "ci"}, auth=dave, timeout=HTTP_TIMEOUT).json()
    pat = ("dave", tok["token"])
    assert _access(srv, "repository:team/d:push", pat) == ["push"]
    jwt = token_response(srv, ["repository:dave/x:pull"], pat).json()["token"]
    ldap.delete_user("dave")
    _within(CACHE_TTL + 10, lambda: token_response(srv, [], pat).status_code == 401, "access token")
    assert token_response(srv, [], dave).status_code == 401
    r = requests.get(f"{srv.url}/v2/dave/x/tags/list", headers=bearer(jwt), timeout=HTTP_TIMEOUT)
    assert r.status_code == 401


# -- web UI --------------------------------------------------------------------------------------------
def test_ui_sign_in_with_directory_password(srv: RegistryProcess) -> None:
    from tests.test_ui_http import ui_login

    s = ui_login(srv, *creds("alice"))
    page = s.get(f"{srv.url}/ui/tokens", timeout=HTTP_TIMEOUT)
    assert page.status_code == 200 and "alice" in page.text


# -- break-glass: the directory is down ----------------------------------------------------------------
def test_directory_down_local_admin_works_directory_users_get_503(backend, tmp_path: Path) -> None:
    _name, make_env = backend
    for ldap in _slapd(tmp_path / "slapd"):
        proc = _start(tmp_path / "srv", make_env(), ldap)
        try:
            assert token_response(proc, [], creds("alice")).status_code == 200
            ready = requests.get(f"{proc.url}/readyz", timeout=HTTP_TIMEOUT).json()
            assert ready["identity"] == {"ldap": "ok"}
            # a hung directory (accepts connections, never answers): bounded, 503, and the
            # event loop keeps serving others meanwhile
            assert ldap.proc is not None
            os.kill(ldap.proc.pid, signal.SIGSTOP)
            try:
                with ThreadPoolExecutor(1) as pool:
                    started = time.monotonic()
                    hung = pool.submit(token_response, proc, [], ("erin", PEOPLE["erin"][0]))
                    time.sleep(0.5)
                    t0 = time.monotonic()
                    assert token_response(proc, [], ADMIN).status_code == 200
                    assert time.monotonic() - t0 < 2.0
                    r = hung.result(timeout=60)
                    took = time.monotonic() - started
                assert r.status_code == 503 and "does not answer" in r.text, r.text
                assert took < 2 + 4 * 3 + 3  # connect_timeout + 4 x timeout, and some slack
            finally:
                os.kill(ldap.proc.pid, signal.SIGCONT)
            ldap.kill()
            r = token_response(proc, ["repository:team/app:pull"], creds("alice"))
            assert r.status_code == 503, r.text
            assert f"the LDAP server at {ldap.url} does not answer" in r.text
            assert r.headers.get("Retry-After")
            # the local administrator keeps working: token, admin API, push
            assert token_response(proc, ["repository:any/thing:push"], ADMIN).status_code == 200
            assert requests.get(f"{proc.url}/api/v1/users", auth=ADMIN, timeout=HTTP_TIMEOUT).status_code == 200
            ready = requests.get(f"{proc.url}/readyz", timeout=HTTP_TIMEOUT)
            assert ready.status_code == 200  # local users and robots still work: not a reason to drain
            assert "does not answer" in ready.json()["identity"]["ldap"]
            metrics = requests.get(f"{proc.url}/metrics", auth=ADMIN, timeout=HTTP_TIMEOUT).text
            assert f'moorage_ldap_up{{url="{ldap.url}"}} 0.0' in metrics
            assert "moorage_ldap_errors_total" in metrics
            # the UI says so too, not "invalid password"
            from tests.test_ui_http import csrf_of

            s = requests.Session()
            page = s.get(f"{proc.url}/ui/login", timeout=HTTP_TIMEOUT)
            r = s.post(
                f"{proc.url}/ui/login",
                data={"username": "alice", "password": PEOPLE["alice"][0], "csrf": csrf_of(page.text)},
                timeout=HTTP_TIMEOUT,
                allow_redirects=False,
            )
            assert r.status_code == 503 and "does not answer" in r.text
        finally:
            proc.stop()


def test_member_of_attribute_instead_of_a_group_search(backend, tmp_path: Path) -> None:
    _name, make_env = backend
    for ldap in _slapd(tmp_path / "slapd"):
        proc = _start(tmp_path / "srv", make_env(), ldap, group_filter="", group_base="", member_of_attribute="memberOf")
        try:
            cli(proc, "grant", "--group", "developers", "team/*", "pull,push")
            assert _access(proc, "repository:team/app:pull,push", creds("alice")) == ["pull", "push"]
            assert _access(proc, "repository:team/app:pull,push", creds("bob")) == []
            assert requests.get(f"{proc.url}/api/v1/users", auth=creds("carol"), timeout=HTTP_TIMEOUT).status_code == 200
        finally:
            proc.stop()


def test_config_refuses_unknown_and_bad_ldap_keys(tmp_path: Path) -> None:
    from pydantic import ValidationError

    from moorage.config import LdapSettings, Settings

    base = {"url": "ldap://127.0.0.1:389", "user_base": "ou=people,dc=x", "group_base": "ou=groups,dc=x"}
    LdapSettings(**base)
    for bad in ({"bogus": 1}, {"url": "http://x"}, {"user_filter": "(uid=alice)"}, {"url": "ldaps://x", "start_tls": True}):
        with pytest.raises(ValidationError):
            LdapSettings(**{**base, **bad})
    with pytest.raises(ValidationError):
        Settings(auth={"mode": "htpasswd", "ldap": base})
    assert "secret" not in repr(LdapSettings(**base, bind_password="secret"))


def test_ui_group_grants_page(srv: RegistryProcess) -> None:
    from tests.test_ui_http import csrf_of, ui_login

    admin = ui_login(srv, *ADMIN)
    page = admin.get(f"{srv.url}/ui/admin/group-grants", timeout=HTTP_TIMEOUT)
    assert page.status_code == 200 and "developers" in page.text
    assert "/ui/admin/group-grants" in admin.get(f"{srv.url}/ui/admin/namespaces", timeout=HTTP_TIMEOUT).text
    form = {"csrf": csrf_of(page.text), "action": "grant", "group": "developers", "namespace": "uiteam", "push": "1", "pull": "1"}
    r = admin.post(f"{srv.url}/ui/admin/group-grants", data=form, timeout=HTTP_TIMEOUT, allow_redirects=False)
    assert r.status_code == 303
    assert _access(srv, "repository:uiteam/app:pull,push", creds("alice")) == ["pull", "push"]
    bad = admin.post(
        f"{srv.url}/ui/admin/group-grants", data={**form, "namespace": "Bad Name"}, timeout=HTTP_TIMEOUT, allow_redirects=False
    )
    assert bad.status_code == 400 and "invalid namespace" in bad.text
    r = admin.post(
        f"{srv.url}/ui/admin/group-grants",
        data={"csrf": form["csrf"], "action": "revoke", "group": "developers", "pattern": "uiteam/*"},
        timeout=HTTP_TIMEOUT,
        allow_redirects=False,
    )
    assert r.status_code == 303
    assert _access(srv, "repository:uiteam/app:pull", creds("alice")) == []
    # a directory user who is no administrator may not
    alice = ui_login(srv, *creds("alice"))
    assert alice.get(f"{srv.url}/ui/admin/group-grants", timeout=HTTP_TIMEOUT).status_code == 403


def test_filter_values_are_escaped_even_past_the_name_check(ldap: Slapd) -> None:
    """The user-name grammar keeps hostile names from LDAP; the filter escaping (RFC 4515) is
    the second wall: called directly, the injection matches no one on the real server."""
    import asyncio

    from moorage.auth.ldap import LdapDirectory, group_filter, user_filter
    from moorage.config import LdapSettings

    settings = LdapSettings(
        url=ldap.url,
        bind_dn=SERVICE_DN,
        bind_password=SERVICE_PASSWORD,
        user_base="ou=people,dc=example,dc=org",
        group_base="ou=groups,dc=example,dc=org",
    )
    assert user_filter(settings, INJECTION) == r"(uid=\2a\29\28uid=\2a\29\29\28|\28uid=\2a)"
    assert group_filter(settings, "x", "cn=a*,dc=b") == r"(member=cn=a\2a,dc=b)"
    directory = LdapDirectory(settings)

    async def probe() -> list[object]:
        return [
            await directory.authenticate(INJECTION, PEOPLE["alice"][0]),
            await directory.lookup(INJECTION),
            await directory.lookup("*"),
            await directory.authenticate("alice", ""),
        ]

    try:
        assert asyncio.run(probe()) == [None, None, None, None]
    finally:
        directory.close()
