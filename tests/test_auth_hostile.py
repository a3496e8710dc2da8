"""Authentication under hostile clients (issue 8, items 3 and 7-12): each test is the attack
as an attacker would run it against a real ``moorage serve`` (two workers sharing the port,
so "across replicas" is exercised too), and fails on the code before the fix.

* ReDoS through a token's repository pattern, with a login running at the same time;
* the data directory, database and signing key readable by another local user;
* 300 parallel wrong passwords against a limit of 10;
* htpasswd's "no such user" check costing less than a real entry's;
* a deleted user's access tokens still working;
* a malformed ``Authorization`` header line written raw into the error log;
* ``/metrics`` open to any anonymous bearer token.
"""

from __future__ import annotations

import base64
import os
import random
import socket
import stat
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from tests.support.authsrv import (
    ADMIN_PASSWORD,
    HTTP_TIMEOUT,
    bearer,
    claims_of,
    cli,
    get_token,
    start_auth_server,
    token_response,
)
from tests.support.registry_proc import RegistryProcess, write_htpasswd

ADMIN = ("admin", ADMIN_PASSWORD)
ALICE = ("alice", "alice-Secret-pw-7781")
LIMIT = 10
WORKERS = 2


def _api(proc: RegistryProcess, method: str, path: str, **kw) -> requests.Response:
    r = requests.request(method, f"{proc.url}/api/v1/{path}", auth=ADMIN, timeout=HTTP_TIMEOUT, **kw)
    assert r.status_code < 300, (r.status_code, r.text)
    return r


@pytest.fixture(scope="module")
def shared_tmp() -> Iterator[Path]:
    """A directory other local users may traverse (pytest's own tmp root is 0700, which
    would hide the data directory's mode from the ``nobody`` check)."""
    path = Path(tempfile.mkdtemp(prefix="moorage-hostile-", dir="/tmp"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        subprocess.run(["rm", "-rf", str(path)], check=False)


@pytest.fixture(scope="module")
def srv(backend, shared_tmp: Path) -> Iterator[RegistryProcess]:
    name, make_env = backend
    proc = start_auth_server(
        shared_tmp / f"srv-{name}",
        make_env(),
        MOORAGE_WORKERS=str(WORKERS),
        MOORAGE_AUTH__BCRYPT_ROUNDS="6",
        MOORAGE_AUTH__LOGIN_RATE_LIMIT=str(LIMIT),
    )
    try:
        _api(proc, "POST", "users", json={"name": ALICE[0], "password": ALICE[1]})
        yield proc
    finally:
        proc.stop()


# -- item 3: ReDoS in grant patterns --------------------------------------------------------------
@pytest.mark.timeout(120)
def test_backtracking_pattern_attack_finishes_and_logins_go_on(srv: RegistryProcess) -> None:
    _api(srv, "POST", "users", json={"name": "eve", "password": "eve-pw"})
    pat = _api(srv, "POST", "tokens", json={"user": "eve", "scope": ["a*a*a*a*a*a*a*a*a*a*a*a*b:pull"]}).json()["token"]
    _api(srv, "POST", "grants", json={"user": "eve", "pattern": "a*a*a*a*a*a*a*a*a*a*a*a*b", "actions": "pull"})
    results: dict[str, requests.Response] = {}

    def attack() -> None:
        results["attack"] = token_response(srv, ["repository:" + "a" * 100 + ":pull"] * 4, ("eve", pat))

    attackers = [threading.Thread(target=attack) for _ in range(WORKERS * 2)]
    for t in attackers:
        t.start()
    time.sleep(0.3)  # the attack is being served: a login must still be answered
    r = token_response(srv, ["repository:alice/x:pull"], ALICE)
    assert r.status_code == 200, r.text
    for t in attackers:
        t.join()
    assert results["attack"].status_code == 200
    assert claims_of(results["attack"].json()["token"])["access"] == []
    # a name the pattern does match is still granted: the matcher is a matcher
    ok = token_response(srv, ["repository:" + "a" * 50 + "b:pull"], ("eve", pat))
    assert claims_of(ok.json()["token"])["access"] == [{"type": "repository", "name": "a" * 50 + "b", "actions": ["pull"]}]


def test_scope_names_are_validated_before_matching(srv: RegistryProcess) -> None:
    _api(srv, "POST", "grants", json={"user": "alice", "pattern": "*", "actions": "pull"})
    try:
        for bad in ("A" * 5000, "../etc", "a" * 256, "a//b", "team/App", "a\u0301b", "-a"):
            r = token_response(srv, [f"repository:{bad}:pull"], ALICE)
            assert r.status_code == 200, r.text
            assert claims_of(r.json()["token"])["access"] == [], bad
        r = token_response(srv, ["repository:team/app:pull"], ALICE)
        assert claims_of(r.json()["token"])["access"] == [{"type": "repository", "name": "team/app", "actions": ["pull"]}]
    finally:
        _api(srv, "DELETE", "grants", params={"user": "alice", "pattern": "*"})


# -- item 7: files only the registry's user can read -----------------------------------------------
def _as_nobody(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", *argv], capture_output=True, text=True, timeout=30
    )


def _secret_files(data: Path) -> list[Path]:
    files = [data / "moorage.db", data / "auth" / "token-signing-key.pem"]
    files += [p for p in (data / "moorage.db-wal", data / "moorage.db-shm") if p.exists()]
    return files


def test_data_dir_database_and_key_are_private(srv: RegistryProcess) -> None:
    if getattr(srv, "server_env", {}).get("MOORAGE_DATABASE__URL", "").startswith("postgres"):
        files = [srv.data_dir / "auth" / "token-signing-key.pem"]
    else:
        files = _secret_files(srv.data_dir)
        assert (srv.data_dir / "moorage.db-wal").exists()  # WAL mode: created by SQLite itself
    assert stat.S_IMODE(srv.data_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE((srv.data_dir / "auth").stat().st_mode) == 0o700
    for f in files:
        assert stat.S_IMODE(f.stat().st_mode) == 0o600, f
    # as another local user: nothing listed, nothing read -- even with the directory opened up,
    # the files themselves refuse
    assert _as_nobody("ls", str(srv.data_dir)).returncode != 0
    assert _as_nobody("cat", str(files[0])).returncode != 0
    srv.data_dir.chmod(0o755)
    (srv.data_dir / "auth").chmod(0o755)
    try:
        for f in files:
            r = _as_nobody("cat", str(f))
            assert r.returncode != 0 and "Permission denied" in r.stderr, f
    finally:
        srv.data_dir.chmod(0o700)
        (srv.data_dir / "auth").chmod(0o700)


def test_loose_modes_of_an_existing_install_are_tightened_at_start(shared_tmp: Path) -> None:
    proc = start_auth_server(shared_tmp / "loose", None)
    try:
        proc.stop()
        data = proc.data_dir
        for p in [data, data / "auth", *_secret_files(data)]:
            p.chmod(0o755 if p.is_dir() else 0o644)
        proc.start()
        assert stat.S_IMODE(data.stat().st_mode) == 0o700
        for f in _secret_files(data):
            assert stat.S_IMODE(f.stat().st_mode) == 0o600, f
        assert "tightened" in proc.log(200)
    finally:
        proc.stop()


# -- item 8: the failed-login limit holds under parallelism -----------------------------------------
@pytest.mark.timeout(180)
def test_parallel_wrong_passwords_stay_within_the_limit(srv: RegistryProcess) -> None:
    _api(srv, "POST", "users", json={"name": "victim", "password": "victim-Real-pw"})

    def guess(i: int) -> int:
        return token_response(srv, [], ("victim", f"wrong-{i}")).status_code

    with ThreadPoolExecutor(64) as pool:
        codes = list(pool.map(guess, range(300)))
    assert set(codes) <= {401, 429}, codes
    # every 401 is a password that bcrypt checked: at most the limit (+1 per worker) get there
    assert codes.count(401) <= LIMIT + WORKERS, codes.count(401)
    assert codes.count(429) >= 300 - LIMIT - WORKERS
    # and the right password is refused too, until the window ends
    assert token_response(srv, [], ("victim", "victim-Real-pw")).status_code == 429


# -- item 9: htpasswd: unknown users cost what real ones do -----------------------------------------
def test_htpasswd_unknown_user_is_checked_at_the_files_cost(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from moorage.accounts import passwords

    path = write_htpasswd(tmp_path / "htpasswd", {"hank": "hank-pw", "ivy": "ivy-pw"})  # cost 5, like htpasswd -B
    seen: list[bytes] = []
    real = passwords.bcrypt.checkpw

    def spy(password: bytes, hashed: bytes) -> bool:
        seen.append(hashed)
        return real(password, hashed)

    monkeypatch.setattr(passwords.bcrypt, "checkpw", spy)
    ht = passwords.Htpasswd(path)
    assert ht.verify("hank", "hank-pw") and not ht.verify("hank", "nope")
    assert not ht.verify("no-such-user", "whatever")
    costs = [h.split(b"$")[2] for h in seen]
    assert costs == [b"05", b"05", b"05"], costs
    # the file changes cost: so does the dummy (most common cost in the file)
    import bcrypt

    lines = [f"u{i}:{bcrypt.hashpw(b'pw', bcrypt.gensalt(rounds=7)).decode()}" for i in range(3)]
    path.write_text(path.read_text() + "\n".join(lines) + "\n")
    os.utime(path, (time.time() + 5, time.time() + 5))
    seen.clear()
    assert not ht.verify("ghost", "x")
    assert [h.split(b"$")[2] for h in seen] == [b"07"]


# -- item 10: a deleted user's tokens stop at once --------------------------------------------------
def test_deleted_users_access_tokens_are_refused_at_once(srv: RegistryProcess) -> None:
    _api(srv, "POST", "users", json={"name": "dora", "password": "dora-pw"})
    token = get_token(srv, ["repository:dora/app:pull,push"], ("dora", "dora-pw"))
    pat = _api(srv, "POST", "tokens", json={"user": "dora"}).json()["token"]
    pat_jwt = get_token(srv, ["repository:dora/app:pull"], ("dora", pat))
    for _ in range(4):  # both workers
        r = requests.post(f"{srv.url}/v2/dora/app/blobs/uploads/", headers=bearer(token), timeout=HTTP_TIMEOUT)
        assert r.status_code == 202, r.text
        assert requests.get(f"{srv.url}/v2/", headers=bearer(pat_jwt), timeout=HTTP_TIMEOUT).status_code == 200
    cli(srv, "user", "rm", "dora")
    for _ in range(4):
        for t in (token, pat_jwt):
            r = requests.post(f"{srv.url}/v2/dora/app/blobs/uploads/", headers=bearer(t), timeout=HTTP_TIMEOUT)
            assert r.status_code == 401, r.text
            assert requests.get(f"{srv.url}/v2/", headers=bearer(t), timeout=HTTP_TIMEOUT).status_code == 401
            assert requests.get(f"{srv.url}/api/v1/me", headers=bearer(t), timeout=HTTP_TIMEOUT).status_code == 401
    # a new user of the same name does not inherit the old one's tokens
    _api(srv, "POST", "users", json={"name": "dora", "password": "dora-pw2"})
    for _ in range(4):
        r = requests.post(f"{srv.url}/v2/dora/app/blobs/uploads/", headers=bearer(token), timeout=HTTP_TIMEOUT)
        assert r.status_code == 401, r.text
    fresh = get_token(srv, ["repository:dora/app:pull,push"], ("dora", "dora-pw2"))
    r = requests.post(f"{srv.url}/v2/dora/app/blobs/uploads/", headers=bearer(fresh), timeout=HTTP_TIMEOUT)
    assert r.status_code == 202


# -- item 11: no credential in any log line ---------------------------------------------------------
def _raw(srv: RegistryProcess, head: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as s:
        s.sendall(head)
        out = b""
        try:
            while chunk := s.recv(65536):
                out += chunk
        except OSError:
            pass
    return out


def test_malformed_authorization_headers_never_reach_the_log(srv: RegistryProcess) -> None:
    password = "Leak-Me-Not-93561"
    userpass = base64.b64encode(f"alice:{password}".encode()).decode()
    jwt_like = get_token(srv, [], ALICE)
    pat = "moor_0123456789abcdef_" + "S" * 43
    heads = [
        f"GET /v2/ HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {userpass}\x01\r\n\r\n",
        f"GET /v2/ HTTP/1.1\r\nHost: x\r\nAuthorization Basic {userpass}\r\n\r\n",
        f"GET /v2/ HTTP/1.1\r\nHost: x\r\nauthorization:   basic {userpass}\x7f\r\n\r\n",
        f"GET /v2/ HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {jwt_like}\x01\r\n\r\n",
        f"GET /v2/ HTTP/1.1\r\nHost: x\r\nCookie: session={pat}\x01\r\n\r\n",
        f"GET /v2/ HTTP/1.1\r\nHost: x\r\nX-Registry-Auth: {userpass}\x01\r\n\r\n",
        f"GET /v2/?token={pat} HTTP/1.1\r\nHost: x\r\nX: \x01\r\n\r\n",
    ]
    for head in heads:
        assert _raw(srv, head.encode("latin-1")).startswith(b"HTTP/1.")
    time.sleep(0.5)
    log = srv.log(100_000)
    assert "Error handling request" in log or "400" in log  # the bad requests were logged ...
    for secret in (password, userpass, userpass[:20], jwt_like, jwt_like.split(".")[2], pat, "S" * 43):
        assert secret not in log, secret  # ... without the credentials


# -- item 12: /metrics access is explicit -----------------------------------------------------------
def test_metrics_default_in_token_mode_is_admin_only(srv: RegistryProcess) -> None:
    url = f"{srv.url}/metrics"
    assert requests.get(url, timeout=HTTP_TIMEOUT).status_code == 401
    anonymous = get_token(srv, [])
    assert requests.get(url, headers=bearer(anonymous), timeout=HTTP_TIMEOUT).status_code == 401
    assert requests.get(url, headers=bearer(get_token(srv, [], ALICE)), timeout=HTTP_TIMEOUT).status_code == 403
    assert requests.get(url, auth=ALICE, timeout=HTTP_TIMEOUT).status_code == 403
    r = requests.get(url, auth=ADMIN, timeout=HTTP_TIMEOUT)
    assert r.status_code == 200 and "moorage_http_requests_total" in r.text
    assert requests.get(url, headers=bearer(get_token(srv, [], ADMIN)), timeout=HTTP_TIMEOUT).status_code == 200


@pytest.mark.parametrize("access", ["public", "authenticated", "admin"])
def test_metrics_access_modes_and_scrape_token(access: str, shared_tmp: Path) -> None:
    scrape = "scrape-" + "".join(random.choice("abcdef0123456789") for _ in range(32))
    proc = start_auth_server(
        shared_tmp / f"metrics-{access}", None, MOORAGE_METRICS__ACCESS=access, MOORAGE_METRICS__TOKEN=scrape
    )
    try:
        url = f"{proc.url}/metrics"
        _api(proc, "POST", "users", json={"name": ALICE[0], "password": ALICE[1]})
        expect_anon = 200 if access == "public" else 401
        expect_user = 403 if access == "admin" else 200
        assert requests.get(url, timeout=HTTP_TIMEOUT).status_code == expect_anon
        assert requests.get(url, headers=bearer(get_token(proc, [])), timeout=HTTP_TIMEOUT).status_code == expect_anon
        assert requests.get(url, auth=ALICE, timeout=HTTP_TIMEOUT).status_code == expect_user
        assert requests.get(url, auth=ADMIN, timeout=HTTP_TIMEOUT).status_code == 200
        # the scrape credential, as Prometheus sends it (authorization: credentials / bearer_token)
        assert requests.get(url, headers=bearer(scrape), timeout=HTTP_TIMEOUT).status_code == 200
        if access != "public":
            assert requests.get(url, headers=bearer(scrape[:-1] + "x"), timeout=HTTP_TIMEOUT).status_code == 401
        assert scrape not in proc.log(2000)
    finally:
        proc.stop()


def test_metrics_in_htpasswd_mode_need_a_user(shared_tmp: Path) -> None:
    path = write_htpasswd(shared_tmp / "metrics-htpasswd", {"hank": "hank-pw"})
    proc = start_auth_server(shared_tmp / "metrics-ht", None, mode="htpasswd", MOORAGE_AUTH__HTPASSWD__PATH=str(path))
    try:
        url = f"{proc.url}/metrics"
        assert requests.get(url, timeout=HTTP_TIMEOUT).status_code == 401
        assert requests.get(url, auth=("hank", "nope"), timeout=HTTP_TIMEOUT).status_code == 401
        assert requests.get(url, auth=("hank", "hank-pw"), timeout=HTTP_TIMEOUT).status_code == 200
    finally:
        proc.stop()


def test_metrics_admin_without_any_auth_is_a_start_error(shared_tmp: Path) -> None:
    from tests.support.registry_proc import RegistryStartError, start_moorage

    with pytest.raises(RegistryStartError) as exc:
        start_moorage(shared_tmp / "metrics-none", env={"MOORAGE_METRICS__ACCESS": "admin"}, start_timeout=15)
    assert "metrics.access" in str(exc.value)
