"""The databases' audit trail: what PostgreSQL logs, and where the log goes.

Both engines log every connection and disconnection, and pgaudit (RDS for PostgreSQL
and Aurora PostgreSQL ship it) logs every DDL statement and every role or privilege
change, whoever runs it. RDS exports the log to CloudWatch Logs, into a group it names
after the instance or cluster (``/aws/rds/<kind>/<identifier>/postgresql``) and creates
itself; CDK's log-retention handler gives that group the functions' retention and, in
the learning setup, deletes it with the stack.
"""

from aws_cdk import RemovalPolicy, Stack, Token
from aws_cdk import aws_logs as logs
from constructs import Construct

from infra import lambda_defaults as defaults
from infra.constructs.common import adopt_cdk_helper
from infra.nag import acknowledge, skip_checkov

# What RDS exports: the PostgreSQL server log (errors, connections, pgaudit's lines).
EXPORTED_LOGS = ["postgresql"]
# Static parameters (shared_preload_libraries): a running database takes them at its
# next reboot. pg_stat_statements is the engines' default, kept.
AUDIT_PARAMETERS = {
    "log_connections": "1",
    "log_disconnections": "1",
    "shared_preload_libraries": "pg_stat_statements,pgaudit",
    # DDL (create, alter, drop, grant's objects) and role statements (grant, revoke,
    # create/alter role); never the parameters of a statement, nor reads or writes.
    "pgaudit.log": "ddl,role",
    "pgaudit.log_parameter": "0",
}
# CDK's fixed id of the one log-retention function of a stack.
LOG_RETENTION_HANDLER = "LogRetentionaae0aa3c5b4d4f87b02d85b201efdd8a"


def keep_postgres_log(
    scope: Construct,
    construct_id: str,
    *,
    database: Construct,
    kind: str,
    removal_policy: RemovalPolicy,
) -> logs.LogRetention:
    """Give the exported log of ``database`` (an RDS ``instance`` or ``cluster``, its
    ``kind``) the functions' retention.

    RDS creates the group when it first exports, so it cannot be a resource of the
    stack's own; the handler creates it if it is missing, sets its retention, and with
    ``removal_policy`` DESTROY deletes it with the stack.
    """
    identifier = Stack.of(scope).resolve(database.node.default_child.ref)  # Ref: its id
    retention = logs.LogRetention(
        scope,
        construct_id,
        log_group_name=f"/aws/rds/{kind}/{database.node.default_child.ref}/{EXPORTED_LOGS[0]}",
        retention=defaults.LOG_RETENTION,
        removal_policy=removal_policy,
    )
    handler = Stack.of(scope).node.find_child(LOG_RETENTION_HANDLER)
    _accept_handler_findings(handler)
    adopt_cdk_helper(
        scope,
        "LogRetentionHandlerLogs",
        function=handler.node.find_child("Resource"),
        job="sets the retention of the databases' exported logs",
        removal_policy=removal_policy,
    )
    if removal_policy == RemovalPolicy.DESTROY:
        stack = Stack.of(scope)
        # As cdk-nag writes the ARN: an unresolved part as <AWS::...>, a known one as is
        # (the CDK CLI passes the region of the deploying profile).
        partition, region, account = (
            f"<AWS::{name}>" if Token.is_unresolved(value) else value
            for name, value in (
                ("Partition", stack.partition),
                ("Region", stack.region),
                ("AccountId", stack.account),
            )
        )
        group = (
            f"arn:{partition}:logs:{region}:{account}:log-group:"
            f"/aws/rds/{kind}/<{identifier['Ref']}>/{EXPORTED_LOGS[0]}:*"
        )
        acknowledge(
            handler.node.find_child("ServiceRole"),
            f"AwsSolutions-IAM5[Resource::{group}]",
            "logs:DeleteLogGroup on exactly the database's exported log group (its log "
            "streams make the ':*'), for CDK's log-retention handler to delete the group "
            "with the stack in the learning setup.",
        )
    return retention


def _accept_handler_findings(handler: Construct) -> None:
    """What the gate is told about CDK's log-retention handler (its function and role)."""
    role = handler.node.find_child("ServiceRole")
    acknowledge(
        role,
        "AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/"
        "service-role/AWSLambdaBasicExecutionRole]",
        "CDK's own log-retention handler, run during deployments only: the managed policy "
        "lets it create log groups and write its own logs, which it needs to create the "
        "databases' log groups before RDS does; its other permissions only set or remove "
        "a retention.",
    )
    acknowledge(
        role,
        "AwsSolutions-IAM5[Resource::*]",
        "logs:PutRetentionPolicy and logs:DeleteRetentionPolicy, which CDK's log-retention "
        "handler is granted on '*' (the log groups RDS names after the databases do not "
        "exist when the role is made); it only changes how long logs are kept.",
    )
    skip_checkov(
        role.node.find_child("DefaultPolicy"),
        "CKV_AWS_111",
        "CDK's log-retention handler sets and removes retention policies of log groups "
        "('*', as CDK grants it): a write that only changes how long logs are kept, run "
        "during deployments only.",
    )
