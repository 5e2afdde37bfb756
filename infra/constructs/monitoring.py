"""Alarms on failed runs and dead letters, published to an encrypted topic."""

from collections.abc import Mapping

from aws_cdk import Duration, RemovalPolicy, Stack
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as cloudwatch_actions
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
from aws_cdk import aws_sqs as sqs
from constructs import Construct

PERIOD = Duration.minutes(5)


class Monitoring(Construct):
    """One alarm per function on Errors and one per queue on waiting messages.

    The topic is encrypted with a customer-managed key because CloudWatch can publish
    to a KMS-encrypted topic only if the key policy lets it; the AWS managed SNS key
    cannot be given that permission.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        functions: Mapping[str, lambda_.IFunction],
        dead_letter_queues: Mapping[str, sqs.IQueue],
        removal_policy: RemovalPolicy,
        alarm_email: str | None = None,
    ) -> None:
        super().__init__(scope, construct_id)
        self.key, self.topic = self._encrypted_topic(removal_policy)
        if alarm_email:
            self.topic.add_subscription(subscriptions.EmailSubscription(alarm_email))

        action = cloudwatch_actions.SnsAction(self.topic)
        self.alarms: list[cloudwatch.Alarm] = []
        for name, function in functions.items():
            self._alarm(
                f"{name}-errors",
                function.metric_errors(period=PERIOD, statistic="Sum"),
                f"The {name} function failed (Errors >= 1 in 5 minutes); see its log group.",
                action,
            )
        for name, queue in dead_letter_queues.items():
            self._alarm(
                f"{name}-messages",
                queue.metric_approximate_number_of_messages_visible(
                    period=PERIOD, statistic="Maximum"
                ),
                f"{name} holds messages: an invocation failed after all its retries.",
                action,
            )

    def _encrypted_topic(self, removal_policy: RemovalPolicy) -> tuple[kms.Key, sns.Topic]:
        """The alarm topic, and its key with a policy that lets CloudWatch publish."""
        cloudwatch_principal = iam.ServicePrincipal("cloudwatch.amazonaws.com")
        from_this_account = {"StringEquals": {"aws:SourceAccount": Stack.of(self).account}}
        key = kms.Key(
            self,
            "TopicKey",
            description="Encrypts the ETL alarm topic",
            enable_key_rotation=True,
            removal_policy=removal_policy,
        )
        key.add_to_resource_policy(
            iam.PolicyStatement(
                sid="CloudWatchAlarmsPublish",
                principals=[cloudwatch_principal],
                actions=["kms:Decrypt", "kms:GenerateDataKey*"],
                resources=["*"],  # in a key policy, "*" is this key
                conditions=from_this_account,
            )
        )
        topic = sns.Topic(
            self,
            "AlarmTopic",
            display_name="Shop ETL alarms",
            master_key=key,
            enforce_ssl=True,
        )
        topic.add_to_resource_policy(
            iam.PolicyStatement(
                sid="CloudWatchAlarmsPublish",
                principals=[cloudwatch_principal],
                actions=["sns:Publish"],
                resources=[topic.topic_arn],
                conditions=from_this_account,
            )
        )
        return key, topic

    def _alarm(
        self,
        name: str,
        metric: cloudwatch.IMetric,
        description: str,
        action: cloudwatch.IAlarmAction,
    ) -> None:
        alarm = cloudwatch.Alarm(
            self,
            name,
            metric=metric,
            threshold=1,
            evaluation_periods=1,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
            alarm_description=description,
        )
        alarm.add_alarm_action(action)
        self.alarms.append(alarm)
