"""Load: an S3 manifest event (or a manual manifest key) upserted into the analytics database."""

from dbt_project.aws import handlers
from dbt_project.aws.observability import logger, metrics, tracer


@logger.inject_lambda_context(log_event=True, clear_state=True)
@metrics.log_metrics(capture_cold_start_metric=True)
@tracer.capture_lambda_handler
def handler(event, context):
    return handlers.run(handlers.handle_load, event, context)
