"""The analytics side kept current by the deployment itself.

A custom resource runs the initializer's idempotent part (tables upgraded, logins and
grants, views rebuilt from the deployed models; never sample data) whenever a
deployment changes the code that would build them.
"""

from collections.abc import Mapping, Sequence

from aws_cdk import CustomResource, Duration, RemovalPolicy
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import custom_resources as cr
from constructs import Construct, IDependable

from dbt_project.facts.names import DEPLOY_STAMP_PROPERTY, REPROCESS_PROPERTY
from infra import lambda_defaults as defaults
from infra.nag import acknowledge, logical_id, skip_checkov, skip_helper_function_checks

RESOURCE_TYPE = "Custom::AnalyticsUpgrade"
# The provider framework's function invokes the handler synchronously and is itself a
# Lambda function of at most 15 minutes: a handler that ran longer would leave the
# deployment waiting for CloudFormation's own timeout instead of failing it.
FRAMEWORK_TIMEOUT = Duration.minutes(15)
# How long CloudFormation waits for an answer (its default is an hour); the framework
# answers within its 15 minutes, success or failure.
SERVICE_TIMEOUT = Duration.minutes(20)


class AnalyticsUpgrade(Construct):
    """Run ``initializer`` with CloudFormation's custom-resource events, after ``after``.

    CloudFormation sends Create (first deployment) and Update (a property changed) to the
    provider framework, which invokes ``initializer`` synchronously and reports its
    result; an error the handler raises (a dbt or SQL failure) fails the deployment with
    its message in the stack's events. Delete is passed on too (the handler does
    nothing). The properties are ``versions``, the content hashes of the code assets and
    the databases' addresses, and ``deploy_stamp``, when the template was made (UTC).

    The stamp changes with every synthesis, so every deployment sends an Update; the
    initializer answers it without work when the versions did not change, and when it is
    a rollback: CloudFormation then replays the previous template, whose versions the
    database's upgrade ledger recorded before and whose stamp is older than the last
    applied one. Only new versions run the upgrade, which records them.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        initializer: lambda_.Function,
        versions: Mapping[str, str],
        deploy_stamp: str,
        after: Sequence[IDependable],
        removal_policy: RemovalPolicy,
        reprocess_changed_models: bool = True,
    ) -> None:
        super().__init__(scope, construct_id)
        timeout = initializer.timeout
        if timeout is None or timeout.to_seconds() >= FRAMEWORK_TIMEOUT.to_seconds():
            raise ValueError(
                f"{initializer.node.path}: its timeout must be under the provider framework's "
                f"{FRAMEWORK_TIMEOUT.to_minutes()} minutes"
            )
        provider = self._provider(initializer, removal_policy)
        self.resource = CustomResource(
            self,
            "Resource",
            service_token=provider.service_token,
            resource_type=RESOURCE_TYPE,
            # The initializer reads both from the event (dbt_project.aws.events).
            properties={
                **versions,
                DEPLOY_STAMP_PROPERTY: deploy_stamp,
                REPROCESS_PROPERTY: "true" if reprocess_changed_models else "false",
            },
            service_timeout=SERVICE_TIMEOUT,
        )
        for dependency in after:
            self.resource.node.add_dependency(dependency)
        # Depending on everything in ``after`` repeats the few dependencies a property
        # (a database address) implies already.
        self.resource.node.default_child.add_metadata(
            "cfn-lint", {"config": {"ignore_checks": ["W3005"]}}
        )
        self._accept_findings(provider, initializer)

    def _provider(
        self, initializer: lambda_.Function, removal_policy: RemovalPolicy
    ) -> cr.Provider:
        log_group = logs.LogGroup(
            self, "ProviderLogs", retention=defaults.LOG_RETENTION, removal_policy=removal_policy
        )
        skip_checkov(
            log_group,
            "CKV_AWS_158",
            "CloudWatch Logs encrypts every log group at rest; the provider framework logs "
            "the custom-resource events and the initializer's answers, no credentials. A "
            "customer-managed key would add cost and a key policy to maintain.",
        )
        # Its own role, without the AWS managed basic-execution policy: its log group and
        # the invocation of the initializer (added by the provider) are all it needs.
        role = iam.Role(
            self,
            "ProviderRole",
            assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
            description="Provider framework that runs the analytics upgrade during deployments",
        )
        log_group.grant_write(role)
        provider = cr.Provider(
            self,
            "Provider",
            on_event_handler=initializer,
            log_group=log_group,
            framework_on_event_role=role,
            # The events and answers (no secrets in either), for a deployment that failed.
            framework_lambda_logging_level=lambda_.ApplicationLogLevel.INFO,
        )
        return provider

    def _accept_findings(self, provider: cr.Provider, initializer: lambda_.Function) -> None:
        """The provider framework's own function and role, CDK's code."""
        function = provider.node.find_child("framework-onEvent")
        skip_helper_function_checks(function, "it runs the analytics upgrade")
        skip_checkov(
            function,
            "CKV_AWS_173",
            "CDK's provider framework function: its environment names the initializer "
            "function's ARN, nothing secret. Lambda encrypts it at rest with its service key.",
        )
        initializer_arn = f"<{logical_id(initializer.node.default_child)}.Arn>"
        acknowledge(
            self.node.find_child("ProviderRole"),
            f"AwsSolutions-IAM5[Resource::{initializer_arn}:*]",
            "Added by CDK's provider framework, which grants lambda:InvokeFunction on the "
            "initializer and its versions; it only ever invokes the unqualified function, "
            "once per deployment that changes the code.",
        )
