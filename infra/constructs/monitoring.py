"""Alarms on failed runs, dead letters, missing nights and a stale source, published to an
encrypted topic."""

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

from dbt_project.facts import metric_names
from infra.constructs.common import encrypted_topic
from infra.function_specs import EXTRACT, LOAD
from infra.metrics import etl_metric

PERIOD = Duration.minutes(5)

# The heartbeat alarm: no night loaded in the last 26 hours. A night loads around 02:00
# to 03:00 in the business time zone, so a missed night is reported the next morning
# with two hours' slack for a slow one. CloudWatch evaluates a standard alarm every
# minute over the last Period x EvaluationPeriods, which may reach 7 days only for
# periods of 1 hour or more (under 1 hour, at most 1 day): so 26 periods of 1 hour,
# all 26 breaching (M = N), with missing data breaching. Any heartbeat in any of the
# 26 hours keeps it OK; none at all (a disabled schedule, no manifest, a lost S3
# event, a load failing every retry) makes all 26 breach.
HEARTBEAT_PERIOD = Duration.hours(1)
HEARTBEAT_HOURS = 26


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
        metrics_namespace: str = metric_names.NAMESPACE,
        expect_nightly: bool = True,
    ) -> None:
        super().__init__(scope, construct_id)
        self._namespace = metrics_namespace
        self.key, self.topic = self._encrypted_topic(removal_policy)
        if alarm_email:
            self.topic.add_subscription(subscriptions.EmailSubscription(alarm_email))

        action = cloudwatch_actions.SnsAction(self.topic)
        self.alarms: list[cloudwatch.Alarm] = []
        self._night_alarms(action, expect_nightly)
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

    def _night_alarms(self, action: cloudwatch.IAlarmAction, expect_nightly: bool) -> None:
        """A night that did not load (the heartbeat), and one the freshness gate stopped.

        Without the nightly schedule no night is expected, and a heartbeat alarm would
        only stay in ALARM: there is none.
        """
        if expect_nightly:
            self._heartbeat(action)
        self._alarm(
            "source-stale",
            etl_metric(
                metric_names.SOURCE_STALE, EXTRACT.name, period=PERIOD, namespace=self._namespace
            ),
            "The source freshness gate stopped a night: the newest source rows are older "
            "than the error threshold. See the extract's log group and the run report.",
            action,
        )

    def _heartbeat(self, action: cloudwatch.IAlarmAction) -> None:
        heartbeat = cloudwatch.Alarm(
            self,
            "no-night-loaded",
            metric=etl_metric(
                metric_names.NIGHTS_LOADED,
                LOAD.name,
                period=HEARTBEAT_PERIOD,
                namespace=self._namespace,
            ),
            threshold=1,
            comparison_operator=cloudwatch.ComparisonOperator.LESS_THAN_THRESHOLD,
            evaluation_periods=HEARTBEAT_HOURS,
            datapoints_to_alarm=HEARTBEAT_HOURS,
            treat_missing_data=cloudwatch.TreatMissingData.BREACHING,
            alarm_description=(
                f"No night loaded in the last {HEARTBEAT_HOURS} hours "
                f"({metric_names.NIGHTS_LOADED} missing): check the schedule, the extract's "
                "log group, the stage for the manifest and the failed-invocations queue."
            ),
        )
        heartbeat.add_alarm_action(action)
        self.alarms.append(heartbeat)

    def _encrypted_topic(self, removal_policy: RemovalPolicy) -> tuple[kms.Key, sns.Topic]:
        """The alarm topic, and its key with a policy that lets CloudWatch publish."""
        cloudwatch_principal = iam.ServicePrincipal("cloudwatch.amazonaws.com")
        from_this_account = {"StringEquals": {"aws:SourceAccount": Stack.of(self).account}}
        key, topic = encrypted_topic(
            self,
            "AlarmTopic",
            display_name="Shop ETL alarms",
            key_description="Encrypts the ETL alarm topic",
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
