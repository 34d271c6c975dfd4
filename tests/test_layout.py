"""The package's shape, as a reader relies on it: no import circles, user errors become exits
only at the entry points, Hydra's config is read only by the entry point, and the plugin module
Hydra imports on every command stays light."""

from __future__ import annotations

import ast
import functools
import re
import subprocess
import sys

from helpers import REPO

PACKAGE = REPO / "sweep"
ENTRY_POINTS = {
    "run.py",
    "report.py",
    "predict.py",
    "serve.py",
    "callbacks.py",
    "search/plugin.py",
    "errors.py",
}  # errors.py defines the exit


@functools.cache
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
        if path not in ("run.py", "search/pruning.py"):  # this project's task, and the API another app's task calls
            assert "HydraConfig.get" not in calls, f"{path} reads HydraConfig; take plain values from run.py"


def test_the_plugin_modules_import_nothing_heavy():
    # Hydra imports both at its plugin scan, for every command
    code = (
        "import sys, sweep.search.plugin; "
        "print(sorted(m for m in ('torch', 'optuna', 'pandas', 'scipy', 'numpy', 'sweep.search.optuna_search', "
        "'sweep.search.grid_race', 'sweep.search.race') "
        "if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_the_code_passes_the_linter_and_the_formatter():
    for check in (["check"], ["format", "--check"]):
        p = subprocess.run(
            [sys.executable, "-m", "ruff", *check, "sweep", "tests"], cwd=REPO, capture_output=True, text=True
        )
        assert p.returncode == 0, f"ruff {' '.join(check)}:\n{p.stdout}{p.stderr}"


def test_the_help_and_the_readme_name_every_top_level_key():
    """conf/config.yaml's keys, the --help footer and the README's list of top-level keys agree."""
    import yaml

    config = yaml.safe_load((REPO / "conf" / "config.yaml").read_text())
    keys = set(config["_rules_"])
    assert keys == {k for k in config if k not in ("defaults", "_rules_")}  # every key has a rule
    footer = yaml.safe_load((REPO / "conf" / "hydra" / "help" / "sweep.yaml").read_text())["footer"]
    listed = footer.split("Keys:")[1].split(",")[0].split()
    assert sorted(listed) == sorted(keys)
    readme = (REPO / "README.md").read_text()
    paragraph = readme.split("Top-level keys")[1].split("\n\n")[0]
    assert sorted(set(re.findall(r"`(\w+)`", paragraph)) & keys) == sorted(keys)


def test_only_borrowed_touches_optuna_and_hydra_private_insides():
    """Private names of Optuna and Hydra are reached from sweep/search/borrowed.py alone."""
    for path, tree in modules().items():
        if path == "search/borrowed.py":
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module:
                parts = node.module.split(".")
                if parts[0] in ("optuna", "hydra", "hydra_plugins"):
                    assert not any(p.startswith("_") for p in parts), f"{path} imports {node.module}"
            if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
                owner = ast.unparse(node.value)
                ours = owner in ("self", "cls", "os") or owner.startswith(("sweep", "self."))  # os._exit is public
                assert ours, f"{path}: {ast.unparse(node)}"


def test_the_search_wings_map_names_every_module_and_each_imports_only_those_below_it():
    trees = modules()
    doc = (PACKAGE / "search" / "__init__.py").read_text()
    order = re.findall(r"^    (\w+)\.py ", doc, flags=re.M)
    assert sorted(order) == sorted(p.removeprefix("search/").removesuffix(".py") for p in trees
                                   if p.startswith("search/") and not p.endswith("__init__.py"))  # fmt: skip
    for i, name in enumerate(order):
        imported = {m.removeprefix("sweep.search.").split(".")[0] for m in sweep_imports(trees[f"search/{name}.py"])
                    if m.startswith("sweep.search.")}  # fmt: skip
        assert imported <= set(order[i + 1 :]), f"search/{name}.py imports {sorted(imported - set(order[i + 1 :]))}"


def test_no_module_outside_the_search_wing_is_imported_by_it_and_imports_it_back():
    """0 arrows back up: what the wing uses (progress, results, files, ...) never imports the wing."""
    trees = modules()
    used = {m for p, t in trees.items() if p.startswith("search/") for m in sweep_imports(t)}
    for path, tree in trees.items():
        if not path.startswith("search/") and module_name(path) in used:
            wing = sorted(m for m in sweep_imports(tree) if m.startswith("sweep.search"))
            assert not wing, f"{path} is used by the search wing and imports it: {wing}"


def test_no_function_is_longer_than_60_lines():
    for path, tree in modules().items():
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                assert lines <= 60, f"{path}: {node.name} is {lines} lines; split it into named steps"
