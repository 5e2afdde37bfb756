"""The environments one account can hold side by side: dev, staging and prod.

An environment names the stack, and every name the stack sets itself derives from the
stack's name (functions, their log groups, the DNS Firewall's lists, the Slack channel
configuration); the rest CloudFormation names after the stack. Its functions publish
their metrics under a namespace of their own, so one environment's alarms never read
another's nights. prod keeps the names a stack had before environments existed, so a
deployment made then is updated in place, not duplicated.
"""

from dataclasses import dataclass

from dbt_project.facts import metric_names

ENVIRONMENTS = ("dev", "staging", "prod")
# No -c env: prod, the names of a stack deployed before environments existed.
DEFAULT_ENVIRONMENT = "prod"
DEFAULT_STACK_NAME = "ShopEtl"
# Only prod runs every night unless told otherwise (-c nightly_schedule=true|false):
# dev and staging run when someone invokes them, a backfill before a release.
RUNS_NIGHTLY = frozenset({"prod"})


@dataclass(frozen=True)
class EtlEnvironment:
    """One environment of the stack named ``base_stack_name``."""

    name: str = DEFAULT_ENVIRONMENT
    base_stack_name: str = DEFAULT_STACK_NAME

    def __post_init__(self) -> None:
        if self.name not in ENVIRONMENTS:
            raise ValueError(
                f"env: expected one of {', '.join(ENVIRONMENTS)} (-c env=staging), "
                f"got {self.name!r}"
            )

    @property
    def suffix(self) -> str:
        """What the environment adds to a name: nothing for prod, ``-<env>`` otherwise."""
        return "" if self.name == DEFAULT_ENVIRONMENT else f"-{self.name}"

    @property
    def stack_name(self) -> str:
        return self.base_stack_name + self.suffix

    @property
    def metrics_namespace(self) -> str:
        """Where the functions publish their metrics and the alarms and dashboard read them."""
        return metric_names.NAMESPACE + self.suffix

    @property
    def runs_nightly(self) -> bool:
        """Whether the nightly schedule is on when ``-c nightly_schedule`` is not given."""
        return self.name in RUNS_NIGHTLY
