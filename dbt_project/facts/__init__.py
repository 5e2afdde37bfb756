"""Facts every part of the project shares, in the standard library only.

The business calendar, the stage layout, the database roles, the metric names and
the names of marts, schemas, databases and dbt targets. The CDK app (``infra/``)
imports this part of the package and no other: it must synthesize without dbt,
psycopg2 or boto3 installed. ``tests/unit/test_structure.py`` holds both rules.
"""

from dbt_project.facts import business_calendar, metric_names, names, roles, stage_layout

__all__ = ["business_calendar", "metric_names", "names", "roles", "stage_layout"]
