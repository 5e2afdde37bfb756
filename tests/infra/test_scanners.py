"""Independent scanners on the synthesized template: cfn-lint and checkov.

Both read the learning setup's template as ``cdk synth`` writes it (cdk.json's context,
through conftest's fixtures), in its staging environment with Slack alerts: every
resource of the default template, under the environment's names, plus the optional
ones. checkov takes several seconds, so each template is scanned once per module.
Skips live in the resources' metadata, beside the resource in the construct that
creates it (``infra.nag.skip_checkov``); REVIEWED_SKIPS is the reviewed set, as
test_security_gate.py's REVIEWED is for cdk-nag.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from aws_cdk import App, Stack
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_sqs as sqs

# cfn-lint warnings allowed on CDK's own helper resources only: logical-id prefix ->
# (rules, why). CDK makes each helper function DependsOn its role, which the function's
# Role GetAtt already implies (W3005); the template of these is CDK's, not ours.
CDK_GENERATED = {
    "CustomVpcRestrictDefaultSGCustomResourceProvider": (
        {"W3005"},
        "CDK's handler that removes the rules of the VPC's default security group",
    ),
    "CustomS3AutoDeleteObjectsCustomResourceProvider": (
        {"W3005"},
        "CDK's handler that empties the buckets on stack deletion (learning setup)",
    ),
    "BucketNotificationsHandler": (
        {"W3005"},
        "CDK's handler that writes the stage bucket's notification configuration",
    ),
    "AWS679f53fac002430cb0da5b7982bd2287": (
        {"W3005"},
        "CDK's AwsCustomResource handler, here the S3 prefix-list lookup",
    ),
    "AnalyticsUpgradeProviderframeworkonEvent": (
        {"W3005"},
        "CDK's provider framework function that runs the analytics upgrade on deployment",
    ),
    "LogRetentionaae0aa3c5b4d4f87b02d85b201efdd8a": (
        {"W3005"},
        "CDK's handler that sets the retention of the databases' exported logs",
    ),
}

# check id -> logical ids (without CDK's 8-character hash) where it is skipped, each with
# its reason in the construct that creates the resource.
REVIEWED_SKIPS = {
    # log groups: CloudWatch Logs' own encryption, no customer-managed key
    "CKV_AWS_158": {
        "NetworkFlowLogs",
        "NetworkS3PrefixListLogs",
        "FunctionsExtractLogs",
        "FunctionsLoadLogs",
        "FunctionsDbInitializerLogs",
        "AnalyticsUpgradeProviderLogs",
        # CDK's helpers' own logs, given the stack's retention
        "NetworkDefaultSecurityGroupHandlerLogs",
        "StageEmptyingHandlerLogs",
        "StageNotificationsHandlerLogs",
        "DatabasesLogRetentionHandlerLogs",
        "ReprocessLogs",
    },
    # CDK's deployment-time helper functions: no DLQ, no VPC, no reserved concurrency
    "CKV_AWS_116": {
        "CustomVpcRestrictDefaultSGCustomResourceProviderHandler",
        "CustomS3AutoDeleteObjectsCustomResourceProviderHandler",
        "BucketNotificationsHandler050a0587b7544547bf325f094a3db834",
        "AWS679f53fac002430cb0da5b7982bd2287",
        "AnalyticsUpgradeProviderframeworkonEvent",
        "LogRetentionaae0aa3c5b4d4f87b02d85b201efdd8a",
        # ours use an on-failure destination queue instead of a DLQ
        "FunctionsExtract",
        "FunctionsLoad",
        "FunctionsDbInitializer",
    },
    "CKV_AWS_117": {
        "CustomVpcRestrictDefaultSGCustomResourceProviderHandler",
        "CustomS3AutoDeleteObjectsCustomResourceProviderHandler",
        "BucketNotificationsHandler050a0587b7544547bf325f094a3db834",
        "AWS679f53fac002430cb0da5b7982bd2287",
        "AnalyticsUpgradeProviderframeworkonEvent",
        "LogRetentionaae0aa3c5b4d4f87b02d85b201efdd8a",
    },
    "CKV_AWS_115": {
        "CustomVpcRestrictDefaultSGCustomResourceProviderHandler",
        "CustomS3AutoDeleteObjectsCustomResourceProviderHandler",
        "BucketNotificationsHandler050a0587b7544547bf325f094a3db834",
        "AWS679f53fac002430cb0da5b7982bd2287",
        "AnalyticsUpgradeProviderframeworkonEvent",
        "LogRetentionaae0aa3c5b4d4f87b02d85b201efdd8a",
        "FunctionsDbInitializer",  # invoked by hand and by deployments only
        # reserved concurrency is opt-in (-c reserved_concurrency=true)
        "FunctionsExtract",
        "FunctionsLoad",
    },
    "CKV_AWS_173": {
        "FunctionsExtract",
        "FunctionsLoad",
        "FunctionsDbInitializer",
        "AnalyticsUpgradeProviderframeworkonEvent",
    },
    "CKV_AWS_111": {
        "FunctionsExtractRoleDefaultPolicy",
        "FunctionsLoadRoleDefaultPolicy",
        "FunctionsDbInitializerRoleDefaultPolicy",
        # CDK's log-retention handler: retention policies on "*"
        "LogRetentionaae0aa3c5b4d4f87b02d85b201efdd8aServiceRoleDefaultPolicy",
    },
    "CKV_AWS_27": {"FunctionsFailedInvocations", "NightlyDeadLetterQueue"},  # SSE-SQS
    "CKV_AWS_157": {"DatabasesSource"},  # single-AZ, as AwsSolutions-RDS3
    "CKV_AWS_118": {"DatabasesSource", "DatabasesTargetWriter"},
    "CKV_AWS_18": {"StageAccessLogs"},  # the access-log bucket itself
    "CKV_AWS_21": {"StageAccessLogs"},
    "CKV_AWS_149": {"DatabasesReaderSecret"},  # the AWS managed Secrets Manager key
}
CDK_HASH = re.compile(r"[0-9A-F]{8}$")


def tool(name: str) -> str:
    """A console script of this environment (the dev extra installs both scanners)."""
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.is_file() else shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed: pip install -e '.[dev]'")
    return found


def run_checkov(template: Path) -> dict[str, Any]:
    result = subprocess.run(
        [
            tool("checkov"),
            "--file", str(template),
            "--framework", "cloudformation",
            "--output", "json",
            "--skip-download",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )  # fmt: skip
    assert result.returncode in (0, 1), result.stderr
    return json.loads(result.stdout)


def write_template(raw: dict[str, Any], path: Path) -> Path:
    path.write_text(json.dumps(raw, indent=1))
    return path


def resource_id(check: dict[str, Any]) -> str:
    """``AWS::Lambda::Function.FunctionsExtract10104BDA`` -> ``FunctionsExtract``."""
    return CDK_HASH.sub("", check["resource"].split(".", 1)[1])


@pytest.fixture(scope="module")
def template_file(staging, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("scan") / f"{staging.stack.stack_name}.template.json"
    return write_template(staging.raw, path)


@pytest.fixture(scope="module")
def checkov_report(template_file) -> dict[str, Any]:
    return run_checkov(template_file)


# cfn-lint's exit code is a bit field of what it found; anything else (1) means it did
# not lint the template.
CFN_LINT_ERRORS, CFN_LINT_WARNINGS, CFN_LINT_INFORMATIONAL = 2, 4, 8


def run_cfn_lint(template: Path) -> tuple[int, list[dict[str, Any]]]:
    """cfn-lint's exit code and findings; a run that did not lint fails here, as does an
    empty output (its JSON is "[]" when it finds nothing)."""
    result = subprocess.run(
        [tool("cfn-lint"), "--format", "json", str(template)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    found = CFN_LINT_ERRORS | CFN_LINT_WARNINGS | CFN_LINT_INFORMATIONAL
    assert result.returncode & ~found == 0, (result.returncode, result.stderr)
    assert result.stdout.strip(), f"cfn-lint printed nothing: {result.stderr}"
    return result.returncode, json.loads(result.stdout)


def test_cfn_lint_has_no_errors_and_warns_only_on_cdk_helpers(template_file):
    code, matches = run_cfn_lint(template_file)
    errors = [m for m in matches if m["Level"] == "Error"]
    assert not errors, json.dumps(errors, indent=1)
    assert not code & CFN_LINT_ERRORS
    unexpected = []
    for match in matches:
        logical_id = match["Location"]["Path"][1]
        allowed = [
            rules
            for prefix, (rules, _why) in CDK_GENERATED.items()
            if logical_id.startswith(prefix)
        ]
        if not allowed or match["Rule"]["Id"] not in allowed[0]:
            unexpected.append(f"{match['Rule']['Id']} {logical_id}: {match['Message']}")
    assert not unexpected, "\n".join(unexpected)


def test_cfn_lint_catches_an_invalid_addition(learning, tmp_path):
    """Proof that the lint can fail: the real template plus a queue that CloudFormation
    would refuse (a property it does not have, a timeout that is not a number)."""
    invalid = {
        "Type": "AWS::SQS::Queue",
        "Properties": {"VisibilityTimeout": "soon", "NoSuchProperty": 1},
    }
    raw = {**learning.raw, "Resources": {**learning.raw["Resources"], "InvalidQueue": invalid}}

    code, matches = run_cfn_lint(write_template(raw, tmp_path / "invalid.template.json"))

    assert code & CFN_LINT_ERRORS
    errors = {(m["Rule"]["Id"], m["Location"]["Path"][1]) for m in matches if m["Level"] == "Error"}
    assert errors == {("E3002", "InvalidQueue"), ("E3012", "InvalidQueue")}


def test_checkov_fails_no_check(checkov_report):
    summary = checkov_report["summary"]
    failed = checkov_report["results"]["failed_checks"]
    print(f"checkov: {summary['passed']} passed, {summary['failed']} failed, "
          f"{summary['skipped']} skipped")  # fmt: skip
    assert summary["parsing_errors"] == 0
    assert not failed, "\n".join(
        f"{c['check_id']} {c['resource']}: {c['check_name']}" for c in failed
    )
    assert summary["passed"] > 200, "checkov read too little of the template"


def test_checkov_skips_are_the_reviewed_ones_with_reasons(checkov_report):
    skipped: dict[str, set[str]] = {}
    for check in checkov_report["results"]["skipped_checks"]:
        skipped.setdefault(check["check_id"], set()).add(resource_id(check))
        reason = check["check_result"].get("suppress_comment", "")
        assert len(reason) >= 80, f"{check['check_id']} {check['resource']}: say why"
    assert skipped == REVIEWED_SKIPS


def test_checkov_catches_an_insecure_addition(learning, tmp_path):
    """Proof that the scan can fail: the real template plus two deliberately bad resources.

    They are synthesized in a bare stack (the real one refuses them at synthesis, through
    cdk-nag) and added to the real template.
    """
    bare = Stack(App(), "Insecure")
    sqs.Queue(bare, "UnencryptedQueue", encryption=sqs.QueueEncryption.UNENCRYPTED)
    s3.CfnBucket(
        bare,
        "PublicBucket",
        public_access_block_configuration=s3.CfnBucket.PublicAccessBlockConfigurationProperty(
            block_public_acls=False,
            block_public_policy=False,
            ignore_public_acls=False,
            restrict_public_buckets=False,
        ),
    )
    added = bare.node.root.synth().get_stack_by_name("Insecure").template["Resources"]
    raw = {**learning.raw, "Resources": {**learning.raw["Resources"], **added}}

    report = run_checkov(write_template(raw, tmp_path / "insecure.template.json"))

    failed = {(c["check_id"], resource_id(c)) for c in report["results"]["failed_checks"]}
    assert {
        ("CKV_AWS_27", "UnencryptedQueue"),
        ("CKV_AWS_53", "PublicBucket"),
        ("CKV_AWS_56", "PublicBucket"),
    } <= failed
    assert {name for _, name in failed} == {"UnencryptedQueue", "PublicBucket"}
