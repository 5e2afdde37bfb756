"""Accepting a cdk-nag finding: done by the construct that creates the resource, beside it.

The AwsSolutions checks themselves are added in ``infra/stack.py``; any finding not
acknowledged this way fails synthesis. infra/README.md lists the acknowledgments and
``tests/infra/test_security_gate.py`` holds the reviewed set.
"""

from aws_cdk import Acknowledgment, CfnElement, Stack, Validations
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
