"""The VPC's resolver answers only the region's AWS names: a Route 53 Resolver DNS
Firewall, on by default (-c dns_firewall=false removes it)."""

from __future__ import annotations

from typing import Any

import pytest
from aws_cdk import App, RemovalPolicy, Stack

from infra.constructs.dns_firewall import allowed_domains
from infra.constructs.network import Network

from .conftest import cdk_json_context
from .test_stack import resources

REGION = "ap-northeast-1"
# What the functions look up in Tokyo: the endpoints (private DNS), the stage bucket,
# the two databases, and names the VPC resolves itself.
LOOKED_UP = [
    "secretsmanager.ap-northeast-1.amazonaws.com",
    "sns.ap-northeast-1.amazonaws.com",
    "lambda.ap-northeast-1.amazonaws.com",
    "shopetl-stagebucket-1a2b3c.s3.ap-northeast-1.amazonaws.com",
    "shopetl-databasessource-abc.cxyz.ap-northeast-1.rds.amazonaws.com",
    "shopetl-databasestarget.cluster-cxyz.ap-northeast-1.rds.amazonaws.com",
    "ip-10-0-0-12.ap-northeast-1.compute.internal",
]
# Names that would carry data out: other zones, and look-alikes of AWS's.
REFUSED = [
    "c2VjcmV0.attacker.example",
    "secretsmanager.ap-northeast-1.amazonaws.com.attacker.example",
    "amazonaws.com",
    "x.us-east-1.amazonaws.com",  # another region
    "pypi.org",
]


def matches(name: str, domain: str) -> bool:
    """DNS Firewall's matching: ``*.zone`` is any name below ``zone``; else the name."""
    if domain == "*":
        return True
    if domain.startswith("*."):
        return name.endswith(domain[1:])
    return name == domain


def firewall(raw: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The VPC's rule group association and the group's rules, in priority order."""
    (association,) = resources(raw, "AWS::Route53Resolver::FirewallRuleGroupAssociation").values()
    group_id = association["Properties"]["FirewallRuleGroupId"]["Fn::GetAtt"][0]
    rules = raw["Resources"][group_id]["Properties"]["FirewallRules"]
    return association["Properties"], sorted(rules, key=lambda r: r["Priority"])


def domains(raw: dict[str, Any], rule: dict[str, Any]) -> list[Any]:
    list_id = rule["FirewallDomainListId"]["Fn::GetAtt"][0]
    return raw["Resources"][list_id]["Properties"]["Domains"]


def test_the_functions_names_are_allowed_and_others_are_not():
    allowed = allowed_domains(REGION)
    for name in LOOKED_UP:
        assert any(matches(name, d) for d in allowed), name
    for name in REFUSED:
        assert not any(matches(name, d) for d in allowed), name


def test_the_vpc_resolver_answers_the_regions_aws_names_and_blocks_the_rest(learning):
    raw = learning.raw
    association, (allow, block) = firewall(raw)
    (vpc_id,) = resources(raw, "AWS::EC2::VPC")
    assert association["VpcId"] == {"Ref": vpc_id}
    # a stack with deletion protection off must be able to remove it
    assert association["MutationProtection"] == "DISABLED"
    assert allow["Action"] == "ALLOW"
    # the allowed names' CNAME chains (RDS, S3) lead to other AWS names
    assert allow["FirewallDomainRedirectionAction"] == "TRUST_REDIRECTION_DOMAIN"
    # the region is the stack's, resolved by CloudFormation
    expected = [learning.stack.resolve(d) for d in allowed_domains(learning.stack.region)]
    assert domains(raw, allow) == expected
    assert {"Ref": "AWS::Region"} in expected[0]["Fn::Join"][1]
    assert block["Action"] == "BLOCK" and block["BlockResponse"] == "NODATA"
    assert domains(raw, block) == ["*"]
    assert allow["Priority"] < block["Priority"]


def test_it_is_on_by_default_and_can_be_turned_off():
    assert cdk_json_context()["dns_firewall"] is True
    stack = Stack(App(), "Bare")
    Network(stack, "Network", removal_policy=RemovalPolicy.DESTROY, dns_firewall=False)
    template = stack.node.root.synth().get_stack_by_name("Bare").template
    assert not [r for r in template["Resources"].values() if "Route53Resolver" in r["Type"]]


@pytest.mark.parametrize("setup", ["learning", "kept", "reserved"])
def test_every_setup_has_it(setup, request):
    raw = request.getfixturevalue(setup).raw
    assert len(resources(raw, "AWS::Route53Resolver::FirewallRuleGroupAssociation")) == 1
