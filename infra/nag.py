"""Accepting a cdk-nag finding or a checkov check: done by the construct that creates the
resource, beside it.

The AwsSolutions checks themselves are added in ``infra/stack.py``; any finding not
acknowledged this way fails synthesis. infra/README.md lists the acknowledgments and
``tests/infra/test_security_gate.py`` holds the reviewed set. checkov runs on the
template in ``tests/infra/test_scanners.py``, which holds the reviewed skips.
"""

from aws_cdk import Acknowledgment, CfnElement, CfnResource, Stack, Validations
from constructs import IConstruct


def acknowledge(construct: IConstruct, rule: str, reason: str) -> None:
    """Accept ``rule`` on ``construct`` and its children; ``reason`` is what a reviewer reads."""
    Validations.of(construct).acknowledge(Acknowledgment(id=rule, reason=reason))


def logical_id(element: IConstruct | None) -> str:
    """The resolved logical id, as cdk-nag writes it inside a rule id (``<Id.Arn>``)."""
    if not isinstance(element, CfnElement):
        raise TypeError(f"expected a CloudFormation element, got {element!r}")
    stack = Stack.of(element)
    return stack.resolve(stack.get_logical_id(element))


def skip_checkov(construct: IConstruct, check: str, reason: str) -> None:
    """Skip checkov's ``check`` on the resource of ``construct``, saying why.

    checkov reads ``Metadata.checkov.skip`` of a CloudFormation resource; several skips
    on one resource share that list, and a check already skipped there keeps its reason.
    """
    resource = construct if isinstance(construct, CfnResource) else construct.node.default_child
    if not isinstance(resource, CfnResource):
        raise TypeError(f"{construct.node.path} has no CloudFormation resource to annotate")
    existing = resource.get_metadata("checkov") or {}
    if any(skip["id"] == check for skip in existing.get("skip", [])):
        return  # a helper shared by several constructs is annotated once
    skips = [*existing.get("skip", []), {"id": check, "comment": reason}]
    resource.add_metadata("checkov", {**existing, "skip": skips})


def skip_helper_function_checks(function: IConstruct, job: str) -> None:
    """Skip checkov's DLQ, VPC and concurrency checks on a CDK deployment-time helper."""
    reason = (
        f"CDK's own deployment-time helper function ({job}), invoked by CloudFormation "
        "during deployments only: "
    )
    skip_checkov(
        function, "CKV_AWS_116", reason + "CloudFormation reports its failures, no queue would."
    )
    skip_checkov(
        function,
        "CKV_AWS_117",
        reason + "it calls AWS APIs only, which the isolated subnets cannot reach.",
    )
    skip_checkov(function, "CKV_AWS_115", reason + "one call per deployment, nothing to throttle.")
