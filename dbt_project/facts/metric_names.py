"""The CloudWatch metrics the functions emit, by name: one list for the handlers that
emit them and for the stack's dashboard and alarms that read them.

Imports nothing, so the CDK app can read it without the runtime's dependencies.
"""

# The namespace the functions publish under (POWERTOOLS_METRICS_NAMESPACE); each
# function's metrics carry its service name (POWERTOOLS_SERVICE_NAME) as a dimension.
NAMESPACE = "ShopEtl"


def service(function_name: str) -> str:
    return f"shop-etl-{function_name.replace('_', '-')}"


# The original design's metrics.
EXTRACTION_TIME = "ExtractionTime"  # seconds, one per extracted night
RECORDS_EXTRACTED = "RecordsExtracted"  # rows of the three marts
S3_READ_TIME = "S3ReadTime"  # seconds the load spent reading the stage
DATA_LOAD_TIME = "DataLoadTime"  # seconds of the load transaction
RECORDS_LOADED_PREFIX = "RecordsLoaded_"  # + mart name: rows inserted or updated
DB_CONNECTION_ERROR = "DBConnectionError"  # a database out of reach or refusing the login
SECRET_RETRIEVAL_ERROR = "SecretRetrievalError"  # noqa: S105 - a secret or an IAM token not to be had

# What operating it needs besides.
NIGHTS_LOADED = "NightsLoaded"  # the heartbeat: 1 per night loaded (not per duplicate)
SOURCE_STALE = "SourceStale"  # 1 when the source freshness gate stopped a night
# 1 when the gate stopped a night because the source has changes later than now
SOURCE_CLOCK_AHEAD = "SourceClockAhead"
ANALYTICS_TEST_TIME = "AnalyticsTestTime"
DOCS_PUBLISH_ERROR = "DocsPublishError"  # a loaded night whose lineage site was not published
# Region-days whose orders or revenue left their usual band (a warning, never a failure).
VOLUME_ANOMALIES = "VolumeAnomalies"
RUN_REPORT_ERROR = "RunReportError"  # a loaded night's report not kept in the database or not sent
INIT_TIME = "InitTime"


def records_loaded(mart: str) -> str:
    return RECORDS_LOADED_PREFIX + mart
