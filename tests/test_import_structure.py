"""The package's imports flow one way: no cycle among `hrm` modules, `data` (which builds files) may use the
token layouts of `tasks` but `tasks` never imports `data`, and `evaluation` never imports `training`.

The graph is read from the source with `ast` (nothing is executed), so a cycle hidden behind a function-level
import is caught as well as a module-level one.
"""

from __future__ import annotations

import ast
import re
from collections import Counter
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "hrm"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(path): path for path in sorted((SRC / PACKAGE).rglob("*.py"))}


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.Module) -> list[tuple[ast.Import | ast.ImportFrom, bool]]:
    """Every import statement that can run, with whether it runs when the module is imported (module level) or
    only later (inside a function); imports under `if TYPE_CHECKING:` never run and are left out."""
    found: list[tuple[ast.Import | ast.ImportFrom, bool]] = []

    def visit(node: ast.AST, at_import: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                found.append((child, at_import))
            elif isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                visit(child, False)
            elif isinstance(child, ast.If) and _is_type_checking(child):
                continue  # annotations only: never executed, so never part of a cycle
            else:
                visit(child, at_import)

    visit(tree, True)
    return found


def _targets(node: ast.Import | ast.ImportFrom, importer: str, is_package: bool, known: set[str]) -> set[str]:
    """The `hrm` modules an import statement loads (a `from package import submodule` names the submodule)."""
    if isinstance(node, ast.Import):
        names = {alias.name for alias in node.names}
    else:
        if node.level:
            base = importer.split(".")
            if not is_package:
                base = base[:-1]
            base = base[: len(base) - (node.level - 1)]
            origin = ".".join(base + ([node.module] if node.module else []))
        else:
            origin = node.module or ""
        names = set()
        for alias in node.names:
            submodule = f"{origin}.{alias.name}"
            names.add(submodule if submodule in known else origin)
    return {name for name in names if name in known}


def _graph(at_import_only: bool) -> dict[str, set[str]]:
    modules = _modules()
    known = set(modules)
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        edges: set[str] = set()
        for node, at_import in _imports(tree):
            if at_import or not at_import_only:
                edges |= _targets(node, name, path.name == "__init__.py", known)
        edges.discard(name)
        graph[name] = edges
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    counter = 0

    def connect(node: str) -> None:
        nonlocal counter
        index[node] = low[node] = counter
        counter += 1
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
            if target not in index:
                connect(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return components


def _in(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def _edges_between(graph: dict[str, set[str]], source: str, target: str) -> list[str]:
    return sorted(
        f"{importer} -> {imported}"
        for importer, imports in graph.items()
        if _in(importer, source)
        for imported in imports
        if _in(imported, target)
    )


def test_the_graph_sees_the_package():
    graph = _graph(at_import_only=False)
    assert "hrm.tasks.base" in graph and "hrm.data.format" in graph
    assert "hrm.errors" in graph["hrm.tasks.base"]
    # `hrm.load_model` imports the checkpoint module only when first used: a function-level edge
    assert "hrm.checkpoint" in graph["hrm"] and "hrm.checkpoint" not in _graph(at_import_only=True)["hrm"]
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


@pytest.mark.parametrize("at_import_only", [True, False], ids=["module-level", "with-function-level"])
def test_no_import_cycle(at_import_only):
    cycles = _cycles(_graph(at_import_only))
    assert not cycles, "import cycles among hrm modules: " + "; ".join(" <-> ".join(c) for c in cycles)


@pytest.mark.parametrize(
    ("source", "target", "why"),
    [
        ("hrm.tasks", "hrm.data", "tasks own the token layouts; data builds files with them, not the reverse"),
        ("hrm.evaluation", "hrm.training", "training calls the evaluation pass, not the reverse"),
    ],
)
def test_one_direction(source, target, why):
    edges = _edges_between(_graph(at_import_only=False), source, target)
    assert not edges, f"{why}: " + ", ".join(edges)


def _callers_outside_tests() -> str:
    """The text that may use a public function: the package, the top-level scripts and the notebooks."""
    root = SRC.parent
    paths = [*(SRC / PACKAGE).rglob("*.py"), *root.glob("*.py"), *(root / "scripts").rglob("*.py")]
    paths += [*(root / "dataset").rglob("*.py"), *(root / "examples").rglob("*.ipynb")]
    return "\n".join(path.read_text(encoding="utf-8") for path in paths)


def test_every_public_function_is_used_outside_the_tests():
    uses = Counter(re.findall(r"\w+", _callers_outside_tests()))
    unused = []
    for name, path in _modules().items():
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and not node.name.startswith("_"):
                if node.decorator_list:  # registered by its decorator (an optimiser set, ...): called by name
                    continue
                if uses[node.name] < 2:  # the definition is one
                    unused.append(f"{name}.{node.name}")
    assert not unused, "public functions nothing but the tests (if anything) calls: " + ", ".join(unused)
