"""Pull-through cache (issue 12) against real upstream registries started here: a second Moorage
with token auth on, and Distribution 2.8.2 with htpasswd auth; clients are skopeo, podman and
plain HTTP."""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import yaml

from tests.support import ocilayout
from tests.support.authsrv import ADMIN_PASSWORD, cli, start_auth_server
from tests.support.clients import PodmanService, Skopeo, run
from tests.support.fixtures import distribution_with_users, require_binary
from tests.support.registry_proc import DISTRIBUTION_BIN, RegistryProcess, start_distribution, start_moorage

pytestmark = pytest.mark.clients

ADMIN = ("admin", ADMIN_PASSWORD)
PULLER = ("puller", "puller-Pw-1")
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


# ---------------------------------------------------------------------------- servers
def start_cache(tmp: Path, upstreams: list[dict], env: dict[str, str] | None = None) -> RegistryProcess:
    """A Moorage whose ``--config`` YAML lists ``upstreams`` (the contract's format)."""
    tmp.mkdir(parents=True, exist_ok=True)
    config = tmp / "config.yml"
    config.write_text(yaml.safe_dump({"proxy": {"upstreams": upstreams}}))
    return start_moorage(tmp / "srv", env=env, extra_args=["--config", str(config)])


@pytest.fixture(scope="module")
def upstream_moorage(backend, tmp_path_factory) -> Iterator[RegistryProcess]:
    """Moorage with token auth; ``puller`` may only pull ``lib/*``.  On S3 its blob GETs answer
    307 to presigned URLs, so the cache follows redirects to another host (where our
    ``Authorization`` must not go: S3 refuses a request with two kinds of auth)."""
    name, make_env = backend
    env = make_env()
    if name != "fs-sqlite":
        env["MOORAGE_STORAGE__REDIRECT"] = "true"
    proc = start_auth_server(tmp_path_factory.mktemp("up-moorage"), env)
    proc.redirects = name != "fs-sqlite"  # type: ignore[attr-defined]
    try:
        for method, path, body in (
            ("POST", "users", {"name": PULLER[0], "password": PULLER[1]}),
            ("POST", "grants", {"user": PULLER[0], "pattern": "lib/*", "actions": "pull"}),
        ):
            r = requests.request(method, f"{proc.url}/api/v1/{path}", auth=ADMIN, json=body, timeout=TIMEOUT)
            assert r.status_code < 300, r.text
        yield proc
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def upstream_dist(tmp_path_factory) -> Iterator[RegistryProcess]:
    yield from distribution_with_users(tmp_path_factory.mktemp("up-dist"), dict([DIST_USER]))


@pytest.fixture(scope="module")
def cache(
    backend, upstream_moorage: RegistryProcess, upstream_dist: RegistryProcess, tmp_path_factory
) -> Iterator[RegistryProcess]:
    """The cache under test, on each selected storage/database backend."""
    name, make_env = backend
    env = {**make_env(), "DIST_UPSTREAM_PW": DIST_USER[1]}
    proc = start_cache(
        tmp_path_factory.mktemp(f"cache-{name}"),
        [
            {
                "name": "moor",
                "url": upstream_moorage.url,
                "namespace": "moor",
                "username": PULLER[0],
                "password": PULLER[1],
                "tag_ttl": 300,
            },
            {
                "name": "dist",
                "url": upstream_dist.url,
                "namespace": "dist",
                "username": DIST_USER[0],
                "password_env": "DIST_UPSTREAM_PW",
                "tag_ttl": 300,
            },
            {"name": "anon", "url": upstream_moorage.url, "namespace": "anon"},  # anonymous token flow
        ],
        env=env,
    )
    proc.server_env = env  # type: ignore[attr-defined]
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture()
def sk(tmp_path: Path) -> Skopeo:
    require_binary("skopeo", "skopeo")
    return Skopeo(tmp_path / "skopeo")


def push_layout(sk: Skopeo, layout_dir: Path, tag: str, dest: str, creds: tuple[str, str], *, all: bool = False) -> None:
    sk.copy(f"oci:{layout_dir}:{tag}", dest, "--dest-creds", ":".join(creds), all=all)


def manifest_head(url: str, repo: str, ref: str, auth=None) -> requests.Response:
    return requests.head(f"{url}/v2/{repo}/manifests/{ref}", headers={"Accept": ACCEPT}, auth=auth, timeout=TIMEOUT)


def upstream_get(proc: RegistryProcess, path: str, auth: tuple[str, str], scope: str | None = None) -> requests.Response:
    """GET from an upstream, through its token flow when it has one."""
    r = requests.get(proc.url + path, auth=auth, headers={"Accept": ACCEPT}, timeout=TIMEOUT)
    if r.status_code == 401 and r.headers.get("WWW-Authenticate", "").startswith("Bearer"):
        tok = requests.get(
            f"{proc.url}/auth/token", params={"service": "moorage", "scope": scope}, auth=auth, timeout=TIMEOUT
        ).json()["token"]
        r = requests.get(proc.url + path, headers={"Accept": ACCEPT, "Authorization": f"Bearer {tok}"}, timeout=TIMEOUT)
    return r


def push_blob(url: str, repo: str, data: bytes, auth: tuple[str, str] | None = None) -> str:
    """POST + PUT upload (Distribution 2.8 ignores a monolithic ``POST ?digest=``)."""
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    r = requests.post(f"{url}/v2/{repo}/blobs/uploads/", auth=auth, timeout=TIMEOUT)
    assert r.status_code == 202, r.text
    location = r.headers["Location"]
    location = location if location.startswith("http") else url + location
    sep = "&" if "?" in location else "?"
    r = requests.put(
        f"{location}{sep}digest={digest}",
        data=data,
        auth=auth,
        timeout=TIMEOUT * 2,
        headers={"Content-Type": "application/octet-stream"},
    )
    assert r.status_code == 201, r.text
    return digest


@pytest.fixture()
def podman(tmp_path: Path) -> Iterator[PodmanService]:
    """podman's CLI on private storage under a short path (its runroot must stay under 50 bytes)."""
    require_binary("podman", "podman")
    short = Path(tempfile.mkdtemp(prefix="pm", dir="/tmp"))
    pm = PodmanService(short)
    pm.service_env = pm._write_config()
    try:
        yield pm
    finally:
        pm._unmount_storage()
        shutil.rmtree(short, ignore_errors=True)


def access_log_count(proc: RegistryProcess, method: str, path: str) -> int:
    """Requests for ``path`` in Distribution's access log (one line per request)."""
    text = Path(proc.log_path).read_text(errors="replace")
    return len(re.findall(rf'"{method} {re.escape(path)} HTTP/1\.1" 200', text))


# ------------------------------------------------------------------------------ tests
def test_skopeo_pull_through_is_byte_identical(cache, upstream_moorage, sk, tmp_path) -> None:
    img = ocilayout.build_image(tmp_path / "src", "v1", layers=[200 * 1024, 30 * 1024], seed="proxy-skopeo")
    push_layout(sk, img.dir, "v1", f"docker://{upstream_moorage.host}/lib/app:v1", ADMIN)
    # Through the cache (anonymous towards the cache; the cache logs in upstream as "puller").
    sk.copy(f"docker://{cache.host}/moor/lib/app:v1", f"oci:{tmp_path / 'got'}:v1")
    got = ocilayout.read_layout_blobs(tmp_path / "got")
    assert img.digest in got
    for digest, data in img.blobs().items():
        assert got[digest] == data, digest
    # Stored byte for byte: the cache serves what the upstream serves.
    for digest in img.blobs():
        kind = "manifests" if digest == img.digest else "blobs"
        mine = requests.get(f"{cache.url}/v2/moor/lib/app/{kind}/{digest}", headers={"Accept": ACCEPT}, timeout=TIMEOUT)
        theirs = upstream_get(upstream_moorage, f"/v2/lib/app/{kind}/{digest}", PULLER, "repository:lib/app:pull")
        assert mine.status_code == theirs.status_code == 200
        assert mine.content == theirs.content
    # The second pull is a hit (tag within its TTL, blobs local).
    r = manifest_head(cache.url, "moor/lib/app", "v1")
    assert r.status_code == 200 and r.headers["X-Moorage-Cache"] == "hit"
    assert r.headers["Docker-Content-Digest"] == img.digest
    if upstream_moorage.redirects:
        tok = requests.get(
            f"{upstream_moorage.url}/auth/token",
            params={"service": "moorage", "scope": "repository:lib/app:pull"},
            auth=PULLER,
            timeout=TIMEOUT,
        ).json()["token"]
        r = requests.get(
            f"{upstream_moorage.url}/v2/lib/app/blobs/{img.layers[0].digest}",
            allow_redirects=False,
            headers={"Authorization": f"Bearer {tok}"},
            timeout=TIMEOUT,
        )
        assert r.status_code == 307  # what the cache followed
    # Outside the puller's grant upstream: the cache cannot fetch it either.
    r = requests.get(f"{cache.url}/v2/moor/secret/app/manifests/v1", timeout=TIMEOUT)
    assert r.status_code in (404, 503), r.text


def test_anonymous_token_for_public_upstream_repositories(cache, upstream_moorage, sk, tmp_path) -> None:
    img = ocilayout.build_image(tmp_path / "src", "v1", layers=[20 * 1024], seed="proxy-anon")
    for repo in ("lib/public", "lib/private"):
        push_layout(sk, img.dir, "v1", f"docker://{upstream_moorage.host}/{repo}:v1", ADMIN)
    r = requests.put(
        f"{upstream_moorage.url}/api/v1/visibility",
        json={"repository": "lib/public", "public": True},
        auth=ADMIN,
        timeout=TIMEOUT,
    )
    assert r.status_code < 300, r.text
    sk.copy(f"docker://{cache.host}/anon/lib/public:v1", f"oci:{tmp_path / 'got'}:v1")
    assert ocilayout.read_layout_blobs(tmp_path / "got")[img.layers[0].digest] == img.layers[0].data
    # No credentials configured: a private repository upstream stays out of reach.
    r = requests.get(f"{cache.url}/v2/anon/lib/private/manifests/v1", headers={"Accept": ACCEPT}, timeout=TIMEOUT)
    assert r.status_code in (404, 503) and r.status_code != 200


def test_multi_arch_index_children_fetched_on_demand(cache, upstream_moorage, sk, tmp_path) -> None:
    idx = ocilayout.build_index(
        tmp_path / "src", "multi", platforms=[("linux", "amd64"), ("linux", "arm64")], layers=[40 * 1024], seed="proxy-index"
    )
    push_layout(sk, idx.dir, "multi", f"docker://{upstream_moorage.host}/lib/multi:multi", ADMIN, all=True)
    amd, arm = idx.images
    # One platform: the index and the amd64 child only.
    sk(
        "copy",
        "--quiet",
        "--override-arch",
        "amd64",
        "--override-os",
        "linux",
        f"docker://{cache.host}/moor/lib/multi:multi",
        f"oci:{tmp_path / 'one'}:x",
    )
    head = requests.head(f"{cache.url}/v2/moor/lib/multi/blobs/{arm.layers[0].digest}", timeout=TIMEOUT)
    assert head.headers.get("X-Moorage-Cache") == "miss"  # the arm64 layer was not fetched
    head = requests.head(f"{cache.url}/v2/moor/lib/multi/blobs/{amd.layers[0].digest}", timeout=TIMEOUT)
    assert head.status_code == 200 and head.headers.get("X-Moorage-Cache") == "hit"
    # Every platform, asked for by the client.
    sk.copy(f"docker://{cache.host}/moor/lib/multi:multi", f"oci:{tmp_path / 'all'}:multi", all=True)
    got = ocilayout.read_layout_blobs(tmp_path / "all")
    assert set(idx.blobs()) <= set(got)
    assert all(got[d] == b for d, b in idx.blobs().items())


def test_podman_pull_through_distribution_cache(cache, upstream_dist, sk, podman, tmp_path) -> None:
    img = ocilayout.build_image(tmp_path / "src", "v1", layers=[64 * 1024], seed="proxy-podman")
    push_layout(sk, img.dir, "v1", f"docker://{upstream_dist.host}/team/tool:v1", DIST_USER)
    pm, env = podman, podman.service_env
    run(pm.podman_argv("pull", "--tls-verify=false", f"{cache.host}/dist/team/tool:v1"), env=env, timeout=TIMEOUT * 2)
    out = run(pm.podman_argv("image", "inspect", f"{cache.host}/dist/team/tool:v1"), env=env).stdout
    assert json.loads(out)[0]["Digest"] == img.digest
    # Distribution (htpasswd) was asked once per blob; the cache now holds them.
    for layer in img.layers:
        assert access_log_count(upstream_dist, "GET", f"/v2/team/tool/blobs/{layer.digest}") == 1
        r = requests.get(f"{cache.url}/v2/dist/team/tool/blobs/{layer.digest}", timeout=TIMEOUT)
        assert r.content == layer.data
    assert access_log_count(upstream_dist, "GET", f"/v2/team/tool/blobs/{img.layers[0].digest}") == 1


def test_podman_registry_mirror_prefix(cache, upstream_dist, sk, podman, tmp_path) -> None:
    """registries.conf: ``[[registry]] prefix`` + ``[[registry.mirror]] location = cache/ns``."""
    img = ocilayout.build_image(tmp_path / "src", "v1", layers=[32 * 1024], seed="proxy-mirror")
    push_layout(sk, img.dir, "v1", f"docker://{upstream_dist.host}/team/mirrored:v1", DIST_USER)
    pm, env = podman, dict(podman.service_env)
    conf = tmp_path / "registries.conf"
    conf.write_text(
        "unqualified-search-registries = []\n\n"
        '[[registry]]\nprefix = "upstream.invalid"\nlocation = "upstream.invalid"\n\n'
        f'[[registry.mirror]]\nlocation = "{cache.host}/dist"\ninsecure = true\n'
    )
    env["CONTAINERS_REGISTRIES_CONF"] = str(conf)
    run(pm.podman_argv("pull", "upstream.invalid/team/mirrored:v1"), env=env, timeout=TIMEOUT * 2)
    out = run(pm.podman_argv("image", "inspect", "upstream.invalid/team/mirrored:v1"), env=env).stdout
    assert json.loads(out)[0]["Digest"] == img.digest
    assert (
        requests.head(f"{cache.url}/v2/dist/team/mirrored/blobs/{img.layers[0].digest}", timeout=TIMEOUT).headers.get(
            "X-Moorage-Cache"
        )
        == "hit"
    )


def test_twenty_concurrent_pulls_of_a_cold_blob_fetch_once(cache, upstream_dist) -> None:
    data = os.urandom(50 * 1024 * 1024)
    digest = push_blob(upstream_dist.url, "big/blob", data, DIST_USER)
    path = f"/v2/big/blob/blobs/{digest}"
    assert access_log_count(upstream_dist, "GET", path) == 0

    def pull(_: int) -> tuple[int, str, str]:
        resp = requests.get(f"{cache.url}/v2/dist/big/blob/blobs/{digest}", timeout=TIMEOUT * 3)
        return resp.status_code, "sha256:" + hashlib.sha256(resp.content).hexdigest(), resp.headers.get("X-Moorage-Cache", "")

    with concurrent.futures.ThreadPoolExecutor(20) as pool:
        results = list(pool.map(pull, range(20)))
    assert all(status == 200 and got == digest for status, got, _ in results), [r[:2] for r in results]
    assert access_log_count(upstream_dist, "GET", path) == 1
    assert sum(1 for *_, how in results if how == "miss") == 1  # one streamed from upstream
    # And later pulls stay local.
    assert requests.get(f"{cache.url}/v2/dist/big/blob/blobs/{digest}", timeout=TIMEOUT).status_code == 200
    assert access_log_count(upstream_dist, "GET", path) == 1


def test_client_leaving_mid_stream_does_not_stop_the_fetch(cache, upstream_dist) -> None:
    """The first client hangs up after 1 MiB: the fetch goes on into storage, and the next pull
    is served locally (still one upstream GET)."""
    import socket

    data = os.urandom(20 * 1024 * 1024)
    digest = push_blob(upstream_dist.url, "half/blob", data, DIST_USER)
    with socket.create_connection(("127.0.0.1", cache.port), timeout=TIMEOUT) as sock:
        sock.sendall(f"GET /v2/dist/half/blob/blobs/{digest} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        got = 0
        while got < 1024 * 1024:
            chunk = sock.recv(65536)
            assert chunk
            got += len(chunk)
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        r = requests.head(f"{cache.url}/v2/dist/half/blob/blobs/{digest}", timeout=TIMEOUT)
        if r.headers.get("X-Moorage-Cache") == "hit":
            break
        time.sleep(0.2)
    r = requests.get(f"{cache.url}/v2/dist/half/blob/blobs/{digest}", timeout=TIMEOUT)
    assert r.status_code == 200 and r.content == data
    assert access_log_count(upstream_dist, "GET", f"/v2/half/blob/blobs/{digest}") == 1


def test_pushes_into_a_cached_namespace_are_refused(cache, sk, tmp_path) -> None:
    img = ocilayout.build_image(tmp_path / "src", "v1", layers=[8 * 1024], seed="proxy-push")
    cp = sk("copy", "--quiet", f"oci:{img.dir}:v1", f"docker://{cache.host}/moor/lib/pushed:v1", check=False)
    assert cp.returncode != 0 and "pull-through cache" in cp.stderr, cp.stderr
    r = requests.post(f"{cache.url}/v2/dist/x/blobs/uploads/", timeout=TIMEOUT)
    assert r.status_code == 405 and r.json()["errors"][0]["code"] == "UNSUPPORTED"
    r = requests.put(
        f"{cache.url}/v2/moor/lib/x/manifests/v1",
        data=b"{}",
        headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"},
        timeout=TIMEOUT,
    )
    assert r.status_code == 405
    # Other namespaces of the same registry take pushes as usual.
    sk.copy(f"oci:{img.dir}:v1", f"docker://{cache.host}/local/pushed:v1")
    assert manifest_head(cache.url, "local/pushed", "v1").headers["Docker-Content-Digest"] == img.digest


def test_cached_content_is_collected_by_gc(cache, upstream_dist, sk, tmp_path) -> None:
    img = ocilayout.build_image(tmp_path / "src", "v1", layers=[40 * 1024], seed="proxy-gc")
    push_layout(sk, img.dir, "v1", f"docker://{upstream_dist.host}/gc/app:v1", DIST_USER)
    sk.copy(f"docker://{cache.host}/dist/gc/app:v1", f"oci:{tmp_path / 'got'}:v1")
    layer = img.layers[0].digest
    assert requests.head(f"{cache.url}/v2/dist/gc/app/blobs/{layer}", timeout=TIMEOUT).headers["X-Moorage-Cache"] == "hit"
    # Evicting is an ordinary delete; the collector then reclaims the blobs, while serving.
    assert requests.delete(f"{cache.url}/v2/dist/gc/app/manifests/{img.digest}", timeout=TIMEOUT).status_code == 202
    cp = cli(cache, "gc", "--grace", "0", "--json", "--quiet")
    assert json.loads(cp.stdout)["blobs_removed"] >= 2, cp.stdout
    r = requests.head(f"{cache.url}/v2/dist/gc/app/blobs/{layer}", timeout=TIMEOUT)
    assert r.headers["X-Moorage-Cache"] == "miss"  # gone locally: the HEAD asked the upstream
    sk.copy(f"docker://{cache.host}/dist/gc/app:v1", f"oci:{tmp_path / 'again'}:v1")
    assert access_log_count(upstream_dist, "GET", f"/v2/gc/app/blobs/{layer}") == 2


def test_bad_names_and_digests_are_client_errors(cache) -> None:
    for path in (
        "/v2/moor/lib/app/manifests/sha256:zz",
        "/v2/moor/lib/app/blobs/sha256:123",
        "/v2/moor/LIB/app/manifests/v1",
        "/v2/moor/lib/app/manifests/" + "t" * 200,
        "/v2/dist/%E2%80%AE/blobs/sha256:" + "0" * 64,
    ):
        r = requests.get(cache.url + path, timeout=TIMEOUT)
        assert 400 <= r.status_code < 500, (path, r.status_code, r.text)
    # Unknown upstream content: 404, not 500.
    r = requests.get(f"{cache.url}/v2/dist/none/here/manifests/v1", timeout=TIMEOUT)
    assert r.status_code == 404 and r.json()["errors"][0]["code"] == "MANIFEST_UNKNOWN"
    r = requests.get(f"{cache.url}/v2/dist/none/here/blobs/sha256:" + "1" * 64, timeout=TIMEOUT)
    assert r.status_code == 404


def test_stats_in_metrics_and_admin_api(cache) -> None:
    text = requests.get(f"{cache.url}/metrics", timeout=TIMEOUT).text
    assert re.search(r'moorage_proxy_hits_total\{upstream="moor"\} \d', text)
    assert re.search(r'moorage_proxy_upstream_errors_total\{upstream="dist"\} \d', text)
    doc = requests.get(f"{cache.url}/api/v1/proxy", timeout=TIMEOUT).json()
    names = {u["name"]: u for u in doc["upstreams"]}
    assert set(names) == {"moor", "dist", "anon"}
    assert "password" not in json.dumps(doc) and PULLER[1] not in json.dumps(doc)
    assert set(names["moor"]["stats"]) >= {"hits", "misses", "bytes_saved", "upstream_errors"}


# --------------------------------------------------------- tests with their own servers
def test_first_pull_fetches_second_served_with_upstream_stopped(tmp_path, sk) -> None:
    require_binary(DISTRIBUTION_BIN, "docker-registry")
    dist = start_distribution(tmp_path / "dist", users=dict([DIST_USER]))
    cache = None
    try:
        img = ocilayout.build_image(tmp_path / "src", "v1", layers=[100 * 1024], seed="proxy-offline")
        push_layout(sk, img.dir, "v1", f"docker://{dist.host}/app/web:v1", DIST_USER)
        cache = start_cache(
            tmp_path / "cache",
            [{"name": "d", "url": dist.url, "namespace": "d", "username": DIST_USER[0], "password": DIST_USER[1], "tag_ttl": 0}],
        )
        sk.copy(f"docker://{cache.host}/d/app/web:v1", f"oci:{tmp_path / 'first'}:v1")
        assert access_log_count(dist, "GET", f"/v2/app/web/blobs/{img.layers[0].digest}") == 1
        dist.stop()
        # tag_ttl 0: every pull re-validates; the upstream is down, so the cached copy is served.
        r = requests.get(f"{cache.url}/v2/d/app/web/manifests/v1", headers={"Accept": ACCEPT}, timeout=TIMEOUT)
        assert r.status_code == 200 and r.headers["X-Moorage-Cache"] == "stale"
        assert r.headers["Docker-Content-Digest"] == img.digest
        sk.copy(f"docker://{cache.host}/d/app/web:v1", f"oci:{tmp_path / 'second'}:v1")
        assert ocilayout.read_layout_blobs(tmp_path / "second") == ocilayout.read_layout_blobs(tmp_path / "first")
        assert "serving cached d/app/web:v1" in cache.log(200)
        # Something never cached: a clear 503, not a hang or a 500.
        r = requests.get(f"{cache.url}/v2/d/app/other/manifests/v1", timeout=TIMEOUT)
        assert r.status_code == 503 and r.json()["errors"][0]["code"] == "UNAVAILABLE"
    finally:
        if cache is not None:
            cache.stop()
        dist.stop()


def test_changed_upstream_tag_is_picked_up_after_ttl(tmp_path, sk) -> None:
    ttl = 6
    up = start_moorage(tmp_path / "up")
    cache = None
    try:
        one = ocilayout.build_image(tmp_path / "one", "v1", layers=[8 * 1024], seed="ttl-one")
        two = ocilayout.build_image(tmp_path / "two", "v1", layers=[8 * 1024], seed="ttl-two")
        sk.copy(f"oci:{one.dir}:v1", f"docker://{up.host}/app:v1")
        cache = start_cache(tmp_path / "cache", [{"name": "u", "url": up.url, "namespace": "", "tag_ttl": ttl}])
        # namespace "": the whole registry mirrors the upstream (dockerd registry-mirrors style).
        first = manifest_head(cache.url, "app", "v1")
        assert first.headers["Docker-Content-Digest"] == one.digest and first.headers["X-Moorage-Cache"] == "miss"
        started = time.monotonic()
        sk.copy(f"oci:{two.dir}:v1", f"docker://{up.host}/app:v1")
        r = manifest_head(cache.url, "app", "v1")
        if time.monotonic() - started < ttl - 1:  # (a very slow machine may already be past the TTL)
            assert r.headers["Docker-Content-Digest"] == one.digest and r.headers["X-Moorage-Cache"] == "hit"
        time.sleep(max(0.0, ttl + 0.5 - (time.monotonic() - started)))
        r = manifest_head(cache.url, "app", "v1")
        assert r.headers["Docker-Content-Digest"] == two.digest and r.headers["X-Moorage-Cache"] == "miss"
        sk.copy(f"docker://{cache.host}/app:v1", f"oci:{tmp_path / 'got'}:v1")
        assert ocilayout.read_layout_blobs(tmp_path / "got")[two.layers[0].digest] == two.layers[0].data
        # A whole-registry mirror refuses pushes everywhere.
        cp = sk("copy", "--quiet", f"oci:{one.dir}:v1", f"docker://{cache.host}/mine:v1", check=False)
        assert cp.returncode != 0
    finally:
        if cache is not None:
            cache.stop()
        up.stop()


def test_wrong_bytes_upstream_stores_nothing(tmp_path, sk) -> None:
    """Distribution with a corrupted blob file serves wrong bytes under the digest: the cache
    must not store them, and no client gets a complete response."""
    require_binary(DISTRIBUTION_BIN, "docker-registry")
    dist = start_distribution(tmp_path / "dist")
    cache = None
    try:
        data = os.urandom(3 * 1024 * 1024 + 17)
        digest = push_blob(dist.url, "bad/blob", data)
        hexd = digest.split(":")[1]
        stored = dist.data_dir / "docker/registry/v2/blobs/sha256" / hexd[:2] / hexd / "data"
        stored.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))  # same size, one bit flipped
        cache = start_cache(tmp_path / "cache", [{"name": "d", "url": dist.url, "namespace": "d"}])
        url = f"{cache.url}/v2/d/bad/blob/blobs/{digest}"
        with pytest.raises(requests.exceptions.RequestException):
            resp = requests.get(url, timeout=TIMEOUT)
            resp.raise_for_status()
        # Nothing stored: the next pull goes upstream again (and fails again).
        r = requests.get(url, timeout=TIMEOUT, stream=True)
        try:
            body = r.raw.read(decode_content=False)
        except Exception:  # noqa: BLE001 - truncated body
            body = b""
        assert hashlib.sha256(body).hexdigest() != hexd
        assert access_log_count(dist, "GET", f"/v2/bad/blob/blobs/{digest}") == 2
        assert "wrong bytes" in cache.log(200)
        assert not list((cache.data_dir / "storage").rglob(hexd))
    finally:
        if cache is not None:
            cache.stop()
        dist.stop()


@pytest.mark.parametrize(
    "proxy, word",
    [
        ({"upstreams": [{"name": "x", "url": "http://127.0.0.1:1", "colour": "red"}]}, "colour"),
        ({"upstreams": [{"name": "x", "url": "ftp://127.0.0.1:1"}]}, "http(s)://HOST"),
        ({"upstreams": [{"name": "x", "url": "http://h", "namespace": "Bad Name"}]}, "namespace"),
        ({"upstreams": [{"name": "x", "url": "http://h", "password_env": "MOORAGE_TEST_UNSET_VAR"}]}, "MOORAGE_TEST_UNSET_VAR"),
        (
            {
                "upstreams": [
                    {"name": "x", "url": "http://h", "namespace": "a"},
                    {"name": "y", "url": "http://h", "namespace": "a"},
                ]
            },
            "unique",
        ),
        ({"mirror_rules": [{"name": "r", "src": "nohost", "dst": "http://h/r"}]}, "HOST[:PORT]/REPO"),
    ],
)
def test_bad_proxy_config_is_one_clear_error(tmp_path, proxy, word) -> None:
    import subprocess
    import sys

    from tests.support.registry_proc import REPO_ROOT

    config = tmp_path / "bad.yml"
    config.write_text(yaml.safe_dump({"proxy": proxy}))
    cp = subprocess.run(
        [
            sys.executable,
            "-m",
            "moorage.cli",
            "serve",
            "--config",
            str(config),
            "--data",
            str(tmp_path / "d"),
            "--addr",
            "127.0.0.1:1",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
    )
    assert cp.returncode != 0 and "invalid configuration" in cp.stderr and word in cp.stderr, cp.stderr
    assert "Traceback" not in cp.stderr
