"""Which backends a module runs on (tests/support/backends.py) and the tier map (tests/support/tiers.py)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.support.backends import INPROC, ONE_BACKEND, backends_for
from tests.support.tiers import TIER_OF_MODULE, TIERS

BOTH = "fs-sqlite,s3-postgres"


def _node(name: str) -> SimpleNamespace:
    return SimpleNamespace(originalname=name, name=name, get_closest_marker=lambda _m: None)


def test_backend_dependent_modules_run_on_every_selected_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MOORAGE_TEST_BACKENDS", BOTH)
    for module in ("tests.test_gc", "tests.test_integrity_uploads", "tests.test_auth_http", "tests.test_replicas"):
        assert backends_for(module, _node("test_anything")) == ["fs-sqlite", "s3-postgres"], module  # type: ignore[arg-type]


def test_one_backend_modules_and_functions(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MOORAGE_TEST_BACKENDS", BOTH)
    assert backends_for("tests.test_metrics", _node("test_x")) == ["fs-sqlite"]  # type: ignore[arg-type]
    assert backends_for("tests.test_gc", _node("test_deletes_disabled_answer_unsupported")) == ["fs-sqlite"]  # type: ignore[arg-type]
    assert backends_for("tests.test_gc", _node("test_repository_delete_api")) == ["fs-sqlite", "s3-postgres"]  # type: ignore[arg-type]


def test_inproc_modules_add_the_memory_twin_and_only_they_get_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MOORAGE_TEST_BACKENDS", BOTH)
    assert backends_for("tests.test_protocol_blobs", _node("t")) == ["fs-sqlite", "s3-postgres", "memory"]  # type: ignore[arg-type]
    monkeypatch.setenv("MOORAGE_TEST_BACKENDS", "memory")
    assert backends_for("tests.test_protocol_blobs", _node("t")) == ["memory"]  # type: ignore[arg-type]
    assert backends_for("tests.test_gc", _node("t")) == []  # type: ignore[arg-type]


def test_every_listed_name_is_a_test_module_and_every_tier_is_known() -> None:
    here = Path(__file__).parent
    modules = {p.stem for p in here.glob("test_*.py")}
    listed = set(TIER_OF_MODULE) | INPROC | {k.split("::")[0] for k in ONE_BACKEND}
    assert listed <= modules, listed - modules
    assert set(TIER_OF_MODULE.values()) <= set(TIERS)
