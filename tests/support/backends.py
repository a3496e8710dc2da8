"""Storage/metadata backends the protocol suite runs against, parametrised (not copied).

``fs-sqlite`` is the embedded default and always runs.  ``s3-postgres`` (Ceph RGW + PostgreSQL,
started by the tests themselves) is provided by :func:`s3_postgres_env`; which backends run is
chosen with ``MOORAGE_TEST_BACKENDS`` (comma-separated; .ci/run enables both).

Per module (:func:`backends_for`): modules in :data:`ONE_BACKEND` (or marked
``@pytest.mark.one_backend``) prove things the backend does not change -- a client's journey, an
admin API, a CLI -- and run on the first selected backend only; modules in :data:`INPROC` (or
marked ``@pytest.mark.inproc``) also run against the app in the test process on the in-memory
blob store (``memory``), which puts them in the unit tier as well.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable

import pytest

EnvFactory = Callable[[], dict[str, str]]

#: The in-process twin: build_app over SQLite in a temp dir + moorage.storage.memory, no process.
MEMORY = "memory"

#: Modules whose tests the storage/database backend does not change (journeys through the HTTP
#: API, CLIs, auth and UI flows over one server); each is listed with why.  What depends on
#: storage or database semantics (the protocol modules, integrity, GC, replicas, outages,
#: restarts, quotas, scrub) is NOT here and runs on every selected backend.
ONE_BACKEND: dict[str, str] = {
    "test_auth_clients": "real clients through the token and htpasswd flows; the auth store's semantics "
    "(grants, tokens, revocation, rate limits, replicas) run on every backend in "
    "test_auth_http",
    "test_ui_browser": "a browser journey through the UI; the UI's queries (listing, sorting, activity) run "
    "on every backend in test_ui_http's shared-server tests",
    "test_ui_http::test_htpasswd_mode": "the UI's sign-in flow in htpasswd mode (a server of its own)",
    "test_ui_http::test_ui_can_be_turned_off": "a configuration switch read before any storage or database",
    "test_ui_http::test_token_mode_sessions_and_permissions": "sessions and permissions in token mode (a "
    "server of its own); token semantics as above",
    "test_metrics": "Prometheus counters live in the server process, whatever stores the data",
    "test_gc::test_deletes_disabled_answer_unsupported": "refused by configuration before storage or database are touched",
    "test_gc::test_repository_delete_requires_admin_with_token_auth": "an authorization check; what the "
    "delete does runs on every backend "
    "in test_repository_delete_api",
}

#: Modules that also run in-process on the memory driver (pure HTTP protocol checks over the
#: module's shared ``moorage`` server; none of their tests may use ``fresh_moorage``).
INPROC: set[str] = {"test_protocol_blobs", "test_protocol_manifests"}


def selected_backends() -> list[str]:
    return [b.strip() for b in os.environ.get("MOORAGE_TEST_BACKENDS", "fs-sqlite").split(",") if b.strip()]


def backends_for(module: str, node: pytest.Item | None = None) -> list[str]:
    """The backends a test module runs on (see the module docstring)."""
    short = module.rsplit(".", 1)[-1]
    function = f"{short}::{getattr(node, 'originalname', None) or getattr(node, 'name', '')}"

    def marked(name):
        return node is not None and node.get_closest_marker(name) is not None

    inproc = short in INPROC or marked("inproc")
    selected = [b for b in selected_backends() if b != MEMORY or inproc]
    if short in ONE_BACKEND or function in ONE_BACKEND or marked("one_backend"):
        selected = selected[:1]
    if inproc and MEMORY not in selected:
        selected = [*selected, MEMORY]
    return selected


def fs_sqlite_env(request: pytest.FixtureRequest) -> EnvFactory:
    return lambda: {}


def s3_postgres_env(request: pytest.FixtureRequest) -> EnvFactory:
    """A fresh bucket and a fresh database for each server started."""
    rgw = request.getfixturevalue("rgw")
    pg_admin_url = request.getfixturevalue("postgres_url")
    from tests.support.postgres import create_database  # noqa: PLC0415

    def make() -> dict[str, str]:
        suffix = uuid.uuid4().hex[:10]
        url = create_database(pg_admin_url, f"moorage_{suffix}")
        return {
            "MOORAGE_STORAGE__DRIVER": "s3",
            "MOORAGE_STORAGE__S3__BUCKET": f"moorage-{suffix}",
            "MOORAGE_STORAGE__S3__ENDPOINT_URL": rgw.endpoint_url,
            "MOORAGE_STORAGE__S3__ACCESS_KEY": rgw.access_key,
            "MOORAGE_STORAGE__S3__SECRET_KEY": rgw.secret_key,
            "MOORAGE_STORAGE__S3__REGION": rgw.region,
            "MOORAGE_DATABASE__URL": url,
            "MOORAGE_DATABASE__AUTO_MIGRATE": "true",
        }

    return make


def memory_env(request: pytest.FixtureRequest) -> EnvFactory:
    """No process to configure: the ``moorage`` fixture serves the app in-process instead."""
    return lambda: {}


FACTORIES: dict[str, Callable[[pytest.FixtureRequest], EnvFactory]] = {
    "fs-sqlite": fs_sqlite_env,
    "s3-postgres": s3_postgres_env,
    MEMORY: memory_env,
}
