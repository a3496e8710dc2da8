"""Shared fixtures: a real ``moorage serve`` process per test module, on every selected backend."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from tests.support.backends import FACTORIES, EnvFactory, selected_backends
from tests.support.registry_proc import RegistryProcess, start_moorage

# Real-client fixtures (podman socket, Distribution, OCI layouts) and throwaway Ceph RGW and
# PostgreSQL.  Not wrapped in try/except ImportError: a broken import must fail the run, not
# silently drop fixtures.
from tests.support.fixtures import *  # noqa: F401,F403,E402
from tests.support.service_fixtures import *  # noqa: F401,F403,E402


@pytest.fixture(scope="session", params=selected_backends())
def backend(request: pytest.FixtureRequest) -> tuple[str, EnvFactory]:
    """(name, factory of MOORAGE_* env for one isolated server) for each selected backend."""
    return request.param, FACTORIES[request.param](request)


@pytest.fixture(scope="module")
def moorage(backend: tuple[str, EnvFactory], tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryProcess]:
    """A registry server with empty storage, shared by the tests of one module."""
    name, make_env = backend
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
