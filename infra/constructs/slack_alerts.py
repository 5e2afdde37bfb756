"""The alarms and the failed nights in a Slack channel, through AWS Chatbot."""

from collections.abc import Sequence
from dataclasses import dataclass

from aws_cdk import Stack
from aws_cdk import aws_chatbot as chatbot
from aws_cdk import aws_iam as iam
from aws_cdk import aws_sns as sns
from constructs import Construct

CHATBOT = "chatbot.amazonaws.com"


@dataclass(frozen=True)
class SlackChannel:
    """A channel of a Slack workspace that was authorized in AWS Chatbot's console."""

    workspace_id: str
    channel_id: str


class SlackAlerts(Construct):
    """A Slack channel configuration of AWS Chatbot subscribed to ``topics``.

    Chatbot posts what the topics carry in a format it knows: CloudWatch alarms as they
    are, and the failed nights, which the load publishes as Chatbot custom
    notifications. Posting needs no permission of the channel's role, so the role has
    none, and the guardrail denies every action: nobody can run an AWS command from the
    channel, whatever a later change gives the role. SNS decrypts a KMS-encrypted
    topic's messages before it delivers them, so Chatbot needs no use of the topics'
    keys; their publishers (CloudWatch, the load) have it.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        channel: SlackChannel,
        topics: Sequence[sns.ITopic],
    ) -> None:
        super().__init__(scope, construct_id)
        role = iam.Role(
            self,
            "Role",
            assumed_by=iam.ServicePrincipal(CHATBOT),
            description="AWS Chatbot's role for the ETL's Slack alerts: no permissions",
        )
        self.guardrail = iam.ManagedPolicy(
            self,
            "Guardrail",
            description=("Guardrail of the ETL's Slack channel: no AWS action can be run from it"),
            statements=[
                iam.PolicyStatement(
                    sid="NothingFromTheChannel",
                    effect=iam.Effect.DENY,
                    actions=["*"],
                    resources=["*"],
                )
            ],
        )
        self.configuration = chatbot.SlackChannelConfiguration(
            self,
            "Channel",
            slack_channel_configuration_name=f"{Stack.of(self).stack_name}-alerts",
            slack_workspace_id=channel.workspace_id,
            slack_channel_id=channel.channel_id,
            role=role,
            guardrail_policies=[self.guardrail],
            notification_topics=list(topics),
            # No log group of Chatbot's own: it would never expire.
            logging_level=chatbot.LoggingLevel.NONE,
        )
