"""The cdk-nag AwsSolutions gate: nothing unacknowledged, and it does fail when it should."""

from __future__ import annotations

import pytest
from aws_cdk import Stack, Validations
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_s3 as s3
from cdk_nag import AwsSolutionsChecks

from infra.app import DEFAULT_STACK_NAME
from infra.packaging.layers import REPO_ROOT

from .conftest import build_test_app

# (construct path below the stack, rule id): every acknowledgment, each reviewed.
# A new one must be added here and to the table in infra/README.md.
STAGE_OBJECTS = "AwsSolutions-IAM5[Resource::<StageBucket"
INITIALIZER_VERSIONS = "AwsSolutions-IAM5[Resource::<FunctionsDbInitializer"
LOG_GROUPS = "AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:logs:"
LOG_RETENTION_ROLE = "LogRetentionaae0aa3c5b4d4f87b02d85b201efdd8a/ServiceRole"
EXTRACT_VERSIONS = "AwsSolutions-IAM5[Resource::<FunctionsExtract"
LOAD_VERSIONS = "AwsSolutions-IAM5[Resource::<FunctionsLoad"
REVIEWED = {
    ("Functions/ExtractRole", "AwsSolutions-IAM5[Resource::*]"),
    ("Functions/LoadRole", "AwsSolutions-IAM5[Resource::*]"),
    ("Functions/DbInitializerRole", "AwsSolutions-IAM5[Resource::*]"),
    ("Functions/ExtractRole", STAGE_OBJECTS),
    ("Functions/LoadRole", STAGE_OBJECTS),
    ("Functions/Extract", "AwsSolutions-L1"),
    ("Functions/Load", "AwsSolutions-L1"),
    ("Functions/DbInitializer", "AwsSolutions-L1"),
    ("Databases/Source", "AwsSolutions-RDS3"),
    ("Databases/Source", "AwsSolutions-RDS11"),
    ("Functions/FailedInvocations", "AwsSolutions-SQS3"),
    ("Functions/ExtractRole", "AwsSolutions-IAM5[Action::kms:GenerateDataKey*]"),
    ("Functions/LoadRole", "AwsSolutions-IAM5[Action::kms:GenerateDataKey*]"),
    ("Functions/DbInitializerRole", "AwsSolutions-IAM5[Action::kms:GenerateDataKey*]"),
    ("Nightly/DeadLetterQueue", "AwsSolutions-SQS3"),
    ("BucketNotificationsHandler", "AwsSolutions-IAM4[Policy::"),
    ("Network/S3PrefixList", "AwsSolutions-IAM5[Resource::*]"),
    ("AWS679f53fac002430cb0da5b7982bd2287", "AwsSolutions-IAM4[Policy::"),
    # The provider framework's grant on the initializer and its versions.
    ("AnalyticsUpgrade/ProviderRole", INITIALIZER_VERSIONS),
    ("Databases/ReaderSecret", "AwsSolutions-SMG4"),
    # CDK's log-retention handler of the databases' exported logs
    (LOG_RETENTION_ROLE, "AwsSolutions-IAM4[Policy::"),
    (LOG_RETENTION_ROLE, "AwsSolutions-IAM5[Resource::*]"),
    # The state machine's invoke grants on the two functions (and their versions), its
    # log delivery and tracing.
    ("Reprocess/StateMachine/Role", EXTRACT_VERSIONS),
    ("Reprocess/StateMachine/Role", LOAD_VERSIONS),
    ("Reprocess/StateMachine/Role", "AwsSolutions-IAM5[Resource::*]"),
}
LEARNING_ONLY = {
    ("Databases/Source", "AwsSolutions-RDS10"),
    ("Databases/Target", "AwsSolutions-RDS10"),
    # it deletes the exported log groups with the stack
    (LOG_RETENTION_ROLE, LOG_GROUPS),
}


def acknowledgments(stack: Stack) -> dict[tuple[str, str], str]:
    """(path below the stack, rule id) -> reason of the AwsSolutions acknowledgments.

    CDK acknowledges some of its own CloudFormation-Validate rules; those are left out.
    """
    found = {}
    prefix = stack.node.path + "/"
    for construct in stack.node.find_all():
        for entry in construct.node.metadata:
            if entry.type != Validations.ACKNOWLEDGED_RULES_METADATA_KEY:
                continue
            for rule, reason in entry.data.items():
                rule = rule.split("::", 1)[1] if rule.startswith("Annotation::") else rule
                if not rule.startswith("AwsSolutions-"):
                    continue
                found[(construct.node.path.removeprefix(prefix), rule)] = reason
    return found


def normalized(found: dict[tuple[str, str], str]) -> set[tuple[str, str]]:
    """Rule ids with a logical id or a path hash cut to the stable part."""
    result = set()
    for path, rule in found:
        for stable in (
            STAGE_OBJECTS,
            INITIALIZER_VERSIONS,
            EXTRACT_VERSIONS,
            LOAD_VERSIONS,
            LOG_GROUPS,
            "AwsSolutions-IAM4[Policy::",
        ):
            rule = stable if rule.startswith(stable) else rule
        path = (
            "BucketNotificationsHandler" if path.startswith("BucketNotificationsHandler") else path
        )
        result.add((path, rule))
    return result


def describe(findings) -> str:
    return "\n".join(
        f"{f.rule_name}: {[r.construct_path for r in f.violating_resources]}" for f in findings
    )


@pytest.mark.parametrize("setup", ["learning", "kept", "reserved", "staging"])
def test_no_unacknowledged_findings(setup, request):
    synthesized = request.getfixturevalue(setup)
    assert synthesized.findings == [], describe(synthesized.findings)
    assert synthesized.error is None


def test_acknowledgments_are_the_reviewed_ones_with_reasons(learning, kept):
    found = acknowledgments(learning.stack)
    assert normalized(found) == REVIEWED | LEARNING_ONLY
    assert normalized(acknowledgments(kept.stack)) == REVIEWED
    for (path, rule), reason in found.items():
        assert len(reason) >= 100, f"{path} {rule}: say why, for a reviewer"


def test_the_gate_reports_an_insecure_addition(base_context, cdk_out):
    """Proof that the gate can fail: the real app plus two deliberately bad resources."""
    app = build_test_app(base_context, cdk_out)
    stack = app.node.find_child(DEFAULT_STACK_NAME)
    s3.CfnBucket(stack, "UnloggedUnencryptedBucket")
    ec2.CfnSecurityGroup(
        stack,
        "SshFromAnywhere",
        group_description="deliberately open",
        vpc_id="vpc-12345678",
        security_group_ingress=[
            ec2.CfnSecurityGroup.IngressProperty(
                ip_protocol="tcp", from_port=22, to_port=22, cidr_ip="0.0.0.0/0"
            )
        ],
    )

    report = AwsSolutionsChecks().validate_scope(app)

    reported = {
        (f.rule_name, r.construct_path.removeprefix(f"{DEFAULT_STACK_NAME}/"))
        for f in report.violations
        for r in f.violating_resources
    }
    assert {
        ("AwsSolutions-S1", "UnloggedUnencryptedBucket"),
        ("AwsSolutions-S10", "UnloggedUnencryptedBucket"),
        ("AwsSolutions-EC23", "SshFromAnywhere"),
    } <= reported
    assert all(path in {"UnloggedUnencryptedBucket", "SshFromAnywhere"} for _, path in reported)
    # cdk-nag's failure is a JavaScript error, which jsii raises as a RuntimeError
    with pytest.raises(RuntimeError, match="ValidationFailed|Validation failed"):
        app.synth()


def test_acknowledgments_sit_in_the_constructs_not_in_the_stack():
    """The stack wires; each construct acknowledges findings on what it creates."""
    source = (REPO_ROOT / "infra" / "stack.py").read_text()
    assert "acknowledge(" not in source
    assert "Acknowledgment(" not in source
