"""What each function is: its name, sizing and invocation settings (no CDK construct)."""

from dataclasses import dataclass

from aws_cdk import Duration

# Lambda's limit on a function name.
MAX_FUNCTION_NAME = 64


@dataclass(frozen=True)
class FunctionSpec:
    """Sizing and invocation settings of one function."""

    name: str
    description: str
    timeout: Duration
    memory_size: int
    # With -c reserved_concurrency=true: 1 for the functions that run dbt, one dbt
    # invocation per process at a time. None: never reserved.
    reserved_concurrency: int | None
    # Retries of asynchronous invocations (schedule, S3 event) after a failure.
    retry_attempts: int

    def function_name(self, stack_name: str) -> str:
        """``<stack>-<name>``: fixed, so that its log group can be named before it exists
        (``/aws/lambda/<function name>``) without a reference back to the function."""
        name = f"{stack_name}-{self.name.replace('_', '-')}"
        if len(name) > MAX_FUNCTION_NAME:
            raise ValueError(
                f"function name {name!r} is over {MAX_FUNCTION_NAME} characters: "
                "choose a shorter stack name (-c stack_name=...)"
            )
        return name


EXTRACT = FunctionSpec(
    name="extract",
    description=(
        "Runs dbt on the source for one business day and stages five tables in S3: "
        "the three marts, run_window_days and run_window_removed_customers"
    ),
    timeout=Duration.minutes(15),
    memory_size=1024,
    reserved_concurrency=1,
    retry_attempts=2,
)
LOAD = FunctionSpec(
    name="load",
    description="Upserts a staged business day into the analytics database",
    timeout=Duration.minutes(10),
    memory_size=512,
    reserved_concurrency=1,
    retry_attempts=2,
)
DB_INITIALIZER = FunctionSpec(
    name="db_initializer",
    description=(
        "Creates or upgrades both schemas and the logins (on every deployment that "
        "changes the code; by hand, the sample data too)"
    ),
    timeout=Duration.minutes(10),
    memory_size=512,
    reserved_concurrency=None,
    retry_attempts=0,
)
