"""Pieces several constructs build the same way: a dead-letter queue, a KMS-encrypted
topic, the statement that lets a VPC endpoint carry one kind of call, and a log group
with the stack's retention for a function of CDK's own.

Each carries the acknowledgments and skips that hold wherever it is used; the caller
says what the piece is for, which goes into the reasons.
"""

from aws_cdk import CfnResource, Duration, RemovalPolicy
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_logs as logs
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sqs as sqs
from constructs import Construct, IConstruct

from infra import lambda_defaults as defaults
from infra.nag import acknowledge, skip_checkov, skip_helper_function_checks

# How long a dead letter waits to be inspected or replayed; an alarm fires on the first.
DEAD_LETTER_RETENTION = Duration.days(14)


def dead_letter_queue(
    scope: Construct,
    construct_id: str,
    *,
    removal_policy: RemovalPolicy,
    sender: str,
    receives: str,
) -> sqs.Queue:
    """An SQS-encrypted, TLS-only queue that keeps what ``sender`` could not deliver.

    ``receives`` says what lands in it, for the reviewer of the acknowledgment.
    """
    queue = sqs.Queue(
        scope,
        construct_id,
        encryption=sqs.QueueEncryption.SQS_MANAGED,
        enforce_ssl=True,
        retention_period=DEAD_LETTER_RETENTION,
        removal_policy=removal_policy,
    )
    skip_checkov(
        queue,
        "CKV_AWS_27",
        "Encrypted at rest with SQS-managed keys (SqsManagedSseEnabled), which CKV_AWS_27 "
        f"does not recognise. A KMS key would have to admit {sender} in its policy, only to "
        "protect failure records of this same account.",
    )
    acknowledge(
        queue,
        "AwsSolutions-SQS3",
        f"This queue is itself the dead-letter destination: it receives {receives}. A "
        "dead-letter queue of it would add nothing. It keeps messages 14 days and an alarm "
        "fires on the first.",
    )
    return queue


def encrypted_topic(
    scope: Construct,
    topic_id: str,
    *,
    display_name: str,
    key_description: str,
    removal_policy: RemovalPolicy,
) -> tuple[kms.Key, sns.Topic]:
    """A TLS-only topic encrypted with its own rotating customer-managed key (``TopicKey``).

    A customer-managed key, because only its policy can admit a publisher that is a
    service (CloudWatch alarms, Lambda destinations); the AWS managed SNS key cannot.
    """
    key = kms.Key(
        scope,
        "TopicKey",
        description=key_description,
        enable_key_rotation=True,
        removal_policy=removal_policy,
    )
    topic = sns.Topic(scope, topic_id, display_name=display_name, master_key=key, enforce_ssl=True)
    return key, topic


def allow_through_endpoint(
    endpoint: ec2.IVpcEndpoint,
    *,
    sid: str,
    actions: list[str],
    resources: list[str],
    conditions: dict | None = None,
) -> None:
    """Let ``endpoint`` carry ``actions`` on ``resources``, whoever calls (IAM still decides).

    An endpoint policy is an allow list: once it holds one statement, everything it does
    not allow is refused, whatever the caller's own policy says.
    """
    endpoint.add_to_policy(
        iam.PolicyStatement(
            sid=sid,
            principals=[iam.AnyPrincipal()],
            actions=actions,
            resources=resources,
            conditions=conditions,
        )
    )


def adopt_cdk_helper(
    scope: Construct,
    construct_id: str,
    *,
    function: IConstruct,
    job: str,
    removal_policy: RemovalPolicy,
) -> logs.ILogGroup:
    """Tell checkov about ``function``, a deployment-time helper of CDK's that does ``job``,
    and send its logs to a log group of the stack's with the functions' retention.

    Left alone, such a function logs to ``/aws/lambda/<its name>``, a group Lambda
    creates on first use and that never expires. Several constructs may cause the same
    helper: the first call makes the group, later ones return it.
    """
    existing = scope.node.try_find_child(construct_id)
    if isinstance(existing, logs.LogGroup):
        return existing
    resource = function if isinstance(function, CfnResource) else function.node.default_child
    if not isinstance(resource, CfnResource):
        raise TypeError(f"{function.node.path} has no function resource to send to a group")
    skip_helper_function_checks(resource, f"it {job}")
    log_group = logs.LogGroup(
        scope, construct_id, retention=defaults.LOG_RETENTION, removal_policy=removal_policy
    )
    skip_checkov(
        log_group,
        "CKV_AWS_158",
        f"CloudWatch Logs encrypts every log group at rest; this one holds the logs of CDK's "
        f"deployment-time helper that {job}: resource names and API answers, no "
        "credentials. A customer-managed key would add cost and a key policy to maintain.",
    )
    # Its role has the basic execution policy, which lets it write to any log group.
    resource.add_property_override("LoggingConfig", {"LogGroup": log_group.log_group_name})
    return log_group
