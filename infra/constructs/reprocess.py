"""The reprocess state machine: a backfill or a full refresh, run in chunks past the
15 minutes of one Lambda invocation.

Its first step asks the extract function for the plan (``{"plan": <input>}``: the range
cut into windowed chunks that each fit a time budget); then, chunk by chunk in day
order, it runs the chunk's extract and loads its manifest by invoking the load function
synchronously (the S3 event starts the same load too: the ledger makes the second one a
duplicate, so every chunk's load is in the ledger before the next chunk starts). Its
last step has the load function send the run report to the RunReports topic.

The loop keeps its place in the execution's state (``next``), so a failed execution
redriven in Step Functions resumes at the state that failed, with the same input: the
failed chunk's extract or load, never an earlier chunk.
"""

from aws_cdk import Duration, RemovalPolicy, Stack
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_stepfunctions as sfn
from aws_cdk import aws_stepfunctions_tasks as tasks
from constructs import Construct

from infra.constructs.common import allow_through_endpoint
from infra.lambda_defaults import LOG_RETENTION
from infra.nag import acknowledge, logical_id, skip_checkov

# The variable that names the state machine to the function allowed to start it.
STATE_MACHINE_VARIABLE = "REPROCESS_STATE_MACHINE_ARN"

# Lambda's own transient failures (Step Functions names them Lambda.<exception>).
LAMBDA_SERVICE_ERRORS = (
    "Lambda.ClientExecutionTimeoutException",
    "Lambda.ServiceException",
    "Lambda.AWSLambdaException",
    "Lambda.SdkClientException",
    "Lambda.TooManyRequestsException",
)
# A function that ran out of time (or memory): Sandbox.Timedout, or Lambda.Unknown from
# older runtimes. Retried once, later: a chunk sized to its budget that timed out met a
# slow moment (a database resuming), not a chunk too large to finish.
TIMEOUTS = ("Sandbox.Timedout", "Lambda.Unknown")
# The project's errors that pass with time (dbt_project/errors.py; a handler's exception
# class name is the error's name): a database out of reach, the nightly extract holding
# the extract lock, a load that waited out its time limit. Its refusals (ConfigError,
# DataTestsFailed, SourceStale, StageError, CredentialsError...) fail the execution at
# once: a retry would meet them again. Fix the cause, then redrive.
TRANSIENT_PROJECT_ERRORS = ("DatabaseUnavailable", "ExtractBusy", "LoadTimedOut")


def _retry(task: tasks.LambdaInvoke) -> tasks.LambdaInvoke:
    task.add_retry(
        errors=list(LAMBDA_SERVICE_ERRORS),
        interval=Duration.seconds(5),
        backoff_rate=2,
        max_attempts=6,
        jitter_strategy=sfn.JitterType.FULL,
    )
    task.add_retry(errors=list(TIMEOUTS), interval=Duration.minutes(1), max_attempts=1)
    task.add_retry(
        errors=list(TRANSIENT_PROJECT_ERRORS),
        interval=Duration.minutes(1),
        backoff_rate=2,
        max_attempts=5,
        jitter_strategy=sfn.JitterType.FULL,
    )
    return task


class Reprocess(Construct):
    """A Standard state machine that runs a plan's chunks in order through the extract
    and load functions, logging every event and tracing with X-Ray.

    Start it with ``{"start": "YYYY-MM-DD", "end": "YYYY-MM-DD"}`` (a backfill) or
    ``{"full_refresh": true}`` (the whole history, rebuilt: the history load), each with
    an optional ``"budget_minutes"``.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        extract: lambda_.IFunction,
        load: lambda_.IFunction,
        removal_policy: RemovalPolicy,
    ) -> None:
        super().__init__(scope, construct_id)
        name = f"{Stack.of(self).stack_name}-reprocess"
        log_group = logs.LogGroup(
            self,
            "Logs",
            # The prefix Step Functions' log delivery expects (vended logs).
            log_group_name=f"/aws/vendedlogs/states/{name}",
            retention=LOG_RETENTION,
            removal_policy=removal_policy,
        )
        skip_checkov(
            log_group,
            "CKV_AWS_158",
            "CloudWatch Logs encrypts every log group at rest; the execution history holds "
            "dates, counts, manifest keys and error messages, never credentials or rows. "
            "A customer-managed key would add cost and a key policy to maintain.",
        )
        self.state_machine = sfn.StateMachine(
            self,
            "StateMachine",
            state_machine_name=name,
            state_machine_type=sfn.StateMachineType.STANDARD,
            definition_body=sfn.DefinitionBody.from_chainable(self._definition(extract, load)),
            logs=sfn.LogOptions(
                destination=log_group, level=sfn.LogLevel.ALL, include_execution_data=True
            ),
            tracing_enabled=True,
            removal_policy=removal_policy,
        )
        self._accept_findings(extract, load)
        # CDK makes the state machine depend on its role, which RoleArn already does.
        self.state_machine.node.default_child.add_metadata(
            "cfn-lint", {"config": {"ignore_checks": ["W3005"]}}
        )

    def _definition(self, extract: lambda_.IFunction, load: lambda_.IFunction) -> sfn.IChainable:
        """Plan, then ExtractChunk, LoadChunk and NextChunk while MoreChunks, then Report."""
        plan = self._invoke(
            "Plan",
            extract,
            {"plan": sfn.JsonPath.entire_payload},
            # The loop's state: the plan, the next chunk's index, the rows so far.
            {"plan": sfn.JsonPath.object_at("$.Payload"), "next": 0, "rows": 0},
            "$",
        )
        chunk = sfn.JsonPath.array_get_item(
            sfn.JsonPath.list_at("$.plan.chunks"), sfn.JsonPath.number_at("$.next")
        )
        # The extract answers with the night's manifest and rows at its top level:
        # these paths take no array index.
        extract_chunk = self._invoke(
            "ExtractChunk",
            extract,
            {"chunk": chunk},
            {
                "manifest_key": sfn.JsonPath.string_at("$.Payload.manifest_key"),
                "rows": sfn.JsonPath.number_at("$.Payload.rows_extracted"),
            },
            "$.extracted",
        )
        load_chunk = self._invoke(
            "LoadChunk",
            load,
            {"manifest_key": sfn.JsonPath.string_at("$.extracted.manifest_key")},
            {"loads": sfn.JsonPath.list_at("$.Payload.loads")},
            "$.loaded",
        )
        advance = sfn.Pass(
            self,
            "NextChunk",
            parameters={
                "plan": sfn.JsonPath.object_at("$.plan"),
                "next": sfn.JsonPath.math_add(sfn.JsonPath.number_at("$.next"), 1),
                "rows": sfn.JsonPath.math_add(
                    sfn.JsonPath.number_at("$.rows"), sfn.JsonPath.number_at("$.extracted.rows")
                ),
            },
        )
        more = sfn.Choice(self, "MoreChunks")
        more.when(sfn.Condition.number_less_than_json_path("$.next", "$.plan.count"), extract_chunk)
        more.otherwise(self._report(load))
        extract_chunk.next(load_chunk).next(advance).next(more)
        return plan.next(more)

    def _report(self, load: lambda_.IFunction) -> tasks.LambdaInvoke:
        """The load function sends the run report; the execution's context carries its
        start and, after a redrive, its RedriveCount."""
        return self._invoke(
            "Report",
            load,
            {
                "report": {
                    "plan": sfn.JsonPath.object_at("$.plan"),
                    "rows": sfn.JsonPath.number_at("$.rows"),
                    "execution": sfn.JsonPath.object_at("$$.Execution"),
                }
            },
            {"report": sfn.JsonPath.object_at("$.Payload")},
            "$",
        )

    def _invoke(
        self, name: str, function: lambda_.IFunction, payload: dict, selector: dict, path: str
    ) -> tasks.LambdaInvoke:
        """A synchronous invocation of ``function``, keeping ``selector`` of its answer at
        ``path``, with the retries of every step."""
        return _retry(
            tasks.LambdaInvoke(
                self,
                name,
                lambda_function=function,
                payload=sfn.TaskInput.from_object(payload),
                result_selector=selector,
                result_path=path,
                retry_on_service_exceptions=False,
            )
        )

    def _accept_findings(self, extract: lambda_.IFunction, load: lambda_.IFunction) -> None:
        role = self.state_machine.role
        for function in (extract, load):
            acknowledge(
                role,
                f"AwsSolutions-IAM5[Resource::<{logical_id(function.node.default_child)}.Arn>:*]",
                "CDK's LambdaInvoke grant names the function and its versions (<arn>:*); the "
                "state machine invokes the unqualified function only, and no other.",
            )
        acknowledge(
            role,
            "AwsSolutions-IAM5[Resource::*]",
            "Only for actions that accept no narrower resource: the CloudWatch Logs delivery "
            "actions Step Functions needs to log to its log group (logs:CreateLogDelivery, "
            "logs:DescribeResourcePolicies...) and X-Ray's trace uploads. Its data "
            "permissions name the two functions only.",
        )

    def grant_start(self, function: lambda_.Function, endpoint: ec2.InterfaceVpcEndpoint) -> None:
        """Let ``function`` start executions (the history load after an initialization):
        ``states:StartExecution`` on this state machine, the way there through the Step
        Functions ``endpoint``, whose policy carries that call only, and the ARN in
        ``REPROCESS_STATE_MACHINE_ARN``."""
        self.state_machine.grant_start_execution(function)
        function.connections.allow_to(endpoint, ec2.Port.tcp(443), "Step Functions endpoint")
        allow_through_endpoint(
            endpoint,
            sid="StartReprocessOnly",
            actions=["states:StartExecution"],
            resources=[self.state_machine.state_machine_arn],
        )
        function.add_environment(STATE_MACHINE_VARIABLE, self.state_machine.state_machine_arn)
