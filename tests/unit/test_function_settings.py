"""The connection settings each function builds from the environment the stack gives it:
its own login, and verify-full against the bundled CA, for its sessions and dbt's."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from dbt_project.aws import resources
from dbt_project.facts.names import DBNAME_VARIABLES
from dbt_project.facts.roles import EXTRACT_LOGIN, LOAD_LOGIN
from dbt_project.postgres.connection import PgSettings
from dbt_project.settings import SessionLimits, Settings
from infra import lambda_defaults as defaults
from tests.lambda_helpers import StandInTokens, deployed_environments

DATABASES = {
    "SOURCE": PgSettings("shop.abc.ap-northeast-1.rds.amazonaws.com", 5432, "shop", "x"),
    "ANALYTICS": PgSettings("analytics.cluster-abc.rds.amazonaws.com", 5432, "analytics", "x"),
}
ARNS = {prefix: f"arn:aws:secretsmanager:ap-northeast-1:1:secret:{prefix}" for prefix in DATABASES}
MASTER = {"username": "postgres", "password": "master-password"}


@pytest.fixture
def function_settings(monkeypatch):
    """``settings(function, prefix)``: the PgSettings that function's pipeline connects
    with, resolved from its stack environment (tokens and secrets stood in for)."""
    from aws_lambda_powertools.utilities import parameters

    StandInTokens({EXTRACT_LOGIN: "token", LOAD_LOGIN: "token"}).install(monkeypatch)
    monkeypatch.setattr(parameters, "get_secret", lambda arn, **kwargs: MASTER)
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_REGION": "ap-northeast-1",
    }.items():
        monkeypatch.setenv(name, value)
    resources.reset()
    environments = deployed_environments(DATABASES, ARNS, "stage-bucket")

    def settings(function: str, prefix: str) -> PgSettings:
        environment = {**environments[function], "AWS_REGION": "ap-northeast-1"}
        return resources.database(Settings.from_env(environment), prefix).settings

    yield settings
    resources.reset()


@pytest.mark.parametrize(
    ("function", "prefix", "user"),
    [
        ("extract", "SOURCE", EXTRACT_LOGIN),
        ("load", "ANALYTICS", LOAD_LOGIN),
        ("db_initializer", "SOURCE", "postgres"),
        ("db_initializer", "ANALYTICS", "postgres"),
    ],
)
def test_each_function_connects_as_its_login_over_verify_full(
    function_settings, function, prefix, user
):
    settings = function_settings(function, prefix)
    assert (settings.user, settings.host) == (user, DATABASES[prefix].host)
    assert settings.sslmode == "verify-full"
    assert settings.sslrootcert == defaults.RDS_CA_BUNDLE_PATH
    # dbt's sessions get the same: profiles.yml reads these
    dbt = settings.dbt_env("source")
    assert dbt["ETL_PG_SSLMODE"] == "verify-full"
    assert dbt["ETL_PG_SSLROOTCERT"] == defaults.RDS_CA_BUNDLE_PATH
    assert "role=" not in (settings.options(SessionLimits()) or "")


def test_only_the_initializer_reads_a_secret(function_settings):
    environments = deployed_environments(DATABASES, ARNS, "stage-bucket")
    secrets = {
        name: sorted(key for key in environment if key.endswith("_DB_SECRET_ARN"))
        for name, environment in environments.items()
    }
    assert secrets == {
        "extract": [],
        "load": [],
        "db_initializer": ["ANALYTICS_DB_SECRET_ARN", "SOURCE_DB_SECRET_ARN"],
    }


def test_each_dbt_target_reads_its_database_name_from_the_variable_the_pipeline_sets():
    profile = yaml.safe_load((Path(__file__).resolve().parents[2] / "profiles.yml").read_text())
    outputs = profile["shop"]["outputs"]
    assert set(outputs) == set(DBNAME_VARIABLES)
    for target, variable in DBNAME_VARIABLES.items():
        dbname = outputs[target]["dbname"]
        assert dbname.startswith("{{ env_var('" + variable + "'"), (target, dbname)
        assert variable in PgSettings("h", 5432, "db", "u").dbt_env(target)
    # the two sides never share a variable, so one shell's exports reach both
    assert outputs["analytics"]["dbname"] != outputs["source"]["dbname"]


def test_the_project_reads_of_the_profile_only_the_target_s_name():
    # What a parse is kept by (dbt_project/dbt_runner/parse_cache.py): the target and the
    # vars. No model, macro or test reads a connection setting, nor the environment.
    root = Path(__file__).resolve().parents[2]
    files = [root / "dbt_project.yml", root / "selectors.yml"]
    for folder in ("models", "macros", "data-tests", "seeds", "analyses", "snapshots"):
        files += [p for p in (root / folder).rglob("*") if p.suffix in {".sql", ".yml", ".md"}]
    read = {}
    for path in files:
        text = path.read_text()
        assert "env_var(" not in text, f"{path.relative_to(root)} reads the environment"
        for attribute in re.findall(r"\btarget\.(\w+)", text):
            read.setdefault(attribute, []).append(path.name)
    assert set(read) == {"name"}, read
