"""Real clients against token auth (and htpasswd): skopeo, podman, oras-py and the docker CLI
(through the podman API socket)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.support import ocilayout
from tests.support.authsrv import ADMIN_PASSWORD, HTTP_TIMEOUT, start_auth_server
from tests.support.clients import Skopeo, run
from tests.support.refusal import assert_refused
from tests.support.registry_proc import RegistryProcess, write_htpasswd
from tests.support.require import require_binary, require_module

pytestmark = pytest.mark.clients

ADMIN = ("admin", ADMIN_PASSWORD)
ALICE = ("alice", "alice-Pw-1")
BOB = ("bob", "bob-Pw-1")  # pull-only on alice/*


def _api(proc: RegistryProcess, method: str, path: str, **kw) -> requests.Response:
    r = requests.request(method, f"{proc.url}/api/v1/{path}", auth=ADMIN, timeout=HTTP_TIMEOUT, **kw)
    assert r.status_code < 300, (r.status_code, r.text)
    return r


@pytest.fixture(scope="module")
def srv(backend, tmp_path_factory) -> Iterator[RegistryProcess]:
    name, make_env = backend
    proc = start_auth_server(tmp_path_factory.mktemp(f"auth-clients-{name}"), make_env())
    try:
        for user, pw in (ALICE, BOB):
            _api(proc, "POST", "users", json={"name": user, "password": pw})
        _api(proc, "POST", "grants", json={"user": "bob", "pattern": "alice/*", "actions": "pull"})
        yield proc
    finally:
        proc.stop()


@pytest.fixture()
def fresh_skopeo(tmp_path: Path) -> Skopeo:
    """A skopeo with its own (empty) auth file, so logins don't leak between tests."""
    require_binary("skopeo", "skopeo")
    return Skopeo(tmp_path / "skopeo")


def _token(proc: RegistryProcess, scope: str, auth: tuple[str, str]) -> str:
    r = requests.get(f"{proc.url}/auth/token", params={"service": "moorage", "scope": scope}, auth=auth, timeout=HTTP_TIMEOUT)
    assert r.status_code == 200, r.text
    return r.json()["token"]


def _layout(tmp_path: Path, seed: str) -> ocilayout.LayoutImage:
    return ocilayout.build_image(tmp_path / "src", "v1", layers=[32 * 1024, 8 * 1024], seed=seed)


def test_skopeo_login_copy_and_denied_push(srv: RegistryProcess, fresh_skopeo: Skopeo, tmp_path: Path) -> None:
    sk = fresh_skopeo
    img = _layout(tmp_path, "skopeo-token")
    dest = f"docker://{srv.host}/alice/app:v1"
    # no credentials: refused
    assert_refused(
        sk("copy", "--quiet", f"oci:{img.dir}:v1", dest, check=False), "denied: requested access to the resource is denied"
    )
    # --dest-creds goes through the token flow
    sk.copy(f"oci:{img.dir}:v1", dest, "--dest-creds", "alice:" + ALICE[1])
    # skopeo login stores the credentials; inspect and copy back use them
    assert_refused(
        sk("login", "--username", "alice", "--password-stdin", srv.host, input="wrong", check=False), "invalid username/password"
    )
    sk.login(srv.host, *ALICE)
    assert sk.json("inspect", "--raw", dest)["layers"][0]["digest"] == img.layers[0].digest
    sk.copy(dest, f"oci:{tmp_path / 'back'}:v1")
    assert ocilayout.read_layout_blobs(tmp_path / "back").keys() >= {b.digest for b in img.layers}
    sk("logout", srv.host)
    assert_refused(sk("inspect", "--raw", dest, check=False), "unauthorized: token does not cover this request")

    # bob may pull alice/* but not push: the client reports "denied"
    assert sk.json("inspect", "--raw", "--creds", "bob:" + BOB[1], dest)["schemaVersion"] == 2
    cp = sk(
        "copy", "--quiet", "--dest-creds", "bob:" + BOB[1], f"oci:{img.dir}:v1", f"docker://{srv.host}/alice/bobs:v1", check=False
    )
    assert_refused(cp, "initiating layer upload", "denied: requested access to the resource is denied")


def test_anonymous_pull_public_but_not_private(srv: RegistryProcess, fresh_skopeo: Skopeo, tmp_path: Path) -> None:
    sk = fresh_skopeo
    img = _layout(tmp_path, "public")
    for repo in ("alice/pub", "alice/priv"):
        sk.copy(f"oci:{img.dir}:v1", f"docker://{srv.host}/{repo}:v1", "--dest-creds", "alice:" + ALICE[1])
    _api(srv, "PUT", "visibility", json={"repository": "alice/pub", "public": True})
    got = sk.json("inspect", "--raw", "--no-creds", f"docker://{srv.host}/alice/pub:v1")
    assert got["layers"][0]["digest"] == img.layers[0].digest
    sk("copy", "--quiet", "--src-no-creds", f"docker://{srv.host}/alice/pub:v1", f"oci:{tmp_path / 'anon'}:v1")
    assert_refused(
        sk("inspect", "--raw", "--no-creds", f"docker://{srv.host}/alice/priv:v1", check=False),
        "unauthorized: token does not cover this request",
    )
    # and nobody pushes anonymously into a public repository
    cp = sk("copy", "--quiet", "--dest-no-creds", f"oci:{img.dir}:v1", f"docker://{srv.host}/alice/pub:v2", check=False)
    assert_refused(cp, "uploading manifest v2", "denied: requested access to the resource is denied")


def test_skopeo_with_access_token_then_revoked(srv: RegistryProcess, fresh_skopeo: Skopeo, tmp_path: Path) -> None:
    sk = fresh_skopeo
    img = _layout(tmp_path, "pat")
    tok = _api(srv, "POST", "tokens", json={"user": "alice", "name": "skopeo", "scope": ["alice/ci-*:pull,push"]}).json()
    creds = "alice:" + tok["token"]
    sk.copy(f"oci:{img.dir}:v1", f"docker://{srv.host}/alice/ci-app:v1", "--dest-creds", creds)
    cp = sk("copy", "--quiet", "--dest-creds", creds, f"oci:{img.dir}:v1", f"docker://{srv.host}/alice/other:v1", check=False)
    assert_refused(cp, "denied: requested access to the resource is denied")  # outside the token's scope
    _api(srv, "DELETE", f"tokens/{tok['id']}")
    cp = sk("inspect", "--raw", "--creds", creds, f"docker://{srv.host}/alice/ci-app:v1", check=False)
    assert_refused(cp, "invalid username or password")  # revoked


def test_podman_login(srv: RegistryProcess, podman_socket, tmp_path: Path) -> None:
    authfile = tmp_path / "podman-auth.json"
    argv = podman_socket.podman_argv(
        "login", "--tls-verify=false", "--authfile", str(authfile), "--username", "alice", "--password-stdin", srv.host
    )
    env = podman_socket.service_env
    assert_refused(run(argv, env=env, input="wrong\n", check=False, timeout=60), "invalid username/password")
    ok = run(argv, env=env, input=ALICE[1] + "\n", check=False, timeout=60)
    assert ok.returncode == 0, ok.stderr
    assert "Login Succeeded" in ok.stdout
    assert srv.host in json.loads(authfile.read_text())["auths"]


def test_oras_push_pull_with_credentials(srv: RegistryProcess, tmp_path: Path, monkeypatch) -> None:
    require_module("oras", "oras")
    from tests.support.clients import oras_client

    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    (work / "notes.txt").write_bytes(b"pushed with a token\n")

    class Reg:
        host = srv.host
        auth = ALICE

    client = oras_client(Reg)
    target = f"{srv.host}/alice/oras:v1"
    resp = client.push(target, files=["notes.txt:text/plain"], quiet=True)
    assert resp.status_code == 201
    out = tmp_path / "out"
    files = client.pull(target, outdir=str(out))
    assert [Path(f).name for f in files] == ["notes.txt"]
    assert (out / "notes.txt").read_bytes() == b"pushed with a token\n"

    class Bob:
        host = srv.host
        auth = BOB

    with pytest.raises(Exception) as info:
        oras_client(Bob).push(f"{srv.host}/alice/oras:v2", files=["notes.txt:text/plain"], quiet=True)
    print("oras as bob:", type(info.value).__name__, info.value)
    assert "forbidden" in str(info.value).lower()  # 403 DENIED from the registry


def test_docker_login_push_pull_logout(srv: RegistryProcess, podman_socket, busybox_rootfs) -> None:
    d = podman_socket.docker
    host = f"localhost:{srv.port}"
    ref = f"{host}/alice/busybox:1"
    assert_refused(d("login", "--username", "alice", "--password-stdin", host, input="wrong", check=False), "401 Unauthorized")
    assert "Login Succeeded" in podman_socket.docker_login(host, *ALICE).stdout
    try:
        d("image", "import", str(busybox_rootfs), ref)
        d("image", "push", ref)
        d("image", "rm", ref)
        d("image", "pull", ref)
    finally:
        d("logout", host)
    tags = requests.get(
        f"{srv.url}/v2/alice/busybox/tags/list",
        timeout=HTTP_TIMEOUT,
        headers={"Authorization": "Bearer " + _token(srv, "repository:alice/busybox:pull", ALICE)},
    )
    assert tags.json()["tags"] == ["1"]
    # logged out: the push is refused
    d("image", "tag", ref, f"{host}/alice/busybox:2")
    assert_refused(
        d("image", "push", f"{host}/alice/busybox:2", check=False), "denied: requested access to the resource is denied"
    )
    # bob (pull-only) is told "denied"
    podman_socket.docker_login(host, *BOB)
    try:
        cp = d("image", "push", f"{host}/alice/busybox:2", check=False)
        assert_refused(cp, "uploading manifest 2", "denied: requested access to the resource is denied")
        d("image", "rm", ref)
        d("image", "pull", ref)  # but pulls fine
    finally:
        d("logout", host)
        d("image", "rm", ref, f"{host}/alice/busybox:2", check=False)


# -- htpasswd mode ------------------------------------------------------------------------------
def test_htpasswd_mode_with_skopeo(tmp_path: Path, fresh_skopeo: Skopeo) -> None:
    path = write_htpasswd(tmp_path / "htpasswd", {"hank": "hank-Pw"})
    proc = start_auth_server(tmp_path / "srv", None, mode="htpasswd", MOORAGE_AUTH__HTPASSWD__PATH=str(path))
    try:
        sk = fresh_skopeo
        img = _layout(tmp_path, "htpasswd")
        dest = f"docker://{proc.host}/h/app:v1"
        assert_refused(sk("copy", "--quiet", f"oci:{img.dir}:v1", dest, check=False), "unauthorized: authentication required")
        assert_refused(
            sk("copy", "--quiet", "--dest-creds", "hank:wrong", f"oci:{img.dir}:v1", dest, check=False),
            "unauthorized: authentication required",
        )
        sk.copy(f"oci:{img.dir}:v1", dest, "--dest-creds", "hank:hank-Pw")
        sk.login(proc.host, "hank", "hank-Pw")
        assert sk.json("list-tags", f"docker://{proc.host}/h/app")["Tags"] == ["v1"]
    finally:
        proc.stop()
