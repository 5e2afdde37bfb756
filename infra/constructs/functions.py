"""The three functions, their two layers, roles, security groups and failure queue."""

from dataclasses import dataclass
from pathlib import Path

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_lambda_destinations as destinations
from aws_cdk import aws_logs as logs
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from dbt_project.roles import EXTRACT_LOGIN, LOAD_LOGIN
from infra import lambda_defaults as defaults
from infra.constructs.databases import DatabaseEndpoint
from infra.constructs.stage_bucket import StageBucket
from infra.layers import LayerDirs
from infra.nag import acknowledge, skip_checkov

# What a function in a VPC needs to manage its network interfaces: the actions of the
# AWS managed policy AWSLambdaVPCAccessExecutionRole, written out to keep the role
# free of managed policies. The Describe actions support no resource-level scoping.
VPC_NETWORK_INTERFACE_ACTIONS = (
    "ec2:CreateNetworkInterface",
    "ec2:DescribeNetworkInterfaces",
    "ec2:DescribeSubnets",
    "ec2:DeleteNetworkInterface",
    "ec2:AssignPrivateIpAddresses",
    "ec2:UnassignPrivateIpAddresses",
)
# No "tests": CDK matches a bare name at any depth, and the dbt project's own
# tests/dbt folder (singular tests, unit-test fixtures) must reach /opt/dbt.
ASSET_EXCLUDE = ["__pycache__", "*.pyc"]


@dataclass(frozen=True)
class FunctionSpec:
    """Sizing and invocation settings of one function."""

    name: str
    description: str
    timeout: Duration
    memory_size: int
    # 1 for functions that run dbt: one dbt invocation per process at a time.
    reserved_concurrency: int | None
    # Retries of asynchronous invocations (schedule, S3 event) after a failure.
    retry_attempts: int


EXTRACT = FunctionSpec(
    name="extract",
    description=(
        "Runs dbt on the source for one business day and stages five tables in S3: "
        "the three marts, run_window_days and run_window_removed_customers"
    ),
    timeout=Duration.minutes(15),
    memory_size=1024,
    reserved_concurrency=1,
    retry_attempts=2,
)
LOAD = FunctionSpec(
    name="load",
    description="Upserts a staged business day into the analytics database",
    timeout=Duration.minutes(10),
    memory_size=512,
    reserved_concurrency=1,
    retry_attempts=2,
)
DB_INITIALIZER = FunctionSpec(
    name="db_initializer",
    description="Creates both schemas and the sample data (invoked by hand)",
    timeout=Duration.minutes(10),
    memory_size=512,
    reserved_concurrency=None,
    retry_attempts=0,
)


class Functions(Construct):
    """extract, load and db_initializer with one least-privilege role each.

    Each function gets its own security group without egress; extract and load may
    reach S3 (its prefix list), and each may reach the database(s) the stack grants it:
    extract and load with ``grant_login`` (an IAM token for exactly their own database
    login, no secret), db_initializer with ``grant_master_login`` (the master secrets,
    and the Secrets Manager endpoint to read them). Its role gets only what the stack
    grants it. Failed asynchronous invocations land in an encrypted queue.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        vpc: ec2.IVpc,
        subnets: ec2.SubnetSelection,
        secrets_manager_endpoint: ec2.IConnectable,
        s3: ec2.IPeer,
        layers: LayerDirs,
        code_root: Path,
        source: DatabaseEndpoint,
        target: DatabaseEndpoint,
        stage: StageBucket,
        removal_policy: RemovalPolicy,
    ) -> None:
        super().__init__(scope, construct_id)
        self._vpc = vpc
        self._subnets = subnets
        self._secrets_manager_endpoint = secrets_manager_endpoint
        self._code_root = code_root
        self._removal_policy = removal_policy
        self.log_groups: dict[str, logs.LogGroup] = {}
        self.failure_queue = self._failure_queue()
        self.dependencies_layer, self.common_layer = self._layers(layers)

        source_environment = _database_environment("SOURCE", source)
        target_environment = _database_environment("TARGET", target)
        bucket_environment = {"S3_BUCKET": stage.bucket.bucket_name}
        self.extract = self._function(
            EXTRACT,
            "Extract",
            environment={
                **source_environment,
                "SOURCE_DB_IAM_USER": EXTRACT_LOGIN,
                **bucket_environment,
            },
        )
        self.load = self._function(
            LOAD,
            "Load",
            environment={
                **target_environment,
                "TARGET_DB_IAM_USER": LOAD_LOGIN,
                **bucket_environment,
            },
        )
        self.db_initializer = self._function(
            DB_INITIALIZER,
            "DbInitializer",
            environment={
                **source_environment,
                "SOURCE_DB_SECRET_ARN": source.secret.secret_arn,
                **target_environment,
                "TARGET_DB_SECRET_ARN": target.secret.secret_arn,
            },
        )
        skip_checkov(
            self.db_initializer,
            "CKV_AWS_115",
            "Invoked by hand only (no schedule, no event source), so nothing can fan it out; "
            "a reserved concurrency would take executions from the account's unreserved pool.",
        )
        for function in (self.extract, self.load):
            function.connections.allow_to(s3, ec2.Port.tcp(443), "S3 through the gateway endpoint")

    @property
    def all(self) -> dict[str, lambda_.Function]:
        return {
            EXTRACT.name: self.extract,
            LOAD.name: self.load,
            DB_INITIALIZER.name: self.db_initializer,
        }

    def _failure_queue(self) -> sqs.Queue:
        queue = sqs.Queue(
            self,
            "FailedInvocations",
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
            retention_period=Duration.days(14),
            removal_policy=self._removal_policy,
        )
        skip_checkov(
            queue,
            "CKV_AWS_27",
            "Encrypted at rest with SQS-managed keys (SqsManagedSseEnabled), which CKV_AWS_27 "
            "does not recognise. A KMS key would have to admit the Lambda service in its "
            "policy, only to protect failure records of this same account.",
        )
        acknowledge(
            queue,
            "AwsSolutions-SQS3",
            "This queue is itself the dead-letter destination: the on-failure destination "
            "of the functions' asynchronous invocations after their retries. A dead-letter "
            "queue of it would add nothing. It keeps messages 14 days and an alarm fires on "
            "the first.",
        )
        return queue

    def _layers(self, layers: LayerDirs) -> tuple[lambda_.LayerVersion, lambda_.LayerVersion]:
        dependencies = lambda_.LayerVersion(
            self,
            "DependenciesLayer",
            code=lambda_.Code.from_asset(str(layers.dependencies)),
            compatible_runtimes=[defaults.RUNTIME],
            compatible_architectures=[defaults.ARCHITECTURE],
            description="dbt-core, dbt-postgres, psycopg2, Powertools (requirements/lambda.txt)",
            removal_policy=self._removal_policy,
        )
        common = lambda_.LayerVersion(
            self,
            "CommonLayer",
            code=lambda_.Code.from_asset(str(layers.common), exclude=ASSET_EXCLUDE),
            compatible_runtimes=[defaults.RUNTIME],
            compatible_architectures=[defaults.ARCHITECTURE],
            description="The dbt_project package and the dbt project at /opt/dbt",
            removal_policy=self._removal_policy,
        )
        return dependencies, common

    def grant_login(self, name: str, database: DatabaseEndpoint, login: str) -> None:
        """Let function ``name`` reach ``database`` and log in as ``login`` with an IAM token.

        ``rds-db:connect`` on exactly that database user; no secret to read.
        """
        function = self.all[name]
        self._allow_network(name, database)
        database.grant_connect(function, login)

    def grant_master_login(self, name: str, database: DatabaseEndpoint) -> None:
        """Let function ``name`` reach ``database`` and read its master secret.

        Only the initializer, which creates the other logins, is given this; it alone
        reaches the Secrets Manager endpoint.
        """
        function = self.all[name]
        self._allow_network(name, database)
        database.secret.grant_read(function)
        function.connections.allow_to(
            self._secrets_manager_endpoint, ec2.Port.tcp(443), "Secrets Manager endpoint"
        )

    def _allow_network(self, name: str, database: DatabaseEndpoint) -> None:
        database.connections.allow_from(
            self.all[name], ec2.Port.tcp(database.port), f"PostgreSQL from the {name} function"
        )

    def _function(
        self, spec: FunctionSpec, construct_id: str, *, environment: dict[str, str]
    ) -> lambda_.Function:
        security_group = ec2.SecurityGroup(
            self,
            f"{construct_id}SecurityGroup",
            vpc=self._vpc,
            description=f"{spec.name} function: egress to its databases and endpoints only",
            allow_all_outbound=False,
        )
        role = self._role(spec, construct_id)
        log_group = logs.LogGroup(
            self,
            f"{construct_id}Logs",
            retention=defaults.LOG_RETENTION,
            removal_policy=self._removal_policy,
        )
        log_group.grant_write(role)
        skip_checkov(
            log_group,
            "CKV_AWS_158",
            "CloudWatch Logs encrypts every log group at rest; the functions log run "
            "records (dates, counts, errors), never credentials or staged rows. A "
            "customer-managed key would add cost and a key policy to maintain.",
        )
        self.log_groups[spec.name] = log_group
        function = lambda_.Function(
            self,
            construct_id,
            description=spec.description,
            runtime=defaults.RUNTIME,
            architecture=defaults.ARCHITECTURE,
            handler=defaults.HANDLER,
            code=self._code(spec),
            layers=[self.dependencies_layer, self.common_layer],
            role=role,
            timeout=spec.timeout,
            memory_size=spec.memory_size,
            reserved_concurrent_executions=spec.reserved_concurrency,
            vpc=self._vpc,
            vpc_subnets=self._subnets,
            security_groups=[security_group],
            logging_format=defaults.LOGGING_FORMAT,
            log_group=log_group,
            tracing=defaults.TRACING,
            retry_attempts=spec.retry_attempts,
            max_event_age=defaults.MAX_EVENT_AGE,
            on_failure=destinations.SqsDestination(self.failure_queue),
            environment=_environment(spec, environment),
        )
        acknowledge(
            function,
            "AwsSolutions-L1",
            "Python 3.12 is deliberate: the dependencies layer is pinned and built for "
            "CPython 3.12 (requirements/lambda.txt), so a runtime upgrade is a reviewed "
            "change together with a layer rebuild, not a drift. Lambda supports 3.12 "
            "until 2028.",
        )
        skip_checkov(
            function,
            "CKV_AWS_116",
            "Failed asynchronous invocations go to the on-failure destination, the encrypted "
            "FailedInvocations queue (EventInvokeConfig), which records the error and the "
            "request as well; a dead-letter queue would duplicate it.",
        )
        skip_checkov(
            function,
            "CKV_AWS_173",
            "The environment holds no secret: host names, ports, database and login names, "
            "paths and ARNs (a template test checks it). Lambda encrypts it at rest with "
            "its service key.",
        )
        # CDK makes the function depend on its role, which the Role attribute already does.
        function.node.default_child.add_metadata(
            "cfn-lint", {"config": {"ignore_checks": ["W3005"]}}
        )
        return function

    def _code(self, spec: FunctionSpec) -> lambda_.Code:
        code_dir = self._code_root / spec.name
        if not (code_dir / "handler.py").is_file():
            raise FileNotFoundError(
                f"{code_dir / 'handler.py'} is missing: each function's code is "
                "lambdas/<name>/handler.py exposing handler(event, context)"
            )
        return lambda_.Code.from_asset(str(code_dir), exclude=ASSET_EXCLUDE)

    def _role(self, spec: FunctionSpec, construct_id: str) -> iam.Role:
        role = iam.Role(
            self,
            f"{construct_id}Role",
            assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
            description=f"Execution role of the {spec.name} function",
        )
        role.add_to_policy(
            iam.PolicyStatement(actions=list(VPC_NETWORK_INTERFACE_ACTIONS), resources=["*"])
        )
        skip_checkov(
            role.node.find_child("DefaultPolicy"),
            "CKV_AWS_111",
            "The unconstrained writes are the network-interface actions Lambda performs for "
            "a function in a VPC (as in the AWS managed AWSLambdaVPCAccessExecutionRole) and "
            "X-Ray's trace uploads, which accept no narrower resource; every data write is "
            "scoped to one resource.",
        )
        acknowledge(
            role,
            "AwsSolutions-IAM5[Resource::*]",
            "Only for actions that accept no narrower resource: xray:PutTraceSegments and "
            "xray:PutTelemetryRecords (active tracing), and the network-interface actions "
            "Lambda performs for a function in a VPC (the actions of the AWS managed "
            "AWSLambdaVPCAccessExecutionRole, whose ec2:Describe* calls are '*'-only). "
            "Every data permission of this role is scoped to one resource.",
        )
        return role


def _environment(spec: FunctionSpec, own: dict[str, str]) -> dict[str, str]:
    """What every function is told (dbt paths, Powertools, time limits), plus ``own``."""
    statement_timeout = spec.timeout.minus(defaults.STATEMENT_TIMEOUT_MARGIN)
    return {
        "ETL_DBT_PROJECT_DIR": defaults.DBT_PROJECT_DIR,
        "DBT_TARGET_PATH": defaults.DBT_TARGET_PATH,
        "DBT_LOG_PATH": defaults.DBT_LOG_PATH,
        "DO_NOT_TRACK": "1",
        "POWERTOOLS_SERVICE_NAME": f"shop-etl-{spec.name.replace('_', '-')}",
        "POWERTOOLS_METRICS_NAMESPACE": defaults.POWERTOOLS_METRICS_NAMESPACE,
        "POWERTOOLS_LOG_LEVEL": defaults.POWERTOOLS_LOG_LEVEL,
        "ETL_STATEMENT_TIMEOUT_MS": str(int(statement_timeout.to_milliseconds())),
        "ETL_CONNECT_WAIT_SECONDS": str(int(defaults.CONNECT_WAIT.to_seconds())),
        "ETL_PG_SSLMODE": defaults.PG_SSLMODE,
        "ETL_PG_SSLROOTCERT": defaults.RDS_CA_BUNDLE_PATH,
        **own,
    }


def _database_environment(prefix: str, database: DatabaseEndpoint) -> dict[str, str]:
    """Where to connect; who logs in is added per function (never a password)."""
    return {
        f"{prefix}_DB_HOST": database.host,
        f"{prefix}_DB_PORT": str(database.port),
        f"{prefix}_DB_NAME": database.name,
    }
