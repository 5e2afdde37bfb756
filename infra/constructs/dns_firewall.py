"""DNS as a way out of the VPC, closed: a Route 53 Resolver DNS Firewall on the VPC.

The isolated subnets reach no address outside AWS, but the VPC's resolver answers any
public name, recursively: a function (or a dependency it runs) that encodes data in a
name it looks up hands that data to whoever serves the name's zone. The firewall lets
the resolver answer only the AWS names the functions use, in the stack's region (and
the VPC's own private names), and answers everything else with no data.
"""

from aws_cdk import Stack
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_route53resolver as route53resolver
from constructs import Construct

# Rule priorities inside the group: the allow list first, then the catch-all block.
ALLOW_PRIORITY = 100
BLOCK_PRIORITY = 200
# Among the rule groups associated with the VPC (100 to 9900); this is the only one.
ASSOCIATION_PRIORITY = 101


def allowed_domains(region: str) -> list[str]:
    """The names the functions look up, by their zones in ``region``.

    Service endpoints (Secrets Manager, SNS, Lambda, S3, with private DNS), the
    databases' endpoints, the VPC endpoints' own names, the VPC's private names, and
    S3's global names, which an SDK may use in us-east-1. A ``*.`` entry matches the
    names below a zone, not the zone itself. Every zone here is AWS's: a lookup in it
    reaches AWS's name servers, no one else's.
    """
    return [
        f"*.{region}.amazonaws.com",
        f"*.{region}.rds.amazonaws.com",
        f"*.{region}.vpce.amazonaws.com",
        "s3.amazonaws.com",
        "*.s3.amazonaws.com",
        f"*.{region}.compute.internal",
        "*.ec2.internal",
    ]


class DnsFirewall(Construct):
    """A rule group that answers the region's AWS names and blocks every other name,
    associated with ``vpc``.

    The allowed names' answers are trusted with their CNAME chains (an RDS endpoint or
    an S3 bucket name points to other AWS names); a blocked name gets NODATA, so a
    lookup fails at once instead of waiting for a timeout.
    """

    def __init__(self, scope: Construct, construct_id: str, *, vpc: ec2.IVpc) -> None:
        super().__init__(scope, construct_id)
        stack = Stack.of(self)
        allowed = route53resolver.CfnFirewallDomainList(
            self,
            "AllowedDomains",
            name=f"{stack.stack_name}-aws-names",
            domains=allowed_domains(stack.region),
        )
        everything = route53resolver.CfnFirewallDomainList(
            self, "AllDomains", name=f"{stack.stack_name}-all-names", domains=["*"]
        )
        self.rule_group = route53resolver.CfnFirewallRuleGroup(
            self,
            "RuleGroup",
            name=f"{stack.stack_name}-dns-egress",
            firewall_rules=[
                route53resolver.CfnFirewallRuleGroup.FirewallRuleProperty(
                    action="ALLOW",
                    priority=ALLOW_PRIORITY,
                    firewall_domain_list_id=allowed.attr_id,
                    firewall_domain_redirection_action="TRUST_REDIRECTION_DOMAIN",
                ),
                route53resolver.CfnFirewallRuleGroup.FirewallRuleProperty(
                    action="BLOCK",
                    priority=BLOCK_PRIORITY,
                    firewall_domain_list_id=everything.attr_id,
                    block_response="NODATA",
                ),
            ],
        )
        self.association = route53resolver.CfnFirewallRuleGroupAssociation(
            self,
            "Association",
            name=f"{stack.stack_name}-dns-egress",
            firewall_rule_group_id=self.rule_group.attr_id,
            vpc_id=vpc.vpc_id,
            priority=ASSOCIATION_PRIORITY,
            # Off, so that the stack can be updated and deleted like any other.
            mutation_protection="DISABLED",
        )
