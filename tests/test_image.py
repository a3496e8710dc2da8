"""The container image as a drop-in for ``registry:2``: built offline, run with the seed's commands.

The seed (../shared/seed-registries.md) runs::

    docker container run -dp 5000:5000 --name registry --restart always registry:2
    docker image push localhost:5000/mynodeapp
    curl localhost:5000/v2/_catalog
    docker container stop registry

Here the same commands go through the docker CLI to ``podman system service`` (runc runtime,
cgroupfs, no default rlimits: see :class:`tests.support.clients.PodmanService`), on a free port
instead of 5000, with ``localhost/moorage`` for ``registry:2``.  The image is built by
``scripts/build-image.sh`` (its Debian base rootfs cached in ~/.cache/moorage-image, or
``MOORAGE_IMAGE_CACHE``, so only the first run pays for mmdebstrap).

Slow (the build takes minutes on a cold cache): run with ``-m slow`` deselected to skip.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import ocilayout
from tests.support.clients import PodmanService, http_json, http_request, run
from tests.support.fixtures import require_binary
from tests.support.image_cache import cached_image
from tests.support.registry_proc import REPO_ROOT, free_port, write_htpasswd
from tests.test_import_distribution import Source, filled_distribution  # noqa: F401 - a fixture (a registry:2 tree)

pytestmark = [pytest.mark.clients, pytest.mark.slow, pytest.mark.timeout(2400)]

IMAGE = "localhost/moorage:latest"
CACHE = Path(os.environ.get("MOORAGE_IMAGE_CACHE") or Path.home() / ".cache" / "moorage-image")
FIGURES = REPO_ROOT / "benchmarks" / "results"


def _wait_v2(url: str, podman: PodmanService | None = None, container: str = "", timeout: float = 60.0) -> float:
    """Seconds until ``GET /v2/`` answers (any HTTP status); fails after ``timeout``, or at
    once with the container's log when it is not running any more."""
    t0 = time.monotonic()
    checked = t0
    while time.monotonic() - t0 < timeout:
        try:
            http_request("GET", f"{url}/v2/", timeout=2)
            return time.monotonic() - t0
        except OSError:
            time.sleep(0.05)
        if podman is not None and time.monotonic() - checked > 2:
            checked = time.monotonic()
            state = _state(podman, container)
            if not state["Running"] and state.get("Status") not in {"created", "configured", "initialized"}:
                logs = podman.docker("container", "logs", container, check=False)
                raise AssertionError(f"{container} exited ({state}):\n{logs.stdout[-3000:]}{logs.stderr[-3000:]}")
    raise AssertionError(f"{url}/v2/ did not answer within {timeout:.0f}s")


def _record(name: str, value: float | int | str) -> None:
    FIGURES.mkdir(parents=True, exist_ok=True)
    path = FIGURES / "image.json"
    data = json.loads(path.read_text()) if path.exists() else {}
    data[name] = value
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    print(f"figure {name} = {value}")


@pytest.fixture(scope="module")
def podman(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PodmanService]:
    require_binary("podman", "podman")
    require_binary("runc", "runc")
    svc = PodmanService(tmp_path_factory.mktemp("podman-run"), storage_driver="overlay")
    svc.start()
    try:
        yield svc
    finally:
        for name in ("registry", "registry-auth", "registry-bad"):
            svc.podman("rm", "-f", "-t", "0", name, check=False, timeout=60)
        svc.stop()


@pytest.fixture(scope="module")
def image(podman: PodmanService) -> str:
    """``bash scripts/build-image.sh`` into the service's storage (podman, offline base)."""
    require_binary("mmdebstrap", "mmdebstrap")
    env = dict(podman.service_env)
    env["MOORAGE_IMAGE_CACHE"] = str(CACHE)
    cached = any(CACHE.glob("debian-*.tar"))
    t0 = time.monotonic()

    def build() -> None:
        run(["bash", str(REPO_ROOT / "scripts" / "build-image.sh")], env=env, timeout=1800, cwd=REPO_ROOT)
        _record("build_seconds_cached_base" if cached else "build_seconds", round(time.monotonic() - t0, 1))

    # The same inputs give the same image: a later session loads it (tests/support/image_cache.py).
    cached_image(
        CACHE,
        IMAGE,
        build,
        save=lambda path: podman.podman("save", "-o", str(path), IMAGE, timeout=600),
        load=lambda path: podman.podman("load", "-i", str(path), timeout=600),
    )
    info = json.loads(podman.podman("image", "inspect", IMAGE).stdout)[0]
    _record("image_size_bytes", int(info["Size"]))
    # starts as root (a registry:2 volume is root's), every moorage command then drops to uid 10001
    assert info["Config"].get("User", "") in ("", "root", "0")
    assert "MOORAGE_RUN_AS=10001:10001" in info["Config"]["Env"]
    assert "5000/tcp" in info["Config"]["ExposedPorts"]
    assert "/var/lib/registry" in info["Config"]["Volumes"]
    return IMAGE


@pytest.fixture(scope="module")
def pushed_image(tmp_path_factory: pytest.TempPathFactory, podman: PodmanService) -> str:
    """A small image in the service's storage (busybox rootfs), like the seed's mynodeapp."""
    tar = ocilayout.busybox_rootfs_tar(tmp_path_factory.mktemp("rootfs") / "rootfs.tar")
    podman.docker("image", "import", str(tar), "mynodeapp")
    return "mynodeapp"


def _state(podman: PodmanService, name: str) -> dict:
    return json.loads(podman.docker("container", "inspect", name).stdout)[0]["State"]


def test_seed_commands_verbatim(podman: PodmanService, image: str, pushed_image: str) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    t0 = time.monotonic()
    # the spelling: the short name "moorage" resolves to localhost/moorage
    podman.docker("container", "run", "-dp", f"{port}:5000", "--name", "registry", "--restart", "always", "moorage")
    _record("startup_seconds_to_first_v2", round(_wait_v2(url, podman, "registry"), 2))
    _record("startup_seconds_including_run", round(time.monotonic() - t0, 2))

    podman.docker("image", "tag", pushed_image, f"localhost:{port}/mynodeapp")
    podman.docker("image", "push", f"localhost:{port}/mynodeapp")
    status, _, cat = http_json(f"{url}/v2/_catalog")
    assert status == 200 and cat == {"repositories": ["mynodeapp"]}
    # the seed's exercise: more than one version, then list them
    podman.docker("image", "tag", pushed_image, f"localhost:{port}/mynodeapp:v2")
    podman.docker("image", "push", f"localhost:{port}/mynodeapp:v2")
    status, _, tags = http_json(f"{url}/v2/mynodeapp/tags/list")
    assert status == 200 and sorted(tags["tags"]) == ["latest", "v2"]
    assert http_json(f"{url}/healthz")[2] == {"status": "ok"}

    # data lives in the image's volume, at registry:2's path
    mounts = json.loads(podman.docker("container", "inspect", "registry").stdout)[0]["Mounts"]
    assert [m["Destination"] for m in mounts] == ["/var/lib/registry"]
    # the healthcheck command itself (podman runs healthchecks from systemd timers, absent here)
    podman.podman("healthcheck", "run", "registry")

    # the seed's stop, verbatim.  (podman 4.3.1's compat API creates the container with
    # StopTimeout 0 when the docker CLI sends none, so this is an immediate SIGKILL here, where
    # Docker would SIGTERM and wait 10 s: the data must survive that as well.)
    podman.docker("container", "stop", "registry")
    assert _state(podman, "registry")["Running"] is False

    # start again: the data is kept
    podman.docker("container", "start", "registry")
    _wait_v2(url, podman, "registry")
    assert http_json(f"{url}/v2/_catalog")[2] == {"repositories": ["mynodeapp"]}
    podman.docker("image", "rm", f"localhost:{port}/mynodeapp:v2")
    podman.docker("image", "pull", f"localhost:{port}/mynodeapp:v2")

    # the process dies (kill -9 from the host): --restart always brings it back
    before = json.loads(podman.docker("container", "inspect", "registry").stdout)[0].get("RestartCount", 0)
    os.kill(_state(podman, "registry")["Pid"], signal.SIGKILL)
    deadline = time.monotonic() + 60
    while True:
        try:
            info = json.loads(podman.docker("container", "inspect", "registry").stdout)[0]
            if info["State"]["Running"] and info.get("RestartCount", 0) > before:
                break
        except AssertionError:
            pass
        assert time.monotonic() < deadline, f"not restarted: {podman.log()}"
        time.sleep(0.2)
    _wait_v2(url, podman, "registry")
    assert http_json(f"{url}/v2/mynodeapp/tags/list")[2]["tags"] == ["latest", "v2"]

    # SIGTERM with Docker's default grace: a clean, quick exit (SIGKILL would show as 137)
    t0 = time.monotonic()
    podman.docker("container", "stop", "-t", "10", "registry")
    _record("stop_seconds_sigterm", round(time.monotonic() - t0, 2))
    state = _state(podman, "registry")
    assert state["Running"] is False and state["ExitCode"] == 0, state


#: A registry image needs none of these (a package manager, a compiler, another interpreter, the
#: tools of a Debian system, the sources of third-party Python).
NOT_IN_IMAGE = (
    "/usr/bin/dpkg",
    "/usr/bin/apt-get",
    "/usr/bin/perl",
    "/usr/bin/gcc",
    "/usr/bin/tar",
    "/usr/sbin/useradd",
    "/usr/lib/python3.11/ensurepip",
    "/usr/lib/python3.11/lib2to3",
    "/opt/moorage/bin/pip",
    "/opt/moorage/lib/python3.11/site-packages/aiohttp/web.py",
    "/opt/moorage/lib/python3.11/site-packages/sqlalchemy/testing",
)
#: What it does need: Moorage's sources (readable tracebacks), bytecode for the libraries, a shell.
IN_IMAGE = (
    "/opt/moorage/lib/python3.11/site-packages/moorage/cli.py",
    "/opt/moorage/lib/python3.11/site-packages/aiohttp/web.pyc",
    "/bin/sh",
    "/usr/bin/chown",
    "/etc/ssl/certs/ca-certificates.crt",
)


def test_image_holds_the_runtime_only(podman: PodmanService, image: str) -> None:
    """The image is the interpreter, the venv and what they load (issue 22: 236 MB before, a
    Debian base with dpkg, perl and pip in it); the S3 and PostgreSQL drivers are in it."""
    size = int(json.loads(podman.podman("image", "inspect", image).stdout)[0]["Size"])
    assert size < 125_000_000, f"image is {size / 1e6:.0f} MB"
    probe = (
        "import json, os, sys; import aiobotocore, asyncpg, ldap3, authlib, moorage.cli; "
        f"print(json.dumps({{'uid': os.getuid(), **{{p: os.path.lexists(p) for p in {list(NOT_IN_IMAGE + IN_IMAGE)!r}}}}}))"
    )
    out = podman.docker("container", "run", "--rm", "--entrypoint", "/opt/moorage/bin/python", image, "-c", probe)
    found = json.loads(out.stdout.strip().splitlines()[-1])
    assert [p for p in NOT_IN_IMAGE if found[p]] == []
    assert [p for p in IN_IMAGE if not found[p]] == []
    assert found["uid"] == 0  # the entry point is started as root; `moorage` drops (see the swap test)
    # the shell that `docker exec registry sh` opens
    out = podman.docker(
        "container",
        "run",
        "--rm",
        "--entrypoint",
        "/bin/sh",
        image,
        "-c",
        "cd / && moorage --help && id -u && ls -d /var/lib/registry",
    )
    assert "Usage" in out.stdout and "\n0\n/var/lib/registry" in out.stdout, out.stdout


def test_registry2_config_with_htpasswd_unchanged(podman: PodmanService, image: str, pushed_image: str, tmp_path: Path) -> None:
    """A typical registry:2 deployment's config.yml, mounted where registry:2 reads it."""
    auth_dir = tmp_path / "auth"
    auth_dir.mkdir()
    write_htpasswd(auth_dir / "htpasswd", {"testuser": "testpassword"})
    (auth_dir / "htpasswd").chmod(0o644)
    cfg = tmp_path / "config.yml"
    cfg.write_text(
        "version: 0.1\n"
        "log:\n  level: info\n  formatter: text\n  fields:\n    service: registry\n"
        "storage:\n  cache:\n    blobdescriptor: inmemory\n  filesystem:\n    rootdirectory: /var/lib/registry\n"
        "  delete:\n    enabled: true\n"
        "http:\n  addr: :5000\n  secret: asecretforlocaldevelopment\n"
        "  headers:\n    X-Content-Type-Options: [nosniff]\n"
        "auth:\n  htpasswd:\n    realm: basic-realm\n    path: /auth/htpasswd\n"
        "health:\n  storagedriver:\n    enabled: true\n    interval: 10s\n    threshold: 3\n"
    )
    cfg.chmod(0o644)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    podman.docker(
        "container",
        "run",
        "-d",
        "-p",
        f"{port}:5000",
        "--name",
        "registry-auth",
        "-v",
        f"{cfg}:/etc/docker/registry/config.yml:ro",
        "-v",
        f"{auth_dir}:/auth:ro",
        "-e",
        "REGISTRY_LOG_LEVEL=debug",
        "localhost/moorage",
    )
    _wait_v2(url, podman, "registry-auth")
    status, headers, _ = http_request("GET", f"{url}/v2/")
    assert status == 401 and 'realm="basic-realm"' in headers["www-authenticate"]
    assert http_request("GET", f"{url}/v2/", auth=("testuser", "wrong"))[0] == 401
    assert http_request("GET", f"{url}/v2/", auth=("testuser", "testpassword"))[0] == 200
    podman.docker_login(f"localhost:{port}", "testuser", "testpassword")
    podman.docker("image", "tag", pushed_image, f"localhost:{port}/team/app:1")
    podman.docker("image", "push", f"localhost:{port}/team/app:1")
    status, _, cat = http_json(f"{url}/v2/_catalog", auth=("testuser", "testpassword"))
    assert status == 200 and cat == {"repositories": ["team/app"]}
    # delete is on in this config.yml (registry:2 defaults it off)
    status, hdrs, _ = http_request(
        "HEAD",
        f"{url}/v2/team/app/manifests/1",
        auth=("testuser", "testpassword"),
        headers={"Accept": "application/vnd.oci.image.manifest.v1+json"},
    )
    digest = hdrs["docker-content-digest"]
    assert http_request("DELETE", f"{url}/v2/team/app/manifests/{digest}", auth=("testuser", "testpassword"))[0] == 202
    podman.docker("container", "stop", "registry-auth")


def test_unsupported_registry2_config_fails_in_one_line(podman: PodmanService, image: str, tmp_path: Path) -> None:
    cfg = tmp_path / "config.yml"
    cfg.write_text(
        "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: /var/lib/registry\n"
        "auth:\n  token:\n    realm: https://auth.example/token\n    service: registry\n"
        "    issuer: auth.example\n    rootcertbundle: /certs/bundle.pem\n"
    )
    cfg.chmod(0o644)
    podman.docker(
        "container",
        "run",
        "--name",
        "registry-bad",
        "-v",
        f"{cfg}:/etc/docker/registry/config.yml:ro",
        "localhost/moorage",
        check=False,
        timeout=120,
    )
    state = _state(podman, "registry-bad")
    assert state["Running"] is False and state["ExitCode"] != 0
    logs = podman.docker("container", "logs", "registry-bad")
    lines = [ln for ln in (logs.stdout + logs.stderr).splitlines() if ln.strip()]
    assert len(lines) == 1 and "auth.token" in lines[0], lines


# -- a registry:2 volume, root's, swapped in place ----------------------------------------------
def _owned_state(root: Path) -> dict[str, tuple[str, int, int, int]]:
    """Every entry under ``root`` -> (sha256 of a file's bytes or "dir", mode, uid, gid)."""
    import hashlib

    out = {}
    for path in sorted(root.rglob("*")):
        st = path.lstat()
        kind = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "dir"
        out[str(path.relative_to(root))] = (kind, st.st_mode, st.st_uid, st.st_gid)
    return out


def _ids(pid: int) -> dict[str, str]:
    """The Uid/Gid/Groups lines of a process (host view: rootful podman maps no ids)."""
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return {k: " ".join(v.split()) for k, _, v in (ln.partition(":") for ln in lines) if k in ("Uid", "Gid", "Groups")}


def _process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants (the server's workers, the migration child, if any)."""
    out = [pid]
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            out += _process_tree(int(child))
    return out


class _Served:
    """What tests.test_import_distribution's checks need of a registry: ``host`` and ``url``."""

    def __init__(self, port: int) -> None:
        self.host = f"127.0.0.1:{port}"
        self.url = f"http://{self.host}"


def test_registry2_volume_swapped_in_place(
    podman: PodmanService,
    image: str,
    filled_distribution: Source,  # noqa: F811 - the fixture imported above
    tmp_path: Path,
) -> None:
    """A named volume registry:2 filled (as root: Distribution 2.8.2, skopeo pushes with a
    multi-arch index, a moved and a deleted tag) served by the image with the seed's command
    and nothing else: imported on start, every tag pulls byte-identical, the server runs as uid
    10001, the import copies (uid 10001 may not hard-link root's files) and says why, and
    registry:2's files keep their bytes, modes and owners."""
    from tests.test_import_distribution import _check_content

    src = filled_distribution
    volume = "registry2-data"
    podman.docker("volume", "create", volume)
    # registry:2's first run on the new volume (podman gives a new volume, on its first mount, the
    # owner and mode of the directory it is mounted on: root's 0755 for registry:2; a path the
    # image lacks gets the same), then the tree it wrote, as root
    podman.docker(
        "container",
        "run",
        "--rm",
        "--user",
        "0",
        "-v",
        f"{volume}:/registry2-was-here",
        "--entrypoint",
        "/bin/sh",
        image,
        "-c",
        "true",
    )
    mountpoint = Path(json.loads(podman.docker("volume", "inspect", volume).stdout)[0]["Mountpoint"])
    shutil.copytree(src.root, mountpoint, dirs_exist_ok=True)
    top = mountpoint.stat()
    before = _owned_state(mountpoint)
    assert {v[2] for v in before.values()} == {0} and top.st_uid == 0
    port = free_port()
    name = "registry-swap"
    podman.docker("container", "run", "-d", "-p", f"{port}:5000", "--name", name, "-v", f"{volume}:/var/lib/registry", "moorage")
    try:
        _wait_v2(f"http://127.0.0.1:{port}", podman, name)
        pid = _state(podman, name)["Pid"]
        for proc in _process_tree(pid):
            assert _ids(proc) == {"Uid": "10001 10001 10001 10001", "Gid": "10001 10001 10001 10001", "Groups": ""}, proc
        deadline = time.monotonic() + 600
        while True:
            status, _, body = http_json(f"http://127.0.0.1:{port}/readyz")
            assert status == 200, body
            if "detail" not in body:
                break
            assert "failed" not in body["detail"], body
            assert time.monotonic() < deadline, body
            time.sleep(0.5)
        _check_content(src, _Served(port), tmp_path)  # type: ignore[arg-type]
        logs = podman.docker("container", "logs", name)
        text = logs.stdout + logs.stderr
        assert "started as root: running as uid 10001" in text, text[-3000:]
        assert "registry:2 import done" in text, text[-3000:]
        assert "copied, not linked, because the registry:2 files belong to uid 0" in text, text[-3000:]
        assert "Traceback" not in text, text[-3000:]
        # a push after the swap works (the database and storage/ are uid 10001's)
        podman.docker(
            "image", "import", str(ocilayout.busybox_rootfs_tar(tmp_path / "rootfs.tar")), f"localhost:{port}/after/swap"
        )
        podman.docker("image", "push", f"localhost:{port}/after/swap")
    finally:
        podman.docker("container", "stop", "-t", "10", name, check=False)
        podman.docker("container", "rm", "-f", name, check=False)
    after = _owned_state(mountpoint)
    distribution = {k: v for k, v in after.items() if k.startswith("docker")}
    assert distribution == before  # registry:2's files: same bytes, modes and owners (rollback works)
    assert stat.S_IMODE(mountpoint.stat().st_mode) == stat.S_IMODE(top.st_mode)  # the volume's mode: as it was
    ours = {k: v for k, v in after.items() if not k.startswith("docker")}
    assert "moorage.db" in ours and any(k.startswith("storage/blobs/") for k in ours)
    assert {v[2] for v in ours.values()} == {10001}, {k: v[2] for k, v in ours.items() if v[2] != 10001}
    podman.docker("volume", "rm", volume, check=False)


def test_user_option_is_honoured(podman: PodmanService, image: str, tmp_path: Path) -> None:
    """``--user`` runs every command as that user and changes no owner; without it, a root-owned
    data directory is given to uid 10001 before the command runs as that user."""
    mine = tmp_path / "mine"
    mine.mkdir()
    os.chown(mine, 4321, 4321)
    podman.docker("container", "run", "--rm", "--user", "4321:4321", "-v", f"{mine}:/data", image, "migrate", "--data", "/data")
    db = (mine / "moorage.db").stat()
    assert (db.st_uid, db.st_gid, mine.stat().st_uid) == (4321, 4321, 4321)

    roots = tmp_path / "roots"
    roots.mkdir(mode=0o755)
    podman.docker("container", "run", "--rm", "-v", f"{roots}:/data", image, "migrate", "--data", "/data")
    db = (roots / "moorage.db").stat()
    assert (db.st_uid, db.st_gid, roots.stat().st_uid) == (10001, 10001, 10001)
    assert stat.S_IMODE(roots.stat().st_mode) == 0o755  # owner given, mode left as it was


# -- MOORAGE_IMAGE_EXTRAS=all: the image with image insight -------------------------------------
IMAGE_ALL = "localhost/moorage:all"


@pytest.fixture(scope="module")
def image_all(podman: PodmanService) -> str:
    """``MOORAGE_IMAGE_EXTRAS=all bash scripts/build-image.sh`` (cached like :func:`image`)."""
    require_binary("mmdebstrap", "mmdebstrap")
    env = {**podman.service_env, "MOORAGE_IMAGE_CACHE": str(CACHE), "MOORAGE_IMAGE_EXTRAS": "all", "MOORAGE_IMAGE": IMAGE_ALL}

    def build() -> None:
        run(["bash", str(REPO_ROOT / "scripts" / "build-image.sh")], env=env, timeout=1800, cwd=REPO_ROOT)

    cached_image(
        CACHE,
        IMAGE_ALL,
        build,
        save=lambda path: podman.podman("save", "-o", str(path), IMAGE_ALL, timeout=600),
        load=lambda path: podman.podman("load", "-i", str(path), timeout=600),
        variant="all",
    )
    _record("image_all_extras_size_bytes", int(json.loads(podman.podman("image", "inspect", IMAGE_ALL).stdout)[0]["Size"]))
    return IMAGE_ALL


def test_image_with_all_extras_serves_and_scans(podman: PodmanService, image_all: str, tmp_path: Path) -> None:
    """The image with every extra starts, takes a push and makes an SBOM of it (the insight
    libraries, univers and cvss, survive the image's trimming)."""
    port = free_port()
    name = "registry-all"
    podman.docker("container", "run", "-d", "-p", f"{port}:5000", "--name", name, image_all)
    try:
        _wait_v2(f"http://127.0.0.1:{port}", podman, name)
        tar = ocilayout.busybox_rootfs_tar(tmp_path / "rootfs.tar")
        podman.docker("image", "import", str(tar), f"localhost:{port}/scanned/app:1")
        podman.docker("image", "push", f"localhost:{port}/scanned/app:1")
        out = podman.docker("container", "exec", name, "moorage", "sbom", "--json", "scanned/app:1")
        result = json.loads(out.stdout.strip().splitlines()[-1])
        assert result["repository"] == "scanned/app" and result["sboms"], result
        out = podman.docker("container", "exec", name, "moorage", "vulns", "scanned/app:1", check=False)
        assert out.returncode == 0 and "Traceback" not in out.stdout + out.stderr, out
    finally:
        podman.docker("container", "rm", "-f", name, check=False)


def test_unknown_image_extra_fails_in_one_line() -> None:
    cp = run(
        ["bash", str(REPO_ROOT / "scripts" / "build-image.sh")],
        env={**os.environ, "MOORAGE_IMAGE_EXTRAS": "s3,insigth"},
        cwd=REPO_ROOT,
        check=False,
        timeout=60,
    )
    lines = [ln for ln in cp.stderr.splitlines() if ln.strip()]
    assert cp.returncode == 2 and len(lines) == 1 and "'insigth'" in lines[0] and "insight" in lines[0], cp.stderr
