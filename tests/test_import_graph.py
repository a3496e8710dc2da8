"""The package's layering holds: no import cycles (function-level imports included), no upward
imports from the core, nobody but the composition root reaches into ``moorage.api.app``.

The checker parses the package in a process of its own (``scripts/import_graph.py --json``), not
in the test process: CPython 3.11's ``ast`` counts its recursion depth per interpreter, not per
thread, so a parse here fails ("AST constructor recursion depth mismatch") whenever another
thread of this process parses at the same time -- and 3.11's ``traceback`` parses to place its
carets, so any thread that logs an exception does (the in-process app of the ``memory`` backend,
threads an earlier test left behind).
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "import_graph.py"


def _checker():  # type: ignore[no-untyped-def]
    """The script as a module, for its pure functions (nothing here may call ``ast.parse``)."""
    spec = importlib.util.spec_from_file_location("import_graph", SCRIPT)
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _report() -> dict:
    """The violations and the graph of the real package, computed by the script in a process of its own."""
    cp = subprocess.run([sys.executable, str(SCRIPT), "--json"], capture_output=True, text=True, timeout=120)
    assert cp.returncode == 0, cp.stderr
    return json.loads(cp.stdout)


def test_no_cycles_and_no_upward_imports() -> None:
    assert _report()["violations"] == []


def test_the_checker_sees_cycles_and_upward_imports() -> None:
    checker = _checker()
    graph = {"moorage.a": {"moorage.b"}, "moorage.b": {"moorage.c"}, "moorage.c": {"moorage.a"}, "moorage.d": set()}
    assert checker.cycles(graph) == [["moorage.a", "moorage.b", "moorage.c"]]
    assert checker.violations({**graph, "moorage.metadata.x": {"moorage.api.y"}, "moorage.api.y": set()}) == [
        "cycle: moorage.a <-> moorage.b <-> moorage.c",
        "package cycle: moorage.a <-> moorage.b <-> moorage.c",
        "upward import: moorage.metadata.x -> moorage.api.y",
    ]
    # modules without a cycle whose packages import each other: gc.cli -> events.setup -> gc.policies
    layered = {
        "moorage.gc.cli": {"moorage.events.setup"},
        "moorage.events.setup": {"moorage.gc.policies"},
        "moorage.gc.policies": set(),
    }
    assert checker.cycles(layered) == []
    assert checker.violations(layered) == ["package cycle: moorage.events <-> moorage.gc"]
    assert checker.layers(checker.package_graph({"moorage.api.x": {"moorage.registry.y"}, "moorage.registry.y": set()})) == [
        ["moorage.registry"],
        ["moorage.api"],
    ]
    real = _report()["graph"]
    assert "moorage.registry.service" in real and "moorage.metadata.store" in real["moorage.registry.service"]
    assert not any(d.startswith("moorage.api") for d in real["moorage.metadata.store"])
