"""pytest fixtures for real-client tests (skopeo, docker CLI via podman, oras-py).

Use from ``tests/conftest.py`` with::

    from tests.support.fixtures import *  # noqa: F401,F403

(``tests`` must be importable: run ``python -m pytest`` from the repo root, or
have ``tests/__init__.py``; test modules may instead say
``pytest_plugins = ("tests.support.fixtures",)``.)

Registry selection
------------------
``registry`` is a session fixture parametrised over :data:`REGISTRY_KINDS`
(default ``["distribution"]``; override with the env var
``MOORAGE_TEST_REGISTRIES=distribution,moorage``). Each kind ``K`` is served
by the fixture ``K_registry``; to add Moorage, add ``"moorage"`` to
``REGISTRY_KINDS`` -- ``moorage_registry`` is already defined here and runs
``python -m moorage.cli serve --addr 127.0.0.1:PORT --data DIR``.

The object a registry fixture yields (:class:`tests.support.registry_proc.RegistryProcess`)
has ``.kind`` ("distribution" | "moorage"), ``.host`` ("127.0.0.1:PORT"),
``.localhost`` ("localhost:PORT"), ``.url`` ("http://127.0.0.1:PORT"),
``.port``, ``.auth`` (``(user, password)`` or None), ``.data_dir``,
``.log()`` (tail of the server log).

Registries are session-scoped and shared by all tests: use the ``repo_name``
fixture for a repository name unique to the test.

Missing client binaries skip the tests that need them, unless ``CI=true`` or
``MOORAGE_REQUIRE_CLIENTS=1`` (scripts/test.sh sets it after installing them),
which turns the skip into a failure (tests/support/require.py).
"""

from __future__ import annotations

import itertools
import os
import re
from pathlib import Path

import pytest

from tests.support import ocilayout
from tests.support.clients import PodmanService, Skopeo, oras_client
from tests.support.registry_proc import DISTRIBUTION_BIN, start_distribution, start_moorage
from tests.support.require import require_binary, require_module

__all__ = [
    "REGISTRY_KINDS",
    "AUTH_REGISTRY_KINDS",
    "AUTH_USER",
    "AUTH_PASSWORD",
    "require_binary",
    "distribution_registry",
    "distribution_auth_registry",
    "distribution_with_users",
    "moorage_registry",
    "moorage_auth_registry",
    "moorage_token_auth_registry",
    "registry",
    "registry_url",
    "auth_registry",
    "skopeo",
    "podman_socket",
    "docker_env",
    "busybox_rootfs",
    "oci_image_layout",
    "oci_index_layout",
    "repo_name",
    "oras",
]


def _default_registry_kinds() -> str:
    # Moorage on filesystem + SQLite only: a client sees nothing but HTTP, and what the HTTP API
    # does on Ceph RGW + PostgreSQL (chunked and streamed uploads, mounts, ranges, referrers) is
    # proven on both backends by the protocol tier, and skopeo pushes to S3 in test_replicas.
    # ``MOORAGE_TEST_REGISTRIES=distribution,moorage,moorage_s3`` runs the journeys there too.
    return "distribution,moorage"


REGISTRY_KINDS: list[str] = [
    k.strip() for k in os.environ.get("MOORAGE_TEST_REGISTRIES", _default_registry_kinds()).split(",") if k.strip()
]
# Registries with auth on (user AUTH_USER / AUTH_PASSWORD): Distribution and Moorage in htpasswd
# mode (basic auth), Moorage in token mode (Bearer tokens from its own /auth/token).
AUTH_REGISTRY_KINDS: list[str] = [
    k.strip()
    for k in os.environ.get("MOORAGE_TEST_AUTH_REGISTRIES", "distribution,moorage,moorage_token").split(",")
    if k.strip()
]
AUTH_USER = "alice"
AUTH_PASSWORD = "s3cret-Passw0rd"


# --------------------------------------------------------------------------
# registries


@pytest.fixture(scope="session")
def distribution_registry(tmp_path_factory):
    """CNCF Distribution 2.8.2 (Debian ``docker-registry``), no auth, delete on."""
    require_binary(DISTRIBUTION_BIN, "docker-registry")
    reg = start_distribution(tmp_path_factory.mktemp("distribution"))
    try:
        yield reg
    finally:
        reg.stop()


def distribution_with_users(tmp: Path, users: dict[str, str]):
    """For a fixture to ``yield from``: Distribution 2.8.2 with htpasswd basic auth for ``users``
    (the first one is ``.auth``), stopped when the fixture ends."""
    require_binary(DISTRIBUTION_BIN, "docker-registry")
    with start_distribution(tmp, users=users) as reg:
        yield reg


@pytest.fixture(scope="session")
def distribution_auth_registry(tmp_path_factory):
    """Distribution with htpasswd basic auth (AUTH_USER / AUTH_PASSWORD)."""
    yield from distribution_with_users(tmp_path_factory.mktemp("distribution-auth"), {AUTH_USER: AUTH_PASSWORD})


@pytest.fixture(scope="session")
def moorage_registry(tmp_path_factory):
    """Moorage via ``python -m moorage.cli serve --addr 127.0.0.1:PORT --data DIR``.

    Extra settings can be
    passed with MOORAGE_TEST_SERVE_ARGS (shell-split) if the server needs any.
    """
    import shlex

    extra = shlex.split(os.environ.get("MOORAGE_TEST_SERVE_ARGS", ""))
    reg = start_moorage(tmp_path_factory.mktemp("moorage"), extra_args=extra)
    try:
        yield reg
    finally:
        reg.stop()


@pytest.fixture(scope="session")
def moorage_auth_registry(tmp_path_factory):
    """Moorage in htpasswd mode (``auth.mode: htpasswd``, like Distribution's basic auth)
    with AUTH_USER / AUTH_PASSWORD."""
    from tests.support.registry_proc import write_htpasswd

    tmp = tmp_path_factory.mktemp("moorage-auth")
    htpasswd = write_htpasswd(tmp / "htpasswd", {AUTH_USER: AUTH_PASSWORD})
    reg = start_moorage(
        tmp / "srv",
        env={"MOORAGE_AUTH__MODE": "htpasswd", "MOORAGE_AUTH__HTPASSWD__PATH": str(htpasswd)},
        username=AUTH_USER,
        password=AUTH_PASSWORD,
    )
    reg.kind = "moorage"
    try:
        yield reg
    finally:
        reg.stop()


@pytest.fixture(scope="session")
def moorage_token_auth_registry(tmp_path_factory):
    """Moorage in token mode (``auth.mode: token``): AUTH_USER may pull and push ``private/*``.

    Real clients get a 401 with a Bearer challenge, fetch a token from ``/auth/token`` with
    basic credentials, and retry -- the flow docker, podman and skopeo use with Docker Hub.
    """
    import requests

    from tests.support.authsrv import ADMIN_PASSWORD, start_auth_server

    reg = start_auth_server(tmp_path_factory.mktemp("moorage-token"))
    reg.kind = "moorage"
    try:
        admin = ("admin", ADMIN_PASSWORD)
        for path, body in (
            ("users", {"name": AUTH_USER, "password": AUTH_PASSWORD}),
            ("grants", {"user": AUTH_USER, "pattern": "private/*", "actions": "pull,push"}),
        ):
            r = requests.post(f"{reg.url}/api/v1/{path}", json=body, auth=admin, timeout=30)
            assert r.status_code == 201, (path, r.status_code, r.text)
        reg.username, reg.password = AUTH_USER, AUTH_PASSWORD
        yield reg
    finally:
        reg.stop()


@pytest.fixture(scope="session", params=REGISTRY_KINDS, ids=lambda k: k)
def registry(request):
    """The registry under test; one instance per kind in REGISTRY_KINDS."""
    return request.getfixturevalue(f"{request.param}_registry")


@pytest.fixture(scope="session")
def registry_url(registry) -> str:
    return registry.url


@pytest.fixture(scope="session", params=AUTH_REGISTRY_KINDS, ids=lambda k: f"{k}-auth")
def auth_registry(request):
    """A registry with basic auth on; ``.auth == (AUTH_USER, AUTH_PASSWORD)``."""
    return request.getfixturevalue(f"{request.param}_auth_registry")


# --------------------------------------------------------------------------
# clients


@pytest.fixture(scope="session")
def skopeo(tmp_path_factory) -> Skopeo:
    """A :class:`Skopeo`: ``skopeo("copy", src, dst)``, ``skopeo.json("inspect", ref)``,
    ``skopeo.copy(src, dst, all=True)``, ``skopeo.login(host, user, pw)``."""
    require_binary("skopeo", "skopeo")
    return Skopeo(tmp_path_factory.mktemp("skopeo"))


@pytest.fixture(scope="session")
def podman_socket(tmp_path_factory):
    """A running :class:`PodmanService` (Docker API on a unix socket).

    ``podman_socket.docker("image", "push", ref)`` runs the docker CLI with
    ``podman_socket.docker_env`` (DOCKER_HOST + DOCKER_CONFIG).
    """
    require_binary("podman", "podman")
    docker = require_binary(os.environ.get("MOORAGE_DOCKER_BIN", "docker"), "docker.io (or docker-ce-cli)")
    svc = PodmanService(tmp_path_factory.mktemp("podman"), docker_bin=docker)
    svc.start()
    try:
        yield svc
    finally:
        svc.stop()


@pytest.fixture(scope="session")
def docker_env(podman_socket) -> dict:
    """Env dict for running ``docker`` yourself (DOCKER_HOST, DOCKER_CONFIG)."""
    return dict(podman_socket.docker_env)


@pytest.fixture
def oras(registry):
    """An oras-py client (``oras.provider.Registry``) for ``registry``."""
    require_module("oras", "oras")
    return oras_client(registry)


# --------------------------------------------------------------------------
# content


@pytest.fixture(scope="session")
def busybox_rootfs(tmp_path_factory) -> Path:
    """Path of a rootfs tar (static busybox + sh/ls/echo links) for
    ``docker image import``."""
    if not Path("/bin/busybox").is_file():
        require_binary("busybox-does-not-exist", "busybox-static")
    return ocilayout.busybox_rootfs_tar(tmp_path_factory.mktemp("rootfs") / "rootfs.tar")


def _seed(request) -> str:
    return request.node.nodeid


@pytest.fixture
def oci_image_layout(tmp_path, request) -> ocilayout.LayoutImage:
    """A fresh OCI layout ``tmp_path/src`` holding one image tagged ``v1``
    with three small layers (96 KiB, 48 KiB, 16 KiB), seeded by test id."""
    return ocilayout.build_image(tmp_path / "src", "v1", layers=[96 * 1024, 48 * 1024, 16 * 1024], seed=_seed(request))


@pytest.fixture
def oci_index_layout(tmp_path, request) -> ocilayout.LayoutIndex:
    """A fresh OCI layout ``tmp_path/src-index`` with a linux/amd64 +
    linux/arm64 image index tagged ``multi``."""
    return ocilayout.build_index(
        tmp_path / "src-index",
        "multi",
        platforms=[("linux", "amd64"), ("linux", "arm64")],
        layers=[64 * 1024, 8 * 1024],
        seed=_seed(request),
    )


_counter = itertools.count()


@pytest.fixture
def repo_name(request) -> str:
    """A repository name unique to this test (valid per the OCI name grammar)."""
    base = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")[:48].strip("-") or "repo"
    return f"t/{base}-{next(_counter)}"
