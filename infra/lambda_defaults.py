"""Settings every function shares, in one place so that they cannot drift apart."""

from aws_cdk import Duration
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs

from dbt_project.facts import metric_names
from infra.packaging.layers import RDS_CA_BUNDLE

# Must match the platform the layers are built for (infra/packaging/layers.py); a test checks it.
RUNTIME = lambda_.Runtime.PYTHON_3_12
ARCHITECTURE = lambda_.Architecture.ARM_64

LOGGING_FORMAT = lambda_.LoggingFormat.JSON
TRACING = lambda_.Tracing.ACTIVE
LOG_RETENTION = logs.RetentionDays.ONE_MONTH
HANDLER = "handler.handler"

# Async invocations (schedule, S3 event): how often Lambda retries a failed run and how
# long an event may wait (throttled, as behind an opt-in reserved concurrency) before it
# is dropped to the on-failure destination.
MAX_EVENT_AGE = Duration.hours(6)

# A statement is cancelled this long before the function itself would time out, so a
# slow query fails with a PostgreSQL error in the logs instead of a bare timeout.
STATEMENT_TIMEOUT_MARGIN = Duration.minutes(2)

# How long a function waits for a database to accept connections: Aurora Serverless v2
# resumes from 0 ACU in about 15 seconds.
CONNECT_WAIT = Duration.seconds(60)

# TLS that checks the database's certificate chain and host name against the Amazon RDS
# CAs, which the common layer carries (Lambda mounts layers at /opt).
PG_SSLMODE = "verify-full"
RDS_CA_BUNDLE_PATH = f"/opt/{RDS_CA_BUNDLE}"

# Writable places inside Lambda: the code and layers are read-only.
DBT_PROJECT_DIR = "/opt/dbt"
DBT_TARGET_PATH = "/tmp/dbt/target"  # noqa: S108 - Lambda's only writable folder
DBT_LOG_PATH = "/tmp/dbt/logs"  # noqa: S108 - Lambda's only writable folder

POWERTOOLS_METRICS_NAMESPACE = metric_names.NAMESPACE
POWERTOOLS_LOG_LEVEL = "INFO"
