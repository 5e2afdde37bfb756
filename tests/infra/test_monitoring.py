"""Operating the nights: the heartbeat and freshness alarms, the RunReports topic, the
dashboard, and that they read the metric names the handlers emit."""

from __future__ import annotations

import ast
import json
from typing import Any

from dbt_project.facts import metric_names
from dbt_project.facts.names import MARTS
from infra.constructs.run_reports import TOPIC_ARN_VARIABLE
from infra.function_specs import DB_INITIALIZER, EXTRACT, LOAD
from infra.packaging.layers import REPO_ROOT

SPECS = {spec.name: spec for spec in (EXTRACT, LOAD, DB_INITIALIZER)}
# CloudWatch's limit on an alarm's Period x EvaluationPeriods: 7 days for periods of
# 1 hour or more, 1 day below that (PutMetricAlarm).
MAX_EVALUATION_SECONDS = {True: 7 * 86_400, False: 86_400}
# Names in metric_names that are not metrics.
NOT_METRICS = {"NAMESPACE", "RECORDS_LOADED_PREFIX", "service"}


# --- helpers --------------------------------------------------------------------------


def resources(raw: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    return {k: v for k, v in raw["Resources"].items() if v["Type"] == kind}


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def etl_functions(raw: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The three ETL functions' properties by name, found by their service name."""
    services = {metric_names.service(name): name for name in SPECS}
    found = {}
    for resource in resources(raw, "AWS::Lambda::Function").values():
        variables = resource["Properties"].get("Environment", {}).get("Variables", {})
        if variables.get("POWERTOOLS_SERVICE_NAME") in services:
            found[services[variables["POWERTOOLS_SERVICE_NAME"]]] = resource["Properties"]
    assert set(found) == set(SPECS)
    return found


def logical_id_of(raw: dict[str, Any], properties: dict[str, Any]) -> str:
    return next(k for k, v in raw["Resources"].items() if v.get("Properties") is properties)


def alarm_topic_id(raw: dict[str, Any]) -> str:
    (topic_id,) = [k for k in resources(raw, "AWS::SNS::Topic") if k.startswith("Monitoring")]
    return topic_id


def reports_topic_id(raw: dict[str, Any]) -> str:
    (topic_id,) = [k for k in resources(raw, "AWS::SNS::Topic") if k.startswith("RunReports")]
    return topic_id


def custom_alarm(raw: dict[str, Any], name: str) -> dict[str, Any]:
    (alarm,) = [
        a["Properties"]
        for a in resources(raw, "AWS::CloudWatch::Alarm").values()
        if a["Properties"].get("MetricName") == name
    ]
    return alarm


def dashboard_body(raw: dict[str, Any]) -> dict[str, Any]:
    """The dashboard's JSON, with each CloudFormation token replaced by a placeholder."""
    (dashboard,) = resources(raw, "AWS::CloudWatch::Dashboard").values()
    body = dashboard["Properties"]["DashboardBody"]
    parts = body["Fn::Join"][1] if isinstance(body, dict) else [body]
    return json.loads("".join(p if isinstance(p, str) else "TOKEN" for p in parts))


def dashboard_metrics(raw: dict[str, Any]) -> list[list[Any]]:
    return [
        metric
        for widget in dashboard_body(raw)["widgets"]
        for metric in widget["properties"].get("metrics", [])
    ]


def custom_metric_names(raw: dict[str, Any]) -> set[str]:
    return {m[1] for m in dashboard_metrics(raw) if m[0] == metric_names.NAMESPACE}


def emitted_metric_names() -> set[str]:
    """Every ``metric_names.<NAME>`` the package and the handlers use, resolved."""
    found: set[str] = set()
    sources = [*(REPO_ROOT / "dbt_project").rglob("*.py"), *(REPO_ROOT / "lambdas").rglob("*.py")]
    for path in sources:
        if path.name == "metric_names.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id == "metric_names"
                and node.attr not in NOT_METRICS
            ):
                value = getattr(metric_names, node.attr)
                found |= {value(mart) for mart in MARTS} if callable(value) else {value}
    return found


# --- one list of names ----------------------------------------------------------------


def test_the_handlers_emit_metrics_from_metric_names():
    # The scan itself works: the original design's metrics are found.
    assert {
        metric_names.EXTRACTION_TIME,
        metric_names.RECORDS_EXTRACTED,
        metric_names.S3_READ_TIME,
        metric_names.DATA_LOAD_TIME,
        *(metric_names.records_loaded(mart) for mart in MARTS),
        metric_names.DB_CONNECTION_ERROR,
        metric_names.SECRET_RETRIEVAL_ERROR,
    } <= emitted_metric_names()


def test_every_emitted_metric_is_on_the_dashboard_and_nothing_else(learning):
    on_dashboard = custom_metric_names(learning.raw)
    emitted = emitted_metric_names()
    assert emitted <= on_dashboard, f"not on the dashboard: {emitted - on_dashboard}"
    assert on_dashboard <= emitted, f"never emitted: {on_dashboard - emitted}"


def test_custom_metrics_carry_the_service_dimension_powertools_adds(learning):
    services = {metric_names.service(name) for name in SPECS}
    for metric in dashboard_metrics(learning.raw):
        if metric[0] == metric_names.NAMESPACE:
            assert metric[2] == "service" and metric[3] in services, metric
            assert isinstance(metric[4], dict), "no dimension besides service"


def test_infra_spells_no_metric_name_itself():
    """Metric names come from dbt_project.facts.metric_names, never a copy.

    (The namespace is left out: it is also the stack's default name.)
    """
    names = {v for k, v in vars(metric_names).items() if k.isupper() and isinstance(v, str)}
    values = names - {metric_names.RECORDS_LOADED_PREFIX, metric_names.NAMESPACE}
    for path in sorted((REPO_ROOT / "infra").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                assert node.value not in values, f"{path.relative_to(REPO_ROOT)}:{node.lineno}"


def test_functions_publish_under_the_shared_namespace_and_service(learning):
    for name, function in etl_functions(learning.raw).items():
        variables = function["Environment"]["Variables"]
        assert variables["POWERTOOLS_METRICS_NAMESPACE"] == metric_names.NAMESPACE
        assert variables["POWERTOOLS_SERVICE_NAME"] == metric_names.service(name)


# --- alarms ---------------------------------------------------------------------------


def test_heartbeat_alarm_fires_after_26_hours_without_a_night(learning):
    raw = learning.raw
    alarm = custom_alarm(raw, metric_names.NIGHTS_LOADED)
    assert alarm["Namespace"] == metric_names.NAMESPACE
    assert alarm["Dimensions"] == [{"Name": "service", "Value": metric_names.service(LOAD.name)}]
    assert alarm["Statistic"] == "Sum"
    assert alarm["Period"] == 3600
    # All of the last 26 hours without a heartbeat, and no data counts as none.
    assert alarm["EvaluationPeriods"] == alarm["DatapointsToAlarm"] == 26
    assert alarm["Period"] * alarm["EvaluationPeriods"] == 26 * 3600
    assert alarm["ComparisonOperator"] == "LessThanThreshold"
    assert alarm["Threshold"] == 1
    assert alarm["TreatMissingData"] == "breaching"
    # Within what CloudWatch accepts.
    limit = MAX_EVALUATION_SECONDS[alarm["Period"] >= 3600]
    assert alarm["Period"] * alarm["EvaluationPeriods"] <= limit
    assert alarm["AlarmActions"] == [{"Ref": alarm_topic_id(raw)}]


def test_source_stale_alarm_fires_on_the_first_stopped_night(learning):
    raw = learning.raw
    alarm = custom_alarm(raw, metric_names.SOURCE_STALE)
    assert alarm["Namespace"] == metric_names.NAMESPACE
    assert alarm["Dimensions"] == [{"Name": "service", "Value": metric_names.service(EXTRACT.name)}]
    assert (alarm["Statistic"], alarm["Threshold"]) == ("Sum", 1)
    assert alarm["ComparisonOperator"] == "GreaterThanOrEqualToThreshold"
    assert alarm["EvaluationPeriods"] == 1
    assert alarm["TreatMissingData"] == "notBreaching"
    assert alarm["AlarmActions"] == [{"Ref": alarm_topic_id(raw)}]


# --- RunReports -----------------------------------------------------------------------


def test_run_reports_topic_has_its_own_rotating_key_and_is_tls_only(learning):
    raw = learning.raw
    topics = resources(raw, "AWS::SNS::Topic")
    reports = topics[reports_topic_id(raw)]["Properties"]
    alarms = topics[alarm_topic_id(raw)]["Properties"]
    key_id = reports["KmsMasterKeyId"]["Fn::GetAtt"][0]
    assert key_id.startswith("RunReports") and key_id != alarms["KmsMasterKeyId"]["Fn::GetAtt"][0]
    assert resources(raw, "AWS::KMS::Key")[key_id]["Properties"]["EnableKeyRotation"] is True
    (policy,) = [
        p["Properties"]
        for p in resources(raw, "AWS::SNS::TopicPolicy").values()
        if p["Properties"]["Topics"] == [{"Ref": reports_topic_id(raw)}]
    ]
    assert any(
        s["Effect"] == "Deny" and s["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
        for s in policy["PolicyDocument"]["Statement"]
    )


def test_load_is_told_the_topic_and_may_publish_with_its_key(learning):
    raw = learning.raw
    topic = {"Ref": reports_topic_id(raw)}
    variables = etl_functions(raw)["load"]["Environment"]["Variables"]
    assert variables[TOPIC_ARN_VARIABLE] == topic
    for name in ("extract", "db_initializer"):
        assert TOPIC_ARN_VARIABLE not in etl_functions(raw)[name]["Environment"]["Variables"]
    key = {"Fn::GetAtt": [topic_key_id(raw), "Arn"]}
    statements = role_statements(raw, "FunctionsLoadRole")
    assert any(
        as_list(s["Action"]) == ["sns:Publish"] and s["Resource"] == topic for s in statements
    )
    assert any(
        set(as_list(s["Action"])) == {"kms:Decrypt", "kms:GenerateDataKey*"}
        and s["Resource"] == key
        for s in statements
    )


def test_every_function_fails_to_the_run_reports_topic(learning):
    raw = learning.raw
    for name, function in etl_functions(raw).items():
        function_id = logical_id_of(raw, function)
        (config,) = [
            c["Properties"]
            for c in resources(raw, "AWS::Lambda::EventInvokeConfig").values()
            if c["Properties"]["FunctionName"] == {"Ref": function_id}
        ]
        assert config["DestinationConfig"] == {
            "OnFailure": {"Destination": {"Ref": reports_topic_id(raw)}}
        }
        assert config["MaximumRetryAttempts"] == SPECS[name].retry_attempts
        # Lambda publishes the record with the function's own role.
        role = function["Role"]["Fn::GetAtt"][0][:-8]  # its policy: <role id>DefaultPolicy...
        assert any(
            as_list(s["Action"]) == ["sns:Publish"]
            and s["Resource"] == {"Ref": reports_topic_id(raw)}
            for s in role_statements(raw, role)
        ), name


def test_failure_queue_receives_only_invocation_records(learning):
    raw = learning.raw
    (queue_id,) = [k for k in resources(raw, "AWS::SQS::Queue") if k.startswith("FunctionsFailed")]
    (subscription,) = [s["Properties"] for s in resources(raw, "AWS::SNS::Subscription").values()]
    assert subscription["TopicArn"] == {"Ref": reports_topic_id(raw)}
    assert subscription["Protocol"] == "sqs"
    assert subscription["Endpoint"] == {"Fn::GetAtt": [queue_id, "Arn"]}
    # The record as Lambda wrote it, not wrapped in an SNS envelope.
    assert subscription["RawMessageDelivery"] is True
    assert subscription["FilterPolicyScope"] == "MessageBody"
    assert subscription["FilterPolicy"] == {"requestContext": {"condition": [{"exists": True}]}}
    (policy,) = [
        p["Properties"]
        for p in resources(raw, "AWS::SQS::QueuePolicy").values()
        if p["Properties"]["Queues"] == [{"Ref": queue_id}]
    ]
    assert any(
        s["Effect"] == "Allow"
        and s["Principal"] == {"Service": "sns.amazonaws.com"}
        and s["Condition"] == {"ArnEquals": {"aws:SourceArn": {"Ref": reports_topic_id(raw)}}}
        for s in policy["PolicyDocument"]["Statement"]
    )
    # ... and the dead-letter alarm still watches that queue.
    queued = [
        a["Properties"]
        for a in resources(raw, "AWS::CloudWatch::Alarm").values()
        if a["Properties"].get("MetricName") == "ApproximateNumberOfMessagesVisible"
    ]
    assert {"Fn::GetAtt": [queue_id, "QueueName"]} in [a["Dimensions"][0]["Value"] for a in queued]


def test_sns_endpoint_carries_only_report_publishes_from_the_load(learning):
    raw = learning.raw
    (endpoint,) = [
        e["Properties"]
        for e in resources(raw, "AWS::EC2::VPCEndpoint").values()
        if ".sns" in json.dumps(e["Properties"]["ServiceName"])
    ]
    assert endpoint["VpcEndpointType"] == "Interface"
    assert endpoint["PrivateDnsEnabled"] is True
    (statement,) = endpoint["PolicyDocument"]["Statement"]
    assert statement["Effect"] == "Allow"
    assert statement["Action"] == "sns:Publish"
    assert statement["Resource"] == {"Ref": reports_topic_id(raw)}
    ingress = {
        r["Properties"]["SourceSecurityGroupId"]["Fn::GetAtt"][0].split("SecurityGroup")[0]
        for r in resources(raw, "AWS::EC2::SecurityGroupIngress").values()
        if r["Properties"]["GroupId"]["Fn::GetAtt"][0].startswith("NetworkSnsEndpoint")
    }
    assert ingress == {"FunctionsLoad"}


def topic_key_id(raw: dict[str, Any]) -> str:
    topic = resources(raw, "AWS::SNS::Topic")[reports_topic_id(raw)]
    return topic["Properties"]["KmsMasterKeyId"]["Fn::GetAtt"][0]


def role_statements(raw: dict[str, Any], role_prefix: str) -> list[dict[str, Any]]:
    return [
        statement
        for logical_id, policy in resources(raw, "AWS::IAM::Policy").items()
        if logical_id.startswith(role_prefix)
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]
    ]


# --- dashboard ------------------------------------------------------------------------


def test_dashboard_shows_each_duration_against_its_timeout(learning):
    raw = learning.raw
    widgets = dashboard_body(raw)["widgets"]
    for name, function in etl_functions(raw).items():
        (widget,) = [
            w["properties"]
            for w in widgets
            if any(
                m[1] == "Duration" and m[-1].get("label") == name
                for m in w["properties"].get("metrics", [])
            )
        ]
        (annotation,) = widget["annotations"]["horizontal"]
        assert annotation["value"] == function["Timeout"] * 1000
        assert widget["yAxis"]["left"]["max"] >= annotation["value"]


def test_dashboard_shows_errors_queues_and_aurora(learning):
    raw = learning.raw
    shown = dashboard_metrics(raw)
    by_name: dict[tuple[str, str], list[list[Any]]] = {}
    for metric in shown:
        by_name.setdefault((metric[0], metric[1]), []).append(metric)
    assert {m[-1]["label"] for m in by_name[("AWS/Lambda", "Errors")]} == set(SPECS)
    assert len(by_name[("AWS/SQS", "ApproximateNumberOfMessagesVisible")]) == 2
    for name in ("ServerlessDatabaseCapacity", "DatabaseConnections"):
        (metric,) = by_name[("AWS/RDS", name)]
        assert metric[2] == "DBClusterIdentifier"
    # The alarms' states head the dashboard.
    (alarms,) = [w for w in dashboard_body(raw)["widgets"] if w["type"] == "alarm"]
    assert len(alarms["properties"]["alarms"]) == len(resources(raw, "AWS::CloudWatch::Alarm"))


def test_outputs_name_the_topics_and_the_dashboard(learning):
    outputs = learning.raw["Outputs"]
    assert outputs["RunReportsTopicArn"]["Value"] == {"Ref": reports_topic_id(learning.raw)}
    assert outputs["AlarmTopicArn"]["Value"] == {"Ref": alarm_topic_id(learning.raw)}
    assert "Value" in outputs["DashboardName"]
