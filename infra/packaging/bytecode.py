"""Bytecode for the layers.

Lambda mounts layers read-only under /opt, where Python cannot cache what it compiles:
a layer without ``.pyc`` files makes every cold start compile each module it imports
from source. For the imports of a night (the package, dbt and what dbt imports) that
is about 3 s instead of 1.1-1.2 s (bench case 8). So the layers ship
``__pycache__`` compiled by a Python of the runtime's version, in unchecked-hash mode
(a layer never changes, and unzipping does not keep modification times).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

_VERSION = "import sys; print('%d.%d' % sys.version_info[:2])"


def _version_of(executable: str) -> str | None:
    try:
        done = subprocess.run(
            [executable, "-c", _VERSION], capture_output=True, text=True, timeout=60, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip()


class WrongInterpreter(ValueError):
    """The Python named to compile with is not one of the runtime's version."""


def interpreter_for(python_version: str, given: str | None = None) -> str | None:
    """A Python of ``python_version`` to compile with: ``given``, which must be one,
    else this Python, ``python<version>`` on PATH or a pyenv install; None when there
    is none."""
    if given:
        found = _version_of(given)
        if found != python_version:
            what = f"is Python {found}" if found else "does not run as a Python"
            raise WrongInterpreter(
                f"--compile-with {given} {what}; the functions run Python {python_version}. "
                f"Pass a Python {python_version}, or leave the option out."
            )
        return given
    pyenv = sorted(Path.home().glob(f".pyenv/versions/{python_version}.*/bin/python3"))
    candidates = [sys.executable, shutil.which(f"python{python_version}"), *map(str, pyenv)]
    return next((c for c in candidates if c and _version_of(c) == python_version), None)


def compile_tree(root: Path, interpreter: str) -> None:
    """Write ``__pycache__`` for every module below ``root`` with ``interpreter``."""
    subprocess.run(
        [interpreter, "-m", "compileall", "-q", "-j", "0", "--invalidation-mode", "unchecked-hash"]
        + [str(root)],
        check=True,
        stdout=subprocess.DEVNULL,
    )


def missing_message(python_version: str) -> str:
    return (
        f"no Python {python_version} to compile the layers with: they carry sources only, "
        f"and every cold start compiles what it imports (about 2 s). Install Python "
        f"{python_version} (the functions' runtime) or pass --compile-with PATH, then rebuild."
    )
