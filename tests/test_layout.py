"""The package layout: no import cycles, a small top level, working old paths, a torch-free config.

Shape shorthand: M calr_plugin modules, E import edges between them.

The import graph is read from the source with ``ast`` (every ``import`` and ``from ... import``,
at module level and inside functions), not by importing: an edge A -> B means module A names
module B (``from .x import y`` is an edge to ``x.y`` when that is a module, else to ``x``).
A package's ``__init__`` imported only because a submodule is imported is not an edge.
"""
import ast
import importlib
import os
import sys
import warnings

import pytest

import calr_plugin
from conftest import REPO

PKG = os.path.join(REPO, "calr_plugin")
TOP_FILES = {"__init__.py", "config.py", "compat.py", "errors.py"}


def modules():
    """{dotted name: file path} of every module of calr_plugin."""
    out = {}
    for folder, dirs, files in os.walk(PKG):
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        for f in files:
            if f.endswith(".py"):
                rel = os.path.relpath(os.path.join(folder, f), REPO)[:-3].split(os.sep)
                if rel[-1] == "__init__":
                    rel = rel[:-1]
                out[".".join(rel)] = os.path.join(folder, f)
    return out


def imported_names(name, path):
    """Every (absolute) module name a module's import statements name, with the line."""
    is_package = path.endswith("__init__.py")
    package = name if is_package else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(open(path).read(), path)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                base = ".".join(base + ([node.module] if node.module else []))
            else:
                base = node.module
            yield base, node.lineno
            for alias in node.names:
                yield f"{base}.{alias.name}", node.lineno


def import_graph():
    """{module: {imported calr_plugin module: line}}."""
    mods = modules()
    graph = {}
    for name, path in mods.items():
        edges = {}
        for target, line in imported_names(name, path):
            if target in mods and target != name:
                edges.setdefault(target, line)
        graph[name] = edges
    return graph


def find_cycle(graph):
    """One import cycle as a list of modules (first == last), or None."""
    state, stack = {}, []

    def visit(m):
        state[m] = "open"
        stack.append(m)
        for n in sorted(graph.get(m, ())):
            if state.get(n) == "open":
                return stack[stack.index(n):] + [n]
            if n not in state:
                found = visit(n)
                if found:
                    return found
        stack.pop()
        state[m] = "done"
        return None

    for m in sorted(graph):
        if m not in state:
            found = visit(m)
            if found:
                return found
    return None


def test_no_import_cycles():
    graph = import_graph()
    assert len(graph) > 40 and any(graph.values())  # the walk sees the package
    cycle = find_cycle(graph)
    if cycle:
        steps = [f"{a} (line {graph[a][b]})" for a, b in zip(cycle, cycle[1:])]
        pytest.fail("import cycle: " + " -> ".join(steps + [cycle[-1]]))


def test_find_cycle_finds_one():
    assert find_cycle({"a": {"b": 1}, "b": {"c": 2}, "c": {"a": 3}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b": 1}, "b": {}, "c": {"a": 1, "b": 1}}) is None


def test_top_level_holds_the_package_face_and_folders_only():
    entries = [e for e in os.listdir(PKG) if e != "__pycache__"]
    files = {e for e in entries if os.path.isfile(os.path.join(PKG, e))}
    folders = {e for e in entries if os.path.isdir(os.path.join(PKG, e))}
    assert files == TOP_FILES, f"top-level files other than {sorted(TOP_FILES)}: {sorted(files - TOP_FILES)}"
    for folder in folders:
        assert os.path.isfile(os.path.join(PKG, folder, "__init__.py")), f"calr_plugin/{folder} is not a package"


@pytest.mark.parametrize("old", sorted(calr_plugin.MOVED))
def test_an_old_path_imports_the_new_module_with_a_warning(old):
    new = calr_plugin.MOVED[old]
    real = importlib.import_module(new)
    parent, _, leaf = old.rpartition(".")
    sys.modules.pop(old, None)  # as in a fresh process, where nothing imported the old path yet
    if getattr(sys.modules[parent], leaf, None) is real:
        delattr(sys.modules[parent], leaf)
    with pytest.warns(DeprecationWarning, match=rf"^{old} moved to {new};"):
        alias = importlib.import_module(old)
    assert alias is real
    assert real.__spec__.name == new and real.__name__ == new  # the module keeps its own identity
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert importlib.import_module(old) is real  # imported once: no second warning
    assert old not in sys.modules.values() and not os.path.exists(os.path.join(REPO, *old.split(".")) + ".py")


def test_old_paths_resolve_in_from_imports_and_the_package_face_keeps_its_names():
    from calr_plugin import (CalrError, CALRTrainer, ConfigError, DataError, add_calr_config,  # noqa: F401
                             load_config, setup_run)

    with pytest.warns(DeprecationWarning):
        sys.modules.pop("calr_plugin.hooks", None)
        if hasattr(calr_plugin, "hooks"):
            delattr(calr_plugin, "hooks")
        from calr_plugin import hooks
    assert hooks.label_params is importlib.import_module("calr_plugin.engine.hooks").label_params


def torch_imports(start):
    """[(chain of modules, line)] for every torch import reachable from ``start`` within calr_plugin."""
    mods = modules()
    graph = import_graph()
    found, seen, todo = [], {start}, [[start]]
    while todo:
        chain = todo.pop()
        lines = [line for target, line in imported_names(chain[-1], mods[chain[-1]])
                 if target == "torch" or target.startswith("torch.")]
        if lines:
            found.append((chain, min(lines)))
        # Importing a.b.c runs a/__init__ and a/b/__init__ first: count the subpackages'
        # own imports too (not calr_plugin's face, which imports everything by design).
        parents = {".".join(n.split(".")[:i]) for n in graph[chain[-1]] for i in range(2, n.count(".") + 1)}
        for nxt in sorted(set(graph[chain[-1]]) | parents):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(chain + [nxt])
    return found


def test_config_imports_no_torch():
    found = torch_imports("calr_plugin.config")
    assert not found, "config.py reaches torch: " + "; ".join(
        f"{' -> '.join(chain)} (line {line})" for chain, line in found)


def test_the_torch_walk_sees_torch():
    assert torch_imports("calr_plugin.engine.trainer")
