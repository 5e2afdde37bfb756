"""Logs that outlive a night: every function's logs, CDK's helpers' included, and the
databases' audit trail, all kept as long as the functions' logs."""

from __future__ import annotations

import json
from typing import Any

import pytest
from aws_cdk import App, Environment, RemovalPolicy, Stack
from cdk_nag import AwsSolutionsChecks

from infra.constructs.databases import Databases
from infra.constructs.network import Network

from .test_stack import etl_functions, resources

KINDS = {
    "instance": ("AWS::RDS::DBInstance", "DatabasesSource", "DBParameterGroupName"),
    "cluster": ("AWS::RDS::DBCluster", "DatabasesTarget", "DBClusterParameterGroupName"),
}


def database(raw: dict[str, Any], kind: str) -> tuple[str, dict[str, Any]]:
    resource_type, prefix, _ = KINDS[kind]
    (found,) = [
        (k, v["Properties"])
        for k, v in resources(raw, resource_type).items()
        if k.startswith(prefix) and not k.startswith(f"{prefix}Writer")
    ]
    return found


def parameters(raw: dict[str, Any], kind: str) -> dict[str, str]:
    """The parameters of the group the database itself names."""
    _, properties = database(raw, kind)
    group_id = properties[KINDS[kind][2]]["Ref"]
    return raw["Resources"][group_id]["Properties"]["Parameters"]


def functions_retention(raw: dict[str, Any]) -> int:
    """The retention in days of the log groups the three ETL functions log to."""
    (days,) = {
        raw["Resources"][f["LoggingConfig"]["LogGroup"]["Ref"]]["Properties"]["RetentionInDays"]
        for f in etl_functions(raw).values()
    }
    return days


@pytest.mark.parametrize("kind", list(KINDS))
def test_each_database_exports_its_postgresql_log(learning, kind):
    _, properties = database(learning.raw, kind)
    assert properties["EnableCloudwatchLogsExports"] == ["postgresql"]


@pytest.mark.parametrize("kind", list(KINDS))
def test_each_database_logs_sessions_and_ddl_and_role_statements_with_pgaudit(learning, kind):
    found = parameters(learning.raw, kind)
    assert found["log_connections"] == "1"
    assert found["log_disconnections"] == "1"
    libraries = found["shared_preload_libraries"].split(",")
    # pgaudit loaded; the engines' default library kept
    assert {"pgaudit", "pg_stat_statements"} <= set(libraries)
    assert {"ddl", "role"} <= set(found["pgaudit.log"].split(","))
    # never the values bound to a statement
    assert found["pgaudit.log_parameter"] == "0"
    assert found["rds.force_ssl"] == "1"


@pytest.mark.parametrize(("setup", "removal"), [("learning", "destroy"), ("kept", "retain")])
def test_the_exported_logs_are_kept_as_long_as_the_functions_logs(setup, removal, request):
    raw = request.getfixturevalue(setup).raw
    kept = {
        json.dumps(r["Properties"]["LogGroupName"], sort_keys=True): r["Properties"]
        for r in resources(raw, "Custom::LogRetention").values()
    }
    for kind in KINDS:
        database_id, _ = database(raw, kind)
        # where RDS exports it: /aws/rds/<kind>/<identifier>/postgresql
        name = {"Fn::Join": ["", [f"/aws/rds/{kind}/", {"Ref": database_id}, "/postgresql"]]}
        properties = kept[json.dumps(name, sort_keys=True)]
        assert properties["RetentionInDays"] == functions_retention(raw) == 30
        # deleted with the learning setup, kept with the kept one
        assert properties["RemovalPolicy"] == removal


@pytest.mark.parametrize(("setup", "deletion"), [("learning", "Delete"), ("kept", "Retain")])
def test_every_function_logs_to_a_group_of_the_stack_with_its_retention(setup, deletion, request):
    """CDK's own helpers included (default security group, bucket emptying and
    notifications, log retention, the S3 prefix-list lookup, the provider framework):
    left alone they log to /aws/lambda/<name>, a group that never expires."""
    raw = request.getfixturevalue(setup).raw
    functions = resources(raw, "AWS::Lambda::Function")
    assert len(functions) >= 8, "the three ETL functions and CDK's helpers"
    retention = functions_retention(raw)
    for logical_id, function in functions.items():
        group = function["Properties"].get("LoggingConfig", {}).get("LogGroup")
        assert group is not None, f"{logical_id} logs to a group that never expires"
        log_group = raw["Resources"][group["Ref"]]
        assert log_group["Type"] == "AWS::Logs::LogGroup"
        assert log_group["Properties"]["RetentionInDays"] == retention, logical_id
        assert log_group["DeletionPolicy"] == deletion, logical_id


@pytest.mark.parametrize("region", [None, "ap-northeast-1"])
def test_the_log_retention_handler_is_acknowledged_in_a_known_region_too(region):
    """`npx aws-cdk@2 synth` passes the deploying profile's region: the handler's grant
    then names it, and so must the acknowledgment (the session's syntheses leave it a
    token). The network and the databases alone, in a bare stack."""
    stack = Stack(App(), "Bare", env=Environment(region=region))
    network = Network(stack, "Network", removal_policy=RemovalPolicy.DESTROY)
    Databases(
        stack,
        "Databases",
        vpc=network.vpc,
        subnets=network.subnets,
        retain=False,
        target_max_capacity=2,
    )
    findings = AwsSolutionsChecks().validate_scope(stack.node.root).violations
    about_logs = [
        f.rule_name
        for f in findings
        if "LogRetention" in json.dumps([r.construct_path for r in f.violating_resources])
    ]
    assert about_logs == []
