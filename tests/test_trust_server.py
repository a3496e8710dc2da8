"""Issue 8, server/config/protocol items, tried as an attacker and a new user would.

Availability (4: slow readers, 5: slowloris), bad input (13), protocol details (14), fail-closed
configuration (15), plain start-up errors (16), CLI against a missing registry (17), health
endpoints (18), access log and metrics bytes, start-up line (19).  Every test talks to a real
``moorage serve`` process over real sockets.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from tests.support.authsrv import ADMIN_PASSWORD, HTTP_TIMEOUT, get_token, start_auth_server
from tests.support.cli import run_moorage
from tests.support.http import OCI_INDEX, OCI_MANIFEST, Client, error_codes, sha256
from tests.support.registry_proc import REPO_ROOT, RegistryProcess, free_port, start_moorage

ADMIN = ("admin", ADMIN_PASSWORD)


def _env() -> dict[str, str]:
    pp = os.environ.get("PYTHONPATH")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MOORAGE_")}
    env["PYTHONPATH"] = f"{REPO_ROOT}{os.pathsep}{pp}" if pp else str(REPO_ROOT)
    return env


def moorage_cmd(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60, cwd: Path | None = None
) -> subprocess.CompletedProcess:
    """``python -m moorage.cli ARGS`` with a clean MOORAGE_* environment plus ``env``."""
    return run_moorage(*args, env=env, clean_env=True, timeout=timeout, cwd=cwd or REPO_ROOT)


def one_line_error(cp: subprocess.CompletedProcess) -> str:
    """Assert the command failed with one plain line on stderr (no traceback); return it."""
    assert cp.returncode != 0, (cp.returncode, cp.stdout, cp.stderr)
    assert "Traceback" not in cp.stderr and "Traceback" not in cp.stdout, cp.stderr
    lines = [ln for ln in cp.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, cp.stderr
    return lines[0]


# -- a server with token auth (login = bcrypt on the token endpoint) ---------------------------
@pytest.fixture(scope="module")
def srv(backend, tmp_path_factory) -> Iterator[RegistryProcess]:  # noqa: ANN001
    name, make_env = backend
    proc = start_auth_server(tmp_path_factory.mktemp(f"trust-{name}"), make_env())
    proc.backend = name  # type: ignore[attr-defined]
    try:
        yield proc
    finally:
        proc.stop()


def _admin_client(proc: RegistryProcess, repo: str) -> Client:
    c = Client(proc.url)
    c.s.headers["Authorization"] = "Bearer " + get_token(proc, [f"repository:{repo}:pull,push,delete"], ADMIN)
    return c


# -- item 4: slow readers ---------------------------------------------------------------------
def _stalled_get(host: str, port: int, path: str, token: str) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # small window: the server stalls soon
    s.settimeout(10)
    s.connect((host, port))
    s.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nAuthorization: Bearer {token}\r\n\r\n".encode())
    return s


def _timed(fn) -> tuple[float, object]:  # type: ignore[no-untyped-def]
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def test_stalled_readers_do_not_delay_login_or_small_pull(srv: RegistryProcess) -> None:
    repo = "trust/slow"
    c = _admin_client(srv, repo)
    big = os.urandom(1 << 20) * 16  # 16 MiB: far more than the socket buffers hold
    big_digest = c.push_blob(repo, big)
    small = b"small blob"
    small_digest = c.push_blob(repo, small)
    c.push_image(repo, "v1")
    token = get_token(srv, [f"repository:{repo}:pull"], ADMIN)

    baseline, _ = _timed(
        lambda: requests.get(f"{srv.url}/auth/token", params={"service": "moorage"}, auth=ADMIN, timeout=HTTP_TIMEOUT)
    )
    stalled = [_stalled_get("127.0.0.1", srv.port, f"/v2/{repo}/blobs/{big_digest}", token) for _ in range(100)]
    try:
        # Wait (bounded) until the server answered every stalled request's headers.
        deadline = time.monotonic() + 30
        for s in stalled:
            s.settimeout(max(0.1, deadline - time.monotonic()))
            try:
                s.recv(1, socket.MSG_PEEK)
            except TimeoutError:
                pass
        # 20 s is far below the 60 s the stalled sendfiles held the shared pool for.
        login_s, r = _timed(lambda: requests.get(f"{srv.url}/auth/token", params={"service": "moorage"}, auth=ADMIN, timeout=20))
        assert r.status_code == 200, r.text
        small_s, r = _timed(
            lambda: requests.get(
                f"{srv.url}/v2/{repo}/blobs/{small_digest}", headers={"Authorization": f"Bearer {token}"}, timeout=20
            )
        )
        assert r.status_code == 200 and r.content == small
        manifest_s, r = _timed(
            lambda: requests.get(
                f"{srv.url}/v2/{repo}/manifests/v1",
                timeout=20,
                headers={"Authorization": f"Bearer {token}", "Accept": OCI_MANIFEST},
            )
        )
        assert r.status_code == 200
        # Ordering proof: the stalled connections are still held open by the server (not dropped
        # to make room): each still has unread data waiting and has not seen EOF.
        held = 0
        for s in stalled:
            s.setblocking(False)
            try:
                held += len(s.recv(1, socket.MSG_PEEK)) > 0
            except (BlockingIOError, ConnectionError):
                pass
        assert held >= 90, held
        print(
            f"\n[item 4] 100 stalled readers held={held}: login {login_s * 1000:.0f} ms "
            f"(idle baseline {baseline * 1000:.0f} ms), small blob GET {small_s * 1000:.0f} ms, "
            f"manifest GET {manifest_s * 1000:.0f} ms"
        )
    finally:
        for s in stalled:
            s.close()
    # The blob is still served whole to a reader that does read.
    r = requests.get(f"{srv.url}/v2/{repo}/blobs/{big_digest}", headers={"Authorization": f"Bearer {token}"}, timeout=60)
    assert r.status_code == 200 and sha256(r.content) == big_digest


# -- item 13: bad numbers and deep JSON -------------------------------------------------------
@pytest.mark.parametrize("n", ["99999999999999999999", "9223372036854775807", "9" * 5000])
def test_huge_page_sizes_are_clamped_not_500(srv: RegistryProcess, n: str) -> None:
    repo = "trust/pages"
    c = _admin_client(srv, repo)
    c.push_image(repo, "a")
    c.push_image(repo, "b")
    r = c.req("GET", f"/v2/{repo}/tags/list?n={n}")
    assert r.status_code == 200, r.text
    assert r.json()["tags"] == ["a", "b"] and "Link" not in r.headers
    cat = Client(srv.url)
    cat.s.headers["Authorization"] = "Bearer " + get_token(srv, ["registry:catalog:*"], ADMIN)
    r = cat.req("GET", f"/v2/_catalog?n={n}")
    assert r.status_code == 200, r.text
    assert repo in r.json()["repositories"]


@pytest.mark.parametrize("n", ["²", "١٢", "-1", "+3", " 3", "3.0", "0x10", "½"])
def test_non_ascii_or_signed_page_sizes_are_invalid(srv: RegistryProcess, n: str) -> None:
    repo = "trust/pages"
    c = _admin_client(srv, repo)
    c.push_image(repo, "a")
    r = c.req("GET", f"/v2/{repo}/tags/list", params={"n": n})
    assert r.status_code == 400 and error_codes(r) == ["PAGINATION_NUMBER_INVALID"], r.text


def _deep(depth: int) -> bytes:
    return (
        b'{"schemaVersion": 2, "mediaType": "'
        + OCI_MANIFEST.encode()
        + b'", "annotations": '
        + b"[" * depth
        + b"]" * depth
        + b"}"
    )


def test_deeply_nested_manifest_is_manifest_invalid(srv: RegistryProcess) -> None:
    repo = "trust/deep"
    c = _admin_client(srv, repo)
    for body in (_deep(100_000), b"[" * 100_000 + b"]" * 100_000, b'{"a":' * 50_000 + b"1" + b"}" * 50_000):
        r = c.push_manifest(repo, "deep", body)
        assert r.status_code == 400 and error_codes(r) == ["MANIFEST_INVALID"], r.text[:300]
    assert c.req("GET", "/v2/").status_code == 200


def test_deeply_nested_admin_api_body_is_400(srv: RegistryProcess) -> None:
    body = b'{"name": "x", "password": ' + b"[" * 30_000 + b"]" * 30_000 + b"}"
    r = requests.post(
        f"{srv.url}/api/v1/users", data=body, auth=ADMIN, timeout=HTTP_TIMEOUT, headers={"Content-Type": "application/json"}
    )
    assert r.status_code == 400, (r.status_code, r.text[:300])
    assert r.headers["Content-Type"].split(";")[0] == "application/json"


# -- item 14: protocol details ----------------------------------------------------------------
@pytest.mark.parametrize("ref", ["bad tag!", "-lead", "x" * 200, ".dot", "ünï"])
def test_manifest_by_invalid_tag_is_unknown(srv: RegistryProcess, ref: str) -> None:
    repo = "trust/refs"
    c = _admin_client(srv, repo)
    c.push_image(repo, "v1")
    status, headers, body = c.raw(
        "GET", f"/v2/{repo}/manifests/{requests.utils.quote(ref)}", headers={"Authorization": c.s.headers["Authorization"]}
    )
    assert status == 404, body
    assert json.loads(body)["errors"][0]["code"] == "MANIFEST_UNKNOWN"
    status, _, _ = c.raw(
        "HEAD", f"/v2/{repo}/manifests/{requests.utils.quote(ref)}", headers={"Authorization": c.s.headers["Authorization"]}
    )
    assert status == 404


def test_json_bodies_carry_exact_media_types(srv: RegistryProcess) -> None:
    repo = "trust/ctype"
    c = _admin_client(srv, repo)
    digest, _ = c.push_image(repo, "v1")
    r = c.req("GET", f"/v2/{repo}/referrers/{digest}")
    assert r.status_code == 200 and r.headers["Content-Type"] == OCI_INDEX
    r = c.req("GET", f"/v2/{repo}/tags/list")
    assert r.status_code == 200 and r.headers["Content-Type"] == "application/json"
    r = c.req("GET", f"/v2/{repo}/manifests/nope")
    assert r.status_code == 404 and r.headers["Content-Type"] == "application/json"
    r = c.req("GET", "/v2/")
    assert r.status_code == 200 and r.headers["Content-Type"] == "application/json"


@pytest.mark.parametrize("path", ["/v2/foo/bar/baz/qux", "/v2/foo/nothing", "/v2/_catalogue", "/v2/foo/blobs/"])
def test_unmatched_v2_paths_answer_a_spec_code(srv: RegistryProcess, path: str) -> None:
    spec_codes = {
        "BLOB_UNKNOWN",
        "BLOB_UPLOAD_INVALID",
        "BLOB_UPLOAD_UNKNOWN",
        "DIGEST_INVALID",
        "MANIFEST_BLOB_UNKNOWN",
        "MANIFEST_INVALID",
        "MANIFEST_UNKNOWN",
        "NAME_INVALID",
        "NAME_UNKNOWN",
        "SIZE_INVALID",
        "UNAUTHORIZED",
        "DENIED",
        "UNSUPPORTED",
        "TOOMANYREQUESTS",
    }
    r = requests.get(srv.url + path, timeout=HTTP_TIMEOUT)
    assert r.status_code == 404, r.text
    assert r.headers["Content-Type"] == "application/json"
    assert error_codes(r)[0] in spec_codes, r.text


# -- item 18: health ----------------------------------------------------------------------------
def test_healthz_and_readyz_need_no_credentials(srv: RegistryProcess) -> None:
    for path in ("/healthz", "/readyz"):
        r = requests.get(srv.url + path, timeout=HTTP_TIMEOUT)
        assert r.status_code == 200, (path, r.status_code, r.text)
        assert r.headers["Content-Type"] == "application/json"
    assert requests.head(srv.url + "/readyz", timeout=HTTP_TIMEOUT).status_code == 200


def test_healthcheck_command_follows_the_configured_addr(srv: RegistryProcess) -> None:
    """What deploy/Dockerfile's HEALTHCHECK runs."""
    cp = moorage_cmd("healthcheck", env={"MOORAGE_ADDR": f"0.0.0.0:{srv.port}"})
    assert cp.returncode == 0, cp.stderr
    assert moorage_cmd("healthcheck", "--ready", "--addr", srv.host).returncode == 0
    line = one_line_error(moorage_cmd("healthcheck", env={"MOORAGE_ADDR": f"127.0.0.1:{free_port()}"}))
    assert "healthz" in line, line


def test_readyz_is_503_when_storage_is_gone(tmp_path: Path) -> None:
    proc = start_moorage(tmp_path / "srv")
    try:
        storage = proc.data_dir / "storage"
        assert requests.get(proc.url + "/readyz", timeout=HTTP_TIMEOUT).status_code == 200
        storage.rename(proc.data_dir / "storage-away")
        storage.write_text("not a directory")
        r = requests.get(proc.url + "/readyz", timeout=HTTP_TIMEOUT)
        assert r.status_code == 503, r.text
        assert "storage" in r.text
        assert requests.get(proc.url + "/healthz", timeout=HTTP_TIMEOUT).status_code == 200
        storage.unlink()
        (proc.data_dir / "storage-away").rename(storage)
        assert requests.get(proc.url + "/readyz", timeout=HTTP_TIMEOUT).status_code == 200
        (proc.data_dir / "moorage.db").rename(proc.data_dir / "moved.db")
        (proc.data_dir / "moorage.db").mkdir()  # the database file is no longer a database
        r = requests.get(proc.url + "/readyz", timeout=HTTP_TIMEOUT)
        assert r.status_code == 503 and r.json()["checks"]["database"] != "ok", r.text
    finally:
        proc.stop()


# -- item 19: access log bytes, HEAD metrics, start-up line -----------------------------------
def _access_entries(proc: RegistryProcess) -> list[dict]:
    out = []
    for line in proc.log_path.read_text().splitlines():  # type: ignore[union-attr]
        if line.startswith("{") and '"method"' in line:
            out.append(json.loads(line))
    return out


def _metric(text: str, name: str, route: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + "{") and f'route="{route}"' in line:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_access_log_counts_body_bytes_and_head_adds_none(tmp_path: Path) -> None:
    proc = start_moorage(tmp_path / "srv")
    try:
        c = Client(proc.url)
        data = os.urandom(1 << 20)
        digest = c.push_blob("logs/app", data)
        mdigest, mbody = c.push_image("logs/app", "v1")
        before = c.req("GET", "/metrics").text
        assert c.req("GET", f"/v2/logs/app/blobs/{digest}").content == data
        assert c.req("HEAD", f"/v2/logs/app/blobs/{digest}").status_code == 200
        assert c.req("GET", "/v2/logs/app/manifests/v1").content == mbody
        after = c.req("GET", "/metrics").text
        time.sleep(0.3)
        entries = _access_entries(proc)
        get = [e for e in entries if e["method"] == "GET" and e["path"].endswith(digest)]
        head = [e for e in entries if e["method"] == "HEAD" and e["path"].endswith(digest)]
        man = [e for e in entries if e["method"] == "GET" and e["path"].endswith("/manifests/v1")]
        assert get[-1]["bytes"] == len(data), get[-1]
        assert head[-1]["bytes"] == 0, head[-1]
        assert man[-1]["bytes"] == len(mbody), man[-1]
        assert _metric(after, "moorage_http_response_bytes_total", "blob_get") - _metric(
            before, "moorage_http_response_bytes_total", "blob_get"
        ) == len(data)
        assert _metric(after, "moorage_http_response_bytes_total", "blob_head") == 0
    finally:
        proc.stop()


def test_startup_line_states_the_setup_and_warns_when_open(tmp_path: Path) -> None:
    port = free_port("0.0.0.0")
    data = tmp_path / "data"
    proc = subprocess.Popen(
        [sys.executable, "-m", "moorage.cli", "serve", "--addr", f"0.0.0.0:{port}", "--data", str(data)],
        env=_env(),
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        lines: list[str] = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            line = proc.stdout.readline()  # type: ignore[union-attr]
            if not line:
                break
            lines.append(line)
            if "listening" in line:
                break
        text = "".join(lines)
        start = next(ln for ln in lines if "listening" in ln)
        assert f"0.0.0.0:{port}" in start and str(data) in start, start
        assert "storage=filesystem" in start and "database=sqlite" in start and "auth=none" in start, start
        assert any("WARNING" in ln.upper() and "auth" in ln.lower() for ln in lines), text
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(10)


# -- item 15: fail closed on configuration mistakes -------------------------------------------
def test_yaml_typo_is_an_error_naming_key_and_suggestion(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yml"
    cfg.write_text("auth:\n  mdoe: token\n")
    cp = moorage_cmd(
        "serve", "--config", str(cfg), "--data", str(tmp_path / "d"), "--addr", f"127.0.0.1:{free_port()}", timeout=30
    )
    line = one_line_error(cp)
    assert "auth.mdoe" in line and "auth.mode" in line, line
    cfg.write_text("storrage:\n  driver: s3\n")
    line = one_line_error(moorage_cmd("serve", "--config", str(cfg), "--data", str(tmp_path / "d"), timeout=30))
    assert "storrage" in line and "storage" in line, line


def test_unknown_environment_variable_is_an_error(tmp_path: Path) -> None:
    cp = moorage_cmd(
        "serve",
        "--data",
        str(tmp_path / "d"),
        "--addr",
        f"127.0.0.1:{free_port()}",
        env={"MOORAGE_AUTH__MDOE": "token"},
        timeout=30,
    )
    line = one_line_error(cp)
    assert "MOORAGE_AUTH__MDOE" in line and "MOORAGE_AUTH__MODE" in line, line
    cp = moorage_cmd("serve", "--data", str(tmp_path / "d"), env={"MOORAGE_ADRR": "127.0.0.1:1"}, timeout=30)
    line = one_line_error(cp)
    assert "MOORAGE_ADRR" in line and "MOORAGE_ADDR" in line, line


def test_auth_that_cannot_be_set_up_stops_the_server(tmp_path: Path) -> None:
    """If the auth package cannot be imported, the server must not start open."""
    code = "import sys; sys.modules['moorage.auth.setup'] = None; sys.argv[0] = 'moorage'; from moorage.cli import main; main()"
    env = _env()
    env.update({"MOORAGE_AUTH__MODE": "token", "MOORAGE_AUTH__ADMIN_PASSWORD": "x"})
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-c", code, "serve", "--addr", f"127.0.0.1:{port}", "--data", str(tmp_path / "d")],
        env=env,
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)
        proc.wait()
        pytest.fail("server started although its auth could not be set up")
    assert proc.returncode != 0
    assert "Traceback" not in err and "auth" in err.lower(), err


# -- item 16: start-up errors -----------------------------------------------------------------
def test_port_in_use_is_one_line(tmp_path: Path) -> None:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(1)
    port = s.getsockname()[1]
    try:
        line = one_line_error(moorage_cmd("serve", "--addr", f"127.0.0.1:{port}", "--data", str(tmp_path / "d")))
        assert str(port) in line and "in use" in line, line
    finally:
        s.close()


@pytest.mark.parametrize("addr", ["127.0.0.1", "127.0.0.1:http", "127.0.0.1:70000", ":", "127.0.0.1:-1", "[::1"])
def test_bad_addr_is_one_line(tmp_path: Path, addr: str) -> None:
    line = one_line_error(moorage_cmd("serve", "--addr", addr, "--data", str(tmp_path / "d")))
    assert "addr" in line.lower(), line


def test_data_dir_not_writable_is_one_line(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    line = one_line_error(moorage_cmd("serve", "--addr", f"127.0.0.1:{free_port()}", "--data", str(blocker / "data")))
    assert str(blocker / "data") in line, line


def test_read_only_database_is_one_line(tmp_path: Path) -> None:
    db = tmp_path / "ro.db"
    url = f"sqlite:///file:{db}?mode=ro&uri=true"
    line = one_line_error(
        moorage_cmd(
            "serve", "--addr", f"127.0.0.1:{free_port()}", "--data", str(tmp_path / "d"), env={"MOORAGE_DATABASE__URL": url}
        )
    )
    assert "database" in line.lower(), line


def test_unknown_log_level_is_one_line(tmp_path: Path) -> None:
    line = one_line_error(
        moorage_cmd(
            "serve", "--addr", f"127.0.0.1:{free_port()}", "--data", str(tmp_path / "d"), env={"MOORAGE_LOG_LEVEL": "verbose"}
        )
    )
    assert "log_level" in line and "verbose" in line, line


def test_missing_htpasswd_file_is_one_line(tmp_path: Path) -> None:
    missing = tmp_path / "nope.htpasswd"
    line = one_line_error(
        moorage_cmd(
            "serve",
            "--addr",
            f"127.0.0.1:{free_port()}",
            "--data",
            str(tmp_path / "d"),
            env={"MOORAGE_AUTH__MODE": "htpasswd", "MOORAGE_AUTH__HTPASSWD__PATH": str(missing)},
        )
    )
    assert str(missing) in line, line


def test_postgres_unreachable_names_url_without_password(tmp_path: Path) -> None:
    port = free_port()
    url = f"postgresql://moorage:s3cret-pw@127.0.0.1:{port}/reg"
    cp = moorage_cmd(
        "serve", "--addr", f"127.0.0.1:{free_port()}", "--data", str(tmp_path / "d"), env={"MOORAGE_DATABASE__URL": url}
    )
    line = one_line_error(cp)
    assert f"127.0.0.1:{port}" in line and "s3cret-pw" not in cp.stderr + cp.stdout, line


def test_s3_unreachable_names_endpoint_without_secret(tmp_path: Path) -> None:
    port = free_port()
    cp = moorage_cmd(
        "serve",
        "--addr",
        f"127.0.0.1:{free_port()}",
        "--data",
        str(tmp_path / "d"),
        timeout=120,
        env={
            "MOORAGE_STORAGE__DRIVER": "s3",
            "MOORAGE_STORAGE__S3__BUCKET": "b",
            "MOORAGE_STORAGE__S3__ENDPOINT_URL": f"http://127.0.0.1:{port}",
            "MOORAGE_STORAGE__S3__ACCESS_KEY": "AK",
            "MOORAGE_STORAGE__S3__SECRET_KEY": "s3cret-key",
        },
    )
    line = one_line_error(cp)
    assert f"127.0.0.1:{port}" in line and "s3cret-key" not in cp.stderr + cp.stdout, line


# -- item 17: CLI against a data dir that holds no registry -----------------------------------
@pytest.mark.parametrize("args", [("user", "list"), ("gc", "--dry-run"), ("purge-uploads",)])
def test_cli_refuses_a_missing_registry(tmp_path: Path, args: tuple[str, ...]) -> None:
    typo = tmp_path / "dta"
    line = one_line_error(moorage_cmd(*args, "--data", str(typo)))
    assert str(typo) in line and "registry" in line.lower(), line
    assert not typo.exists()


def test_cli_works_on_a_real_registry(tmp_path: Path) -> None:
    assert moorage_cmd("migrate", "--data", str(tmp_path / "d")).returncode == 0
    cp = moorage_cmd("user", "list", "--data", str(tmp_path / "d"))
    assert cp.returncode == 0, cp.stderr


# -- item 5: slowloris --------------------------------------------------------------------------
@pytest.fixture()
def guarded(tmp_path: Path) -> Iterator[RegistryProcess]:
    env = {"MOORAGE_HTTP__MAX_CONNECTIONS": "200", "MOORAGE_HTTP__HEADER_TIMEOUT": "3", "MOORAGE_HTTP__BODY_TIMEOUT": "3"}
    proc = start_moorage(tmp_path / "srv", env=env)
    try:
        yield proc
    finally:
        proc.stop()


def _half_head(port: int) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=30)
    s.sendall(b"GET /v2/ HTTP/1.1\r\nHost: x\r\nX-Slow: ")
    return s


def _closed_by_server(s: socket.socket, within: float) -> bool:
    s.settimeout(within)
    try:
        while True:
            data = s.recv(65536)
            if not data:
                return True
    except TimeoutError:  # before OSError: a timeout is an OSError too
        return False
    except OSError:  # reset by the server
        return True


def test_slowloris_is_cut_off_and_over_limit_gets_503(guarded: RegistryProcess) -> None:
    socks: list[socket.socket] = []
    try:
        with ThreadPoolExecutor(16) as pool:
            socks = list(pool.map(lambda _: _half_head(guarded.port), range(300)))
        # Over the limit: a full request gets a clear 503, not a hang or a reset.
        t0 = time.perf_counter()
        r = requests.get(guarded.url + "/v2/", timeout=20)
        assert r.status_code == 503, r.status_code
        assert r.json()["errors"][0]["code"] == "UNAVAILABLE"
        # Every half head is closed by the server (header timeout), within a bounded wait.
        closed = sum(_closed_by_server(s, 20) for s in socks)
        assert closed == len(socks), closed
        elapsed = time.perf_counter() - t0
        r = requests.get(guarded.url + "/v2/", timeout=20)
        assert r.status_code == 200
        print(f"\n[item 5] 300 half heads, limit 200, header timeout 3 s: all closed after {elapsed:.1f} s")
    finally:
        for s in socks:
            s.close()


def test_idle_upload_body_is_closed(guarded: RegistryProcess) -> None:
    c = Client(guarded.url)
    loc = c.req("POST", "/v2/slow/body/blobs/uploads/").headers["Location"]
    s = socket.create_connection(("127.0.0.1", guarded.port), timeout=30)
    try:
        s.sendall(
            f"PATCH {loc} HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\n"
            f"Content-Length: 100000\r\n\r\n".encode()
            + b"x" * 1000
        )
        assert _closed_by_server(s, 20)
    finally:
        s.close()
    # A keep-alive connection that sends a full request, then a slow second head, is cut off too.
    s = socket.create_connection(("127.0.0.1", guarded.port), timeout=30)
    try:
        s.sendall(b"GET /v2/ HTTP/1.1\r\nHost: x\r\n\r\n")
        assert s.recv(65536).startswith(b"HTTP/1.1 200")
        s.sendall(b"GET /v2/ HTTP/1.1\r\nHo")
        assert _closed_by_server(s, 20)
    finally:
        s.close()
    assert c.req("GET", "/v2/").status_code == 200
