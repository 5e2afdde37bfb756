"""The one stack: wires the constructs and their grants, tags them, runs the security checks."""

from dataclasses import dataclass
from pathlib import Path

from aws_cdk import CfnOutput, RemovalPolicy, Stack, Tags, Validations
from cdk_nag import AwsSolutionsChecks
from constructs import Construct

from dbt_project.facts import metric_names
from dbt_project.facts.roles import EXTRACT_LOGIN, LOAD_LOGIN
from infra.constructs.analytics_upgrade import AnalyticsUpgrade
from infra.constructs.dashboard import Dashboard
from infra.constructs.databases import Databases
from infra.constructs.functions import Functions
from infra.constructs.monitoring import Monitoring
from infra.constructs.network import Network
from infra.constructs.reprocess import Reprocess
from infra.constructs.run_reports import RunReports
from infra.constructs.schedule import NightlySchedule
from infra.constructs.slack_alerts import SlackAlerts, SlackChannel
from infra.constructs.stage_bucket import StageBucket
from infra.packaging.layers import LayerDirs


@dataclass(frozen=True)
class EtlSettings:
    """Everything the stack is told; infra/app.py fills it from the CDK context."""

    # False: a learning setup, everything is deleted with the stack.
    # True: a kept setup, databases snapshot on delete, buckets stay, deletion protection on.
    retain: bool
    layers: LayerDirs
    code_root: Path
    # When the template is made (ISO 8601, UTC): the deploy-time upgrade tells a
    # rollback's replay of an older template by it.
    deploy_stamp: str
    target_max_capacity: float = 2
    alarm_email: str | None = None
    # Reserve 1 concurrent execution for extract and load; off by default, because a new
    # account's quota of 10 leaves none to reserve (the locks serialise overlapping runs).
    reserved_concurrency: bool = False
    # Interface endpoints in one AZ halve their idle cost; the other AZ's functions reach
    # them across AZs. True puts one in each AZ, for a setup that must ride out an AZ.
    endpoints_in_every_az: bool = False
    # A deployment that changes a mart's logic reprocesses its history (false: it logs
    # what is needed and leaves it to a person).
    reprocess_changed_models: bool = True
    # A role that may read the databases' master secrets besides the initializer (an
    # operator's way in when the initializer cannot run); None: the initializer alone.
    break_glass_role_arn: str | None = None
    # A Route 53 Resolver DNS Firewall that answers only the region's AWS names: on by
    # default, as it costs cents a month (infra/README.md); false removes it.
    dns_firewall: bool = True
    # The environment's (infra/environments.py): the functions publish their metrics
    # there, and the alarms and the dashboard read them there.
    metrics_namespace: str = metric_names.NAMESPACE
    # False: the schedule exists but is disabled, and no heartbeat alarm expects nights.
    nightly_schedule: bool = True
    # The alarms and failed nights also go to this Slack channel (AWS Chatbot).
    slack: SlackChannel | None = None


class EtlStack(Stack):
    """Network, databases, stage bucket, functions, schedule and monitoring of the ETL."""

    def __init__(
        self, scope: Construct, construct_id: str, *, settings: EtlSettings, **kwargs
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)
        removal_policy = RemovalPolicy.RETAIN if settings.retain else RemovalPolicy.DESTROY

        network = Network(
            self,
            "Network",
            removal_policy=removal_policy,
            endpoints_in_every_az=settings.endpoints_in_every_az,
            dns_firewall=settings.dns_firewall,
        )
        databases = Databases(
            self,
            "Databases",
            vpc=network.vpc,
            subnets=network.subnets,
            retain=settings.retain,
            target_max_capacity=settings.target_max_capacity,
            break_glass_role_arn=settings.break_glass_role_arn,
        )
        stage = StageBucket(self, "Stage", retain=settings.retain)
        reports = RunReports(self, "RunReports", removal_policy=removal_policy)
        functions = Functions(
            self,
            "Functions",
            vpc=network.vpc,
            subnets=network.subnets,
            s3=network.s3,
            layers=settings.layers,
            code_root=settings.code_root,
            source=databases.source,
            target=databases.target,
            stage=stage,
            reserve_concurrency=settings.reserved_concurrency,
            removal_policy=removal_policy,
            on_failure=reports.on_failure,
            metrics_namespace=settings.metrics_namespace,
        )
        self._grant(network, databases, stage, functions)
        self._reprocess(network, functions, removal_policy)
        self._upgrade_on_deploy(network, databases, functions, removal_policy, settings)
        reports.grant_publish(functions.load, network.sns_endpoint)
        reports.deliver_invocation_records(functions.failure_queue)
        stage.limit_endpoint(network.s3_endpoint)
        monitoring = self._operations(settings, removal_policy, databases, functions, reports)
        if settings.slack:
            self._slack_alerts(settings.slack, network, functions, reports, monitoring)

        self._outputs(databases, stage, functions)
        Tags.of(self).add("project", "shop-etl")
        Tags.of(self).add("setup", "kept" if settings.retain else "learning")
        # The security gate: any finding not acknowledged beside its resource (each
        # construct acknowledges its own) fails synthesis.
        Validations.of(self).add_plugins(AwsSolutionsChecks(self))

    @staticmethod
    def _grant(
        network: Network, databases: Databases, stage: StageBucket, functions: Functions
    ) -> None:
        """Who reaches what: each function its own database(s) and its side of the stage.

        Only the initializer, which creates the extract's and load's logins, holds the
        master secrets; those two log in as their own logins with IAM tokens. The
        initializer also sets the reader login's password.
        """
        extract, load, initializer = functions.extract, functions.load, functions.db_initializer
        secrets_endpoint = network.secrets_manager_endpoint
        databases.source.grant_login(extract, EXTRACT_LOGIN)
        databases.target.grant_login(load, LOAD_LOGIN)
        databases.source.grant_master_login(initializer, secrets_endpoint)
        databases.target.grant_master_login(initializer, secrets_endpoint)
        databases.grant_reader_secret(initializer, secrets_endpoint)
        stage.grant_write(extract)
        stage.grant_read(load)
        stage.notify_on_manifest(load)
        stage.grant_publish_docs(load)

    def _reprocess(
        self, network: Network, functions: Functions, removal_policy: RemovalPolicy
    ) -> None:
        """Backfills and full refreshes in chunks, past one invocation; the initializer
        starts the history load on it."""
        reprocess = Reprocess(
            self,
            "Reprocess",
            extract=functions.extract,
            load=functions.load,
            removal_policy=removal_policy,
        )
        reprocess.grant_start(functions.db_initializer, network.states_endpoint)
        CfnOutput(self, "ReprocessStateMachineArn", value=reprocess.state_machine.state_machine_arn)

    def _upgrade_on_deploy(
        self,
        network: Network,
        databases: Databases,
        functions: Functions,
        removal_policy: RemovalPolicy,
        settings: EtlSettings,
    ) -> None:
        """The initializer's upgrade, run by each deployment that changes the code or
        replaces a database, once both databases, every function and the endpoints they
        reach (with their security group rules) exist."""
        AnalyticsUpgrade(
            self,
            "AnalyticsUpgrade",
            initializer=functions.db_initializer,
            versions={
                **functions.code_versions,
                "SourceDbHost": databases.source.host,
                "TargetDbHost": databases.target.host,
            },
            deploy_stamp=settings.deploy_stamp,
            after=[network, databases, functions],
            removal_policy=removal_policy,
            reprocess_changed_models=settings.reprocess_changed_models,
        )

    def _operations(
        self,
        settings: EtlSettings,
        removal_policy: RemovalPolicy,
        databases: Databases,
        functions: Functions,
        reports: RunReports,
    ) -> Monitoring:
        """The nightly schedule, alarms, the dashboard, and the topics' ARNs to subscribe
        e-mail or chat to."""
        nightly = NightlySchedule(
            self,
            "Nightly",
            function=functions.extract,
            removal_policy=removal_policy,
            enabled=settings.nightly_schedule,
        )
        dead_letter_queues = {
            "failed-invocations": functions.failure_queue,
            "schedule-dead-letters": nightly.dead_letter_queue,
        }
        monitoring = Monitoring(
            self,
            "Monitoring",
            functions=functions.all,
            dead_letter_queues=dead_letter_queues,
            removal_policy=removal_policy,
            alarm_email=settings.alarm_email,
            metrics_namespace=settings.metrics_namespace,
            expect_nightly=settings.nightly_schedule,
        )
        dashboard = Dashboard(
            self,
            "Dashboard",
            functions=functions.all,
            dead_letter_queues=dead_letter_queues,
            target_cluster=databases.target_cluster,
            alarms=monitoring.alarms,
            metrics_namespace=settings.metrics_namespace,
        )
        CfnOutput(self, "AlarmTopicArn", value=monitoring.topic.topic_arn)
        CfnOutput(self, "RunReportsTopicArn", value=reports.topic.topic_arn)
        CfnOutput(self, "DashboardName", value=dashboard.dashboard.dashboard_name)
        return monitoring

    def _slack_alerts(
        self,
        channel: SlackChannel,
        network: Network,
        functions: Functions,
        reports: RunReports,
        monitoring: Monitoring,
    ) -> None:
        """The alarms and the failed nights in a Slack channel (AWS Chatbot)."""
        failed_nights = reports.add_failed_nights(functions.load, network.sns_endpoint)
        SlackAlerts(self, "SlackAlerts", channel=channel, topics=[monitoring.topic, failed_nights])
        CfnOutput(self, "FailedNightsTopicArn", value=failed_nights.topic_arn)

    def _outputs(self, databases: Databases, stage: StageBucket, functions: Functions) -> None:
        outputs = {
            "ExtractFunctionName": functions.extract.function_name,
            "LoadFunctionName": functions.load.function_name,
            "DbInitializerFunctionName": functions.db_initializer.function_name,
            "StageBucketName": stage.bucket.bucket_name,
            "SourceDbEndpoint": databases.source.host,
            "SourceDbSecretArn": databases.source.secret.secret_arn,
            "TargetDbEndpoint": databases.target.host,
            "TargetDbSecretArn": databases.target.secret.secret_arn,
            "FailedInvocationsQueueUrl": functions.failure_queue.queue_url,
            "ExtractLogGroupName": functions.log_groups["extract"].log_group_name,
            "LoadLogGroupName": functions.log_groups["load"].log_group_name,
            "DbInitializerLogGroupName": functions.log_groups["db_initializer"].log_group_name,
            # The example queries: aws rds-data execute-statement with these three.
            "ClusterArn": databases.target_cluster.cluster_arn,
            "ReaderSecretArn": databases.reader_secret.secret_arn,
            "DatabaseName": databases.target.name,
        }
        for name, value in outputs.items():
            CfnOutput(self, name, value=value)
