"""Storage/metadata backends the protocol suite runs against, parametrised (not copied).

``fs-sqlite`` is the embedded default and always runs.  ``s3-postgres`` (Ceph RGW + PostgreSQL,
started by the tests themselves) is provided by :func:`s3_postgres_env`; which backends run is
chosen with ``MOORAGE_TEST_BACKENDS`` (comma-separated; .ci/run enables both).
"""

from __future__ import annotations

import os
import uuid
from typing import Callable

import pytest

EnvFactory = Callable[[], dict[str, str]]


def selected_backends() -> list[str]:
    return [b.strip() for b in os.environ.get("MOORAGE_TEST_BACKENDS", "fs-sqlite").split(",") if b.strip()]


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


FACTORIES: dict[str, Callable[[pytest.FixtureRequest], EnvFactory]] = {
    "fs-sqlite": fs_sqlite_env,
    "s3-postgres": s3_postgres_env,
}
