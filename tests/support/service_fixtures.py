"""Session-scoped pytest fixtures for the throwaway Ceph RGW and PostgreSQL.

tests/conftest.py star-imports this module, so every test can simply ask
for them::

    @pytest.mark.services
    def test_something(rgw, postgres_url): ...

(Importing them again in a test module would create a second, separate
session instance for that module.)  For a per-test database on the shared
server use ``tests.support.postgres.create_database(postgres_url, name)``.

Fixtures:

* ``ceph_cluster`` -> started :class:`support.ceph.CephRGW` (``.timings``,
  ``.conf`` for ``radosgw-admin -c``).
* ``rgw`` -> :class:`support.ceph.RGWEndpoint` with ``endpoint_url``
  ("http://127.0.0.1:PORT"), ``access_key``, ``secret_key``, ``region``,
  ``client_kwargs()`` and ``boto3_client()`` (path-style, SigV4).
* ``postgres_server`` -> started :class:`support.postgres.PostgresServer`.
* ``postgres_url`` -> "postgresql+asyncpg://moorage:PASS@127.0.0.1:PORT/moorage".

A fixture *skips* only when its binaries are absent; under CI (``CI`` set to
true/1/yes, or MOORAGE_REQUIRE_CLIENTS=1) missing binaries *fail* instead, so a CI that forgot
``bash .ci/install-services.sh`` cannot pass by skipping.  A service that is
installed but does not start is always an error.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .ceph import CephRGW, RGWEndpoint
from .ceph import missing_binaries as _ceph_missing
from .postgres import PostgresServer
from .postgres import missing_binaries as _pg_missing
from .require import missing

__all__ = ["ceph_cluster", "rgw", "postgres_server", "postgres_url"]


def _require(missing_bins: list[str], what: str) -> None:
    if missing_bins:
        missing(f"{what} not installed (missing: {', '.join(missing_bins)}); run `bash .ci/install-services.sh`")


@pytest.fixture(scope="session")
def ceph_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CephRGW]:
    _require(_ceph_missing(), "Ceph RGW")
    cluster = CephRGW(tmp_path_factory.mktemp("ceph"))
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def rgw(ceph_cluster: CephRGW) -> RGWEndpoint:
    return ceph_cluster.start()  # already started: returns the endpoint


@pytest.fixture(scope="session")
def postgres_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresServer]:
    _require(_pg_missing(), "PostgreSQL")
    server = PostgresServer(tmp_path_factory.mktemp("postgres"))
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def postgres_url(postgres_server: PostgresServer) -> str:
    return postgres_server.url
