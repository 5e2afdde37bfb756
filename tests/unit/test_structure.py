"""The package stays small enough to read: module and function sizes, no import cycles,
the environment read in one place, and one definition of each shared fact."""

from __future__ import annotations

import ast
from pathlib import Path

import yaml

from dbt_project import business_calendar, layout

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("dbt_project", "infra")
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60
# Where the environment may be read: the package's settings module, and the CDK app
# (the account and region that the CDK CLI passes to it).
READS_ENVIRONMENT = {"dbt_project/settings.py", "infra/app.py"}


def modules() -> dict[str, ast.Module]:
    return {
        path.relative_to(ROOT).as_posix(): ast.parse(path.read_text(encoding="utf-8"))
        for package in PACKAGES
        for path in sorted((ROOT / package).rglob("*.py"))
    }


def test_no_module_is_over_the_line_limit():
    long = {
        name: lines
        for name in modules()
        if (lines := len((ROOT / name).read_text().splitlines())) > MAX_MODULE_LINES
    }
    assert not long, f"modules over {MAX_MODULE_LINES} lines: {long}"


def test_no_function_is_over_the_line_limit():
    long = {}
    for name, tree in modules().items():
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    long[f"{name}:{node.name}"] = length
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines: {long}"


def _imports_of(module: str, tree: ast.Module) -> set[str]:
    """Modules of the package that ``module`` imports, at any depth of its code."""
    package = module.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package if node.level == 1 else package.rsplit(".", node.level - 1)[0]
                target = f"{base}.{node.module}" if node.module else base
            else:
                target = node.module or ""
            names = [f"{target}.{alias.name}" for alias in node.names]
            found.update([target, *names])
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def test_the_package_has_no_import_cycle():
    trees = {
        name.removesuffix(".py").replace("/", ".").removesuffix(".__init__"): tree
        for name, tree in modules().items()
        if name.startswith("dbt_project/")
    }
    graph = {m: sorted(_imports_of(m, t) & set(trees) - {m}) for m, t in trees.items()}

    def cycle_from(start: str) -> list[str] | None:
        stack = [(start, [start])]
        while stack:
            node, path = stack.pop()
            for nxt in graph[node]:
                if nxt == start:
                    return [*path, start]
                if nxt not in path and nxt != "dbt_project":
                    stack.append((nxt, [*path, nxt]))
        return None

    cycles = [c for m in graph if (c := cycle_from(m))]
    assert not cycles, f"import cycles: {cycles[0]}"


def test_only_the_settings_module_reads_the_environment():
    readers = set()
    for name, tree in modules().items():
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and node.attr in ("environ", "getenv")
                and isinstance(node.value, ast.Name)
                and node.value.id == "os"
            ):
                readers.add(name)
    assert readers <= READS_ENVIRONMENT, sorted(readers - READS_ENVIRONMENT)


def test_dbt_var_defaults_are_the_python_definitions():
    """dbt cannot import Python: its var defaults must equal the one definition."""
    project = yaml.safe_load((ROOT / "dbt_project.yml").read_text(encoding="utf-8"))
    assert project["vars"]["business_timezone"] == business_calendar.BUSINESS_TIMEZONE
    assert project["vars"]["lookback_days"] == business_calendar.DEFAULT_LOOKBACK_DAYS


def test_the_stage_layout_is_spelled_in_one_place():
    """No module repeats the stage prefix or the manifest name as a string literal."""
    literals = {layout.DATA_PREFIX, layout.MANIFEST_NAME}
    repeated = set()
    for name, tree in modules().items():
        if name == "dbt_project/layout.py":
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and node.value in literals:
                repeated.add(f"{name}:{node.lineno}")
    assert not repeated, sorted(repeated)
