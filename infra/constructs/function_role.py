"""What every function starts from: its execution role (VPC network interfaces only), and
what the security gate is told about it."""

from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from constructs import Construct

from infra.function_specs import FunctionSpec
from infra.nag import acknowledge, skip_checkov

# What a function in a VPC needs to manage its network interfaces: the actions of the
# AWS managed policy AWSLambdaVPCAccessExecutionRole, written out to keep the role
# free of managed policies. The Describe actions support no resource-level scoping.
VPC_NETWORK_INTERFACE_ACTIONS = (
    "ec2:CreateNetworkInterface",
    "ec2:DescribeNetworkInterfaces",
    "ec2:DescribeSubnets",
    "ec2:DeleteNetworkInterface",
    "ec2:AssignPrivateIpAddresses",
    "ec2:UnassignPrivateIpAddresses",
)


def function_role(scope: Construct, construct_id: str, function: str) -> iam.Role:
    """A role only Lambda may assume, with the VPC actions; the stack grants the rest."""
    role = iam.Role(
        scope,
        construct_id,
        assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
        description=f"Execution role of the {function} function",
    )
    role.add_to_policy(
        iam.PolicyStatement(actions=list(VPC_NETWORK_INTERFACE_ACTIONS), resources=["*"])
    )
    skip_checkov(
        role.node.find_child("DefaultPolicy"),
        "CKV_AWS_111",
        "The unconstrained writes are the network-interface actions Lambda performs for "
        "a function in a VPC (as in the AWS managed AWSLambdaVPCAccessExecutionRole) and "
        "X-Ray's trace uploads, which accept no narrower resource; every data write is "
        "scoped to one resource.",
    )
    acknowledge(
        role,
        "AwsSolutions-IAM5[Resource::*]",
        "Only for actions that accept no narrower resource: xray:PutTraceSegments and "
        "xray:PutTelemetryRecords (active tracing), and the network-interface actions "
        "Lambda performs for a function in a VPC (the actions of the AWS managed "
        "AWSLambdaVPCAccessExecutionRole, whose ec2:Describe* calls are '*'-only). "
        "Every data permission of this role is scoped to one resource.",
    )
    return role


def accept_findings(spec: FunctionSpec, function: lambda_.Function) -> None:
    """What the gate is told about every function, each with its reason."""
    acknowledge(
        function,
        "AwsSolutions-L1",
        "Python 3.12 is deliberate: the dependencies layer is pinned and built for "
        "CPython 3.12 (requirements/lambda.txt), so a runtime upgrade is a reviewed "
        "change together with a layer rebuild, not a drift. Lambda supports 3.12 "
        "until 2028.",
    )
    skip_checkov(
        function,
        "CKV_AWS_116",
        "Failed asynchronous invocations go to the on-failure destination, the encrypted "
        "RunReports topic, and from it to the FailedInvocations queue (EventInvokeConfig, "
        "an SNS subscription), which records the error and the "
        "request as well; a dead-letter queue would duplicate it.",
    )
    skip_checkov(
        function,
        "CKV_AWS_173",
        "The environment holds no secret: host names, ports, database and login names, "
        "paths and ARNs (a template test checks it). Lambda encrypts it at rest with "
        "its service key.",
    )
    # CDK makes the function depend on its role, which the Role attribute already does.
    function.node.default_child.add_metadata("cfn-lint", {"config": {"ignore_checks": ["W3005"]}})
    if function.node.default_child.reserved_concurrent_executions is None:
        skip_checkov(function, "CKV_AWS_115", _unreserved_reason(spec))


def _unreserved_reason(spec: FunctionSpec) -> str:
    if spec.reserved_concurrency is None:
        return (
            "Invoked by hand and once per deployment that changes the code (no schedule, no "
            "event source), so nothing can fan it out; a reserved concurrency would take "
            "executions from the account's unreserved pool."
        )
    return (
        "Reserved concurrency is opt-in (-c reserved_concurrency=true): a new account's "
        "quota of 10 concurrent executions leaves none to reserve. Without it, overlapping "
        "extracts are serialised by an advisory lock on the source and loads by the lock on "
        "the load ledger, and one schedule starts one run a night."
    )
