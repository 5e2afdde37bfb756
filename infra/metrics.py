"""The functions' own CloudWatch metrics, as the stack's alarms and dashboard read them.

The names come from ``dbt_project.facts.metric_names``, the list the handlers emit from.
"""

from aws_cdk import Duration
from aws_cdk import aws_cloudwatch as cloudwatch

from dbt_project.facts import metric_names

DEFAULT_PERIOD = Duration.minutes(5)


def etl_metric(
    name: str,
    function_name: str,
    *,
    statistic: str = "Sum",
    period: Duration = DEFAULT_PERIOD,
    label: str | None = None,
    namespace: str = metric_names.NAMESPACE,
) -> cloudwatch.Metric:
    """Metric ``name`` as function ``function_name`` publishes it under ``namespace``
    (its environment's, infra/environments.py).

    Powertools adds one dimension, ``service`` (POWERTOOLS_SERVICE_NAME); a metric is
    found only with exactly the dimensions it was published with.
    """
    return cloudwatch.Metric(
        namespace=namespace,
        metric_name=name,
        dimensions_map={"service": metric_names.service(function_name)},
        statistic=statistic,
        period=period,
        label=label,
    )
