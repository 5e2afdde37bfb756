"""What a user drives on AWS, in the template: the log groups they tail, a first deployment
on a new account, the upgrade each deployment runs, the example queries through the Data
API, and the lineage site (the history load: tests/infra/test_reprocess.py)."""

from __future__ import annotations

import json
import re
import shutil
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aws_cdk import Duration

from dbt_project.facts.names import DEPLOY_STAMP_PROPERTY, REPROCESS_PROPERTY
from dbt_project.facts.roles import READER_ROLE
from dbt_project.facts.stage_layout import DOCS_KEY, DOCS_PREFIX
from infra.constructs.analytics_upgrade import FRAMEWORK_TIMEOUT, RESOURCE_TYPE

from .conftest import cdk_json_context, synthesize
from .test_stack import (
    SPECS,
    as_list,
    docs_object_arn,
    docs_objects_arn,
    docs_page_arns,
    etl_functions,
    logical_id_of,
    policy_statements,
    resources,
    role_arn,
    stage_bucket_id,
    stage_objects_arn,
    stage_policy_statements,
)


def by_prefix(raw: dict[str, Any], kind: str, prefix: str) -> tuple[str, dict[str, Any]]:
    (found,) = [(k, v) for k, v in resources(raw, kind).items() if k.startswith(prefix)]
    return found


def grants_of(raw: dict[str, Any], role_prefix: str) -> dict[str, list[Any]]:
    found: dict[str, list[Any]] = {}
    for logical_id, statement in policy_statements(raw):
        if logical_id.startswith(role_prefix) and statement["Effect"] == "Allow":
            for action in as_list(statement["Action"]):
                found.setdefault(action, []).extend(as_list(statement["Resource"]))
    return found


# --- log groups where Lambda users look ----------------------------------------------


def test_each_function_logs_to_aws_lambda_its_name_kept_as_the_stack_says(learning, kept):
    for setup, deletion in ((learning, "Delete"), (kept, "Retain")):
        raw = setup.raw
        groups = resources(raw, "AWS::Logs::LogGroup")
        for name, function in etl_functions(raw).items():
            # Named from the stack, so the log group can be named without a reference back.
            assert function["FunctionName"] == f"ShopEtl-{name.replace('_', '-')}"
            group_id = function["LoggingConfig"]["LogGroup"]["Ref"]
            group = groups[group_id]
            assert group["Properties"]["LogGroupName"] == f"/aws/lambda/{function['FunctionName']}"
            assert group["Properties"]["RetentionInDays"] == 30
            assert group["DeletionPolicy"] == deletion
    outputs = learning.raw["Outputs"]
    extract_group = etl_functions(learning.raw)["extract"]["LoggingConfig"]["LogGroup"]
    assert outputs["ExtractLogGroupName"]["Value"] == extract_group


# --- concurrency: opt-in -------------------------------------------------------------


def test_reserved_concurrency_is_off_by_default_and_opt_in(learning, reserved):
    assert cdk_json_context()["reserved_concurrency"] is False
    for function in etl_functions(learning.raw).values():
        assert "ReservedConcurrentExecutions" not in function
    opted_in = etl_functions(reserved.raw)
    for name in ("extract", "load"):
        assert opted_in[name]["ReservedConcurrentExecutions"] == SPECS[name].reserved_concurrency
        assert SPECS[name].reserved_concurrency == 1
    assert "ReservedConcurrentExecutions" not in opted_in["db_initializer"]
    assert reserved.findings == [] and reserved.error is None


# --- the upgrade each deployment runs ------------------------------------------------


def upgrade(raw: dict[str, Any]) -> dict[str, Any]:
    (resource,) = resources(raw, RESOURCE_TYPE).values()
    return resource


def code_keys(raw: dict[str, Any]) -> dict[str, str]:
    """The asset keys (content hashes) of the layers and the functions' code."""
    layers = {
        name: by_prefix(raw, "AWS::Lambda::LayerVersion", f"Functions{name}")[1]["Properties"][
            "Content"
        ]["S3Key"]
        for name in ("DependenciesLayer", "CommonLayer")
    }
    functions = etl_functions(raw)
    return {
        **layers,
        "ExtractCode": functions["extract"]["Code"]["S3Key"],
        "LoadCode": functions["load"]["Code"]["S3Key"],
        "DbInitializerCode": functions["db_initializer"]["Code"]["S3Key"],
    }


def test_a_deployment_runs_the_initializer_after_the_databases_and_functions(learning):
    raw = learning.raw
    resource = upgrade(raw)
    functions = etl_functions(raw)
    initializer_id = logical_id_of(raw, functions["db_initializer"])
    # The provider framework's function invokes the initializer, and only it.
    framework_id = resource["Properties"]["ServiceToken"]["Fn::GetAtt"][0]
    framework = raw["Resources"][framework_id]["Properties"]
    assert framework["Environment"]["Variables"]["USER_ON_EVENT_FUNCTION_ARN"] == {
        "Fn::GetAtt": [initializer_id, "Arn"]
    }
    # It runs once both databases (the writer instance too) and every function, with its
    # role's grants, exist.
    needed = {
        by_prefix(raw, "AWS::RDS::DBInstance", "DatabasesSource")[0],
        by_prefix(raw, "AWS::RDS::DBCluster", "DatabasesTarget")[0],
        by_prefix(raw, "AWS::RDS::DBInstance", "DatabasesTargetWriter")[0],
        by_prefix(raw, "AWS::SecretsManager::Secret", "DatabasesReaderSecret")[0],
        *(logical_id_of(raw, function) for function in functions.values()),
        by_prefix(raw, "AWS::IAM::Policy", "FunctionsDbInitializerRoleDefaultPolicy")[0],
    }
    assert needed <= set(resource["DependsOn"])
    # The handler ends before the framework's function, which waits for it, times out.
    assert framework["Timeout"] == FRAMEWORK_TIMEOUT.to_seconds()
    assert functions["db_initializer"]["Timeout"] < framework["Timeout"]
    assert SPECS["db_initializer"].timeout.to_seconds() < FRAMEWORK_TIMEOUT.to_seconds()
    assert int(resource["Properties"]["ServiceTimeout"]) <= Duration.hours(1).to_seconds()


def test_its_properties_are_the_code_hashes_and_the_databases(learning):
    raw = learning.raw
    properties = upgrade(raw)["Properties"]
    keys = code_keys(raw)
    assert {k: properties[k] for k in keys} == keys
    assert all(key.endswith(".zip") and len(key) == 64 + 4 for key in keys.values())
    assert properties["SourceDbHost"]["Fn::GetAtt"][1] == "Endpoint.Address"
    assert properties["TargetDbHost"]["Fn::GetAtt"][1] == "Endpoint.Address"
    assert set(properties) == {
        "ServiceToken",
        "ServiceTimeout",
        *keys,
        "SourceDbHost",
        "TargetDbHost",
        REPROCESS_PROPERTY,
        DEPLOY_STAMP_PROPERTY,
    }


def test_a_context_flag_turns_the_reprocessing_of_changed_marts_off(learning, reserved):
    # the initializer reads it from the custom resource's event (dbt_project.aws.events)
    assert upgrade(learning.raw)["Properties"][REPROCESS_PROPERTY] == "true"
    assert upgrade(reserved.raw)["Properties"][REPROCESS_PROPERTY] == "false"


def test_its_stamp_says_when_the_template_was_made_so_a_rollback_is_told_apart(learning):
    """The initializer answers an Update whose versions it applied before under a newer
    stamp (CloudFormation replaying the previous template) without work
    (tests/integration/test_initializer.py); the stamp is the synthesis's UTC time."""
    stamp = upgrade(learning.raw)["Properties"][DEPLOY_STAMP_PROPERTY]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", stamp), stamp
    made = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    assert timedelta(0) <= datetime.now(UTC) - made < timedelta(hours=6)


def test_a_code_change_changes_the_properties_so_the_upgrade_runs_again(
    learning, base_context, code_root, cdk_out, tmp_path
):
    # given the functions' code with one handler changed
    changed = tmp_path / "lambdas"
    shutil.copytree(code_root, changed, ignore=shutil.ignore_patterns("__pycache__"))
    handler = changed / "db_initializer" / "handler.py"
    handler.write_text(handler.read_text() + "\n# changed\n")

    after = synthesize({**base_context, "lambdas_dir": str(changed)}, cdk_out)

    before_properties = upgrade(learning.raw)["Properties"]
    after_properties = upgrade(after.raw)["Properties"]
    assert after_properties["DbInitializerCode"] != before_properties["DbInitializerCode"]
    for unchanged in ("ExtractCode", "LoadCode"):
        assert after_properties[unchanged] == before_properties[unchanged]
    # (The layers' keys follow the layers' content the same way: the previous test.)
    assert {k: after_properties[k] for k in code_keys(after.raw)} == code_keys(after.raw)


# --- the example queries through the RDS Data API ------------------------------------


def test_the_reader_login_queries_the_views_through_the_data_api(learning):
    raw = learning.raw
    _, cluster = by_prefix(raw, "AWS::RDS::DBCluster", "DatabasesTarget")
    assert cluster["Properties"]["EnableHttpEndpoint"] is True
    secret_id, secret = by_prefix(raw, "AWS::SecretsManager::Secret", "DatabasesReaderSecret")
    generated = secret["Properties"]["GenerateSecretString"]
    # The JSON the Data API reads: {"username": "etl_reader", "password": "<generated>"}.
    assert json.loads(generated["SecretStringTemplate"]) == {"username": READER_ROLE}
    assert generated["GenerateStringKey"] == "password"
    assert generated["PasswordLength"] >= 32
    assert "SecretString" not in secret["Properties"]
    # The initializer gives the login that password: it reads the secret, named by a variable.
    initializer = etl_functions(raw)["db_initializer"]
    assert initializer["Environment"]["Variables"]["READER_SECRET_ARN"] == {"Ref": secret_id}
    grants = grants_of(raw, "FunctionsDbInitializerRole")
    assert {"Ref": secret_id} in grants["secretsmanager:GetSecretValue"]
    for other in ("FunctionsExtractRole", "FunctionsLoadRole"):
        assert "secretsmanager:GetSecretValue" not in grants_of(raw, other)
    outputs = raw["Outputs"]
    cluster_id = by_prefix(raw, "AWS::RDS::DBCluster", "DatabasesTarget")[0]
    assert {"Ref": cluster_id} in outputs["ClusterArn"]["Value"]["Fn::Join"][1]
    assert ":cluster:" in outputs["ClusterArn"]["Value"]["Fn::Join"][1]
    assert outputs["ReaderSecretArn"]["Value"] == {"Ref": secret_id}
    assert outputs["DatabaseName"]["Value"] == "analytics"


# --- the lineage site ----------------------------------------------------------------


def test_the_load_may_publish_exactly_the_lineage_site_which_does_not_expire(learning):
    raw = learning.raw
    load = grants_of(raw, "FunctionsLoadRole")
    # the lineage site and the run-history page beside it, nothing else
    assert load["s3:PutObject"] == docs_page_arns(raw)
    assert docs_page_arns(raw)[0] == docs_object_arn(raw)
    assert docs_object_arn(raw)["Fn::Join"][1][1] == f"/{DOCS_KEY}"
    assert len(docs_page_arns(raw)) == 2
    extract = grants_of(raw, "FunctionsExtractRole")
    assert docs_object_arn(raw) not in extract["s3:PutObject"]
    # No rule expires docs/ (only its replaced versions go); nothing bucket-wide expires.
    bucket = raw["Resources"][stage_bucket_id(raw)]["Properties"]
    rules = bucket["LifecycleConfiguration"]["Rules"]
    for rule in rules:
        if rule.get("Prefix") in (None, DOCS_PREFIX):
            assert "ExpirationInDays" not in rule and "ExpirationDate" not in rule, rule
    assert any(
        rule.get("Prefix") == DOCS_PREFIX and "NoncurrentVersionExpiration" in rule
        for rule in rules
    )
    # The stage's write and delete denies cover etl-data/ only (the site has its own).
    for sid in (
        "StageFilesAreWrittenOnlyByTheExtract",
        "StageFilesAreDeletedOnlyByExpiryOrStackDeletion",
    ):
        assert stage_policy_statements(raw)[sid]["Resource"] == stage_objects_arn(raw)


@pytest.mark.parametrize("setup", ["learning", "kept"])
def test_only_the_load_role_may_write_under_docs(setup, request):
    """Nobody else, the account's administrators included, can replace the site a reader
    trusts, or put a page of their own beside it."""
    raw = request.getfixturevalue(setup).raw
    deny = stage_policy_statements(raw)["LineageSiteIsWrittenOnlyByTheLoad"]
    assert deny["Effect"] == "Deny"
    assert deny["Principal"] == {"AWS": "*"}
    assert set(as_list(deny["Action"])) == {
        "s3:PutObject",
        "s3:AbortMultipartUpload",
        "s3:ReplicateObject",
    }
    assert deny["Resource"] == docs_objects_arn(raw)
    assert deny["Condition"] == {
        "ArnNotEquals": {"aws:PrincipalArn": role_arn(raw, "FunctionsLoadRole")}
    }
