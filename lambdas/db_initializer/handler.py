"""DB initializer: run by hand to create both schemas (and, on request, the sample data)."""

from dbt_project.aws import handlers
from dbt_project.aws.observability import logger, metrics, tracer


@logger.inject_lambda_context(log_event=True, clear_state=True)
@metrics.log_metrics(capture_cold_start_metric=True)
@tracer.capture_lambda_handler
def handler(event, context):
    return handlers.run(handlers.handle_init, event, context)
