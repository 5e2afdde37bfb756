"""The package stays small enough to read: module and function sizes, no import cycles,
folders by concern, the environment read in one place, and one definition of each
shared fact; the CDK app reaches only the package's standard-library facts."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import yaml

from dbt_project.facts import business_calendar
from dbt_project.facts import stage_layout as layout

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("dbt_project", "infra", "lambdas")
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60
# Modules directly in dbt_project/ (besides __init__.py): the rest sits in folders.
MAX_TOP_LEVEL_MODULES = 10
# The part of the package the CDK app may import, and what that part may import.
FACTS = "dbt_project.facts"
# The layer builder packs the package (and ships dbt's parse of the project), so it may
# import what it packs; the rest of infra/ synthesizes with the facts alone.
PACKAGING = "infra/packaging/"
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


def _imports_of(module: str, tree: ast.Module, known: frozenset[str] = frozenset()) -> set[str]:
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
            # `from package import submodule` depends on the submodule, as a dotted
            # import does; the package's own __init__ runs first either way.
            found.update(names if all(n in known for n in names) else [target, *names])
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def test_the_package_has_no_import_cycle():
    trees = {
        name.removesuffix(".py").replace("/", ".").removesuffix(".__init__"): tree
        for name, tree in modules().items()
        if name.startswith("dbt_project/")
    }
    known = frozenset(trees)
    graph = {m: sorted(_imports_of(m, t, known) & set(trees) - {m}) for m, t in trees.items()}

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


def _reads_environment(tree: ast.Module) -> bool:
    """``os.environ``/``os.getenv`` in any form: attribute, ``from os import ...``."""
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and node.attr in ("environ", "getenv", "environb", "putenv")
            and isinstance(node.value, ast.Name)
            and node.value.id == "os"
        ):
            return True
        if (
            isinstance(node, ast.ImportFrom)
            and node.module == "os"
            and {a.name for a in node.names} & {"environ", "getenv", "environb", "putenv"}
        ):
            return True
    return False


def test_only_the_settings_module_reads_the_environment():
    readers = {name for name, tree in modules().items() if _reads_environment(tree)}
    assert readers <= READS_ENVIRONMENT, sorted(readers - READS_ENVIRONMENT)


def test_the_environment_check_sees_every_way_of_reading_it():
    """The check above is only as good as what it recognises."""
    for source in (
        "import os\nos.environ['X']",
        "import os\nos.getenv('X')",
        "from os import environ\nenviron['X']",
        "from os import getenv",
    ):
        assert _reads_environment(ast.parse(source)), source
    assert not _reads_environment(ast.parse("import os\nos.path.join('a')"))


# The one reader of the wall clock; durations (time.perf_counter, time.monotonic) are not.
READS_THE_CLOCK = {"dbt_project/facts/business_calendar.py"}


def _reads_the_clock(tree: ast.Module) -> bool:
    """``datetime.now()``, ``date.today()``, ``time.time()`` in any spelling, or
    ``utc_now`` imported by name (a monkeypatch of the module would miss that copy)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            owner = node.value
            name = owner.id if isinstance(owner, ast.Name) else getattr(owner, "attr", None)
            if (name, node.attr) in {
                ("datetime", "now"),
                ("datetime", "utcnow"),
                ("datetime", "today"),
                ("date", "today"),
                ("time", "time"),
            }:
                return True
        if (
            isinstance(node, ast.ImportFrom)
            and (node.module or "").endswith("business_calendar")
            and any(a.name == "utc_now" for a in node.names)
        ):
            return True
    return False


def test_every_caller_reads_the_clock_through_the_business_calendar():
    readers = {name for name, tree in modules().items() if _reads_the_clock(tree)}
    assert readers == READS_THE_CLOCK


def test_the_clock_check_sees_every_way_of_reading_it():
    for source in (
        "from datetime import datetime\ndatetime.now()",
        "import datetime as dt\ndt.datetime.now(dt.UTC)",
        "from datetime import date\ndate.today()",
        "import time\ntime.time()",
        "from dbt_project.facts.business_calendar import utc_now",
    ):
        assert _reads_the_clock(ast.parse(source)), source
    assert not _reads_the_clock(ast.parse("import time\ntime.perf_counter()"))
    assert not _reads_the_clock(ast.parse("from dbt_project.facts import business_calendar"))


def test_the_package_is_in_folders_by_concern():
    top = sorted(p.name for p in (ROOT / "dbt_project").glob("*.py") if p.name != "__init__.py")
    assert len(top) <= MAX_TOP_LEVEL_MODULES, top
    for folder in (ROOT / "dbt_project").iterdir():
        if folder.is_dir() and folder.name != "__pycache__":
            assert (folder / "__init__.py").is_file(), f"{folder.name}/ is not a package"
    assert (ROOT / "dbt_project" / "README.md").is_file(), "the package's map"


def _absolute_imports(name: str, tree: ast.Module) -> set[str]:
    module = name.removesuffix(".py").replace("/", ".").removesuffix(".__init__")
    return _imports_of(module, tree)


def _stdlib(name: str) -> bool:
    return name.split(".")[0] in sys.stdlib_module_names or name == "__future__"


def test_the_cdk_app_imports_only_the_facts_of_the_package():
    reached = {}
    for name, tree in modules().items():
        if not name.startswith("infra/") or name.startswith(PACKAGING):
            continue
        wrong = {
            i
            for i in _absolute_imports(name, tree)
            if i.startswith("dbt_project")
            and i != "dbt_project"
            and not (i == FACTS or i.startswith(FACTS + "."))
        }
        if wrong:
            reached[name] = sorted(wrong)
    assert not reached, reached


def test_the_facts_import_only_the_standard_library():
    outside = {}
    for name, tree in modules().items():
        if not name.startswith("dbt_project/facts/"):
            continue
        wrong = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                wrong |= {a.name for a in node.names if not _stdlib(a.name)}
            elif (
                isinstance(node, ast.ImportFrom)
                and node.module
                and not (_stdlib(node.module) or node.module.startswith(FACTS))
            ):
                wrong.add(node.module)
        if wrong:
            outside[name] = sorted(wrong)
    assert not outside, outside


def test_the_import_rules_catch_a_breach():
    """A control for the two rules above: a construct that imports the contracts, and a
    fact that imports a third-party package, are both seen."""
    construct = ast.parse("from dbt_project.contract.tables import contract")
    assert _absolute_imports("infra/constructs/x.py", construct) & {"dbt_project.contract.tables"}
    fact = ast.parse("import yaml")
    assert not all(
        _stdlib(a.name) for n in ast.walk(fact) if isinstance(n, ast.Import) for a in n.names
    )


def test_dbt_var_defaults_are_the_python_definitions():
    """dbt cannot import Python: its var defaults must equal the one definition."""
    project = yaml.safe_load((ROOT / "dbt_project.yml").read_text(encoding="utf-8"))
    assert project["vars"]["business_timezone"] == business_calendar.BUSINESS_TIMEZONE
    assert project["vars"]["lookback_days"] == business_calendar.DEFAULT_LOOKBACK_DAYS
    skew = business_calendar.CLOCK_SKEW
    assert project["vars"]["clock_skew_minutes"] * 60 == skew.total_seconds()


def test_the_stage_layout_is_spelled_in_one_place():
    """No module repeats the stage prefix or the manifest name as a string literal."""
    literals = {layout.DATA_PREFIX, layout.MANIFEST_NAME}
    repeated = set()
    for name, tree in modules().items():
        if name == "dbt_project/facts/stage_layout.py":
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and node.value in literals:
                repeated.add(f"{name}:{node.lineno}")
    assert not repeated, sorted(repeated)
