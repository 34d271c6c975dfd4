"""The package's shape, as a reader relies on it: no import circles, user errors become exits
only at the entry points, Hydra's config is read only by the entry point, and the plugin module
Hydra imports on every command stays light."""

from __future__ import annotations

import ast
import subprocess
import sys

from conftest import REPO

PACKAGE = REPO / "sweep"
ENTRY_POINTS = {
    "run.py",
    "report.py",
    "predict.py",
    "callbacks.py",
    "search/plugin.py",
    "errors.py",
}  # errors.py defines the exit


def modules() -> dict[str, ast.Module]:
    return {str(p.relative_to(PACKAGE)): ast.parse(p.read_text()) for p in sorted(PACKAGE.rglob("*.py"))}


def module_name(path: str) -> str:
    return "sweep." + path.removesuffix(".py").removesuffix("/__init__").replace("/", ".")


def sweep_imports(tree: ast.Module) -> set[str]:
    """Every `sweep.*` module imported anywhere in the file (lazy imports in functions included)."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("sweep"):
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("sweep")}
    return found


def test_no_import_circles():
    trees = modules()
    names = {module_name(p) for p in trees}
    graph = {
        module_name(p): {m for m in sweep_imports(t) if m in names and m != "sweep"} - {module_name(p)}
        for p, t in trees.items()
    }

    def visit(node: str, path: list[str]) -> None:
        for nxt in graph[node]:
            assert nxt not in path, "import circle: " + " -> ".join(path[path.index(nxt) :] + [nxt])
            visit(nxt, path + [nxt])

    for start in graph:
        visit(start, [start])


def test_only_entry_points_exit_and_read_hydras_config():
    for path, tree in modules().items():
        calls = {ast.unparse(n.func) for n in ast.walk(tree) if isinstance(n, ast.Call)}
        if path not in ENTRY_POINTS:
            assert not calls & {"sys.exit", "exit_with", "exit", "quit"}, f"{path} exits; raise UserError instead"
        if path != "run.py":
            assert "HydraConfig.get" not in calls, f"{path} reads HydraConfig; take plain values from run.py"


def test_the_plugin_module_imports_nothing_heavy():
    code = (
        "import sys, sweep.search.plugin; "
        "print(sorted(m for m in ('torch', 'optuna', 'pandas', 'sweep.search.engine') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_the_code_passes_the_linter_and_the_formatter():
    for check in (["check"], ["format", "--check"]):
        p = subprocess.run(
            [sys.executable, "-m", "ruff", *check, "sweep", "tests"], cwd=REPO, capture_output=True, text=True
        )
        assert p.returncode == 0, f"ruff {' '.join(check)}:\n{p.stdout}{p.stderr}"
