"""The package's layering holds: no import cycles (function-level imports included), no upward
imports from the core, nobody but the composition root reaches into ``moorage.api.app``."""

from __future__ import annotations

import importlib.util
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "import_graph.py"


def _checker():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("import_graph", SCRIPT)
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_no_cycles_and_no_upward_imports() -> None:
    assert _checker().violations() == []


def test_the_checker_sees_cycles_and_upward_imports() -> None:
    checker = _checker()
    graph = {"moorage.a": {"moorage.b"}, "moorage.b": {"moorage.c"}, "moorage.c": {"moorage.a"}, "moorage.d": set()}
    assert checker.cycles(graph) == [["moorage.a", "moorage.b", "moorage.c"]]
    real = checker.graph()
    assert "moorage.registry.service" in real and "moorage.metadata.store" in real["moorage.registry.service"]
    assert not any(d.startswith("moorage.api") for d in real["moorage.metadata.store"])
