"""The shape of the code: no import circles, no private names across subpackages, small modules and functions.

Imports are read with ``ast`` from every module under ``nas/``, including those inside functions (a lazy
import that dodges a circle is still a circle).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "nas"
#: Longest module (lines) anywhere under nas/ ("about 500": three ground-floor modules hold 527-540), and
#: longest function in the top floors.
MODULE_LINES = 550
FUNCTION_LINES = 60
TOP_FLOORS = ("nas.search", "nas.run")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {_module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def _package(name: str) -> str:
    """The package a module belongs to (a package's ``__init__`` belongs to the package itself)."""
    return name if MODULES[name].name == "__init__.py" else name.rpartition(".")[0]


def _resolve(module: str, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = _package(module).split(".")
    base = base[: len(base) - node.level + 1]
    return ".".join(base + ([node.module] if node.module else []))


def _imports(module: str) -> list[tuple[str, str | None, int]]:
    """(imported module, imported name or None, line) of every import statement in ``module``."""
    tree = ast.parse(MODULES[module].read_text(encoding="utf-8"))
    out: list[tuple[str, str | None, int]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(a.name, None, node.lineno) for a in node.names if a.name.startswith("nas")]
        elif isinstance(node, ast.ImportFrom):
            target = _resolve(module, node)
            if target.split(".")[0] != "nas":
                continue
            for a in node.names:
                sub = f"{target}.{a.name}"
                out.append((sub, None, node.lineno) if sub in MODULES else (target, a.name, node.lineno))
    return out


def _edges() -> dict[str, set[str]]:
    """Module -> the nas modules it imports. Importing ``a.b.c`` runs ``a`` and ``a.b`` first, so those count."""
    graph: dict[str, set[str]] = {m: set() for m in MODULES}
    for m in MODULES:
        for target, _, _ in _imports(m):
            while target and target not in MODULES:
                target = target.rpartition(".")[0]
            parts = target.split(".")
            for i in range(1, len(parts) + 1):
                dep = ".".join(parts[:i])
                if dep in MODULES and dep != m and not m.startswith(dep + "."):
                    graph[m].add(dep)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected component of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
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

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles_under_nas() -> None:
    cycles = _cycles(_edges())
    assert not cycles, "import cycles (including imports inside functions): " + "; ".join(
        " <-> ".join(c) for c in cycles)


def _top(module: str) -> str:
    """The subpackage a module lives in: ``nas.search.ray.driver`` -> ``nas.search``; ``nas.cost`` -> ``nas``."""
    parts = module.split(".")
    return ".".join(parts[:2]) if len(parts) > 1 and (ROOT / parts[1]).is_dir() else "nas"


def test_no_private_names_imported_across_subpackages() -> None:
    bad = []
    for m in MODULES:
        for target, name, line in _imports(m):
            private_module = any(p.startswith("_") and p != "__init__" for p in target.split(".")[1:])
            private_name = name is not None and name.startswith("_") and not name.startswith("__")
            if (private_module or private_name) and _top(target) != _top(m):
                bad.append(f"{MODULES[m].relative_to(ROOT.parent)}:{line} imports {target}{'.' + name if name else ''}")
    assert not bad, "private names used across subpackages:\n" + "\n".join(bad)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_modules_are_small(module: str) -> None:
    lines = len(MODULES[module].read_text(encoding="utf-8").splitlines())
    assert lines <= MODULE_LINES, f"{MODULES[module]} has {lines} lines (at most {MODULE_LINES})"


def test_functions_of_the_top_floors_are_short() -> None:
    long = []
    for m, path in MODULES.items():
        if not m.startswith(TOP_FLOORS):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = (node.end_lineno or node.lineno) - node.lineno + 1
                if n > FUNCTION_LINES:
                    long.append(f"{path.relative_to(ROOT.parent)}:{node.lineno} {node.name}: {n} lines")
    assert not long, f"functions over {FUNCTION_LINES} lines:\n" + "\n".join(long)


def test_argparse_only_in_the_command_package() -> None:
    users = [m for m in MODULES if not m.startswith("nas.cli") and any(
        isinstance(n, (ast.Import, ast.ImportFrom)) and "argparse" in ast.unparse(n)
        for n in ast.walk(ast.parse(MODULES[m].read_text(encoding="utf-8"))))]
    assert not users, f"argparse imported outside nas/cli/: {users}"


def test_optuna_private_access_only_in_its_shim() -> None:
    users = []
    for m, path in MODULES.items():
        if m == "nas.optuna_compat":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("optuna") and (
                    any(p.startswith("_") for p in (node.module or "").split(".")) or
                    any(a.name.startswith("_") for a in node.names)):
                users.append(f"{path.relative_to(ROOT.parent)}:{node.lineno}")
            if isinstance(node, ast.Attribute) and node.attr in ("_storage", "_trial_id") and not (
                    isinstance(node.value, ast.Name) and node.value.id == "self"):  # a subclass's own attribute
                users.append(f"{path.relative_to(ROOT.parent)}:{node.lineno} .{node.attr}")
    assert not users, "Optuna-private access outside nas/optuna_compat.py:\n" + "\n".join(users)
