"""Slack alerts through AWS Chatbot (-c slack_workspace_id=... -c slack_channel_id=...):
the channel configuration, the topics it hears, its role and its guardrail."""

from __future__ import annotations

from typing import Any

import pytest

from infra.app import build_app
from infra.constructs.run_reports import FAILED_NIGHTS_TOPIC_ARN_VARIABLE

from .conftest import SLACK
from .test_monitoring import alarm_topic_id, etl_functions, resources
from .test_stack import as_list, policy_statements

CHANNEL = "AWS::Chatbot::SlackChannelConfiguration"


def the_channel(raw: dict[str, Any]) -> dict[str, Any]:
    (channel,) = resources(raw, CHANNEL).values()
    return channel["Properties"]


def failed_nights_topic_id(raw: dict[str, Any]) -> str:
    (topic_id,) = [k for k in resources(raw, "AWS::SNS::Topic") if "FailedNights" in k]
    return topic_id


def test_the_channel_hears_the_alarms_and_the_failed_nights(staging):
    raw = staging.raw
    channel = the_channel(raw)
    assert channel["SlackWorkspaceId"] == SLACK["slack_workspace_id"]
    assert channel["SlackChannelId"] == SLACK["slack_channel_id"]
    assert channel["ConfigurationName"] == "ShopEtl-staging-alerts"
    assert channel["SnsTopicArns"] == [
        {"Ref": alarm_topic_id(raw)},
        {"Ref": failed_nights_topic_id(raw)},
    ]
    # the nightly reports stay out: Chatbot would not post them, and the channel would
    # hear every passed night
    assert not any("RunReportsTopic" in str(arn) for arn in channel["SnsTopicArns"])
    assert channel["LoggingLevel"] == "NONE"


def test_the_failed_nights_topic_is_encrypted_and_only_the_load_publishes(staging):
    raw = staging.raw
    topic_id = failed_nights_topic_id(raw)
    topic = raw["Resources"][topic_id]["Properties"]
    assert topic["KmsMasterKeyId"]["Fn::GetAtt"][0].startswith("RunReportsTopicKey")
    load = etl_functions(raw)["load"]
    assert load["Environment"]["Variables"][FAILED_NIGHTS_TOPIC_ARN_VARIABLE] == {"Ref": topic_id}
    publishers = {
        role
        for role, statement in policy_statements(raw)
        if statement["Effect"] == "Allow" and {"Ref": topic_id} in as_list(statement["Resource"])
    }
    assert len(publishers) == 1 and publishers.pop().startswith("FunctionsLoadRole")
    (endpoint,) = [
        e["Properties"]
        for e in resources(raw, "AWS::EC2::VPCEndpoint").values()
        if "sns" in str(e["Properties"]["ServiceName"])
    ]
    allowed = {
        s["Sid"]: s["Resource"] for s in endpoint["PolicyDocument"]["Statement"] if "Sid" in s
    }
    assert allowed["FailedNightsPublishOnly"] == {"Ref": topic_id}


def test_the_role_has_no_permissions_and_the_guardrail_denies_everything(staging):
    raw = staging.raw
    channel = the_channel(raw)
    role_id = channel["IamRoleArn"]["Fn::GetAtt"][0]
    role = raw["Resources"][role_id]["Properties"]
    (trust,) = role["AssumeRolePolicyDocument"]["Statement"]
    assert trust["Principal"] == {"Service": "chatbot.amazonaws.com"}
    assert "ManagedPolicyArns" not in role and "Policies" not in role
    attached = [
        r
        for r in raw["Resources"].values()
        if r["Type"] in ("AWS::IAM::Policy", "AWS::IAM::ManagedPolicy")
        and {"Ref": role_id} in r["Properties"].get("Roles", [])
    ]
    assert attached == []
    # the guardrail: the stack's own policy, not an AWS managed one such as ReadOnlyAccess
    (guardrail,) = channel["GuardrailPolicies"]
    assert set(guardrail) == {"Ref"}, f"not a policy of the stack's: {guardrail}"
    policy = raw["Resources"][guardrail["Ref"]]
    assert policy["Type"] == "AWS::IAM::ManagedPolicy"
    (statement,) = policy["Properties"]["PolicyDocument"]["Statement"]
    assert (statement["Effect"], statement["Action"], statement["Resource"]) == ("Deny", "*", "*")


def test_without_the_slack_context_there_is_no_channel(learning, kept, reserved):
    for setup in (learning, kept, reserved):
        assert resources(setup.raw, CHANNEL) == {}
        assert not [k for k in resources(setup.raw, "AWS::SNS::Topic") if "FailedNights" in k]
        variables = etl_functions(setup.raw)["load"]["Environment"]["Variables"]
        assert FAILED_NIGHTS_TOPIC_ARN_VARIABLE not in variables


@pytest.mark.parametrize(("given", "missing"), [(0, "slack_channel_id"), (1, "slack_workspace_id")])
def test_one_slack_id_alone_is_refused_naming_the_other_and_how_to_pass_it(given, missing):
    key = list(SLACK)[given]
    with pytest.raises(ValueError, match=f"^{missing} is missing") as refused:
        build_app({key: SLACK[key]})
    assert "-c slack_workspace_id=<workspace id> -c slack_channel_id=<channel id>" in str(
        refused.value
    )
