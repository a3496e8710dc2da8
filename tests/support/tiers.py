"""The test pyramid: every test belongs to one tier, given as a pytest marker (docs/testing.md).

* ``unit`` -- nothing but the test process: pure functions, drivers over a temp dir or memory,
  the app in-process (tests/support/inproc.py) on the in-memory driver.  ``pytest -m unit``.
* ``protocol`` -- a real ``moorage serve`` (per backend) spoken to over HTTP or driven with its
  CLI; one server per module where the tests share it.
* ``clients`` -- real clients (skopeo, podman, the docker CLI, oras, Distribution, Chromium).
* ``scaleout`` -- several processes or real services at once: replicas on PostgreSQL + Ceph RGW,
  outages, GC races and soaks.

Modules are assigned here (:data:`TIER_OF_MODULE`) so that the test files stay as they are; a
module may instead carry its own ``pytestmark = pytest.mark.<tier>``.  A module in neither place
gets a tier from what it uses (:func:`guess_tier`), so a new module is never left out of every
tier.  Within a module, items on the in-process ``memory`` backend are ``unit``; items needing
PostgreSQL or Ceph RGW (marked ``services``) are never ``unit``.
"""

from __future__ import annotations

import pytest

TIERS = ("unit", "protocol", "clients", "scaleout")

TIER_OF_MODULE: dict[str, str] = {
    # nothing but this process
    "test_app_inproc": "unit",
    "test_accounts_service": "unit",
    "test_gc_mark": "unit",
    "test_sqlite_writer": "unit",
    "test_auth_policy": "unit",
    "test_cli": "unit",
    "test_distribution_config": "unit",
    "test_events_units": "unit",
    "test_hashstate": "unit",
    "test_import_graph": "unit",
    "test_insight_bounds": "unit",
    "test_insight_units": "unit",
    "test_registry_events": "unit",
    "test_storage_drivers": "unit",
    "test_support_require": "unit",
    "test_support_tiers": "unit",
    "test_ui_units": "unit",
    "test_body_chunks": "unit",
    "test_registry_authz": "unit",
    # one real server per module (or per test), HTTP and CLI
    "test_admin_bodies": "protocol",
    "test_accounts_parity": "protocol",
    "test_audit": "protocol",
    "test_footprint": "protocol",
    "test_quota_cache": "protocol",
    "test_routes_table": "protocol",
    "test_auth_hostile": "protocol",
    "test_auth_http": "protocol",
    "test_daemon": "protocol",
    "test_fuzz_openapi": "protocol",
    "test_gc": "protocol",
    "test_gc_reachability": "protocol",
    "test_healthcheck": "protocol",
    "test_immutable_race": "protocol",
    "test_insight_hostile": "protocol",
    "test_integrity_uploads": "protocol",
    "test_metrics": "protocol",
    "test_policies": "protocol",
    "test_protocol_blobs": "protocol",
    "test_protocol_manifests": "protocol",
    "test_protocol_restart": "protocol",
    "test_scrub": "protocol",
    "test_shutdown": "protocol",
    "test_trust_server": "protocol",
    "test_ui_http": "protocol",
    "test_upload_limits": "protocol",
    # real registry clients
    "test_auth_clients": "clients",
    "test_clients": "clients",
    "test_events": "clients",
    "test_image": "clients",
    "test_import_distribution": "clients",
    "test_insight": "clients",
    "test_mirror": "clients",
    "test_proxy": "clients",
    "test_ui_browser": "clients",
    # several processes / real services at once
    "test_backend_outage": "scaleout",
    "test_load_safety": "scaleout",
    "test_scheduler": "scaleout",
    "test_events_replicas": "scaleout",
    "test_gc_race": "scaleout",
    "test_gc_stress": "scaleout",
    "test_postgres_schema": "scaleout",
    "test_replicas": "scaleout",
    "test_s3_redirect": "scaleout",
    "test_services_smoke": "scaleout",
}

_CLIENT_FIXTURES = {"registry", "auth_registry", "skopeo", "podman_socket", "docker_env", "oras"}
_SERVER_FIXTURES = {"moorage", "fresh_moorage", "backend"}
_SERVICE_FIXTURES = {"rgw", "postgres_url"}


def guess_tier(item: pytest.Item) -> str:
    """The tier of a module nobody has assigned yet, from the fixtures its tests use."""
    names = set(getattr(item, "fixturenames", ()))
    if names & _CLIENT_FIXTURES:
        return "clients"
    if names & _SERVICE_FIXTURES:
        return "scaleout"
    if names & _SERVER_FIXTURES:
        return "protocol"
    return "unit"


def tier_of(item: pytest.Item) -> str:
    own = [m.name for m in item.iter_markers() if m.name in TIERS]
    if own:
        return own[0]
    module = item.module.__name__.rsplit(".", 1)[-1] if getattr(item, "module", None) else ""
    tier = TIER_OF_MODULE.get(module) or guess_tier(item)
    callspec = getattr(item, "callspec", None)
    if callspec is not None and callspec.params.get("backend") == "memory":
        return "unit"
    if tier == "unit" and item.get_closest_marker("services") is not None:
        return "protocol"
    return tier


def assign_tier(item: pytest.Item) -> None:
    tier = tier_of(item)
    if item.get_closest_marker(tier) is None:
        item.add_marker(getattr(pytest.mark, tier))
