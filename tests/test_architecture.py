"""The import graph of mg_tune: no cycles, and layers that only import downwards (docs/architecture.md).

Every module is parsed (never imported); every ``import mg_tune...`` and
``from mg_tune... import name`` in it, at any depth (lazy imports inside
functions and ``TYPE_CHECKING`` blocks included), is an edge to the module
it names: ``from mg_tune.a import b`` is an edge to ``mg_tune.a.b`` when that
is a module, else to ``mg_tune.a``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "mg_tune"

LAYERS: list[tuple[str, ...]] = [
    ("textfiles", "output", "checkpoint", "pareto", "s3"),  # leaves: text, console, checkpoint files, Pareto math, S3 plumbing
    ("guidance",),  # attributions, losses, metrics: pure torch
    ("data",),
    ("models",),
    ("config",),
    ("split_eval", "overlay"),
    ("train",),  # one trial without Ray or MLflow
    ("rebuild", "mlflow_model", "model_registry"),
    ("tracking",),  # MLflow layout: runs, checkpoints, queries
    ("pareto_plots",),  # figures: tables in, plots out
    ("checkpoint_table", "front", "mlflow_links", "checkpoint_eval", "export"),
    ("search",),  # Ray Tune + Optuna
    ("jobs", "dashboard", "server"),
    ("cli",),
    ("",),  # mg_tune itself (mg_tune.load_model)
]
"""Layers, lowest first: a module may import its own layer (no cycles) and the layers before it, never a later one."""

NO_RAY_OR_MLFLOW = ("guidance", "data", "models", "config", "split_eval", "overlay", "train", "checkpoint", "pareto")
"""The training core (DESIGN.md): usable from a notebook without Ray or MLflow."""


def _modules() -> dict[str, Path]:
    modules = {}
    for path in sorted(ROOT.rglob("*.py")):
        parts = ["mg_tune", *path.relative_to(ROOT).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


MODULES = _modules()


def _imports(name: str, path: Path) -> tuple[set[str], set[str]]:
    """(mg_tune modules ``name`` imports, top-level third-party packages it imports)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    inner, outer = set(), set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                (inner if alias.name.split(".")[0] == "mg_tune" else outer).add(alias.name)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            if base.split(".")[0] != "mg_tune":
                outer.add(base)
                continue
            for alias in node.names:
                full = f"{base}.{alias.name}"
                inner.add(full if full in MODULES else base)
    return {m for m in inner if m in MODULES and m != name}, {m.split(".")[0] for m in outer}


GRAPH = {name: _imports(name, path)[0] for name, path in MODULES.items()}
EXTERNAL = {name: _imports(name, path)[1] for name, path in MODULES.items()}


def _part(module: str) -> str:
    """``mg_tune.tracking.layout`` → ``tracking``; ``mg_tune`` → ``""``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _layer(module: str) -> int:
    for index, members in enumerate(LAYERS):
        if _part(module) in members:
            return index
    raise AssertionError(f"{module} is in no layer of tests/test_architecture.py: add it to LAYERS and docs/architecture.md")


def test_the_graph_is_read():
    assert "mg_tune.tracking.trial_logger" in GRAPH["mg_tune.tracking"]
    assert "mg_tune.guidance.metrics" in GRAPH["mg_tune.guidance.attribution"]
    assert len(GRAPH) > 50


def test_no_import_cycles():
    """Tarjan's strongly connected components: every one is a single module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for succ in sorted(GRAPH[node]):
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in sorted(GRAPH):
        if node not in index:
            visit(node)
    assert cycles == []


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_only_its_own_layer_or_lower(module):
    upward = sorted(dst for dst in GRAPH[module] if _layer(dst) > _layer(module))
    assert upward == [], f"{module} (layer {LAYERS[_layer(module)]}) imports higher layers"


@pytest.mark.parametrize(
    "package, never",
    [
        ("guidance", {"data", "models", "train", "tracking", "search", "cli"}),
        ("data", {"models", "train", "tracking", "search", "cli"}),
        ("tracking", {"search", "cli", "front", "export"}),
        ("train", {"tracking", "search", "cli"}),
    ],
)
def test_layer_boundaries(package, never):
    """The boundaries a newcomer must not cross, by name (the layer order implies them; this says them)."""
    crossing = sorted((src, dst) for src, dsts in GRAPH.items() if _part(src) == package for dst in dsts if _part(dst) in never)
    assert crossing == []


def test_training_core_imports_no_ray_or_mlflow():
    found = sorted((m, pkg) for m, pkgs in EXTERNAL.items() if _part(m) in NO_RAY_OR_MLFLOW for pkg in pkgs if pkg in ("ray", "mlflow"))
    assert found == []


def test_tracking_imports_no_ray():
    assert sorted(m for m, pkgs in EXTERNAL.items() if _part(m) == "tracking" and "ray" in pkgs) == []


MAX_MODULE_LINES = 400
"""A module longer than this holds more than one concern: split it along a seam (docs/architecture.md)."""


def test_no_module_is_longer_than_the_limit():
    long = sorted(f"{path.relative_to(ROOT.parent)} ({n} lines)" for path in MODULES.values() if (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_MODULE_LINES)
    assert long == [], f"modules over {MAX_MODULE_LINES} lines: {', '.join(long)}"
