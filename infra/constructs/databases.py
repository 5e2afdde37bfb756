"""The two PostgreSQL databases: the operational source and the analytics target."""

import json

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_rds as rds
from aws_cdk import aws_secretsmanager as secretsmanager
from constructs import Construct

from dbt_project.facts.roles import READER_ROLE
from infra.constructs.database_access import DatabaseEndpoint, grant_secret_read
from infra.constructs.database_logs import AUDIT_PARAMETERS, EXPORTED_LOGS, keep_postgres_log
from infra.nag import acknowledge, skip_checkov

POSTGRES_PORT = 5432
BACKUP_RETENTION = Duration.days(7)
# Aurora Serverless v2 pauses after this much idle time at 0 ACU (the AWS default).
AUTO_PAUSE_AFTER = Duration.seconds(300)
# TLS only; RDS for PostgreSQL 15+ defaults to it, Aurora PostgreSQL does not.
FORCE_TLS = {"rds.force_ssl": "1"}
# A minor version: a bare "17" is no longer accepted for new instances. Later minors
# arrive through auto_minor_version_upgrade.
SOURCE_ENGINE_VERSION = rds.PostgresEngineVersion.VER_17_9
# The variable that tells the reader login's secret to the function given its password.
READER_SECRET_VARIABLE = "READER_SECRET_ARN"  # noqa: S105 - a variable's name


class Databases(Construct):
    """RDS for PostgreSQL as the source, Aurora Serverless v2 PostgreSQL as the target.

    Both are encrypted, private, reachable only from the security groups that
    ``connections`` is opened to, accept IAM authentication, and keep their master
    password in a secret that RDS itself creates and rotates (no rotation function).
    ``retain`` chooses between a learning setup that is deleted with the stack and a
    kept one with deletion protection and a final snapshot. ``break_glass_role_arn``
    names a role that may read the master secrets besides the one function granted
    the master login (``DatabaseEndpoint.grant_master_login``).
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        vpc: ec2.IVpc,
        subnets: ec2.SubnetSelection,
        retain: bool,
        target_max_capacity: float,
        source_database_name: str = "shop",
        target_database_name: str = "analytics",
        break_glass_role_arn: str | None = None,
    ) -> None:
        super().__init__(scope, construct_id)
        self._vpc = vpc
        self._subnets = subnets
        self._retain = retain
        self.source_instance = self._source_instance(source_database_name)
        self.target_cluster = self._target_cluster(target_database_name, target_max_capacity)
        self.reader_secret = self._reader_secret()

        # Both constructs expose the RDS-managed secret as an ISecret (its ARN comes from
        # the MasterUserSecret attribute); neither template holds a password.
        self.source = DatabaseEndpoint(
            self,
            "Source",
            host=self.source_instance.db_instance_endpoint_address,
            port=POSTGRES_PORT,
            name=source_database_name,
            secret=_managed_secret(self.source_instance.secret),
            connections=self.source_instance.connections,
            # dbuser:<DbiResourceId>/<login>
            grant_connect=self.source_instance.grant_connect,
            break_glass_role_arn=break_glass_role_arn,
        )
        self.target = DatabaseEndpoint(
            self,
            "Target",
            host=self.target_cluster.cluster_endpoint.hostname,
            port=POSTGRES_PORT,
            name=target_database_name,
            secret=_managed_secret(self.target_cluster.secret),
            connections=self.target_cluster.connections,
            # dbuser:<cluster resource id>/<login>
            grant_connect=self.target_cluster.grant_connect,
            break_glass_role_arn=break_glass_role_arn,
        )

    def grant_reader_secret(
        self, function: lambda_.Function, secrets_endpoint: ec2.InterfaceVpcEndpoint
    ) -> None:
        """Let ``function`` read the read-only login's secret, named by
        ``READER_SECRET_ARN``: the initializer gives that login the secret's password."""
        grant_secret_read(self.reader_secret, function, secrets_endpoint, sid="ReaderSecretOnly")
        function.add_environment(READER_SECRET_VARIABLE, self.reader_secret.secret_arn)

    @property
    def _removal_policy(self) -> RemovalPolicy:
        return RemovalPolicy.SNAPSHOT if self._retain else RemovalPolicy.DESTROY

    def _source_instance(self, database_name: str) -> rds.DatabaseInstance:
        instance = rds.DatabaseInstance(
            self,
            "Source",
            engine=rds.DatabaseInstanceEngine.postgres(version=SOURCE_ENGINE_VERSION),
            instance_type=ec2.InstanceType.of(
                ec2.InstanceClass.BURSTABLE4_GRAVITON, ec2.InstanceSize.MICRO
            ),
            vpc=self._vpc,
            vpc_subnets=self._subnets,
            port=POSTGRES_PORT,
            security_groups=[self._security_group("SourceSecurityGroup", "source")],
            parameters={**FORCE_TLS, **AUDIT_PARAMETERS},
            cloudwatch_logs_exports=EXPORTED_LOGS,
            database_name=database_name,
            manage_master_user_password=True,
            iam_authentication=True,
            storage_encrypted=True,
            storage_type=rds.StorageType.GP3,
            allocated_storage=20,
            publicly_accessible=False,
            multi_az=False,
            auto_minor_version_upgrade=True,
            backup_retention=BACKUP_RETENTION,
            delete_automated_backups=not self._retain,
            deletion_protection=self._retain,
            removal_policy=self._removal_policy,
            copy_tags_to_snapshot=True,
        )
        acknowledge(
            instance,
            "AwsSolutions-RDS3",
            "The source stands in for an operational database in a nightly batch: one "
            "t4g.micro in one AZ keeps the idle cost low, and 7-day automated backups allow "
            "point-in-time restore. An outage delays one night's extract, which can be re-run "
            "for that date.",
        )
        acknowledge(
            instance,
            "AwsSolutions-RDS11",
            "5432 on purpose: the instance sits in isolated subnets without a route to the "
            "internet and its security group admits only the extract and db_initializer "
            "security groups. A non-default port adds obscurity, not access control.",
        )
        skip_checkov(
            instance,
            "CKV_AWS_157",
            "Single-AZ on purpose, as for AwsSolutions-RDS3: a micro instance standing in for "
            "an operational database; backups allow point-in-time restore.",
        )
        self._skip_enhanced_monitoring(instance)
        self._acknowledge_no_deletion_protection(instance)
        self._keep_log("SourceLogRetention", instance, "instance")
        return instance

    def _target_cluster(self, database_name: str, max_capacity: float) -> rds.DatabaseCluster:
        cluster = rds.DatabaseCluster(
            self,
            "Target",
            engine=rds.DatabaseClusterEngine.aurora_postgres(
                version=rds.AuroraPostgresEngineVersion.VER_17_5
            ),
            writer=rds.ClusterInstance.serverless_v2(
                "Writer", publicly_accessible=False, auto_minor_version_upgrade=True
            ),
            serverless_v2_min_capacity=0,
            serverless_v2_max_capacity=max_capacity,
            serverless_v2_auto_pause_duration=AUTO_PAUSE_AFTER,
            vpc=self._vpc,
            vpc_subnets=self._subnets,
            port=POSTGRES_PORT,
            security_groups=[self._security_group("TargetSecurityGroup", "target")],
            parameters={**FORCE_TLS, **AUDIT_PARAMETERS},
            cloudwatch_logs_exports=EXPORTED_LOGS,
            default_database_name=database_name,
            # The example queries run through the RDS Data API with the reader's secret:
            # the cluster sits in isolated subnets, out of reach of an analyst's laptop.
            enable_data_api=True,
            manage_master_user_password=True,
            iam_authentication=True,
            storage_encrypted=True,
            backup=rds.BackupProps(retention=BACKUP_RETENTION),
            deletion_protection=self._retain,
            removal_policy=self._removal_policy,
            copy_tags_to_snapshot=True,
        )
        self._skip_enhanced_monitoring(cluster.node.find_child("Writer"))
        self._acknowledge_no_deletion_protection(cluster)
        self._keep_log("TargetLogRetention", cluster, "cluster")
        return cluster

    def _keep_log(self, construct_id: str, database: Construct, kind: str) -> None:
        """The exported PostgreSQL log of ``database``, kept as long as the functions'
        logs; deleted with the stack in the learning setup."""
        keep_postgres_log(
            self,
            construct_id,
            database=database,
            kind=kind,
            removal_policy=RemovalPolicy.RETAIN if self._retain else RemovalPolicy.DESTROY,
        )

    def _reader_secret(self) -> secretsmanager.Secret:
        """The read-only login's credentials, in the JSON the RDS Data API expects.

        Secrets Manager generates the password (the template never holds it); the
        initializer reads it and gives the login that password.
        """
        secret = secretsmanager.Secret(
            self,
            "ReaderSecret",
            description=f"Login {READER_ROLE}: read-only on the analytics views (RDS Data API)",
            generate_secret_string=secretsmanager.SecretStringGenerator(
                secret_string_template=json.dumps({"username": READER_ROLE}),
                generate_string_key="password",
                exclude_punctuation=True,
                password_length=32,
            ),
            removal_policy=RemovalPolicy.RETAIN if self._retain else RemovalPolicy.DESTROY,
        )
        acknowledge(
            secret,
            "AwsSolutions-SMG4",
            "The read-only analytics login's password, used through the RDS Data API (which "
            "IAM authorizes) or from inside the isolated VPC. Rotation would need a rotation "
            "function in the VPC with its own endpoint; to change the password, put a new "
            "secret value and invoke the initializer, which sets it.",
        )
        skip_checkov(
            secret,
            "CKV_AWS_149",
            "Encrypted with the AWS managed key aws/secretsmanager: whoever may read the secret "
            "(the initializer, and the analysts' Data API callers through IAM) can already "
            "decrypt it; a customer-managed key would add a key policy to keep in step.",
        )
        return secret

    @staticmethod
    def _skip_enhanced_monitoring(instance: Construct) -> None:
        skip_checkov(
            instance,
            "CKV_AWS_118",
            "A nightly batch of minutes: the CloudWatch metrics RDS publishes anyway are "
            "enough. Enhanced monitoring would add an IAM role with an AWS managed policy "
            "and OS metrics ingested into CloudWatch Logs around the clock.",
        )

    def _acknowledge_no_deletion_protection(self, database: Construct) -> None:
        if self._retain:
            return
        acknowledge(
            database,
            "AwsSolutions-RDS10",
            "Learning setup (context retain=false): deletion protection is off so that "
            "`cdk destroy` removes everything. Deploy with -c retain=true to turn it "
            "on and to keep a final snapshot.",
        )

    def _security_group(self, construct_id: str, name: str) -> ec2.SecurityGroup:
        # No egress: a database only answers. Ingress is opened per function.
        return ec2.SecurityGroup(
            self,
            construct_id,
            vpc=self._vpc,
            description=f"{name} database: PostgreSQL from the functions that use it only",
            allow_all_outbound=False,
        )


def _managed_secret(secret: secretsmanager.ISecret | None) -> secretsmanager.ISecret:
    if secret is None:  # pragma: no cover - manage_master_user_password always sets it
        raise ValueError("the database has no managed master secret")
    return secret
