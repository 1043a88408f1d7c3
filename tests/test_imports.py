"""No import cycle: every module imports on its own terms, and the import graph, lazy imports included, has no loop."""
from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

NOT_POSTBACK = {"tests", "bench", ".venv", "__pycache__"}  # tooling around Postback, not Postback
# Run in a fresh interpreter: imports each module named on the command line, in that order, and prints which
# module loaded which for the first time (the registry's import_module() included, which no source text shows).
IMPORTER = """
import importlib, json, sys

names = sys.argv[1:]
ours = set(names)
loads = []


class Recorder:
    def find_spec(self, fullname, path=None, target=None):
        frame = sys._getframe(1)
        while frame is not None and frame.f_globals.get("__name__") not in ours:
            frame = frame.f_back
        if frame is not None and fullname in ours:
            loads.append((frame.f_globals["__name__"], fullname))
        return None


sys.meta_path.insert(0, Recorder())
for name in names:
    importlib.import_module(name)
print(json.dumps(loads))
"""


def modules() -> list[str]:
    """Every module of Postback by its dotted name (packages by their own)."""
    names = []
    for path in ROOT.rglob("*.py"):
        relative = path.relative_to(ROOT)
        if NOT_POSTBACK & set(relative.parts) or "." in relative.stem:  # gunicorn.conf.py is read, not imported
            continue
        parts = relative.with_suffix("").parts
        names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return sorted(names)


def import_in_fresh_interpreter(names: list[str]) -> tuple[subprocess.CompletedProcess, set[tuple[str, str]]]:
    """Import `names` in that order in a new Python; the process and its (importer, imported) first loads."""
    result = subprocess.run([sys.executable, "-c", IMPORTER, *names], cwd=ROOT, capture_output=True, text=True,
                            timeout=120)
    loads = {tuple(pair) for pair in json.loads(result.stdout)} if result.returncode == 0 else set()
    return result, loads


def imports_in_source(name: str, known: set[str]) -> set[str]:
    """The modules of ours that `name`'s source imports anywhere (in a function too), and the packages they are in."""
    path = ROOT / Path(*name.split("."))
    path = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
    # Reaching a sibling passes through the package this module is in, which Python set up before running it.
    own_packages = {".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 1)}
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            targets = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        for target in targets:
            parts = target.split(".")
            found |= {".".join(parts[:i]) for i in range(1, len(parts))} - own_packages  # imported on the way
            found.add(target)
    return (found & known) - {name}


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    """Module -> the modules of ours it imports: from the source text, and as loaded by a real import of them all."""
    names = modules()
    graph = {name: imports_in_source(name, set(names)) for name in names}
    result, loads = import_in_fresh_interpreter(names)
    assert result.returncode == 0, result.stderr
    for importer, imported in loads:
        if importer != imported:
            graph[importer].add(imported)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected groups of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for other in sorted(graph[node]):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            group = []
            while not group or group[-1] != node:
                group.append(stack.pop())
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for other in graph[todo.pop()] - seen:
            seen.add(other)
            todo.append(other)
    return seen


@pytest.mark.parametrize("order", ["sorted", "reversed"])
def test_every_module_imports_in_a_fresh_interpreter(order):
    names = modules() if order == "sorted" else modules()[::-1]

    result, _ = import_in_fresh_interpreter(names)

    assert (result.returncode, result.stderr) == (0, "")


def test_no_module_imports_itself_back_through_others(graph):
    assert cycles(graph) == []


def test_the_config_reaches_no_platform_module(graph):
    """The platforms import config; config is given the registry by its caller (app, cli) instead."""
    assert sorted(name for name in reachable(graph, "config") if name.split(".")[0] == "platforms") == []


def test_a_lazy_import_that_closes_a_loop_is_a_cycle():
    graph = {"config": {"platforms"}, "platforms": {"platforms.meta"}, "platforms.meta": {"config", "platforms"}}

    assert cycles(graph) == [["config", "platforms", "platforms.meta"]]
