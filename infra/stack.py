"""The one stack: wires the constructs and their grants, tags them, runs the security checks."""

from dataclasses import dataclass
from pathlib import Path

from aws_cdk import CfnOutput, RemovalPolicy, Stack, Tags, Validations
from cdk_nag import AwsSolutionsChecks
from constructs import Construct

from dbt_project.roles import EXTRACT_LOGIN, LOAD_LOGIN
from infra.constructs.databases import Databases
from infra.constructs.functions import DB_INITIALIZER, EXTRACT, LOAD, Functions
from infra.constructs.monitoring import Monitoring
from infra.constructs.network import Network
from infra.constructs.schedule import NightlySchedule
from infra.constructs.stage_bucket import StageBucket
from infra.layers import LayerDirs


@dataclass(frozen=True)
class EtlSettings:
    """Everything the stack is told; infra/app.py fills it from the CDK context."""

    # False: a learning setup, everything is deleted with the stack.
    # True: a kept setup, databases snapshot on delete, buckets stay, deletion protection on.
    retain: bool
    layers: LayerDirs
    code_root: Path
    target_max_capacity: float = 2
    alarm_email: str | None = None


class EtlStack(Stack):
    """Network, databases, stage bucket, functions, schedule and monitoring of the ETL."""

    def __init__(
        self, scope: Construct, construct_id: str, *, settings: EtlSettings, **kwargs
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)
        removal_policy = RemovalPolicy.RETAIN if settings.retain else RemovalPolicy.DESTROY

        network = Network(self, "Network", removal_policy=removal_policy)
        databases = Databases(
            self,
            "Databases",
            vpc=network.vpc,
            subnets=network.subnets,
            retain=settings.retain,
            target_max_capacity=settings.target_max_capacity,
        )
        stage = StageBucket(self, "Stage", retain=settings.retain)
        functions = Functions(
            self,
            "Functions",
            vpc=network.vpc,
            subnets=network.subnets,
            secrets_manager_endpoint=network.secrets_manager_endpoint,
            s3=network.s3,
            layers=settings.layers,
            code_root=settings.code_root,
            source=databases.source,
            target=databases.target,
            stage=stage,
            removal_policy=removal_policy,
        )
        self._grant(databases, stage, functions)
        stage.limit_endpoint(network.s3_endpoint)
        nightly = NightlySchedule(
            self, "Nightly", function=functions.extract, removal_policy=removal_policy
        )
        Monitoring(
            self,
            "Monitoring",
            functions=functions.all,
            dead_letter_queues={
                "failed-invocations": functions.failure_queue,
                "schedule-dead-letters": nightly.dead_letter_queue,
            },
            removal_policy=removal_policy,
            alarm_email=settings.alarm_email,
        )

        self._outputs(databases, stage, functions)
        Tags.of(self).add("project", "shop-etl")
        Tags.of(self).add("setup", "kept" if settings.retain else "learning")
        # The security gate: any finding not acknowledged beside its resource (each
        # construct acknowledges its own) fails synthesis.
        Validations.of(self).add_plugins(AwsSolutionsChecks(self))

    @staticmethod
    def _grant(databases: Databases, stage: StageBucket, functions: Functions) -> None:
        """Who reaches what: each function its own database(s) and its side of the stage.

        Only the initializer, which creates the extract's and load's logins, holds the
        master secrets; those two log in as their own logins with IAM tokens.
        """
        functions.grant_login(EXTRACT.name, databases.source, EXTRACT_LOGIN)
        functions.grant_login(LOAD.name, databases.target, LOAD_LOGIN)
        functions.grant_master_login(DB_INITIALIZER.name, databases.source)
        functions.grant_master_login(DB_INITIALIZER.name, databases.target)
        stage.grant_write_stage(functions.extract)
        stage.grant_read_stage(functions.load)
        stage.notify_on_manifest(functions.load)

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
        }
        for name, value in outputs.items():
            CfnOutput(self, name, value=value)
