"""What the synthesized template promises: each requirement of the deployment, asserted."""

from __future__ import annotations

import ast
import json
import re
from typing import Any

import pytest
from aws_cdk.assertions import Match

from dbt_project.facts.business_calendar import BUSINESS_TIMEZONE
from dbt_project.facts.roles import EXTRACT_LOGIN, LOAD_LOGIN
from dbt_project.facts.stage_layout import (
    DATA_PREFIX,
    DOCS_KEY,
    DOCS_PAGES,
    DOCS_PREFIX,
    MANIFEST_NAME,
)
from infra import lambda_defaults
from infra.app import build_app
from infra.constructs.function_role import VPC_NETWORK_INTERFACE_ACTIONS
from infra.constructs.functions import DB_INITIALIZER, EXTRACT, LOAD
from infra.packaging.layers import (
    BUILD_COMMAND,
    LAMBDA_PIP_PLATFORM,
    LAMBDA_PYTHON_VERSION,
    RDS_CA_BUNDLE,
    REPO_ROOT,
    LayersNotBuilt,
)

from .conftest import cdk_json_context

SPECS = {spec.name: spec for spec in (EXTRACT, LOAD, DB_INITIALIZER)}
COMMON_ENVIRONMENT = {
    "ETL_DBT_PROJECT_DIR": "/opt/dbt",
    "DBT_TARGET_PATH": "/tmp/dbt/target",  # noqa: S108 - Lambda's writable folder
    "DBT_LOG_PATH": "/tmp/dbt/logs",  # noqa: S108
    "DO_NOT_TRACK": "1",
    "POWERTOOLS_METRICS_NAMESPACE": "ShopEtl",
    "POWERTOOLS_LOG_LEVEL": "INFO",
    "ETL_CONNECT_WAIT_SECONDS": "60",
    "ETL_PG_SSLMODE": "verify-full",
    "ETL_PG_SSLROOTCERT": f"/opt/{RDS_CA_BUNDLE}",
}
DATABASE_KEYS = ("HOST", "PORT", "NAME")
# extract and load log in with IAM tokens as their own logins; only the initializer
# is told where a master secret is.
EXPECTED_KEYS = {
    "extract": {*(f"SOURCE_DB_{k}" for k in DATABASE_KEYS), "SOURCE_DB_IAM_USER", "S3_BUCKET"},
    "load": {
        *(f"ANALYTICS_DB_{k}" for k in DATABASE_KEYS),
        "ANALYTICS_DB_IAM_USER",
        "S3_BUCKET",
        "RUN_REPORTS_TOPIC_ARN",
    },
    "db_initializer": {
        *(f"SOURCE_DB_{k}" for k in (*DATABASE_KEYS, "SECRET_ARN")),
        *(f"ANALYTICS_DB_{k}" for k in (*DATABASE_KEYS, "SECRET_ARN")),
        # the read-only login's secret, and the state machine it starts the history load on
        "READER_SECRET_ARN",
        "REPROCESS_STATE_MACHINE_ARN",
    },
}
IAM_USERS = {"extract": ("SOURCE", EXTRACT_LOGIN), "load": ("ANALYTICS", LOAD_LOGIN)}
# Statements with Resource "*" may hold only these actions (none supports a narrower one).
STAR_RESOURCE_ACTIONS = {
    *VPC_NETWORK_INTERFACE_ACTIONS,
    "xray:PutTraceSegments",
    "xray:PutTelemetryRecords",
}
# ... and the deployment-time lookup of the S3 prefix list, a read of the same kind.
PREFIX_LIST_LOOKUP = ("NetworkS3PrefixListCustomResourcePolicy", {"ec2:DescribeManagedPrefixLists"})
# ... and CDK's handler that sets the retention of the databases' exported logs.
LOG_RETENTION = (
    "LogRetentionaae0aa3c5b4d4f87b02d85b201efdd8aServiceRole",
    {"logs:PutRetentionPolicy", "logs:DeleteRetentionPolicy"},
)
# ... and the state machine's log delivery and tracing (CDK's, for LogLevel.ALL and X-Ray).
STATE_MACHINE_LOGS = (
    "ReprocessStateMachineRole",
    {
        "logs:CreateLogDelivery",
        "logs:DeleteLogDelivery",
        "logs:DescribeLogGroups",
        "logs:DescribeResourcePolicies",
        "logs:GetLogDelivery",
        "logs:ListLogDeliveries",
        "logs:PutResourcePolicy",
        "logs:UpdateLogDelivery",
        "xray:GetSamplingRules",
        "xray:GetSamplingTargets",
        "xray:PutTelemetryRecords",
        "xray:PutTraceSegments",
    },
)


def resources(raw: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    return {k: v for k, v in raw["Resources"].items() if v["Type"] == kind}


def etl_functions(raw: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The three ETL functions by name (CDK's own helper functions are left out)."""
    found = {}
    for resource in resources(raw, "AWS::Lambda::Function").values():
        variables = resource["Properties"].get("Environment", {}).get("Variables", {})
        service = variables.get("POWERTOOLS_SERVICE_NAME", "")
        if service.startswith("shop-etl-"):
            found[service.removeprefix("shop-etl-").replace("-", "_")] = resource["Properties"]
    assert set(found) == set(SPECS)
    return found


def logical_id_of(raw: dict[str, Any], properties: dict[str, Any]) -> str:
    return next(k for k, v in raw["Resources"].items() if v.get("Properties") is properties)


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


# --- stage bucket -------------------------------------------------------------------


def test_stage_files_expire_and_incomplete_uploads_are_aborted(learning):
    learning.template.has_resource_properties(
        "AWS::S3::Bucket",
        {
            "LifecycleConfiguration": {
                "Rules": Match.array_with(
                    [
                        Match.object_like(
                            {
                                "Prefix": "etl-data/",
                                "ExpirationInDays": 30,
                                "NoncurrentVersionExpiration": {"NoncurrentDays": 30},
                                "Status": "Enabled",
                            }
                        ),
                        Match.object_like(
                            {
                                "Prefix": "etl-data/",
                                "ExpiredObjectDeleteMarker": True,
                                "Status": "Enabled",
                            }
                        ),
                        Match.object_like(
                            {
                                "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 1},
                                "Status": "Enabled",
                            }
                        ),
                    ]
                )
            },
            "LoggingConfiguration": {
                "DestinationBucketName": Match.any_value(),
                "LogFilePrefix": Match.any_value(),
            },
            # An overwritten manifest stays recoverable as long as the files are kept.
            "VersioningConfiguration": {"Status": "Enabled"},
        },
    )


def stage_bucket_id(raw: dict[str, Any]) -> str:
    (bucket_id,) = [k for k in resources(raw, "AWS::S3::Bucket") if k.startswith("StageBucket")]
    return bucket_id


def stage_policy_statements(raw: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The stage bucket policy's statements that have a Sid, by Sid."""
    bucket_id = stage_bucket_id(raw)
    (policy,) = [
        p["Properties"]["PolicyDocument"]
        for p in resources(raw, "AWS::S3::BucketPolicy").values()
        if p["Properties"]["Bucket"] == {"Ref": bucket_id}
    ]
    return {s["Sid"]: s for s in policy["Statement"] if "Sid" in s}


def stage_objects_arn(raw: dict[str, Any]) -> dict[str, Any]:
    return {"Fn::Join": ["", [{"Fn::GetAtt": [stage_bucket_id(raw), "Arn"]}, "/etl-data/*"]]}


def docs_objects_arn(raw: dict[str, Any]) -> dict[str, Any]:
    return {"Fn::Join": ["", [{"Fn::GetAtt": [stage_bucket_id(raw), "Arn"]}, f"/{DOCS_PREFIX}*"]]}


def docs_object_arn(raw: dict[str, Any]) -> dict[str, Any]:
    return {"Fn::Join": ["", [{"Fn::GetAtt": [stage_bucket_id(raw), "Arn"]}, f"/{DOCS_KEY}"]]}


def docs_page_arns(raw: dict[str, Any]) -> list[dict[str, Any]]:
    """The pages the load publishes: the lineage site, then the run history."""
    bucket = {"Fn::GetAtt": [stage_bucket_id(raw), "Arn"]}
    return [{"Fn::Join": ["", [bucket, f"/{key}"]]} for key in DOCS_PAGES]


def role_arn(raw: dict[str, Any], prefix: str) -> dict[str, Any]:
    (role_id,) = [k for k in resources(raw, "AWS::IAM::Role") if k.startswith(prefix)]
    return {"Fn::GetAtt": [role_id, "Arn"]}


@pytest.mark.parametrize("setup", ["learning", "kept"])
def test_only_the_extract_role_may_write_stage_objects(setup, request):
    raw = request.getfixturevalue(setup).raw
    deny = stage_policy_statements(raw)["StageFilesAreWrittenOnlyByTheExtract"]
    assert deny["Effect"] == "Deny"
    assert deny["Principal"] == {"AWS": "*"}, "every principal, the account's own included"
    # Multipart uploads (create, upload part, complete) are authorized as s3:PutObject.
    assert set(as_list(deny["Action"])) == {
        "s3:PutObject",
        "s3:AbortMultipartUpload",
        "s3:ReplicateObject",
    }
    assert deny["Resource"] == stage_objects_arn(raw)
    assert deny["Condition"] == {
        "ArnNotEquals": {"aws:PrincipalArn": role_arn(raw, "FunctionsExtractRole")}
    }


def test_staged_files_are_deleted_only_by_expiry_or_the_stacks_own_emptying(learning, kept):
    # given the learning setup, whose buckets CDK's handler empties on stack deletion
    deny = stage_policy_statements(learning.raw)["StageFilesAreDeletedOnlyByExpiryOrStackDeletion"]
    assert deny["Effect"] == "Deny" and deny["Principal"] == {"AWS": "*"}
    assert set(as_list(deny["Action"])) == {
        "s3:DeleteObject",
        "s3:DeleteObjectVersion",
        "s3:ReplicateDelete",
    }
    assert deny["Resource"] == stage_objects_arn(learning.raw)
    emptying = role_arn(learning.raw, "CustomS3AutoDeleteObjectsCustomResourceProviderRole")
    assert deny["Condition"] == {"ArnNotEquals": {"aws:PrincipalArn": emptying}}
    # then that handler keeps its own Allow on the bucket (CDK's), so deletion still works
    bucket_id = stage_bucket_id(learning.raw)
    (policy,) = [
        p["Properties"]["PolicyDocument"]["Statement"]
        for p in resources(learning.raw, "AWS::S3::BucketPolicy").values()
        if p["Properties"]["Bucket"] == {"Ref": bucket_id}
    ]
    assert any(s["Effect"] == "Allow" and s["Principal"] == {"AWS": emptying} for s in policy), (
        "the stack could no longer empty the bucket"
    )
    # and in the kept setup nothing may delete a staged file but the lifecycle rules
    kept_deny = stage_policy_statements(kept.raw)["StageFilesAreDeletedOnlyByExpiryOrStackDeletion"]
    assert "Condition" not in kept_deny


def test_stage_denies_leave_the_bucket_and_its_access_logs_alone(learning):
    """Only stage objects and the lineage site are protected: bucket-level calls
    (notifications, the emptying handler's policy change) and S3's log delivery into the
    log bucket are untouched."""
    raw = learning.raw
    for sid, statement in stage_policy_statements(raw).items():
        if sid == "LineageSiteIsWrittenOnlyByTheLoad":  # tests/infra/test_operations.py
            assert statement["Resource"] == docs_objects_arn(raw)
            continue
        assert statement["Resource"] == stage_objects_arn(raw)
    stage_id = stage_bucket_id(raw)
    for policy in resources(raw, "AWS::S3::BucketPolicy").values():
        if policy["Properties"]["Bucket"] == {"Ref": stage_id}:
            continue
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]:
            if statement["Effect"] == "Deny":
                assert "aws:SecureTransport" in json.dumps(statement.get("Condition")) or (
                    "s3:TlsVersion" in json.dumps(statement.get("Condition"))
                ), statement


def test_only_a_manifest_under_the_stage_prefix_triggers_the_load(learning):
    raw = learning.raw
    load_id = logical_id_of(raw, etl_functions(raw)["load"])
    learning.template.has_resource_properties(
        "Custom::S3BucketNotifications",
        {
            "NotificationConfiguration": {
                "LambdaFunctionConfigurations": [
                    {
                        "Events": ["s3:ObjectCreated:*"],
                        "Filter": {
                            "Key": {
                                "FilterRules": Match.array_equals(
                                    [
                                        {"Name": "suffix", "Value": "_manifest.json"},
                                        {"Name": "prefix", "Value": "etl-data/"},
                                    ]
                                )
                            }
                        },
                        "LambdaFunctionArn": {"Fn::GetAtt": [load_id, "Arn"]},
                    }
                ]
            }
        },
    )


def test_every_bucket_is_private_encrypted_and_tls_only(learning):
    raw = learning.raw
    buckets = resources(raw, "AWS::S3::Bucket")
    assert len(buckets) == 2
    for properties in (b["Properties"] for b in buckets.values()):
        assert properties["PublicAccessBlockConfiguration"] == {
            "BlockPublicAcls": True,
            "BlockPublicPolicy": True,
            "IgnorePublicAcls": True,
            "RestrictPublicBuckets": True,
        }
        rule = properties["BucketEncryption"]["ServerSideEncryptionConfiguration"][0]
        assert rule["ServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
    policies = resources(raw, "AWS::S3::BucketPolicy").values()
    tls_denied = {
        p["Properties"]["Bucket"]["Ref"]
        for p in policies
        for s in p["Properties"]["PolicyDocument"]["Statement"]
        if s["Effect"] == "Deny"
        and s.get("Condition", {}).get("Bool") == {"aws:SecureTransport": "false"}
    }
    assert tls_denied == set(buckets)


# --- network ------------------------------------------------------------------------


def test_isolated_network_without_nat_with_endpoints_and_flow_logs(learning):
    template = learning.template
    template.resource_count_is("AWS::EC2::NatGateway", 0)
    template.resource_count_is("AWS::EC2::InternetGateway", 0)
    template.resource_count_is("AWS::EC2::Subnet", 2)
    template.all_resources_properties("AWS::EC2::Subnet", {"MapPublicIpOnLaunch": False})
    template.has_resource_properties("AWS::EC2::VPCEndpoint", {"VpcEndpointType": "Gateway"})
    endpoints = resources(learning.raw, "AWS::EC2::VPCEndpoint").values()
    interfaces = {
        e["Properties"]["ServiceName"]["Fn::Join"][1][-1].lstrip("."): e["Properties"]
        for e in endpoints
        if e["Properties"]["VpcEndpointType"] == "Interface"
    }
    # Secrets Manager for the initializer, SNS for the load's run reports, Step Functions
    # for the initializer's start of the history load.
    assert set(interfaces) == {"secretsmanager", "sns", "states"}
    assert all(e["PrivateDnsEnabled"] is True for e in interfaces.values())
    # billed per AZ-hour: one AZ by default
    assert all(len(e["SubnetIds"]) == 1 for e in interfaces.values())
    template.has_resource_properties(
        "AWS::EC2::FlowLog", {"ResourceType": "VPC", "TrafficType": "ALL"}
    )


def test_security_groups_admit_only_functions_to_databases_and_endpoint(learning):
    raw = learning.raw
    groups = resources(raw, "AWS::EC2::SecurityGroup")
    for group in groups.values():
        assert "SecurityGroupIngress" not in group["Properties"], "no inline (CIDR) ingress"
    ingress = [r["Properties"] for r in resources(raw, "AWS::EC2::SecurityGroupIngress").values()]
    seen = set()
    for rule in ingress:
        assert "CidrIp" not in rule and "CidrIpv6" not in rule
        source = rule["SourceSecurityGroupId"]["Fn::GetAtt"][0].split("SecurityGroup")[0]
        destination = rule["GroupId"]["Fn::GetAtt"][0].split("SecurityGroup")[0]
        assert rule["IpProtocol"] == "tcp" and rule["FromPort"] == rule["ToPort"]
        seen.add((source, destination, rule["FromPort"]))
    assert seen == {
        ("FunctionsExtract", "DatabasesSource", 5432),
        ("FunctionsDbInitializer", "DatabasesSource", 5432),
        ("FunctionsLoad", "DatabasesTarget", 5432),
        ("FunctionsDbInitializer", "DatabasesTarget", 5432),
        # Only the initializer reads a secret.
        ("FunctionsDbInitializer", "NetworkSecretsManagerEndpoint", 443),
        # Only the initializer starts an execution (the history load).
        ("FunctionsDbInitializer", "NetworkStepFunctionsEndpoint", 443),
        # Only the load publishes (its run report).
        ("FunctionsLoad", "NetworkSnsEndpoint", 443),
    }


def test_function_egress_only_to_s3_prefix_list_databases_and_endpoint(learning):
    raw = learning.raw
    for logical_id, group in resources(raw, "AWS::EC2::SecurityGroup").items():
        for rule in group["Properties"].get("SecurityGroupEgress", []):
            assert rule["CidrIp"] == "255.255.255.255/32", (
                logical_id,
                rule,
            )  # CDK's no-traffic rule
    (lookup,) = resources(raw, "Custom::AWS").values()
    assert '"prefix-list-name","Values":["com.amazonaws.' in json.dumps(
        lookup["Properties"]["Create"]
    ).replace("\\", "")
    s3_prefix_list = {
        "Fn::GetAtt": [logical_id_of(raw, lookup["Properties"]), "PrefixLists.0.PrefixListId"]
    }
    egress: dict[str, set[tuple[str, int]]] = {}
    for rule in (r["Properties"] for r in resources(raw, "AWS::EC2::SecurityGroupEgress").values()):
        assert "CidrIp" not in rule and "CidrIpv6" not in rule, rule
        assert rule["IpProtocol"] == "tcp" and rule["FromPort"] == rule["ToPort"]
        source = rule["GroupId"]["Fn::GetAtt"][0].split("SecurityGroup")[0]
        if "DestinationPrefixListId" in rule:
            assert rule["DestinationPrefixListId"] == s3_prefix_list
            destination = "S3"
        else:
            destination = rule["DestinationSecurityGroupId"]["Fn::GetAtt"][0].split(
                "SecurityGroup"
            )[0]
        egress.setdefault(source, set()).add((destination, rule["FromPort"]))
    assert egress == {
        "FunctionsExtract": {("S3", 443), ("DatabasesSource", 5432)},
        "FunctionsLoad": {("S3", 443), ("DatabasesTarget", 5432), ("NetworkSnsEndpoint", 443)},
        "FunctionsDbInitializer": {
            ("DatabasesSource", 5432),
            ("DatabasesTarget", 5432),
            ("NetworkSecretsManagerEndpoint", 443),
            ("NetworkStepFunctionsEndpoint", 443),
        },
    }


def test_s3_endpoint_carries_only_stage_traffic(learning):
    raw = learning.raw
    (gateway,) = [
        e["Properties"]
        for e in resources(raw, "AWS::EC2::VPCEndpoint").values()
        if e["Properties"]["VpcEndpointType"] == "Gateway"
    ]
    statements = gateway["PolicyDocument"]["Statement"]
    bucket = {"Fn::GetAtt": [stage_bucket_id(raw), "Arn"]}
    allowed = {}
    for statement in statements:
        assert statement["Effect"] == "Allow"
        for action in as_list(statement["Action"]):
            allowed.setdefault(action, []).extend(as_list(statement["Resource"]))
    assert allowed == {
        "s3:PutObject": [stage_objects_arn(raw), *docs_page_arns(raw)],
        "s3:AbortMultipartUpload": [stage_objects_arn(raw), *docs_page_arns(raw)],
        "s3:GetObject": [stage_objects_arn(raw)],
        "s3:ListBucket": [bucket],
    }


# --- databases ----------------------------------------------------------------------


def test_source_is_a_private_encrypted_postgres_micro_instance(learning):
    learning.template.has_resource_properties(
        "AWS::RDS::DBInstance",
        {
            "Engine": "postgres",
            # A minor version: cfn-lint (W3691) flags a bare "17" as deprecated.
            "EngineVersion": Match.string_like_regexp(r"^17\.\d+$"),
            "DBInstanceClass": "db.t4g.micro",
            "StorageEncrypted": True,
            "PubliclyAccessible": False,
            "EnableIAMDatabaseAuthentication": True,
            "ManageMasterUserPassword": True,
            "BackupRetentionPeriod": Match.any_value(),
            "Port": "5432",
        },
    )


def test_target_is_aurora_serverless_v2_that_pauses_at_zero(learning):
    learning.template.has_resource_properties(
        "AWS::RDS::DBCluster",
        {
            "Engine": "aurora-postgresql",
            "StorageEncrypted": True,
            "EnableIAMDatabaseAuthentication": True,
            "ManageMasterUserPassword": True,
            "ServerlessV2ScalingConfiguration": {
                "MinCapacity": 0,
                "MaxCapacity": 2,
                "SecondsUntilAutoPause": 300,
            },
        },
    )
    learning.template.has_resource_properties(
        "AWS::RDS::DBInstance", {"DBInstanceClass": "db.serverless", "PubliclyAccessible": False}
    )


def test_both_databases_force_tls(learning):
    for kind in ("AWS::RDS::DBParameterGroup", "AWS::RDS::DBClusterParameterGroup"):
        learning.template.has_resource_properties(kind, {"Parameters": {"rds.force_ssl": "1"}})


def keys_of(node: Any) -> set[str]:
    if isinstance(node, dict):
        return set(node).union(*(keys_of(v) for v in node.values()))
    if isinstance(node, list):
        return set().union(*(keys_of(v) for v in node))
    return set()


def test_no_password_in_the_template(learning):
    keys = keys_of(learning.raw)
    assert not keys & {"MasterUserPassword", "SecretString"}
    # The one secret of the template is the reader's, generated by Secrets Manager.
    (secret,) = resources(learning.raw, "AWS::SecretsManager::Secret").values()
    generated = secret["Properties"]["GenerateSecretString"]
    assert set(json.loads(generated["SecretStringTemplate"])) == {"username"}
    assert generated["GenerateStringKey"] == "password"


# --- functions ----------------------------------------------------------------------


def test_runtime_matches_the_platform_the_layers_are_built_for():
    assert lambda_defaults.RUNTIME.name == f"python{LAMBDA_PYTHON_VERSION}"
    assert lambda_defaults.ARCHITECTURE.name == "arm64"
    assert "aarch64" in LAMBDA_PIP_PLATFORM


@pytest.mark.parametrize("name", list(SPECS))
def test_function_settings(learning, name):
    spec = SPECS[name]
    function = etl_functions(learning.raw)[name]
    assert function["Runtime"] == "python3.12"
    assert function["Architectures"] == ["arm64"]
    assert function["Handler"] == "handler.handler"
    assert function["Timeout"] == spec.timeout.to_seconds()
    assert function["MemorySize"] == spec.memory_size
    # Opt-in (tests/infra/test_operations.py): a new account has no concurrency to reserve.
    assert "ReservedConcurrentExecutions" not in function
    assert function["TracingConfig"] == {"Mode": "Active"}
    assert function["LoggingConfig"]["LogFormat"] == "JSON"
    assert len(function["Layers"]) == 2
    assert function["VpcConfig"]["SecurityGroupIds"]


def test_sizes_and_concurrency_as_specified():
    assert (EXTRACT.timeout.to_minutes(), EXTRACT.memory_size) == (15, 1024)
    assert (LOAD.timeout.to_minutes(), LOAD.memory_size) == (10, 512)
    assert (DB_INITIALIZER.timeout.to_minutes(), DB_INITIALIZER.memory_size) == (10, 512)
    assert EXTRACT.reserved_concurrency == LOAD.reserved_concurrency == 1


@pytest.mark.parametrize("name", list(SPECS))
def test_environment_per_function(learning, name):
    variables = etl_functions(learning.raw)[name]["Environment"]["Variables"]
    assert set(variables) == {
        *COMMON_ENVIRONMENT,
        "POWERTOOLS_SERVICE_NAME",
        "ETL_STATEMENT_TIMEOUT_MS",
        *EXPECTED_KEYS[name],
    }
    for key, value in COMMON_ENVIRONMENT.items():
        assert variables[key] == value
    assert variables["POWERTOOLS_SERVICE_NAME"] == f"shop-etl-{name.replace('_', '-')}"
    if name in IAM_USERS:
        prefix, login = IAM_USERS[name]
        assert variables[f"{prefix}_DB_IAM_USER"] == login
    statement_timeout = int(variables["ETL_STATEMENT_TIMEOUT_MS"])
    assert 0 < statement_timeout < SPECS[name].timeout.to_milliseconds()
    for prefix in ("SOURCE", "ANALYTICS"):
        if f"{prefix}_DB_SECRET_ARN" in variables:
            assert variables[f"{prefix}_DB_PORT"] == "5432"
            arn = variables[f"{prefix}_DB_SECRET_ARN"]
            assert arn["Fn::GetAtt"][1] == "MasterUserSecret.SecretArn"


SECRET_LOOKING = re.compile(r"(?i)(password|passwd|secret|token|private.?key)")


def test_no_environment_variable_holds_a_secret(learning):
    for resource in resources(learning.raw, "AWS::Lambda::Function").values():
        variables = resource["Properties"].get("Environment", {}).get("Variables", {})
        for key, value in variables.items():
            if SECRET_LOOKING.search(key):
                # Only a reference to where the secret lives, resolved by CloudFormation.
                assert key.endswith("_SECRET_ARN"), key
                assert isinstance(value, dict), f"{key} holds a literal"
            if isinstance(value, str):
                assert not SECRET_LOOKING.search(value), f"{key}={value!r}"
                assert len(value) < 64, f"{key} holds a long literal"


@pytest.mark.parametrize("name", list(SPECS))
def test_failed_async_invocations_are_retried_then_queued(learning, name):
    raw = learning.raw
    function_id = logical_id_of(raw, etl_functions(raw)[name])
    # The run reports topic, which passes the record on to the failure queue
    # (tests/infra/test_monitoring.py).
    topic_ids = [k for k in resources(raw, "AWS::SNS::Topic") if k.startswith("RunReports")]
    assert len(topic_ids) == 1
    learning.template.has_resource_properties(
        "AWS::Lambda::EventInvokeConfig",
        {
            "FunctionName": {"Ref": function_id},
            "MaximumRetryAttempts": SPECS[name].retry_attempts,
            "DestinationConfig": {"OnFailure": {"Destination": {"Ref": topic_ids[0]}}},
        },
    )


def test_queues_and_topic_are_encrypted_and_tls_only(learning):
    raw = learning.raw
    queues = resources(raw, "AWS::SQS::Queue")
    assert len(queues) == 2
    for queue in queues.values():
        assert queue["Properties"]["SqsManagedSseEnabled"] is True
    denied = [
        q
        for p in resources(raw, "AWS::SQS::QueuePolicy").values()
        for s in p["Properties"]["PolicyDocument"]["Statement"]
        if s["Effect"] == "Deny" and s["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
        for q in p["Properties"]["Queues"]
    ]
    assert len(denied) == 2
    learning.template.has_resource_properties(
        "AWS::SNS::Topic", {"KmsMasterKeyId": Match.any_value()}
    )
    learning.template.has_resource_properties("AWS::KMS::Key", {"EnableKeyRotation": True})
    learning.template.has_resource_properties(
        "AWS::SNS::TopicPolicy",
        {
            "PolicyDocument": {
                "Statement": Match.array_with(
                    [
                        Match.object_like(
                            {
                                "Effect": "Deny",
                                "Condition": {"Bool": {"aws:SecureTransport": "false"}},
                            }
                        )
                    ]
                )
            }
        },
    )


def test_every_function_and_queue_has_an_alarm_to_the_topic(learning):
    raw = learning.raw
    alarms = [a["Properties"] for a in resources(raw, "AWS::CloudWatch::Alarm").values()]
    topic_ids = [k for k in resources(raw, "AWS::SNS::Topic") if k.startswith("Monitoring")]
    assert len(topic_ids) == 1
    errors = {a["Dimensions"][0]["Value"]["Ref"] for a in alarms if a["MetricName"] == "Errors"}
    assert errors == {logical_id_of(raw, f) for f in etl_functions(raw).values()}
    queued = [a for a in alarms if a["MetricName"] == "ApproximateNumberOfMessagesVisible"]
    assert len(queued) == 2
    for alarm in alarms:
        assert alarm["AlarmActions"] == [{"Ref": topic_ids[0]}]
        assert alarm["Threshold"] == 1


# --- schedule -----------------------------------------------------------------------


def test_nightly_schedule_in_tokyo_time_with_retries_and_dead_letters(learning):
    raw = learning.raw
    extract_id = logical_id_of(raw, etl_functions(raw)["extract"])
    dlq = [k for k in resources(raw, "AWS::SQS::Queue") if k.startswith("Nightly")]
    assert len(dlq) == 1
    learning.template.has_resource_properties(
        "AWS::Scheduler::Schedule",
        {
            "ScheduleExpression": "cron(0 2 * * ? *)",
            "ScheduleExpressionTimezone": "Asia/Tokyo",
            "State": "ENABLED",
            "FlexibleTimeWindow": {"Mode": "OFF"},
            "Target": {
                "Arn": {"Fn::GetAtt": [extract_id, "Arn"]},
                "Input": '{"scheduled_time":"<aws.scheduler.scheduled-time>"}',
                "RetryPolicy": {
                    "MaximumRetryAttempts": Match.any_value(),
                    "MaximumEventAgeInSeconds": Match.any_value(),
                },
                "DeadLetterConfig": {"Arn": {"Fn::GetAtt": [dlq[0], "Arn"]}},
                "RoleArn": Match.any_value(),
            },
        },
    )


# --- IAM ----------------------------------------------------------------------------


def policy_statements(raw: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    found = []
    for logical_id, policy in resources(raw, "AWS::IAM::Policy").items():
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]:
            found.append((logical_id, statement))
    for logical_id, role in resources(raw, "AWS::IAM::Role").items():
        for inline in role["Properties"].get("Policies", []):
            for statement in inline["PolicyDocument"]["Statement"]:
                found.append((logical_id, statement))
    return found


def test_no_wildcard_actions_and_star_resources_only_where_acknowledged(learning):
    for logical_id, statement in policy_statements(learning.raw):
        if statement["Effect"] != "Allow":
            continue
        actions = set(as_list(statement["Action"]))
        assert "*" not in actions and "s3:*" not in actions, (logical_id, statement)
        assert not any(a.endswith(":*") for a in actions), (logical_id, statement)
        if "*" in as_list(statement["Resource"]):
            helper = [h for h in (PREFIX_LIST_LOOKUP, LOG_RETENTION) if logical_id.startswith(h[0])]
            if helper:
                assert actions == helper[0][1], (logical_id, statement)
                continue
            if logical_id.startswith(STATE_MACHINE_LOGS[0]):
                assert actions == STATE_MACHINE_LOGS[1], (logical_id, statement)
                continue
            assert actions <= STAR_RESOURCE_ACTIONS, (logical_id, statement)
            assert logical_id.startswith("Functions") and "Role" in logical_id


def test_function_roles_have_no_managed_policies(learning):
    for logical_id, role in resources(learning.raw, "AWS::IAM::Role").items():
        if logical_id.startswith(("Functions", "Nightly")):
            assert "ManagedPolicyArns" not in role["Properties"], logical_id


def test_each_role_reaches_only_its_own_secrets_and_prefix(learning):
    statements = policy_statements(learning.raw)

    def grants(role_prefix: str) -> dict[str, Any]:
        found: dict[str, Any] = {}
        for logical_id, statement in statements:
            if logical_id.startswith(role_prefix):
                for action in as_list(statement["Action"]):
                    found.setdefault(action, []).extend(as_list(statement["Resource"]))
        return found

    def secret_owners(resources_: list[Any]) -> set[str]:
        return {
            (r["Fn::GetAtt"][0] if "Fn::GetAtt" in r else r["Ref"]).removeprefix("Databases")[:6]
            for r in resources_
        }

    extract, load, init = (
        grants("FunctionsExtractRole"),
        grants("FunctionsLoadRole"),
        grants("FunctionsDbInitializerRole"),
    )
    # Only the initializer reads a (master) secret; extract and load cannot read any.
    assert not [a for a in {*extract, *load} if a.startswith("secretsmanager:")]
    # The master secrets, and the read-only login's, whose password it sets.
    assert secret_owners(init["secretsmanager:GetSecretValue"]) == {"Source", "Target", "Reader"}
    # Each runtime function may connect as exactly its own database user, nothing else.
    raw = learning.raw
    source = db_user_arn(
        raw, "AWS::RDS::DBInstance", "DatabasesSource", "DbiResourceId", EXTRACT_LOGIN
    )
    target = db_user_arn(
        raw, "AWS::RDS::DBCluster", "DatabasesTarget", "DBClusterResourceId", LOAD_LOGIN
    )
    assert extract["rds-db:connect"] == [source]
    assert load["rds-db:connect"] == [target]
    assert "rds-db:connect" not in init
    assert {a for a in extract if a.startswith("s3:")} == {
        "s3:PutObject",
        "s3:AbortMultipartUpload",
    }
    assert {a for a in load if a.startswith("s3:")} == {
        "s3:GetObject",
        "s3:ListBucket",
        # the lineage site, docs/index.html only (tests/infra/test_operations.py)
        "s3:PutObject",
        "s3:AbortMultipartUpload",
    }
    assert not [a for a in init if a.startswith("s3:")]
    for action in ("s3:PutObject", "s3:AbortMultipartUpload"):
        (resource,) = extract[action]
        assert resource["Fn::Join"][1][1] == "/etl-data/*"
    (resource,) = load["s3:GetObject"]
    assert resource["Fn::Join"][1][1] == "/etl-data/*"


def db_user_arn(
    raw: dict[str, Any], kind: str, prefix: str, resource_id: str, login: str
) -> dict[str, Any]:
    """arn:<partition>:rds-db:<region>:<account>:dbuser:<resource id>/<login>"""
    (database_id,) = [k for k in resources(raw, kind) if k.startswith(prefix)]
    return {
        "Fn::Join": [
            "",
            [
                "arn:",
                {"Ref": "AWS::Partition"},
                ":rds-db:",
                {"Ref": "AWS::Region"},
                ":",
                {"Ref": "AWS::AccountId"},
                ":dbuser:",
                {"Fn::GetAtt": [database_id, resource_id]},
                f"/{login}",
            ],
        ]
    }


# --- retain flag and outputs --------------------------------------------------------


def source_instance(raw: dict[str, Any]) -> dict[str, Any]:
    (instance,) = [
        r
        for r in resources(raw, "AWS::RDS::DBInstance").values()
        if r["Properties"]["Engine"] == "postgres"
    ]
    return instance


def test_learning_setup_is_deleted_with_the_stack(learning):
    template = learning.template
    instance = source_instance(learning.raw)
    assert instance["DeletionPolicy"] == "Delete"
    assert instance["Properties"]["DeletionProtection"] is False
    template.all_resources("AWS::RDS::DBCluster", {"DeletionPolicy": "Delete"})
    template.has_resource_properties("AWS::RDS::DBCluster", {"DeletionProtection": False})
    template.all_resources("AWS::S3::Bucket", {"DeletionPolicy": "Delete"})
    template.resource_count_is("Custom::S3AutoDeleteObjects", 2)


def test_kept_setup_snapshots_databases_and_keeps_buckets(kept):
    template = kept.template
    template.all_resources("AWS::RDS::DBCluster", {"DeletionPolicy": "Snapshot"})
    instance = source_instance(kept.raw)
    assert instance["DeletionPolicy"] == "Snapshot"
    assert instance["Properties"]["DeletionProtection"] is True
    template.has_resource_properties("AWS::RDS::DBCluster", {"DeletionProtection": True})
    template.all_resources("AWS::S3::Bucket", {"DeletionPolicy": "Retain"})
    template.resource_count_is("Custom::S3AutoDeleteObjects", 0)


def test_outputs(learning):
    outputs = learning.raw["Outputs"]
    for name in (
        "ExtractFunctionName",
        "LoadFunctionName",
        "DbInitializerFunctionName",
        "StageBucketName",
        "SourceDbEndpoint",
        "TargetDbEndpoint",
        "SourceDbSecretArn",
        "TargetDbSecretArn",
        "ExtractLogGroupName",
        "LoadLogGroupName",
        "DbInitializerLogGroupName",
        "ClusterArn",
        "ReaderSecretArn",
        "DatabaseName",
    ):
        assert "Value" in outputs[name], name


# --- synthesis without layers -------------------------------------------------------


def test_synthesis_without_layers_names_the_build_command(tmp_path, code_root):
    context = {
        **cdk_json_context(),
        "layers_dir": str(tmp_path / "missing"),
        "lambdas_dir": str(code_root),
    }
    with pytest.raises(LayersNotBuilt, match=re.escape(BUILD_COMMAND)):
        build_app(context, outdir=str(tmp_path / "out"))


# --- one place for each fact --------------------------------------------------------


def string_literals(tree: ast.AST) -> list[ast.Constant]:
    """Every string constant in ``tree`` except docstrings."""
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef)
        and node.body
        and isinstance(node.body[0], ast.Expr)
    }
    return [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and id(node) not in docstrings
    ]


def test_infra_imports_the_stage_layout_and_time_zone_instead_of_repeating_them():
    facts = (DATA_PREFIX, MANIFEST_NAME, BUSINESS_TIMEZONE)
    for path in sorted((REPO_ROOT / "infra").rglob("*.py")):
        for node in string_literals(ast.parse(path.read_text())):
            repeated = [fact for fact in facts if fact in node.value]
            assert not repeated, f"{path.relative_to(REPO_ROOT)}:{node.lineno} repeats {repeated}"


def test_interface_endpoints_in_every_az_is_opt_in(reserved):
    endpoints = resources(reserved.raw, "AWS::EC2::VPCEndpoint").values()
    interfaces = [
        e["Properties"] for e in endpoints if e["Properties"]["VpcEndpointType"] == "Interface"
    ]
    assert len(interfaces) == 3 and all(len(e["SubnetIds"]) == 2 for e in interfaces)
