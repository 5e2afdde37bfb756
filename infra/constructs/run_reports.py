"""The RunReports topic: each night's report, and the record of each failed invocation."""

from aws_cdk import RemovalPolicy
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_lambda_destinations as destinations
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from infra.constructs.common import allow_through_endpoint, encrypted_topic
from infra.nag import acknowledge

# The load function's variable naming the topic it publishes the night's report to.
TOPIC_ARN_VARIABLE = "RUN_REPORTS_TOPIC_ARN"
# ... and the one it publishes a failed night to, for chat (set only with Slack alerts).
FAILED_NIGHTS_TOPIC_ARN_VARIABLE = "FAILED_NIGHTS_TOPIC_ARN"

# Lambda's invocation records (what an on-failure destination receives) carry
# requestContext.condition ("RetriesExhausted", "EventAgeExceeded"); the load's own
# reports do not. The filter applies to the JSON message body.
INVOCATION_RECORDS_ONLY = {
    "requestContext": sns.FilterOrPolicy.policy(
        {"condition": sns.FilterOrPolicy.filter(sns.SubscriptionFilter.exists_filter())}
    )
}


class RunReports(Construct):
    """An SNS topic, apart from the alarms, that teams subscribe e-mail or chat to.

    Two kinds of message reach it: the report the load function publishes after each
    night, and the invocation record Lambda publishes when a function's asynchronous
    invocation failed after its retries (the topic is every function's on-failure
    destination), which names the function and carries the error. It is encrypted with
    its own customer-managed key: publishing needs ``sns:Publish`` and the key's use,
    which the stack grants to the functions' roles only.
    """

    def __init__(self, scope: Construct, construct_id: str, *, removal_policy: RemovalPolicy):
        super().__init__(scope, construct_id)
        self.key, self.topic = encrypted_topic(
            self,
            "Topic",
            display_name="Shop ETL run reports",
            key_description="Encrypts the ETL run reports topic",
            removal_policy=removal_policy,
        )
        # Every function's on-failure destination (Lambda publishes with its role).
        self.on_failure = _PublishInvocationRecords(self.topic, self._acknowledge_key_use)

    def grant_publish(self, function: lambda_.Function, endpoint: ec2.InterfaceVpcEndpoint) -> None:
        """Let ``function`` publish reports: the topic's ARN, IAM, and the VPC endpoint.

        The functions' subnets reach no public endpoint, so the function talks to SNS
        through ``endpoint``, whose policy lets it carry publishes to this topic only.
        """
        function.add_environment(TOPIC_ARN_VARIABLE, self.topic.topic_arn)
        self.topic.grant_publish(function)
        self._acknowledge_key_use(function)
        function.connections.allow_to(endpoint, ec2.Port.tcp(443), "SNS endpoint")
        allow_through_endpoint(
            endpoint,
            sid="RunReportsPublishOnly",
            actions=["sns:Publish"],
            resources=[self.topic.topic_arn],
        )

    def add_failed_nights(
        self, function: lambda_.Function, endpoint: ec2.InterfaceVpcEndpoint
    ) -> sns.Topic:
        """A topic of the failed nights only, as AWS Chatbot custom notifications.

        Chatbot subscribes to a topic itself, so no filter policy can keep the nightly
        reports out of its subscription, and it posts only messages in a format it knows:
        the RunReports topic's JSON reports and Lambda's invocation records would not
        appear. So ``function`` (the load) publishes a failed night's report here as a
        custom notification too. A night whose function failed reaches the channel as
        the alarms on its errors and on the failed-invocations queue. The topic shares
        the RunReports key: the same publisher, the same kind of content.
        """
        topic = sns.Topic(
            self,
            "FailedNights",
            display_name="Shop ETL failed nights",
            master_key=self.key,
            enforce_ssl=True,
        )
        function.add_environment(FAILED_NIGHTS_TOPIC_ARN_VARIABLE, topic.topic_arn)
        topic.grant_publish(function)
        allow_through_endpoint(
            endpoint,
            sid="FailedNightsPublishOnly",
            actions=["sns:Publish"],
            resources=[topic.topic_arn],
        )
        return topic

    def deliver_invocation_records(self, queue: sqs.IQueue) -> None:
        """Copy the failed-invocation records, as Lambda wrote them, into ``queue``.

        The queue keeps them 14 days for inspection and replay, and its dead-letter
        alarm fires on the first; the nightly reports stay out of it.
        """
        self.topic.add_subscription(
            subscriptions.SqsSubscription(
                queue,
                raw_message_delivery=True,
                filter_policy_with_message_body=INVOCATION_RECORDS_ONLY,
            )
        )

    def _acknowledge_key_use(self, grantee: iam.IGrantable) -> None:
        """Accept the ``kms:GenerateDataKey*`` that a publish grant puts in the role's policy."""
        principal = grantee.grant_principal
        if not isinstance(principal, Construct):
            return  # no policy of this stack to flag
        acknowledge(
            principal,
            "AwsSolutions-IAM5[Action::kms:GenerateDataKey*]",
            "A publish to a KMS-encrypted topic needs a data key of the topic's key; CDK's "
            "publish grant names the GenerateDataKey family (with kms:Decrypt) on exactly "
            "the RunReports key, whose only use is this topic.",
        )


class _PublishInvocationRecords(destinations.SnsDestination):
    """The topic as an on-failure destination, its key grant accepted on the role it adds to."""

    def __init__(self, topic: sns.ITopic, acknowledge_key_use) -> None:
        super().__init__(topic)
        self._acknowledge_key_use = acknowledge_key_use

    def bind(self, _scope: Construct, fn: lambda_.IFunction, *, type=None):  # noqa: A002 - CDK's name
        config = super().bind(_scope, fn, type=type)
        self._acknowledge_key_use(fn)
        return config
