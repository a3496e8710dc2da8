#!/usr/bin/env python3
"""The import graph of the ``moorage`` package, and the rules it must keep.

Every ``import`` counts, also those inside functions (a function-level import hides a cycle, it
does not remove it).  Rules:

* no cycles between modules;
* no upward imports: ``registry``, ``storage`` and ``metadata`` (the core) import nothing above
  them (``api``, ``auth``, ``gc``, extensions, ``cli``, ``server``); ``storage`` and ``metadata``
  do not import each other, nor ``registry`` (the domain uses them, not the other way round:
  the error registry every layer raises from is ``moorage.errors``, below all of them, importing
  nothing of the package); ``registry`` imports no ``api``;
* nothing imports ``moorage.api.app`` except the composition root, the server and the CLI;
* no cycles between packages either (``moorage.gc`` -> ``moorage.events`` -> ``moorage.gc``
  through different modules is a cycle of the packages: each package -- and each top-level
  module -- is a layer that can be read, tested and replaced without the ones above it).
  ``--packages`` prints the package graph in layer order.

    python scripts/import_graph.py          # prints violations, exit 1 if any
    python scripts/import_graph.py --json   # {"violations": [...], "graph": {module: [imports]}}

Run it as its own process (the tests do too): CPython 3.11's ``ast`` keeps its recursion-depth
counter per interpreter, not per thread, so ``ast.parse`` here while another thread of the same
process parses (3.11's ``traceback`` does, to place its ``^^^`` carets, whenever a thread logs an
exception) fails with "SystemError: AST constructor recursion depth mismatch".
"""

from __future__ import annotations

import ast
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "moorage"
CORE = ("moorage.registry", "moorage.storage", "moorage.metadata")
ABOVE_CORE = (
    "moorage.api",
    "moorage.auth",
    "moorage.gc",
    "moorage.insight",
    "moorage.events",
    "moorage.ui",
    "moorage.proxy",
    "moorage.compat",
    "moorage.cli",
    "moorage.server",
    "moorage.composition",
)
APP_IMPORTERS = ("moorage.composition", "moorage.server", "moorage.cli")


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path, modules: set[str]) -> set[str]:
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    out: set[str] = set()
    tree = ast.parse(path.read_text(), str(path))
    typing_only = {
        id(n)
        for block in ast.walk(tree)
        if isinstance(block, ast.If) and "TYPE_CHECKING" in ast.unparse(block.test)
        for stmt in block.body
        for n in ast.walk(stmt)
    }
    for node in ast.walk(tree):
        if id(node) in typing_only:  # annotations only: no import at run time
            continue
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            targets = [mod] + [f"{mod}.{a.name}" for a in node.names]
        for t in targets:
            while t and t not in modules:
                t = t.rsplit(".", 1)[0] if "." in t else ""
            if t and t != name and t.startswith("moorage"):
                out.add(t)
    return out


def graph() -> dict[str, set[str]]:
    files = {module_name(p): p for p in ROOT.rglob("*.py") if "migrations" not in p.parts}
    modules = set(files)
    g = {m: imports_of(p, modules) for m, p in files.items()}
    # a package's __init__ being imported is not a dependency on its submodules
    return g


def cycles(g: dict[str, set[str]]) -> list[list[str]]:
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def strong(v: str) -> None:  # Tarjan, iterative enough for a package this size
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in g.get(v, ()):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in sorted(g):
        if v not in index:
            strong(v)
    return out


def package_of(mod: str) -> str:
    """``moorage.gc.cli`` -> ``moorage.gc``; a top-level module is its own package."""
    return ".".join(mod.split(".")[:2])


def package_graph(g: dict[str, set[str]]) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {package_of(m): set() for m in g}
    for mod, deps in g.items():
        out[package_of(mod)] |= {package_of(d) for d in deps if package_of(d) != package_of(mod)}
    out.pop("moorage", None)  # the package's own __init__ (a version string) is below everything
    for deps in out.values():
        deps.discard("moorage")
    return out


def layers(pg: dict[str, set[str]]) -> list[list[str]]:
    """The packages in layers: each imports only packages of the layers before it."""
    placed: dict[str, int] = {}
    remaining = dict(pg)
    out: list[list[str]] = []
    while remaining:
        ready = sorted(p for p, deps in remaining.items() if deps <= set(placed))
        if not ready:  # a cycle: reported by violations()
            break
        for p in ready:
            placed[p] = len(out)
            del remaining[p]
        out.append(ready)
    return out


def _under(mod: str, prefixes: tuple[str, ...]) -> bool:
    return any(mod == p or mod.startswith(p + ".") for p in prefixes)


def violations(g: dict[str, set[str]] | None = None) -> list[str]:
    g = graph() if g is None else g
    found = [f"cycle: {' <-> '.join(c)}" for c in cycles(g)]
    found += [f"package cycle: {' <-> '.join(c)}" for c in cycles(package_graph(g))]
    for mod, deps in sorted(g.items()):
        for dep in sorted(deps):
            if _under(mod, CORE) and _under(dep, ABOVE_CORE):
                found.append(f"upward import: {mod} -> {dep}")
            if _under(mod, ("moorage.storage",)) and _under(dep, ("moorage.metadata",)):
                found.append(f"storage imports metadata: {mod} -> {dep}")
            if _under(mod, ("moorage.metadata",)) and _under(dep, ("moorage.storage",)):
                found.append(f"metadata imports storage: {mod} -> {dep}")
            if _under(mod, ("moorage.storage", "moorage.metadata")) and _under(dep, ("moorage.registry",)):
                found.append(f"storage/metadata import the domain above them: {mod} -> {dep}")
            if mod == "moorage.errors" and dep.startswith("moorage"):
                found.append(f"the error registry imports the package: {mod} -> {dep}")
            if dep == "moorage.api.app" and not _under(mod, APP_IMPORTERS):
                found.append(f"imports the app module: {mod} -> moorage.api.app")
    return found


if __name__ == "__main__":
    if sys.argv[1:] == ["--packages"]:
        pg = package_graph(graph())
        for i, layer in enumerate(layers(pg)):
            for p in layer:
                print(f"{i:2d} {p.removeprefix('moorage.'):14s} -> {' '.join(sorted(d.removeprefix('moorage.') for d in pg[p]))}")
        sys.exit(0)
    if sys.argv[1:] == ["--json"]:
        g = graph()
        print(json.dumps({"violations": violations(g), "graph": {m: sorted(d) for m, d in sorted(g.items())}}))
        sys.exit(0)
    bad = violations()
    for line in bad:
        print(line)
    print(f"{len(bad)} import-graph violation(s)" if bad else "import graph clean")
    sys.exit(1 if bad else 0)
