"""One CloudWatch dashboard for the ETL: its own metrics, the functions, queues and Aurora."""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from aws_cdk import Duration
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_rds as rds
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from dbt_project.facts import metric_names as names
from dbt_project.facts.names import MARTS
from infra.function_specs import DB_INITIALIZER, EXTRACT, LOAD
from infra.metrics import etl_metric

# One point per night: a night runs around 02:00 in Asia/Tokyo, 17:00 UTC, well inside
# one UTC day. The AWS metrics keep an hour's detail, enough to see a night's peak.
NIGHTLY = Duration.days(1)
HOURLY = Duration.hours(1)
WIDTH = 24  # the dashboard grid's width
ALL_FUNCTIONS = (EXTRACT.name, LOAD.name, DB_INITIALIZER.name)


@dataclass(frozen=True)
class Panel:
    """A graph of metrics the handlers emit: (metric name, function name) pairs."""

    title: str
    metrics: Sequence[tuple[str, str]]
    statistic: str


# Every metric of dbt_project.facts.metric_names that a handler emits, and only those (a test
# compares them with dbt_project/aws/handlers.py).
PANELS = (
    Panel(
        "Nights loaded (heartbeat) and stopped by the freshness gate (stale, clock ahead)",
        (
            (names.NIGHTS_LOADED, LOAD.name),
            (names.SOURCE_STALE, EXTRACT.name),
            # No alarm of its own: a stopped night fires the extract's errors alarm and,
            # a day on, the heartbeat's; this line says which cause it was.
            (names.SOURCE_CLOCK_AHEAD, EXTRACT.name),
        ),
        "Sum",
    ),
    Panel("Extract: seconds", ((names.EXTRACTION_TIME, EXTRACT.name),), "Maximum"),
    Panel("Extract: rows of the three marts", ((names.RECORDS_EXTRACTED, EXTRACT.name),), "Sum"),
    Panel(
        "Load: seconds reading the stage, in the transaction, in the tests",
        (
            (names.S3_READ_TIME, LOAD.name),
            (names.DATA_LOAD_TIME, LOAD.name),
            (names.ANALYTICS_TEST_TIME, LOAD.name),
        ),
        "Maximum",
    ),
    Panel(
        "Load: rows inserted or updated per mart",
        tuple((names.records_loaded(mart), LOAD.name) for mart in MARTS),
        "Sum",
    ),
    Panel(
        "Database connection and secret or token errors",
        tuple(
            (name, function)
            for name in (names.DB_CONNECTION_ERROR, names.SECRET_RETRIEVAL_ERROR)
            for function in ALL_FUNCTIONS
        ),
        "Sum",
    ),
    Panel("db_initializer: seconds", ((names.INIT_TIME, DB_INITIALIZER.name),), "Maximum"),
    Panel(
        "Loaded nights whose report was not kept or sent, or lineage site not published",
        ((names.RUN_REPORT_ERROR, LOAD.name), (names.DOCS_PUBLISH_ERROR, LOAD.name)),
        "Sum",
    ),
    Panel(
        "Volume anomalies: region-days outside their usual band (a warning)",
        ((names.VOLUME_ANOMALIES, LOAD.name),),
        "Maximum",
    ),
)


class Dashboard(Construct):
    """The nights at a glance, then what they ran on.

    Rows: the alarms' states; the ETL's own metrics (PANELS); each function's duration
    against its timeout, and errors; the dead-letter queues' depths; Aurora's capacity
    (ACU) and connections.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        functions: Mapping[str, lambda_.Function],
        dead_letter_queues: Mapping[str, sqs.IQueue],
        target_cluster: rds.IDatabaseCluster,
        alarms: Sequence[cloudwatch.IAlarm] = (),
        metrics_namespace: str = names.NAMESPACE,
    ) -> None:
        super().__init__(scope, construct_id)
        self.dashboard = cloudwatch.Dashboard(self, "Dashboard", default_interval=Duration.days(14))
        if alarms:
            self.dashboard.add_widgets(
                cloudwatch.AlarmStatusWidget(title="Alarms", alarms=list(alarms), width=WIDTH)
            )
        self.dashboard.add_widgets(
            *(_panel(panel, WIDTH // 3, metrics_namespace) for panel in PANELS)
        )
        self.dashboard.add_widgets(
            *(_duration(name, function) for name, function in functions.items())
        )
        self.dashboard.add_widgets(
            _graph(
                "Function errors",
                [
                    function.metric_errors(statistic="Sum", period=HOURLY, label=name)
                    for name, function in functions.items()
                ],
            ),
            _graph(
                "Dead-letter queues: messages waiting",
                [
                    queue.metric_approximate_number_of_messages_visible(
                        statistic="Maximum", period=HOURLY, label=name
                    )
                    for name, queue in dead_letter_queues.items()
                ],
            ),
            _graph(
                "Aurora: capacity (ACU)",
                [
                    target_cluster.metric_serverless_database_capacity(
                        statistic="Maximum", period=HOURLY
                    )
                ],
            ),
            _graph(
                "Aurora: connections",
                [target_cluster.metric_database_connections(statistic="Maximum", period=HOURLY)],
            ),
        )


def _graph(title: str, metrics: list[cloudwatch.IMetric]) -> cloudwatch.GraphWidget:
    return cloudwatch.GraphWidget(
        title=title,
        left=metrics,
        width=WIDTH // 4,
        left_y_axis=cloudwatch.YAxisProps(min=0),
    )


def _panel(panel: Panel, width: int, namespace: str) -> cloudwatch.GraphWidget:
    return cloudwatch.GraphWidget(
        title=panel.title,
        left=[
            etl_metric(
                name,
                function,
                statistic=panel.statistic,
                period=NIGHTLY,
                label=f"{name} ({function})",
                namespace=namespace,
            )
            for name, function in panel.metrics
        ],
        width=width,
        left_y_axis=cloudwatch.YAxisProps(min=0),
    )


def _duration(name: str, function: lambda_.Function) -> cloudwatch.GraphWidget:
    """The longest run of each hour against the timeout, where Lambda would stop it."""
    timeout_ms = function.timeout.to_milliseconds() if function.timeout else None
    annotations = (
        [cloudwatch.HorizontalAnnotation(value=timeout_ms, label="timeout", color="#d62728")]
        if timeout_ms
        else []
    )
    return cloudwatch.GraphWidget(
        title=f"{name}: duration (ms) against its timeout",
        left=[function.metric_duration(statistic="Maximum", period=HOURLY, label=name)],
        left_annotations=annotations,
        width=WIDTH // len(ALL_FUNCTIONS),
        # Up to the timeout, so its line is always in view.
        left_y_axis=cloudwatch.YAxisProps(min=0, max=timeout_ms),
    )
