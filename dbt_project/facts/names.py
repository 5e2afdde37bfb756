"""The names the two databases, dbt and the CDK app agree on: marts, schemas, databases
and dbt targets."""

# The marts of the shipped project, for what the CDK app draws per mart (the dashboard's
# RecordsLoaded metrics). The extract and the load read the marts from the models' YAML
# (dbt_project.contract.ownership.marts); a unit test keeps the two equal.
MARTS = ("customer_analytics", "product_sales_summary", "daily_sales_summary")

# dbt targets (profiles.yml): the nightly build on the source, the views on the
# analytics database, and a developer's own build.
SOURCE_TARGET = "source"
ANALYTICS_TARGET = "analytics"
DEV_TARGET = "dev"
# The variable each target's database name comes from (profiles.yml reads them): the
# source side (the nightly build and a developer's own) and the analytics side each have
# their own, so one shell's exports reach both databases. ETL_PG_DBNAME, the one name
# both sides once shared, still names the source side's database when its own is unset.
SOURCE_DBNAME_VARIABLE = "ETL_SOURCE_DBNAME"
ANALYTICS_DBNAME_VARIABLE = "ETL_ANALYTICS_DBNAME"
LEGACY_DBNAME_VARIABLE = "ETL_PG_DBNAME"
DBNAME_VARIABLES = {
    SOURCE_TARGET: SOURCE_DBNAME_VARIABLE,
    DEV_TARGET: SOURCE_DBNAME_VARIABLE,
    ANALYTICS_TARGET: ANALYTICS_DBNAME_VARIABLE,
}

# Database names the stack creates and the local loop uses.
SOURCE_DATABASE = "shop"
ANALYTICS_DATABASE = "analytics"

# Schemas. The operational tables sit in SOURCE_SCHEMA (dbt var source_schema); the
# `source` target builds the nightly models in BUILD_SCHEMA (profiles.yml); the load
# writes the marts to ANALYTICS_SCHEMA and its bookkeeping (ledger, versions, run
# reports) to LEDGER_SCHEMA.
SOURCE_SCHEMA = "public"
BUILD_SCHEMA = "nightly"
ANALYTICS_SCHEMA = "analytics"
LEDGER_SCHEMA = "ledger"
# The property of the deployment's upgrade (a CloudFormation custom resource) that says
# whether a change of a mart's logic starts the reprocessing of its history: "true" or
# "false", set from the CDK context and read by the initializer from the event.
REPROCESS_PROPERTY = "ReprocessChangedModels"

# What BUILD_SCHEMA and LEDGER_SCHEMA were both called before "etl" meant only the
# command: `etl init` renames such a schema where it finds one.
LEGACY_SCHEMA = "etl"

# The property of the deploy-time upgrade (the CDK app's custom resource) that says when
# the template was made: a rollback's Update carries an older one (dbt_project.aws.events).
DEPLOY_STAMP_PROPERTY = "DeployStamp"
