"""``moorage mirror SRC DST`` between real registries: two Moorage instances (one with token auth)
and Distribution 2.8.2 with htpasswd auth; interrupted with SIGKILL and resumed; referrers
through the referrers API and through the fallback tag schema."""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.support import ocilayout
from tests.support.authsrv import ADMIN_PASSWORD, start_auth_server
from tests.support.cli import run_moorage
from tests.support.clients import Skopeo
from tests.support.fixtures import distribution_with_users, require_binary
from tests.support.registry_proc import REPO_ROOT, RegistryProcess, start_moorage

pytestmark = pytest.mark.clients

ADMIN = ("admin", ADMIN_PASSWORD)
DIST_USER = ("dist", "dist-Pw-1")
TIMEOUT = 60
ACCEPT = ", ".join(
    [
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
    ]
)
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"


@pytest.fixture(scope="module")
def tokened(tmp_path_factory) -> Iterator[RegistryProcess]:
    proc = start_auth_server(tmp_path_factory.mktemp("mirror-token"))
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def plain(tmp_path_factory) -> Iterator[RegistryProcess]:
    proc = start_moorage(tmp_path_factory.mktemp("mirror-plain"))
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def dist(tmp_path_factory) -> Iterator[RegistryProcess]:
    yield from distribution_with_users(tmp_path_factory.mktemp("mirror-dist"), dict([DIST_USER]))


@pytest.fixture()
def sk(tmp_path: Path) -> Skopeo:
    require_binary("skopeo", "skopeo")
    return Skopeo(tmp_path / "skopeo")


def mirror_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "moorage.cli", "mirror", *args]


def _env() -> dict[str, str]:
    pp = os.environ.get("PYTHONPATH")
    return {**os.environ, "PYTHONPATH": f"{REPO_ROOT}{os.pathsep}{pp}" if pp else str(REPO_ROOT)}


def mirror(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    cp = run_moorage("mirror", *args, timeout=300)
    if check and cp.returncode != 0:
        raise AssertionError(f"mirror failed ({cp.returncode}):\n{cp.stdout}\n{cp.stderr}")
    return cp


def summary(cp: subprocess.CompletedProcess) -> dict[str, int]:
    line = [ln for ln in cp.stdout.splitlines() if ln.startswith(("mirrored:", "dry run:"))][-1]
    return {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", line)}


class Http:
    """Raw registry HTTP with basic auth or the token flow, as a client would."""

    def __init__(self, proc: RegistryProcess, auth: tuple[str, str] | None = None) -> None:
        self.proc, self.auth = proc, auth
        self.tokens: dict[str, str] = {}

    def __call__(self, method: str, path: str, scope: str = "", **kw) -> requests.Response:
        url = path if path.startswith("http") else self.proc.url + path
        headers = dict(kw.pop("headers", {}))
        if scope in self.tokens:
            headers["Authorization"] = "Bearer " + self.tokens[scope]
        r = requests.request(
            method, url, headers=headers, auth=None if scope in self.tokens else self.auth, timeout=TIMEOUT, **kw
        )
        if r.status_code == 401 and r.headers.get("WWW-Authenticate", "").startswith("Bearer"):
            tok = requests.get(
                f"{self.proc.url}/auth/token", params={"service": "moorage", "scope": scope}, auth=self.auth, timeout=TIMEOUT
            ).json()["token"]
            self.tokens[scope] = tok
            headers["Authorization"] = "Bearer " + tok
            r = requests.request(method, url, headers=headers, timeout=TIMEOUT, **kw)
        return r

    def push_blob(self, repo: str, data: bytes) -> str:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        scope = f"repository:{repo}:pull,push"
        r = self("POST", f"/v2/{repo}/blobs/uploads/", scope)
        assert r.status_code == 202, r.text
        loc = r.headers["Location"]
        r = self("PUT", loc + ("&" if "?" in loc else "?") + f"digest={digest}", scope, data=data)
        assert r.status_code == 201, r.text
        return digest

    def push_manifest(self, repo: str, ref: str, body: bytes, media_type: str) -> requests.Response:
        r = self(
            "PUT", f"/v2/{repo}/manifests/{ref}", f"repository:{repo}:pull,push", data=body, headers={"Content-Type": media_type}
        )
        assert r.status_code == 201, r.text
        return r

    def manifest(self, repo: str, ref: str) -> requests.Response:
        return self("GET", f"/v2/{repo}/manifests/{ref}", f"repository:{repo}:pull", headers={"Accept": ACCEPT})

    def referrers(self, repo: str, digest: str) -> list[dict]:
        r = self("GET", f"/v2/{repo}/referrers/{digest}", f"repository:{repo}:pull")
        assert r.status_code == 200, r.text
        return r.json()["manifests"]


def push_signature(http: Http, repo: str, subject: dict, text: bytes) -> str:
    """An artifact manifest whose subject is ``subject``; keeps the fallback tag index up to date
    when the registry has no referrers API (as the OCI spec asks of clients)."""
    empty = http.push_blob(repo, b"{}")
    layer = http.push_blob(repo, text)
    doc = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": "application/vnd.example.signature",
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": empty, "size": 2},
        "layers": [{"mediaType": "application/vnd.example.sig.v1", "digest": layer, "size": len(text)}],
        "subject": subject,
    }
    body = json.dumps(doc).encode()
    digest = "sha256:" + hashlib.sha256(body).hexdigest()
    r = http.push_manifest(repo, digest, body, OCI_MANIFEST)
    if "OCI-Subject" not in r.headers:
        tag = subject["digest"].replace(":", "-")
        got = http.manifest(repo, tag)
        index = got.json() if got.status_code == 200 else {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []}
        index["manifests"].append(
            {"mediaType": OCI_MANIFEST, "digest": digest, "size": len(body), "artifactType": "application/vnd.example.signature"}
        )
        http.push_manifest(repo, tag, json.dumps(index).encode(), OCI_INDEX)
    return digest


def descriptor(http: Http, repo: str, ref: str) -> dict:
    r = http.manifest(repo, ref)
    assert r.status_code == 200, r.text
    return {"mediaType": r.headers["Content-Type"], "digest": r.headers["Docker-Content-Digest"], "size": len(r.content)}


# ------------------------------------------------------------------------------ tests
def test_moorage_to_moorage_multi_arch_and_referrers(tokened, plain, sk, tmp_path) -> None:
    idx = ocilayout.build_index(tmp_path / "idx", "multi", layers=[64 * 1024, 8 * 1024], seed="mirror-m2m")
    sk.copy(f"oci:{idx.dir}:multi", f"docker://{tokened.host}/lib/multi:multi", "--dest-creds", ":".join(ADMIN), all=True)
    src = Http(tokened, ADMIN)
    sig = push_signature(src, "lib/multi", descriptor(src, "lib/multi", "multi"), b"signed index")
    child_sig = push_signature(src, "lib/multi", descriptor(src, "lib/multi", idx.images[0].digest), b"signed child")

    cp = mirror(f"http://{tokened.host}/lib/multi", f"http://{plain.host}/copy/multi", "--src-creds", ":".join(ADMIN))
    s = summary(cp)
    assert s["tags"] == 1 and s["manifests_copied"] == 5 and s["referrers"] == 2, cp.stdout
    dst = Http(plain)
    assert descriptor(dst, "copy/multi", "multi")["digest"] == idx.digest
    for image in idx.images:
        assert dst.manifest("copy/multi", image.digest).status_code == 200
        for layer in image.layers:
            assert dst("GET", f"/v2/copy/multi/blobs/{layer.digest}").content == layer.data
    assert [m["digest"] for m in dst.referrers("copy/multi", idx.digest)] == [sig]
    assert [m["digest"] for m in dst.referrers("copy/multi", idx.images[0].digest)] == [child_sig]

    again = summary(mirror(f"http://{tokened.host}/lib/multi", f"http://{plain.host}/copy/multi", "--src-creds", ":".join(ADMIN)))
    assert again["blobs_copied"] == again["manifests_copied"] == again["bytes_copied"] == 0, again
    assert again["up_to_date"] == 1


def test_moorage_to_distribution_and_back_with_fallback_referrers(plain, dist, tokened, sk, tmp_path) -> None:
    img = ocilayout.build_image(tmp_path / "img", "v1", layers=[48 * 1024], seed="mirror-dist")
    sk.copy(f"oci:{img.dir}:v1", f"docker://{plain.host}/app/one:v1")
    src = Http(plain)
    sig = push_signature(src, "app/one", descriptor(src, "app/one", "v1"), b"sbom")

    s = summary(mirror(f"http://{plain.host}/app/one", f"http://{dist.host}/app/one", "--dest-creds", ":".join(DIST_USER)))
    assert s["manifests_copied"] == 2 and s["referrers"] == 1
    d = Http(dist, DIST_USER)
    assert descriptor(d, "app/one", "v1")["digest"] == img.digest
    # Distribution 2.8 has no referrers API: the mirror maintained the fallback tag there.
    fallback = d.manifest("app/one", img.digest.replace(":", "-"))
    assert fallback.status_code == 200 and [m["digest"] for m in fallback.json()["manifests"]] == [sig]

    # And back from Distribution (referrers found through the fallback tag) into token-auth Moorage.
    s = summary(
        mirror(
            f"http://{dist.host}/app/one",
            f"http://{tokened.host}/back/one",
            "--src-creds",
            ":".join(DIST_USER),
            "--dest-creds",
            ":".join(ADMIN),
        )
    )
    assert s["tags"] == 1 and s["referrers"] == 1, s  # the fallback tag itself is not copied as a tag
    back = Http(tokened, ADMIN)
    assert descriptor(back, "back/one", "v1")["digest"] == img.digest
    assert [m["digest"] for m in back.referrers("back/one", img.digest)] == [sig]
    again = summary(
        mirror(
            f"http://{dist.host}/app/one",
            f"http://{tokened.host}/back/one",
            "--src-creds",
            ":".join(DIST_USER),
            "--dest-creds",
            ":".join(ADMIN),
        )
    )
    assert again["blobs_copied"] == again["manifests_copied"] == 0, again


def test_interrupted_mirror_resumes(plain, dist, sk, tmp_path) -> None:
    layers = [os.urandom(24 * 1024 * 1024) for _ in range(3)]
    img = ocilayout.build_image(tmp_path / "big", "v1", layers=layers, seed="mirror-big", compress=False)
    sk.copy(f"oci:{img.dir}:v1", f"docker://{plain.host}/big/app:v1")
    d = Http(dist, DIST_USER)
    args = mirror_argv(
        f"http://{plain.host}/big/app", f"http://{dist.host}/big/app", "--dest-creds", ":".join(DIST_USER), "--jobs", "1"
    )
    proc = subprocess.Popen(
        args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO_ROOT, env=_env(), start_new_session=True
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            have = [layer.digest for layer in img.layers if d("HEAD", f"/v2/big/app/blobs/{layer.digest}", "").status_code == 200]
            if have:
                break
            time.sleep(0.05)
        assert proc.poll() is None, "mirror finished before it could be interrupted"
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
    # Killed part-way: the tag is not there (manifests go last), some blobs are.
    assert d.manifest("big/app", "v1").status_code == 404
    s = summary(mirror(f"http://{plain.host}/big/app", f"http://{dist.host}/big/app", "--dest-creds", ":".join(DIST_USER)))
    assert s["blobs_present"] >= 1 and s["blobs_copied"] >= 1 and s["manifests_copied"] == 1, s
    assert descriptor(d, "big/app", "v1")["digest"] == img.digest
    got = d("GET", f"/v2/big/app/blobs/{img.layers[-1].digest}", "")
    assert hashlib.sha256(got.content).hexdigest() == img.layers[-1].digest.split(":")[1]
    again = summary(mirror(f"http://{plain.host}/big/app", f"http://{dist.host}/big/app", "--dest-creds", ":".join(DIST_USER)))
    assert again["blobs_copied"] == again["manifests_copied"] == again["bytes_copied"] == 0, again


def test_dry_run_tag_filter_and_platform(plain, sk, tmp_path) -> None:
    for tag, seed in (("v1.0", "a"), ("v1.1", "b"), ("v2.0", "c")):
        img = ocilayout.build_image(tmp_path / tag, tag, layers=[4 * 1024], seed=f"filter-{seed}")
        sk.copy(f"oci:{img.dir}:{tag}", f"docker://{plain.host}/filter/src:{tag}")
    dst = Http(plain)
    cp = mirror(f"http://{plain.host}/filter/src", f"http://{plain.host}/filter/dry", "--dry-run")
    s = summary(cp)
    assert s["tags"] == 3 and s["manifests_copied"] == 3 and "would copy manifest" in cp.stdout
    assert dst.manifest("filter/dry", "v1.0").status_code == 404
    s = summary(mirror(f"http://{plain.host}/filter/src", f"http://{plain.host}/filter/dst", "--tags", r"v1\..*"))
    assert s["tags"] == 2 and s["blobs_mounted"] >= 2 and s["blobs_copied"] == 0  # same registry: mounted
    assert dst.manifest("filter/dst", "v1.1").status_code == 200
    assert dst.manifest("filter/dst", "v2.0").status_code == 404
    # --platform narrows an index (rewritten: the one platform left).
    idx = ocilayout.build_index(tmp_path / "idx", "multi", layers=[4 * 1024], seed="filter-idx")
    sk.copy(f"oci:{idx.dir}:multi", f"docker://{plain.host}/filter/multi:multi", all=True)
    mirror(f"http://{plain.host}/filter/multi:multi", f"http://{plain.host}/filter/arm:multi", "--platform", "linux/arm64")
    doc = dst.manifest("filter/arm", "multi").json()
    assert [m["platform"]["architecture"] for m in doc["manifests"]] == ["arm64"]


def test_plain_http_follows_skopeo_conventions(plain, sk, tmp_path) -> None:
    """A scheme-less reference to a plain-HTTP registry: a one-line error that says what to write;
    skopeo's spelling (docker://, --src-tls-verify=false / --dest-tls-verify=false) then works."""
    img = ocilayout.build_image(tmp_path / "plainhttp", "v1", layers=[4 * 1024], seed="plain-http")
    sk.copy(f"oci:{img.dir}:v1", f"docker://{plain.host}/plainhttp/src:v1")
    cp = mirror(f"{plain.host}/plainhttp/src:v1", f"http://{plain.host}/plainhttp/dst:v1", check=False)
    lines = [ln for ln in cp.stderr.splitlines() if ln.strip()]
    assert cp.returncode == 1 and len(lines) == 1 and "Traceback" not in cp.stderr, cp.stderr
    assert f"http://{plain.host}/plainhttp/src:v1" in lines[0] and "--src-tls-verify=false" in lines[0], lines[0]
    s = summary(
        mirror(
            f"docker://{plain.host}/plainhttp/src:v1",
            f"docker://{plain.host}/plainhttp/dst:v1",
            "--src-tls-verify=false",
            "--dest-tls-verify=false",
        )
    )
    assert s["tags"] == 1 and s["manifests_copied"] == 1, s
    assert Http(plain).manifest("plainhttp/dst", "v1").status_code == 200


def test_bad_arguments_are_one_line_errors(plain) -> None:
    for args in (
        ["nohost", f"http://{plain.host}/x"],
        [f"http://{plain.host}/UPPER", f"http://{plain.host}/x"],
        [f"http://{plain.host}/a", f"http://{plain.host}/b", "--tags", "("],
        [f"http://{plain.host}/a", f"http://{plain.host}/b", "--src-creds", "nocolon"],
    ):
        cp = mirror(*args, check=False)
        assert cp.returncode == 2 and "Traceback" not in cp.stderr, (args, cp.stderr)
    cp = mirror("http://127.0.0.1:1/a/b:v1", f"http://{plain.host}/b", check=False)
    assert cp.returncode == 1 and "unreachable" in cp.stderr and "Traceback" not in cp.stderr
    cp = mirror(f"http://{plain.host}/does/not-exist:v1", f"http://{plain.host}/b", check=False)
    assert cp.returncode == 1 and "Traceback" not in cp.stderr


def test_scheduled_rules_run_in_the_server_with_status(plain, sk, tmp_path) -> None:
    """``proxy.mirror_rules``: a pull-based rule into the server itself, and a failing rule."""
    img = ocilayout.build_image(tmp_path / "one", "v1", layers=[16 * 1024], seed="rule-one")
    sk.copy(f"oci:{img.dir}:v1", f"docker://{plain.host}/rules/src:v1")
    rules = [
        {
            "name": "pull-app",
            "src": f"http://{plain.host}/rules/src",
            "dst": "http://127.0.0.1:{port}/pulled/app",
            "interval": 3600,
        },
        {"name": "broken", "src": "http://127.0.0.1:1/nothing/here", "dst": "http://127.0.0.1:{port}/x", "interval": 3600},
    ]
    # The server's own port is known only at start: the rules go in through the environment,
    # where the launcher fills in {port} (JSON braces doubled for str.format).
    env_value = json.dumps({"mirror_rules": rules}).replace("{", "{{").replace("}", "}}").replace("{{port}}", "{port}")
    srv = start_moorage(tmp_path / "srv", env={"MOORAGE_PROXY": env_value})
    try:

        def status() -> dict[str, dict]:
            doc = requests.get(f"{srv.url}/api/v1/mirror", timeout=TIMEOUT).json()
            assert doc["runner"] is True
            return {r["name"]: r for r in doc["rules"]}

        def wait_runs(name: str, n: int) -> dict:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                st = status()[name]
                if st["runs"] >= n and not st["running"]:
                    return st
                time.sleep(0.2)
            raise AssertionError(f"rule {name} did not run {n} times: {status()}")

        st = wait_runs("pull-app", 1)
        assert st["last_status"] == "ok" and st["last_summary"]["manifests_copied"] == 1, st
        local = Http(srv)
        assert descriptor(local, "pulled/app", "v1")["digest"] == img.digest
        broken = wait_runs("broken", 1)
        assert broken["last_status"] == "error" and "unreachable" in broken["last_error"]
        # A new tag upstream, and a run on demand through the admin API.
        two = ocilayout.build_image(tmp_path / "two", "v2", layers=[16 * 1024], seed="rule-two")
        sk.copy(f"oci:{two.dir}:v2", f"docker://{plain.host}/rules/src:v2")
        r = requests.post(f"{srv.url}/api/v1/mirror/pull-app/run", timeout=TIMEOUT)
        assert r.status_code == 202
        st = wait_runs("pull-app", 2)
        assert st["last_status"] == "ok" and st["last_summary"]["up_to_date"] == 1, st
        assert descriptor(local, "pulled/app", "v2")["digest"] == two.digest
        assert requests.post(f"{srv.url}/api/v1/mirror/nope/run", timeout=TIMEOUT).status_code == 404
    finally:
        srv.stop()
