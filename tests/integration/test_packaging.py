"""The project as pip installs it, not as the checkout holds it: a non-editable install
finds every sub-package, `etl --help` runs, and every module imports with only the
project's declared dependencies beside it (a hand-kept package list, or a dependency
that only the dev extras bring, would pass in the checkout and fail there)."""

from __future__ import annotations

import importlib.metadata as metadata
import os
import shutil
import subprocess
import sys
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
DISTRIBUTION = "shop-etl"
_BUILD_LEFTOVERS = shutil.ignore_patterns("__pycache__", "*.pyc")

# Run with no site-packages (-S): only the install and the dependencies on PYTHONPATH.
_IMPORT_EVERY_MODULE = """
import importlib, pathlib, sys
import dbt_project
package = pathlib.Path(dbt_project.__file__).parent
assert str(package).startswith(sys.argv[1]), f"imported from {package}"
parts = [p.relative_to(package).with_suffix("").parts for p in package.rglob("*.py")]
modules = sorted(
    ".".join(("dbt_project", *part)).removesuffix(".__init__")
    for part in parts
    if part[-1] != "__main__"
)
for name in modules:
    importlib.import_module(name)
print(len(modules))
"""


def _closure(name: str, extras: frozenset[str] = frozenset()) -> set[str]:
    """``name`` and every distribution its requirements (with ``extras``) pull in."""
    found: set[str] = set()
    pending = [(name, extras)]
    while pending:
        current, wanted = pending.pop()
        key = (canonicalize_name(current), wanted)
        if key in found:
            continue
        found.add(key)
        for line in metadata.distribution(current).requires or []:
            requirement = Requirement(line)
            markers = [{"extra": extra} for extra in (*wanted, "")]
            if requirement.marker is None or any(
                requirement.marker.evaluate(environment) for environment in markers
            ):
                pending.append((requirement.name, frozenset(requirement.extras)))
    return {dist for dist, _ in found}


def _declared_site(site: Path) -> Path:
    """A site-packages holding only the project's runtime dependencies (links into this
    environment's), as a fresh virtualenv with `pip install .` would."""
    site.mkdir()
    dependencies = _closure(DISTRIBUTION) - {canonicalize_name(DISTRIBUTION)}
    for name in dependencies:
        distribution = metadata.distribution(name)
        for top in {file.parts[0] for file in distribution.files or []}:
            if top.endswith((".dist-info", ".pth")) or top in ("..", "__pycache__"):
                continue
            target = Path(distribution.locate_file(top))
            if target.exists() and not (site / top).exists():
                (site / top).symlink_to(target)
    return site


def test_a_non_editable_install_runs_etl_and_imports_every_module(tmp_path):
    # given the project built from a copy of its sources (a build in the checkout would
    # reuse build/lib) and installed as a wheel, not linked to the checkout
    source = tmp_path / "source"
    shutil.copytree(ROOT / "dbt_project", source / "dbt_project", ignore=_BUILD_LEFTOVERS)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    installed = tmp_path / "installed"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation"]
        + ["--target", str(installed), str(source)],
        check=True,
        capture_output=True,
    )
    site = _declared_site(tmp_path / "site")
    env = {
        **os.environ,
        "PYTHONPATH": f"{installed}{os.pathsep}{site}",
        "PYTHONNOUSERSITE": "1",
    }
    python = [sys.executable, "-S"]

    # when the command and every module run from the install, outside the checkout
    help_text = subprocess.run(
        [*python, str(installed / "bin" / "etl"), "--help"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    imported = subprocess.run(
        [*python, "-c", _IMPORT_EVERY_MODULE, str(installed)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )

    # then both work, and every module of the checkout's package was in the install
    assert help_text.startswith("usage: etl"), help_text
    assert imported.returncode == 0, imported.stderr[-2000:]
    in_checkout = [p for p in (ROOT / "dbt_project").rglob("*.py") if p.name != "__main__.py"]
    assert int(imported.stdout) == len(in_checkout)
