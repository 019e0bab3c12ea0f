"""The layering the project promises (issue 10, DESIGN.md), checked on the source: pages are UI only,
core/sg is pure torch, glossary is pure text, no import cycle between project modules (function-level
imports included: hiding a cycle inside a function is still a cycle), and no core module grows past
600 lines."""
from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _modules() -> dict[str, Path]:
    out = {}
    for path in [*REPO.glob("core/**/*.py"), *REPO.glob("glossary/**/*.py")]:
        parts = path.relative_to(REPO).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


MODULES = _modules()


def _imports(path: Path, module: str) -> list[str]:
    """Every module name imported anywhere in ``path``, function-level and ``if TYPE_CHECKING:`` imports
    included: a type-only import still makes two modules depend on each other."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: list[str] = []

    def visit(node):
        if isinstance(node, ast.Import):
            found.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package
                for _ in range(node.level - 1):
                    anchor = anchor.rpartition(".")[0]
                base = f"{anchor}.{node.module}" if node.module else anchor
            for alias in node.names:   # `from pkg import submodule` imports the submodule, not pkg
                found.append(f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text(encoding="utf-8")))
    return found


def _project_target(name: str) -> str | None:
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _graph() -> dict[str, set[str]]:
    graph = {m: set() for m in MODULES}
    for module, path in MODULES.items():
        for name in _imports(path, module):
            target = _project_target(name)
            if target and target != module:
                graph[module].add(target)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    index, low, stack, on_stack, out = {}, {}, [], set(), []
    counter = [0]

    def strong(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                strong(w)
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
                out.append(sorted(component))

    for v in graph:
        if v not in index:
            strong(v)
    return out


def test_no_import_cycle_between_project_modules():
    assert _cycles(_graph()) == []


def test_the_cycle_check_can_fail():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == [["a", "b", "c"]]


@pytest.mark.parametrize("module", sorted(m for m in MODULES if m.startswith("core.sg")))
def test_core_sg_is_pure_torch(module):
    bad = [n for n in _imports(MODULES[module], module)
           if n.split(".")[0] in ("streamlit", "sqlite3", "sqlite_utils", "pages")
           or (n.startswith("core.") and not n.startswith("core.sg")) or n == "core"]
    assert bad == []


RUNTIME_ALLOWED = {"numpy", "PIL", "onnxruntime", "watchdog"}


@pytest.mark.parametrize("module", sorted(m for m in MODULES if m.startswith("core.runtime")))
def test_core_runtime_imports_only_onnxruntime_numpy_pillow(module):
    """A line PC installs only the runtime extra: no torch, Streamlit, database or other core module."""
    bad = [n for n in _imports(MODULES[module], module)
           if not (n.startswith("core.runtime") or n.split(".")[0] in RUNTIME_ALLOWED
                   or n.split(".")[0] in sys.stdlib_module_names) or n.split(".")[0] == "sqlite3"]
    assert bad == []


@pytest.mark.parametrize("module", sorted(m for m in MODULES if m.startswith("glossary")))
def test_glossary_is_pure_text(module):
    bad = [n for n in _imports(MODULES[module], module)
           if n.split(".")[0] in ("torch", "streamlit", "core", "pages", "sqlite3", "sqlite_utils")]
    assert bad == []


SQL = re.compile(r"\b(SELECT\s+[\w*]|INSERT\s+INTO|UPDATE\s+\w+\s+SET|DELETE\s+FROM|CREATE\s+TABLE)\b", re.I)


@pytest.mark.parametrize("path", sorted([*REPO.glob("pages/*.py"), REPO / "app.py"]), ids=lambda p: p.name)
def test_pages_hold_no_sql_and_read_no_environment(path):
    tree = ast.parse(path.read_text(encoding="utf-8"))
    sql = [node.lineno for node in ast.walk(tree)
           if isinstance(node, ast.Constant) and isinstance(node.value, str) and SQL.search(node.value)]
    env = [node.lineno for node in ast.walk(tree)
           if isinstance(node, ast.Attribute) and node.attr in ("environ", "getenv")
           and isinstance(node.value, ast.Name) and node.value.id == "os"]
    assert (sql, env) == ([], [])


@pytest.mark.parametrize("path", sorted(REPO.glob("core/**/*.py")), ids=lambda p: str(p.relative_to(REPO)))
def test_no_core_module_over_600_lines(path):
    assert len(path.read_text(encoding="utf-8").splitlines()) <= 600
