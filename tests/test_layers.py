"""The package's floors, read from its imports: every import points down (or along) a floor, and
no module imports itself back through others. Function-level imports count as much as
top-level ones: deferring an import does not change which layer depends on which."""

from __future__ import annotations

import ast
import sys
from collections import defaultdict
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "forgetmi"

# From the top: the command line and the jobs, then the HPC layer, evaluation and the methods,
# the engine, the building blocks, and the settings, errors and utilities everything shares.
FLOORS = {
    "cli": 6,
    "jobs": 5,
    "hpc": 4, "evaluation": 4, "unlearning": 4,
    "engine": 3,
    "data": 2, "models": 2, "losses": 2, "synthetic": 2,
    "config": 1, "errors": 1, "shipped": 1, "utils": 1, "__init__": 1,
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """Each forgetmi module -> the forgetmi modules it imports (anywhere in its body)."""
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = defaultdict(set)
    for name, path in modules.items():
        package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = (".".join(package[:len(package) - node.level + 1] +
                                 ([node.module] if node.module else []))
                        if node.level else node.module or "")
                # `from pkg import submodule` imports the submodule; `from mod import name`, mod.
                subs = [f"{base}.{alias.name}" for alias in node.names]
                targets = [t for t in subs if t in modules] or [base]
            else:
                continue
            for target in targets:
                while target and target not in modules:
                    target = target.rpartition(".")[0]
                if target.startswith("forgetmi") and target != name:
                    graph[name].add(target)
    return {name: graph.get(name, set()) for name in modules}


def floor(module: str) -> int:
    parts = module.split(".")
    top = parts[1] if len(parts) > 1 else "__init__"
    if top not in FLOORS:
        pytest.fail(f"{module}: a new top-level part of the package; give it a floor in FLOORS")
    return FLOORS[top]


def test_every_import_points_down_or_along_a_floor():
    upward = [f"{a} (floor {floor(a)}) imports {b} (floor {floor(b)})"
              for a, targets in import_graph().items() for b in sorted(targets)
              if floor(b) > floor(a)]
    assert not upward, "\n".join(upward)


def test_no_import_cycle():
    graph = import_graph()
    cycles, index, low, stack, on_stack = [], {}, {}, [], set()

    def visit(v):  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for module in graph:
        if module not in index:
            visit(module)
    assert not cycles, cycles


def test_the_layers_check_sees_an_upward_import_and_a_cycle(tmp_path, monkeypatch):
    """The checks above can fail: a library module importing a job, and two modules importing
    each other, are both found."""
    fake = tmp_path / "forgetmi"
    for rel, text in {"__init__.py": "", "jobs/__init__.py": "",
                      "jobs/train.py": "from forgetmi.engine import loop\n",
                      "engine/__init__.py": "",
                      "engine/loop.py": "def f():\n    from forgetmi.jobs.train import g\n",
                      "data/__init__.py": "",
                      "data/a.py": "from forgetmi.data import b\n",
                      "data/b.py": "from . import a\n"}.items():
        (fake / rel).parent.mkdir(parents=True, exist_ok=True)
        (fake / rel).write_text(text)
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", fake)
    graph = import_graph()
    assert "forgetmi.jobs.train" in graph["forgetmi.engine.loop"]
    assert floor("forgetmi.jobs.train") > floor("forgetmi.engine.loop")
    assert graph["forgetmi.data.a"] == {"forgetmi.data.b"}
    assert graph["forgetmi.data.b"] == {"forgetmi.data.a"}
    with pytest.raises(AssertionError, match="engine.loop .floor 3. imports forgetmi.jobs.train"):
        test_every_import_points_down_or_along_a_floor()
    with pytest.raises(AssertionError, match="forgetmi.data.a"):
        test_no_import_cycle()
