"""Extract: a scheduled or manual run of dbt on the source, unloaded to S3."""

from dbt_project import lambda_app
from dbt_project.observability import logger, metrics, tracer


@logger.inject_lambda_context(log_event=True, clear_state=True)
@metrics.log_metrics(capture_cold_start_metric=True)
@tracer.capture_lambda_handler
def handler(event, context):
    return lambda_app.run(lambda_app.handle_extract, event, context)
