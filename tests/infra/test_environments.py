"""Environments side by side in one account: -c env=dev|staging|prod names the stack and
every name in it; no env is prod, with the names a stack had before environments.

Every physical name of the two templates is read from every resource's properties (a
property ending in Name or Identifier, at any depth, and the strings Fn::Join and
Fn::Sub build from them) and compared.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from dbt_project.facts import metric_names
from infra.app import build_app
from infra.environments import DEFAULT_STACK_NAME, EtlEnvironment

from .test_monitoring import custom_alarm, dashboard_metrics, etl_functions, resources

NAME_KEY = re.compile(r"(Name|Identifier)$")
# Properties ending so that name no resource of the account (each with why).
NOT_ACCOUNT_NAMES = {
    "ServiceName",  # the AWS service a VPC endpoint connects to
    "MetricName",  # a metric within a namespace; the namespaces are compared below
    "DBName",  # a database inside its instance
    "DatabaseName",  # a database inside its cluster
    "PolicyName",  # an inline policy, named within its role
    "DisplayName",  # a topic's label in e-mails, not an identifier
}
# The names a stack deployed before environments existed has, which no env keeps.
TODAYS_NAMES = {
    "/aws/lambda/ShopEtl-db-initializer",
    "/aws/lambda/ShopEtl-extract",
    "/aws/lambda/ShopEtl-load",
    "ShopEtl-all-names",
    "ShopEtl-aws-names",
    "ShopEtl-db-initializer",
    "ShopEtl-dns-egress",
    "ShopEtl-extract",
    "ShopEtl-load",
    "ShopEtl-reprocess",
    "/aws/vendedlogs/states/ShopEtl-reprocess",
}


def render(value: Any, stack_name: str, raw: dict[str, Any]) -> str:
    """A name as CloudFormation makes it: a resource it refers to, if not named here,
    gets a name CloudFormation generates from the stack's name and its logical id."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and len(value) == 1:
        ((function, argument),) = value.items()
        if function == "Ref" and argument.startswith("AWS::"):
            return f"${{{argument}}}"
        if function == "Ref":
            assert argument in raw["Resources"], argument
            return f"{stack_name}-{argument}-<generated>"
        if function == "Fn::GetAtt":
            return f"{stack_name}-{argument[0]}-<generated>.{argument[1]}"
        if function == "Fn::Join":
            separator, parts = argument
            return separator.join(render(part, stack_name, raw) for part in parts)
        if function == "Fn::Sub":
            text = argument if isinstance(argument, str) else argument[0]
            return re.sub(r"\$\{([^}]+)\}", lambda m: render({"Ref": m[1]}, stack_name, raw), text)
    raise AssertionError(f"a name this test cannot read: {value!r}")


def named(node: Any, path: str):
    """(path, value) of every name-like property under ``node``; a Name beside a Value
    is a setting (a metric's dimension, a notification's filter rule), not a name."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key.startswith("Fn::") or key == "Ref":
                continue
            if NAME_KEY.search(key) and key not in NOT_ACCOUNT_NAMES and "Value" not in node:
                yield f"{path}.{key}", value
            yield from named(value, f"{path}.{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from named(value, f"{path}[{index}]")


def physical_names(setup) -> dict[str, str]:
    """Every name the template gives a resource, by where it is, and the stack's name."""
    raw, stack_name = setup.raw, setup.stack.stack_name
    found = {"stack": stack_name}
    for logical_id, resource in raw["Resources"].items():
        for path, value in named(resource.get("Properties", {}), logical_id):
            found[path] = render(value, stack_name, raw)
    for output_id, output in raw.get("Outputs", {}).items():
        if "Export" in output:
            found[f"Outputs.{output_id}"] = render(output["Export"]["Name"], stack_name, raw)
    return found


def test_two_environments_share_no_physical_name(learning, staging):
    prod, other = physical_names(learning), physical_names(staging)
    # the walk reads the names it should: fixed ones and generated ones
    assert {"ShopEtl-extract", "/aws/lambda/ShopEtl-extract", "ShopEtl-dns-egress"} <= set(
        prod.values()
    )
    assert "ShopEtl-staging-alerts" in other.values()
    # no name of one environment is a name of the other
    shared = set(prod.values()) & set(other.values())
    assert not shared, {path: name for path, name in other.items() if name in shared}


def test_no_env_keeps_todays_names_and_prod_is_the_same(learning):
    # -c env=prod is the environment of no -c env at all
    prod = EtlEnvironment("prod")
    assert prod == EtlEnvironment() and prod.suffix == ""
    assert prod.metrics_namespace == metric_names.NAMESPACE and prod.runs_nightly
    names = set(physical_names(learning).values())
    assert learning.stack.stack_name == prod.stack_name == DEFAULT_STACK_NAME
    assert {n for n in names if "<generated>" not in n and "${" not in n} == {
        DEFAULT_STACK_NAME,
        *TODAYS_NAMES,
    }


def test_each_environment_reads_and_writes_its_own_metrics(learning, staging):
    for setup, namespace in ((learning, "ShopEtl"), (staging, "ShopEtl-staging")):
        raw = setup.raw
        for function in etl_functions(raw).values():
            assert function["Environment"]["Variables"]["POWERTOOLS_METRICS_NAMESPACE"] == namespace
        alarms = resources(raw, "AWS::CloudWatch::Alarm").values()
        custom = {a["Properties"]["Namespace"] for a in alarms} - {"AWS/Lambda", "AWS/SQS"}
        assert custom == {namespace}
        on_dashboard = {m[0] for m in dashboard_metrics(raw) if not m[0].startswith("AWS/")}
        assert on_dashboard == {namespace}


def test_staging_leaves_the_schedule_off_and_expects_no_nightly_heartbeat(learning, staging):
    (prod_schedule,) = resources(learning.raw, "AWS::Scheduler::Schedule").values()
    (staging_schedule,) = resources(staging.raw, "AWS::Scheduler::Schedule").values()
    assert prod_schedule["Properties"]["State"] == "ENABLED"
    assert staging_schedule["Properties"]["State"] == "DISABLED"
    assert custom_alarm(learning.raw, metric_names.NIGHTS_LOADED)
    staging_alarms = resources(staging.raw, "AWS::CloudWatch::Alarm").values()
    assert metric_names.NIGHTS_LOADED not in {a["Properties"]["MetricName"] for a in staging_alarms}
    assert custom_alarm(staging.raw, metric_names.SOURCE_STALE)


@pytest.mark.parametrize("value", ["qa", "Prod", "production"])
def test_an_unknown_env_is_refused_naming_the_choices(value):
    with pytest.raises(ValueError, match=r"env: expected one of dev, staging, prod .* got"):
        build_app({"env": value})
