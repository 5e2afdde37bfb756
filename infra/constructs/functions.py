"""The three functions, their two layers, roles, security groups and failure queue."""

from pathlib import Path

from aws_cdk import RemovalPolicy, Stack
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from constructs import Construct

from dbt_project.facts import metric_names
from dbt_project.facts.roles import EXTRACT_LOGIN, LOAD_LOGIN
from infra import lambda_defaults as defaults
from infra.constructs.common import dead_letter_queue
from infra.constructs.databases import DatabaseEndpoint
from infra.constructs.function_role import accept_findings, function_role
from infra.constructs.stage_bucket import StageBucket
from infra.function_specs import DB_INITIALIZER, EXTRACT, LOAD, FunctionSpec
from infra.nag import skip_checkov
from infra.packaging.layers import LayerDirs

# CDK matches a bare name at any depth. "tests" is safe: the dbt project's own tests
# live in data-tests/, and dbt's folders named tests (test materialization, generic
# tests) ship in the dependencies layer, whose asset takes no excludes.
ASSET_EXCLUDE = ["__pycache__", "*.pyc", "tests"]


class Functions(Construct):
    """extract, load and db_initializer with one least-privilege role each.

    Each function gets its own security group without egress; extract and load may
    reach S3 (its prefix list); everything else is granted by the resource it reaches
    (``DatabaseEndpoint.grant_login``, ``StageBucket.grant_write``...), so each role gets
    only what the stack grants it. Failed asynchronous invocations go to ``on_failure``
    (the run reports topic, which passes them on to the encrypted failure queue).
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        vpc: ec2.IVpc,
        subnets: ec2.SubnetSelection,
        s3: ec2.IPeer,
        layers: LayerDirs,
        code_root: Path,
        source: DatabaseEndpoint,
        target: DatabaseEndpoint,
        stage: StageBucket,
        removal_policy: RemovalPolicy,
        reserve_concurrency: bool = False,
        on_failure: lambda_.IDestination,
        metrics_namespace: str = defaults.POWERTOOLS_METRICS_NAMESPACE,
    ) -> None:
        super().__init__(scope, construct_id)
        self._on_failure = on_failure
        self._vpc = vpc
        self._subnets = subnets
        self._code_root = code_root
        self._removal_policy = removal_policy
        self._reserve_concurrency = reserve_concurrency
        self._metrics_namespace = metrics_namespace
        self._codes: dict[str, lambda_.Code] = {}
        self.log_groups: dict[str, logs.LogGroup] = {}
        self.failure_queue = dead_letter_queue(
            self,
            "FailedInvocations",
            removal_policy=removal_policy,
            sender="SNS",
            receives=(
                "the records of the functions' asynchronous invocations that failed after "
                "their retries, through the RunReports topic"
            ),
        )
        self.dependencies_layer, self.common_layer = self._layers(layers)
        self._create_functions(source, target, stage)
        for function in (self.extract, self.load):
            function.connections.allow_to(s3, ec2.Port.tcp(443), "S3 through the gateway endpoint")

    def _create_functions(
        self, source: DatabaseEndpoint, target: DatabaseEndpoint, stage: StageBucket
    ) -> None:
        source_environment = _database_environment("SOURCE", source)
        target_environment = _database_environment("ANALYTICS", target)
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
                "ANALYTICS_DB_IAM_USER": LOAD_LOGIN,
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
                "ANALYTICS_DB_SECRET_ARN": target.secret.secret_arn,
            },
        )

    @property
    def all(self) -> dict[str, lambda_.Function]:
        return {
            EXTRACT.name: self.extract,
            LOAD.name: self.load,
            DB_INITIALIZER.name: self.db_initializer,
        }

    def _layers(self, layers: LayerDirs) -> tuple[lambda_.LayerVersion, lambda_.LayerVersion]:
        dependencies = lambda_.LayerVersion(
            self,
            "DependenciesLayer",
            code=self._remember(
                "DependenciesLayer", lambda_.Code.from_asset(str(layers.dependencies))
            ),
            compatible_runtimes=[defaults.RUNTIME],
            compatible_architectures=[defaults.ARCHITECTURE],
            description="dbt-core, dbt-postgres, psycopg2, Powertools (requirements/lambda.txt)",
            removal_policy=self._removal_policy,
        )
        common = lambda_.LayerVersion(
            self,
            "CommonLayer",
            code=self._remember(
                "CommonLayer", lambda_.Code.from_asset(str(layers.common), exclude=ASSET_EXCLUDE)
            ),
            compatible_runtimes=[defaults.RUNTIME],
            compatible_architectures=[defaults.ARCHITECTURE],
            description="The dbt_project package and the dbt project at /opt/dbt",
            removal_policy=self._removal_policy,
        )
        return dependencies, common

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
        role = function_role(self, f"{construct_id}Role", spec.name)
        function_name = spec.function_name(Stack.of(self).stack_name)
        log_group = self._log_group(spec, construct_id, function_name, role)
        function = lambda_.Function(
            self,
            construct_id,
            function_name=function_name,
            description=spec.description,
            runtime=defaults.RUNTIME,
            architecture=defaults.ARCHITECTURE,
            handler=defaults.HANDLER,
            code=self._code(spec, construct_id),
            layers=[self.dependencies_layer, self.common_layer],
            role=role,
            timeout=spec.timeout,
            memory_size=spec.memory_size,
            reserved_concurrent_executions=(
                spec.reserved_concurrency if self._reserve_concurrency else None
            ),
            vpc=self._vpc,
            vpc_subnets=self._subnets,
            security_groups=[security_group],
            logging_format=defaults.LOGGING_FORMAT,
            log_group=log_group,
            tracing=defaults.TRACING,
            retry_attempts=spec.retry_attempts,
            max_event_age=defaults.MAX_EVENT_AGE,
            on_failure=self._on_failure,
            environment=_environment(spec, environment),
        )
        # The environment's namespace (infra/environments.py) over the shared default, so
        # that each environment's alarms read its own functions' metrics.
        function.add_environment("POWERTOOLS_METRICS_NAMESPACE", self._metrics_namespace)
        accept_findings(spec, function)
        return function

    def _log_group(
        self, spec: FunctionSpec, construct_id: str, function_name: str, role: iam.IRole
    ) -> logs.LogGroup:
        """``/aws/lambda/<function name>``, where Lambda users look, but the stack's: its
        retention and deletion follow the stack's settings."""
        log_group = logs.LogGroup(
            self,
            f"{construct_id}Logs",
            log_group_name=f"/aws/lambda/{function_name}",
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
        return log_group

    def _code(self, spec: FunctionSpec, construct_id: str) -> lambda_.Code:
        code_dir = self._code_root / spec.name
        if not (code_dir / "handler.py").is_file():
            raise FileNotFoundError(
                f"{code_dir / 'handler.py'} is missing: each function's code is "
                "lambdas/<name>/handler.py exposing handler(event, context)"
            )
        return self._remember(
            f"{construct_id}Code", lambda_.Code.from_asset(str(code_dir), exclude=ASSET_EXCLUDE)
        )

    def _remember(self, name: str, code: lambda_.Code) -> lambda_.Code:
        self._codes[name] = code
        return code

    @property
    def code_versions(self) -> dict[str, str]:
        """The S3 key of every code asset, named by what it is: ``<content hash>.zip``.

        They change exactly when a handler, the dbt project, the package or the pinned
        dependencies change, so a resource that carries them is updated then.
        """
        return {name: code.bind(self).s3_location.object_key for name, code in self._codes.items()}


def _environment(spec: FunctionSpec, own: dict[str, str]) -> dict[str, str]:
    """What every function is told (dbt paths, Powertools, time limits), plus ``own``."""
    statement_timeout = spec.timeout.minus(defaults.STATEMENT_TIMEOUT_MARGIN)
    return {
        "ETL_DBT_PROJECT_DIR": defaults.DBT_PROJECT_DIR,
        "DBT_TARGET_PATH": defaults.DBT_TARGET_PATH,
        "DBT_LOG_PATH": defaults.DBT_LOG_PATH,
        "DO_NOT_TRACK": "1",
        "POWERTOOLS_SERVICE_NAME": metric_names.service(spec.name),
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
