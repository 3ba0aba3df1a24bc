"""The package's shape: no import circle, imports at the top, and every name the docs use resolves."""
import ast
import importlib
import pathlib
import re

import pytest

import teachlmm

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "teachlmm"

# Imports inside a function that are there on purpose. results -> intervals: ``fit.confint`` needs
# the bootstrap, which refits by EM, and em imports results (em.fit returns a MixedModelResult).
# design -> multilevel: ``tl.Model(formula, data)`` with several grouping factors builds a
# MultilevelModel, whose coder is a Model (multilevel imports design).
DEFERRED = {("results", "intervals"), ("design", "multilevel"), ("gibbs", "multilevel_gibbs")}
NOT_YET_MOVED = set()


def _imports(tree, module):
    """(target module, at top level?) for every import of a teachlmm module in ``tree``."""
    top = {id(node) for node in tree.body}
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            targets = [node.module] if node.module else [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("teachlmm."):
            targets = [node.module.split(".")[1]]
        elif isinstance(node, ast.Import):
            targets = [a.name.split(".")[1] for a in node.names if a.name.startswith("teachlmm.")]
        else:
            continue
        out += [(t.split(".")[0], id(node) in top) for t in targets if t and t.split(".")[0] != module]
    return out


def import_graph():
    """module -> {module: at top level?} over teachlmm's modules, read statically (ast), not by importing."""
    modules = {p.stem for p in PACKAGE.glob("*.py")}
    graph = {}
    for name in modules:
        edges = {}
        for target, top in _imports(ast.parse((PACKAGE / f"{name}.py").read_text()), name):
            if target in modules:
                edges[target] = edges.get(target, False) or top
        graph[name] = edges
    return graph


def find_cycle(graph):
    """One cycle of the directed graph as a list of modules, or None (depth-first search)."""
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        state[node] = "done"
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_the_cycle_finder_finds_cycles():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_no_import_circle_at_module_level():
    graph = import_graph()
    top_level = {m: {t for t, top in edges.items() if top} for m, edges in graph.items()}
    assert find_cycle(top_level) is None, f"import circle: {' -> '.join(find_cycle(top_level))}"


def test_imports_inside_functions_are_only_the_necessary_ones():
    """An import inside a function hides a dependency; it is allowed only where moving it to the
    top would close an import circle (and is then listed in DEFERRED with the reason)."""
    graph = import_graph()
    top_level = {m: {t for t, top in edges.items() if top} for m, edges in graph.items()}
    deferred = {(m, t) for m, edges in graph.items() for t, top in edges.items() if not top}
    assert deferred <= DEFERRED | NOT_YET_MOVED, f"imports inside functions: {sorted(deferred - DEFERRED)}"
    for module, target in deferred & DEFERRED:
        moved = {m: set(e) for m, e in top_level.items()}
        moved[module].add(target)
        assert find_cycle(moved), f"{module} could import {target} at the top: move the import there"


def test_package_imports_in_any_order():
    """Each module imports on its own, first (a circle held together by import order would fail here)."""
    import subprocess
    import sys
    names = sorted(p.stem for p in PACKAGE.glob("*.py") if p.stem not in ("__init__", "__main__", "plots"))
    code = ("import importlib, sys\n"
            f"for name in {names!r}:\n"
            "    for m in [m for m in sys.modules if m == 'teachlmm' or m.startswith('teachlmm.')]:\n"
            "        del sys.modules[m]\n"
            "    importlib.import_module('teachlmm.' + name)\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-1000:]


# ----------------------------------------------------------------------------
# every name the README, the book and the docstrings use still resolves
# ----------------------------------------------------------------------------

NAME = re.compile(r"(?<![\w.])(tl|teachlmm)((?:\.[A-Za-z_]\w*)+)")


def _texts():
    yield "README.md", (ROOT / "README.md").read_text()
    for page in sorted((ROOT / "book").glob("*.md")):
        yield f"book/{page.name}", page.read_text()
    for path in sorted(PACKAGE.glob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef)):
                doc = ast.get_docstring(node)
                if doc:
                    yield f"teachlmm/{path.name}:{getattr(node, 'name', 'module')}", doc


def _resolves(parts):
    obj = teachlmm
    for k, part in enumerate(parts):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            try:                                         # a submodule not imported by the package
                obj = importlib.import_module("teachlmm." + ".".join(parts[:k + 1]))
            except ImportError:
                return False
        if not callable(obj) and not hasattr(obj, "__dict__"):
            return True                                  # an attribute value: its own attributes are data
    return True


def documented_names():
    """(where, dotted name) for every ``tl.x.y`` / ``teachlmm.x.y`` written in the docs."""
    for where, text in _texts():
        for match in NAME.finditer(text):
            parts = match.group(2).lstrip(".").split(".")
            if parts[-1] in ("py", "md", "csv", "json"):         # a file name such as teachlmm/em.py
                continue
            yield where, parts


def test_every_documented_name_resolves():
    import warnings
    missing = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        for where, parts in documented_names():
            if not _resolves(parts):
                missing.append(f"{where}: tl.{'.'.join(parts)}")
    assert not missing, "names in the docs that do not exist:\n" + "\n".join(sorted(set(missing)))


def test_the_name_check_can_fail():
    assert _resolves(["em", "fit"]) and _resolves(["inference", "anova"]) and _resolves(["simulate_data"])
    assert not _resolves(["em", "no_such_function"]) and not _resolves(["no_such_module"])


@pytest.mark.parametrize("old, new", [("inference.anova", "compare.anova"), ("inference.confint", "intervals.confint"),
                                      ("inference.bootstrap", "intervals.bootstrap"),
                                      ("inference.simulate", "results.simulate"),
                                      ("inference.deviance", "results.deviance")])
def test_inference_facade_reexports_the_moved_names(old, new):
    def get(path):
        obj = teachlmm
        for part in path.split("."):
            obj = getattr(obj, part)
        return obj
    assert get(old) is get(new)


def test_old_simulate_name_is_a_deprecated_alias_of_simulate_data():
    import numpy as np
    with pytest.warns(DeprecationWarning, match="simulate_data"):
        old, truth_old = teachlmm.simulate(n_groups=6, seed=3)
    new, truth_new = teachlmm.simulate_data(n_groups=6, seed=3)
    assert all(np.array_equal(old[k], new[k]) for k in new) and truth_old["formula"] == truth_new["formula"]
