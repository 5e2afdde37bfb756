"""The reprocess state machine in the template, and its synthesized definition executed by
moto's Step Functions interpreter (its Lambda stub answers with queued results) to check
what each state sends and keeps. The real handlers behind the same steps, a failure and
a redrive: tests/integration/test_reprocess_lambda.py."""

from __future__ import annotations

import inspect
import json
import time
from datetime import date
from typing import Any

import boto3
from moto import mock_aws
from moto.moto_api._internal.models import moto_api_backend

from dbt_project import errors
from dbt_project.plan import CostModel, DayCount, plan_chunks
from dbt_project.request import BackfillRequest
from infra.constructs.reprocess import (
    LAMBDA_SERVICE_ERRORS,
    TIMEOUTS,
    TRANSIENT_PROJECT_ERRORS,
)

from .test_operations import grants_of
from .test_stack import etl_functions, logical_id_of, resources

ACCOUNT, REGION = "123456789012", "ap-northeast-1"
TASKS = ("Plan", "ExtractChunk", "LoadChunk", "Report")


def state_machine(raw: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    ((logical_id, machine),) = resources(raw, "AWS::StepFunctions::StateMachine").items()
    return logical_id, machine["Properties"]


def definition(raw: dict[str, Any], arns: dict[str, str]) -> dict[str, Any]:
    """The definition with its CloudFormation references resolved: ``arns`` maps each
    function's logical id to an ARN."""
    _, machine = state_machine(raw)
    parts = []
    for part in machine["DefinitionString"]["Fn::Join"][1]:
        if isinstance(part, str):
            parts.append(part)
        elif part == {"Ref": "AWS::Partition"}:
            parts.append("aws")
        else:
            parts.append(arns[part["Fn::GetAtt"][0]])
    return json.loads("".join(parts))


def test_one_standard_state_machine_that_logs_every_event_and_traces(learning):
    raw = learning.raw
    _, machine = state_machine(raw)
    assert machine["StateMachineName"] == "ShopEtl-reprocess"
    assert machine["StateMachineType"] == "STANDARD"
    assert machine["LoggingConfiguration"]["Level"] == "ALL"
    assert machine["TracingConfiguration"] == {"Enabled": True}
    (log_group,) = [
        g["Properties"]
        for k, g in resources(raw, "AWS::Logs::LogGroup").items()
        if k.startswith("Reprocess")
    ]
    assert log_group["LogGroupName"] == "/aws/vendedlogs/states/ShopEtl-reprocess"
    assert log_group["RetentionInDays"] == 30
    outputs = raw["Outputs"]["ReprocessStateMachineArn"]["Value"]
    assert outputs == {"Ref": logical_id_of(raw, machine)}


def test_it_invokes_the_extract_and_the_load_and_nothing_else(learning):
    raw = learning.raw
    functions = etl_functions(raw)
    ids = {name: logical_id_of(raw, functions[name]) for name in ("extract", "load")}
    grants = grants_of(raw, "ReprocessStateMachineRole")
    invoked = {json.dumps(r) for r in grants.pop("lambda:InvokeFunction")}
    assert invoked == {
        json.dumps(arn)
        for name in ("extract", "load")
        for arn in (
            {"Fn::GetAtt": [ids[name], "Arn"]},
            {"Fn::Join": ["", [{"Fn::GetAtt": [ids[name], "Arn"]}, ":*"]]},
        )
    }
    # What remains is log delivery and tracing (tests/infra/test_stack.py holds the list).
    assert all(a.startswith(("logs:", "xray:")) for a in grants)
    steps = definition(raw, {ids["extract"]: "EXTRACT", ids["load"]: "LOAD"})["States"]
    called = {name: steps[name]["Parameters"]["FunctionName"] for name in TASKS}
    assert called == {
        "Plan": "EXTRACT",
        "ExtractChunk": "EXTRACT",
        "LoadChunk": "LOAD",
        "Report": "LOAD",
    }


def test_the_initializer_may_start_exactly_this_state_machine(learning):
    raw = learning.raw
    functions = etl_functions(raw)
    machine = {"Ref": state_machine(raw)[0]}
    assert grants_of(raw, "FunctionsDbInitializerRole")["states:StartExecution"] == [machine]
    for other in ("FunctionsExtractRole", "FunctionsLoadRole"):
        assert "states:StartExecution" not in grants_of(raw, other)
    variables = functions["db_initializer"]["Environment"]["Variables"]
    assert variables["REPROCESS_STATE_MACHINE_ARN"] == machine
    # The isolated subnets reach Step Functions through an endpoint that carries only that
    # call; no function may invoke another any more.
    interfaces = [
        e["Properties"]
        for e in resources(raw, "AWS::EC2::VPCEndpoint").values()
        if e["Properties"]["VpcEndpointType"] == "Interface"
    ]
    services = {e["ServiceName"]["Fn::Join"][1][-1] for e in interfaces}
    assert services == {".secretsmanager", ".sns", ".states"}
    (endpoint,) = [e for e in interfaces if e["ServiceName"]["Fn::Join"][1][-1] == ".states"]
    (statement,) = endpoint["PolicyDocument"]["Statement"]
    assert (statement["Effect"], statement["Action"]) == ("Allow", "states:StartExecution")
    assert statement["Resource"] == machine


def project_errors() -> set[str]:
    return {
        name
        for name, cls in inspect.getmembers(errors, inspect.isclass)
        if issubclass(cls, errors.EtlError)
    }


def test_retries_pass_with_time_and_refusals_fail_at_once(learning):
    raw = learning.raw
    functions = etl_functions(raw)
    ids = {logical_id_of(raw, functions[name]): name for name in ("extract", "load")}
    states = definition(raw, ids)["States"]
    transient = set(TRANSIENT_PROJECT_ERRORS)
    # The retried names are the project's own error classes (a handler's exception class
    # is the error's name), and the ones that pass with time.
    assert transient <= project_errors()
    assert transient == {"DatabaseUnavailable", "ExtractBusy", "LoadTimedOut"}
    for name in TASKS:
        retries = states[name]["Retry"]
        retried = [error for policy in retries for error in policy["ErrorEquals"]]
        assert set(retried) == {*LAMBDA_SERVICE_ERRORS, *TIMEOUTS, *transient}, name
        assert "States.ALL" not in retried and "States.TaskFailed" not in retried
        # ConfigError, DataTestsFailed, SourceStale, StageError, CredentialsError... are
        # refusals: a retry would meet them again.
        assert not (project_errors() - transient) & set(retried)
        assert all(p.get("BackoffRate", 1) >= 1 and p["MaxAttempts"] >= 1 for p in retries)
        assert "Catch" not in states[name]  # a failure fails the execution: redrivable there


def _queue(result: dict) -> None:
    moto_api_backend.set_lambda_simple_result(json.dumps(result), account_id=ACCOUNT, region=REGION)


def _steps(client, execution: str) -> list[tuple[str, str, dict]]:
    """(state, function, payload) of each task the execution scheduled, in order."""
    found, state = [], None
    for event in client.get_execution_history(executionArn=execution, maxResults=1000)["events"]:
        if "stateEnteredEventDetails" in event:
            state = event["stateEnteredEventDetails"]["name"]
        if "taskScheduledEventDetails" in event:
            parameters = json.loads(event["taskScheduledEventDetails"]["parameters"])
            function = parameters["FunctionName"].rsplit(":", 1)[1]
            found.append((state, function, parameters["Payload"]))
    return found


def _plan() -> dict:
    """Six days of 20 orders, at 2 s a chunk and 1 s an order: three chunks of two days."""
    first = date(2026, 1, 1)
    request = BackfillRequest(date(2026, 1, 6), first, budget_minutes=1)
    counts = {date(2026, 1, day): DayCount(20, 0) for day in range(1, 7)}
    return plan_chunks(request, first, counts, 0, CostModel(2.0, 1.0)).as_json()


def _answers(plan: dict) -> tuple[list[int], dict]:
    """What the stub answers, in order: the handlers' answers, in their shapes."""
    _queue(plan)
    rows = []
    for n, chunk in enumerate(plan["chunks"]):
        key = f"etl-data/{chunk['run_date']}/_manifest.json"
        rows.append(1000 + n)
        run = {"run_date": chunk["run_date"], "manifest_key": key, "rows_extracted": rows[-1]}
        _queue({"status": "extracted", "trigger": "backfill", "runs": [run], **run})
        _queue({"status": "ok", "loads": [{"manifest_key": key, "status": "loaded"}]})
    report = {"report": "reprocess", "status": "done"}
    _queue(report)
    return rows, report


# moto runs the definition, with a Lambda stub that answers from a queue.
MOTO = {"stepfunctions": {"execute_state_machine": True}, "lambda": {"use_docker": False}}


@mock_aws(config=MOTO)
def _execute(raw: dict[str, Any], execution_input: dict, plan: dict):
    iam = boto3.client("iam", region_name=REGION)
    role = iam.create_role(RoleName="reprocess", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
    functions = etl_functions(raw)
    lambdas, arns = boto3.client("lambda", region_name=REGION), {}
    for name in ("extract", "load"):
        arns[logical_id_of(raw, functions[name])] = lambdas.create_function(
            FunctionName=name,
            Runtime="python3.12",
            Role=role,
            Handler="handler.handler",
            Code={"ZipFile": b"PK\x05\x06" + b"\x00" * 18},
        )["FunctionArn"]
    client = boto3.client("stepfunctions", region_name=REGION)
    machine = client.create_state_machine(
        name="reprocess", definition=json.dumps(definition(raw, arns)), roleArn=role
    )["stateMachineArn"]
    rows, report = _answers(plan)
    execution = client.start_execution(stateMachineArn=machine, input=json.dumps(execution_input))
    for _ in range(600):
        described = client.describe_execution(executionArn=execution["executionArn"])
        if described["status"] != "RUNNING":
            break
        time.sleep(0.05)
    return described, _steps(client, execution["executionArn"]), rows, report


def test_the_definition_carries_the_plan_chunk_by_chunk_to_the_report(learning, monkeypatch):
    # moto's in-process mock, not a server a previous test pointed boto3 at
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    plan = _plan()
    assert plan["count"] == 3
    execution_input = {"start": "2026-01-01", "end": "2026-01-06", "budget_minutes": 1}

    described, steps, rows, report = _execute(learning.raw, execution_input, plan)

    assert described["status"] == "SUCCEEDED", described.get("cause")
    expected = [("Plan", "extract", {"plan": execution_input})]
    for chunk in plan["chunks"]:
        key = f"etl-data/{chunk['run_date']}/_manifest.json"
        expected += [
            ("ExtractChunk", "extract", {"chunk": chunk}),
            ("LoadChunk", "load", {"manifest_key": key}),
        ]
    assert steps[:-1] == expected
    state, function, payload = steps[-1]
    assert (state, function) == ("Report", "load")
    assert payload["report"]["plan"] == plan
    assert payload["report"]["rows"] == sum(rows)
    assert payload["report"]["execution"]["Id"] == described["executionArn"]
    assert "StartTime" in payload["report"]["execution"]
    assert json.loads(described["output"]) == {"report": report}
