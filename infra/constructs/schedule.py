"""The nightly trigger of the extract: EventBridge Scheduler in the business time zone."""

from aws_cdk import Duration, RemovalPolicy, Stack, TimeZone
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_scheduler as scheduler
from aws_cdk import aws_scheduler_targets as targets
from constructs import Construct

from dbt_project.facts.business_calendar import BUSINESS_TIMEZONE
from infra.constructs.common import dead_letter_queue

NIGHTLY = "cron(0 2 * * ? *)"
TIME_ZONE = TimeZone.of(BUSINESS_TIMEZONE)
# Delivery retries of the scheduler itself (the function's own retries come after).
RETRY_ATTEMPTS = 3
MAX_EVENT_AGE = Duration.hours(2)


class _InvokeUnqualified(targets.LambdaInvoke):
    """``LambdaInvoke`` whose role may invoke the function itself, not its versions.

    The stock target grants ``lambda:InvokeFunction`` on ``<function arn>:*`` as well;
    the schedule only ever calls the unqualified function.
    """

    def __init__(self, function: lambda_.IFunction, **kwargs) -> None:
        super().__init__(function, **kwargs)
        self._function_arn = function.function_arn

    def _add_target_action_to_role(self, role: iam.IRole) -> None:
        iam.Grant.add_to_principal(
            grantee=role, actions=["lambda:InvokeFunction"], resource_arns=[self._function_arn]
        )


class NightlySchedule(Construct):
    """Invoke ``function`` every night at 02:00 in ``time_zone``.

    The event is ``{"scheduled_time": "<ISO time>"}``, filled in by the scheduler; the
    extract turns it into the previous business day, so a retried or late delivery
    still extracts the day it was scheduled for. EventBridge Scheduler (unlike an
    EventBridge rule, whose cron is UTC) takes the time zone itself. Invocations it
    cannot deliver after its retries go to an encrypted dead-letter queue. Disabled, it
    invokes nothing until a deployment turns it on.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        function: lambda_.IFunction,
        removal_policy: RemovalPolicy,
        expression: str = NIGHTLY,
        time_zone: TimeZone = TIME_ZONE,
        retry_attempts: int = RETRY_ATTEMPTS,
        max_event_age: Duration = MAX_EVENT_AGE,
        enabled: bool = True,
    ) -> None:
        super().__init__(scope, construct_id)
        self.dead_letter_queue = dead_letter_queue(
            self,
            "DeadLetterQueue",
            removal_policy=removal_policy,
            sender="EventBridge Scheduler",
            receives=(
                "the nightly invocations EventBridge Scheduler could not deliver after its retries"
            ),
        )
        self.schedule = scheduler.Schedule(
            self,
            "Schedule",
            description=f"Nightly extract of the previous {time_zone.timezone_name} business day",
            schedule=scheduler.ScheduleExpression.expression(expression, time_zone),
            # Disabled (-c nightly_schedule=false), it stays in the template: turning it
            # on is a deployment that changes its state only.
            enabled=enabled,
            target=_InvokeUnqualified(
                function,
                role=self._role(),
                input=scheduler.ScheduleTargetInput.from_object(
                    {"scheduled_time": scheduler.ContextAttribute.scheduled_time}
                ),
                retry_attempts=retry_attempts,
                max_event_age=max_event_age,
                dead_letter_queue=self.dead_letter_queue,
            ),
        )

    def _role(self) -> iam.Role:
        # Only EventBridge Scheduler of this account may use the role.
        return iam.Role(
            self,
            "Role",
            assumed_by=iam.ServicePrincipal(
                "scheduler.amazonaws.com",
                conditions={"StringEquals": {"aws:SourceAccount": Stack.of(self).account}},
            ),
            description="Lets the nightly schedule invoke the extract function",
        )
