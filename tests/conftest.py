"""Shared fixtures: a real ``moorage serve`` process per test module, on every selected backend;
the tiers (unit / protocol / clients / scaleout) each test module belongs to; which modules run
on one backend only, and which also run in-process (docs/testing.md).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.backends import FACTORIES, MEMORY, EnvFactory, backends_for

# Real-client fixtures (podman socket, Distribution, OCI layouts) and throwaway Ceph RGW and
# PostgreSQL.  Not wrapped in try/except ImportError: a broken import must fail the run, not
# silently drop fixtures.
from tests.support.fixtures import *  # noqa: F401,F403,E402
from tests.support.inproc import InProcessRegistry
from tests.support.registry_proc import RegistryProcess, start_moorage
from tests.support.service_fixtures import *  # noqa: F401,F403,E402
from tests.support.tiers import assign_tier


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Parametrise ``backend`` per module: every selected backend, or one of them for modules whose
    tests do not depend on it, plus the in-process ``memory`` twin for modules that opt in
    (tests/support/backends.py :func:`backends_for`)."""
    if "backend" in metafunc.fixturenames:
        names = backends_for(metafunc.module.__name__, metafunc.definition)
        metafunc.parametrize("backend", names, indirect=True, scope="session", ids=names)


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist's own hook reads the xdist_group marks
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        assign_tier(item)
        # pytest-xdist (``-n 2 --dist loadgroup``, scripts/test.sh): a module stays on one worker
        # (its shared server is started once), and the real-client journeys all share one worker
        # (podman's storage, the podman socket and the browser are machine-wide).
        group = "clients" if item.get_closest_marker("clients") is not None else item.nodeid.split("::", 1)[0]
        item.add_marker(pytest.mark.xdist_group(group))


@pytest.fixture(scope="session")
def backend(request: pytest.FixtureRequest) -> tuple[str, EnvFactory]:
    """(name, factory of MOORAGE_* env for one isolated server) for each selected backend."""
    return request.param, FACTORIES[request.param](request)


@pytest.fixture(scope="module")
def moorage(backend: tuple[str, EnvFactory], tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryProcess]:
    """A registry server with empty storage, shared by the tests of one module (on the ``memory``
    backend: the app in this process, tests/support/inproc.py)."""
    name, make_env = backend
    if name == MEMORY:
        inproc = InProcessRegistry(tmp_path_factory.mktemp("moorage-memory")).start()
        try:
            yield inproc  # type: ignore[misc]
        finally:
            inproc.stop()
        return
    proc = start_moorage(tmp_path_factory.mktemp(f"moorage-{name}"), env=make_env())
    proc.backend = name  # type: ignore[attr-defined]
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture()
def fresh_moorage(backend: tuple[str, EnvFactory], tmp_path: Path) -> Iterator[RegistryProcess]:
    """A registry server of the test's own (for restart and isolation tests)."""
    name, make_env = backend
    if name == MEMORY:
        pytest.fail("fresh_moorage needs a real server process: this module must not opt in to the memory backend")
    env = make_env()
    proc = start_moorage(tmp_path / "srv", env=env)
    proc.backend = name  # type: ignore[attr-defined]
    proc.backend_env = env  # type: ignore[attr-defined]
    try:
        yield proc
    finally:
        proc.stop()


def _client_registry(request: pytest.FixtureRequest, backend: str, tmp: Path) -> Iterator[RegistryProcess]:
    proc = start_moorage(tmp, env=FACTORIES[backend](request)())
    proc.kind = "moorage"
    proc.backend = backend  # type: ignore[attr-defined]
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture(scope="session")
def moorage_registry(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryProcess]:
    """Moorage (filesystem + SQLite) for the real-client tests in tests/test_clients.py."""
    yield from _client_registry(request, "fs-sqlite", tmp_path_factory.mktemp("moorage-clients"))


@pytest.fixture(scope="session")
def moorage_s3_registry(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryProcess]:
    """Moorage on Ceph RGW + PostgreSQL for the real-client tests."""
    yield from _client_registry(request, "s3-postgres", tmp_path_factory.mktemp("moorage-clients-s3"))
