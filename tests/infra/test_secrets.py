"""Who can read a secret: the Secrets Manager endpoint carries reads of this stack's
secrets only, and the master secrets' own policies refuse their value to everyone but
the initializer (and a break-glass role the deployment names)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from infra.app import build_app

from .conftest import BREAK_GLASS_ROLE_ARN, cdk_json_context
from .test_stack import resources, role_arn

SECRET_READS = ["secretsmanager:DescribeSecret", "secretsmanager:GetSecretValue"]
RDS_SERVICE_ROLE = ":role/aws-service-role/rds.amazonaws.com/AWSServiceRoleForRDS"
THIS_ACCOUNT = {"StringEquals": {"aws:PrincipalAccount": {"Ref": "AWS::AccountId"}}}


def secrets_endpoint(raw: dict[str, Any]) -> dict[str, Any]:
    (endpoint,) = [
        e["Properties"]
        for e in resources(raw, "AWS::EC2::VPCEndpoint").values()
        if ".secretsmanager" in json.dumps(e["Properties"]["ServiceName"])
    ]
    return endpoint


def master_secret_arn(raw: dict[str, Any], kind: str, prefix: str) -> dict[str, Any]:
    (database_id,) = [k for k in resources(raw, kind) if k.startswith(prefix)]
    return {"Fn::GetAtt": [database_id, "MasterUserSecret.SecretArn"]}


def stack_secrets(raw: dict[str, Any]) -> list[dict[str, Any]]:
    """The two RDS-managed master secrets and the reader login's secret."""
    (reader_id,) = resources(raw, "AWS::SecretsManager::Secret")
    return [
        master_secret_arn(raw, "AWS::RDS::DBInstance", "DatabasesSource"),
        master_secret_arn(raw, "AWS::RDS::DBCluster", "DatabasesTarget"),
        {"Ref": reader_id},
    ]


def test_the_secrets_manager_endpoint_carries_reads_of_this_stacks_secrets_only(learning):
    raw = learning.raw
    statements = secrets_endpoint(raw)["PolicyDocument"]["Statement"]
    for statement in statements:
        assert statement["Effect"] == "Allow"
        assert statement["Principal"] == {"AWS": "*"}
        assert sorted(statement["Action"]) == SECRET_READS
        # by principals of this account only
        assert statement["Condition"] == THIS_ACCOUNT
    assert [s["Resource"] for s in statements] == stack_secrets(raw)


def master_secret_policies(raw: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The resource policies of the master secrets, by the database they belong to."""
    found = {}
    for policy in resources(raw, "AWS::SecretsManager::ResourcePolicy").values():
        database_id, attribute = policy["Properties"]["SecretId"]["Fn::GetAtt"]
        assert attribute == "MasterUserSecret.SecretArn"
        found[database_id.removeprefix("Databases")[:6]] = policy["Properties"]["ResourcePolicy"]
    return found


@pytest.mark.parametrize("setup", ["learning", "kept"])
def test_only_the_initializer_may_read_a_master_password(setup, request):
    raw = request.getfixturevalue(setup).raw
    policies = master_secret_policies(raw)
    assert set(policies) == {"Source", "Target"}
    initializer = role_arn(raw, "FunctionsDbInitializerRole")
    for policy in policies.values():
        (deny,) = policy["Statement"]
        assert deny["Effect"] == "Deny"
        assert deny["Principal"] == {"AWS": "*"}, "every principal, the account's own included"
        assert deny["Action"] == "secretsmanager:GetSecretValue"
        assert deny["Resource"] == "*"
        exempt = deny["Condition"]["ArnNotEquals"]["aws:PrincipalArn"]
        # The initializer, and RDS's own role that rotates the password; nobody else.
        assert len(exempt) == 2 and exempt[0] == initializer
        assert exempt[1]["Fn::Join"][1][-1] == RDS_SERVICE_ROLE
        assert deny["Condition"]["Bool"] == {"aws:PrincipalIsAWSService": "false"}


def test_a_break_glass_role_named_by_context_may_read_them_too(reserved):
    raw = reserved.raw
    for policy in master_secret_policies(raw).values():
        (deny,) = policy["Statement"]
        exempt = deny["Condition"]["ArnNotEquals"]["aws:PrincipalArn"]
        assert exempt[0] == role_arn(raw, "FunctionsDbInitializerRole")
        assert exempt[1] == BREAK_GLASS_ROLE_ARN
        assert len(exempt) == 3
    # The endpoint does not change: the break-glass role reads from outside the VPC.
    assert [s["Resource"] for s in secrets_endpoint(raw)["PolicyDocument"]["Statement"]] == (
        stack_secrets(raw)
    )


@pytest.mark.parametrize("value", ["ops-admin", "arn:aws:iam::123456789012:user/alice"])
def test_a_break_glass_value_that_is_not_a_role_arn_is_refused(value, base_context, tmp_path):
    context = {**cdk_json_context(), **base_context, "break_glass_role_arn": value}
    with pytest.raises(ValueError, match="break_glass_role_arn"):
        build_app(context, outdir=str(tmp_path))
