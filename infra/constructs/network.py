"""The private network: isolated subnets, endpoints instead of a NAT gateway, flow logs."""

from aws_cdk import RemovalPolicy, Stack
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_logs as logs
from aws_cdk import custom_resources as cr
from constructs import Construct

from infra.constructs.common import adopt_cdk_helper
from infra.constructs.dns_firewall import DnsFirewall
from infra.nag import acknowledge, skip_checkov, skip_helper_function_checks

# CDK's fixed id of the one function behind every AwsCustomResource of a stack.
AWS_CUSTOM_RESOURCE_HANDLER = "AWS679f53fac002430cb0da5b7982bd2287"
# CDK's provider of the handler that restricts the VPC's default security group.
DEFAULT_SG_PROVIDER = "Custom::VpcRestrictDefaultSGCustomResourceProvider"


class Network(Construct):
    """A VPC over two availability zones whose subnets have no route to the internet.

    The functions reach S3 through a gateway endpoint (free), Secrets Manager, SNS and
    Step Functions through interface endpoints; nothing else leaves the VPC, so there is
    no NAT gateway to pay for or to secure, and with ``dns_firewall`` the VPC's resolver
    answers only the region's AWS names. Flow logs record every accepted and rejected flow.
    ``s3`` is the S3 prefix list, the one destination a security group may name for the
    gateway endpoint; the stage bucket limits the endpoint's policy to itself.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        removal_policy: RemovalPolicy,
        flow_log_retention: logs.RetentionDays = logs.RetentionDays.ONE_MONTH,
        endpoints_in_every_az: bool = False,
        dns_firewall: bool = True,
    ) -> None:
        super().__init__(scope, construct_id)
        self._endpoints_in_every_az = endpoints_in_every_az
        self.subnets = ec2.SubnetSelection(subnet_type=ec2.SubnetType.PRIVATE_ISOLATED)
        self.vpc = ec2.Vpc(
            self,
            "Vpc",
            max_azs=2,
            nat_gateways=0,
            subnet_configuration=[
                ec2.SubnetConfiguration(
                    name="isolated", subnet_type=ec2.SubnetType.PRIVATE_ISOLATED, cidr_mask=24
                )
            ],
            restrict_default_security_group=True,
        )
        self._accept_default_sg_handler(removal_policy)
        self.s3_endpoint = self.vpc.add_gateway_endpoint(
            "S3Endpoint", service=ec2.GatewayVpcEndpointAwsService.S3, subnets=[self.subnets]
        )
        self.s3 = ec2.Peer.prefix_list(self._s3_prefix_list_id(removal_policy))
        self.secrets_manager_endpoint = self._interface_endpoint(
            "SecretsManager",
            ec2.InterfaceVpcEndpointAwsService.SECRETS_MANAGER,
            "Secrets Manager endpoint: HTTPS from the functions only",
        )
        # The load function publishes each night's report to an SNS topic.
        self.sns_endpoint = self._interface_endpoint(
            "Sns", ec2.InterfaceVpcEndpointAwsService.SNS, "SNS endpoint: HTTPS from the load only"
        )
        # The initializer starts the history load (an execution of the reprocess state
        # machine).
        self.states_endpoint = self._interface_endpoint(
            "StepFunctions",
            ec2.InterfaceVpcEndpointAwsService.STEP_FUNCTIONS,
            "Step Functions endpoint: HTTPS from the db_initializer only",
        )
        # The resolver answers only the region's AWS names (dns_firewall.py).
        self.dns_firewall = DnsFirewall(self, "DnsFirewall", vpc=self.vpc) if dns_firewall else None
        self._flow_logs(removal_policy, flow_log_retention)

    def _flow_logs(self, removal_policy: RemovalPolicy, retention: logs.RetentionDays) -> None:
        flow_logs = logs.LogGroup(
            self, "FlowLogs", retention=retention, removal_policy=removal_policy
        )
        skip_checkov(
            flow_logs,
            "CKV_AWS_158",
            "CloudWatch Logs encrypts every log group at rest; flow records hold addresses "
            "and ports only. A customer-managed key would add cost and a key policy to "
            "maintain without protecting anything these records carry.",
        )
        self.vpc.add_flow_log(
            "FlowLog",
            destination=ec2.FlowLogDestination.to_cloud_watch_logs(flow_logs),
            traffic_type=ec2.FlowLogTrafficType.ALL,
        )

    def _interface_endpoint(
        self, name: str, service: ec2.InterfaceVpcEndpointAwsService, description: str
    ) -> ec2.InterfaceVpcEndpoint:
        # open=False: no ingress from the whole VPC; 443 is opened to the security group
        # of each function that needs the service. An endpoint never starts connections.
        security_group = ec2.SecurityGroup(
            self,
            f"{name}EndpointSecurityGroup",
            vpc=self.vpc,
            description=description,
            allow_all_outbound=False,
        )
        # Billed per AZ-hour: one AZ unless told otherwise.
        subnets = self.subnets
        if not self._endpoints_in_every_az:
            subnets = ec2.SubnetSelection(subnets=self.vpc.isolated_subnets[:1])
        return self.vpc.add_interface_endpoint(
            f"{name}Endpoint",
            service=service,
            subnets=subnets,
            private_dns_enabled=True,
            open=False,
            security_groups=[security_group],
        )

    def _s3_prefix_list_id(self, removal_policy: RemovalPolicy) -> str:
        """The id of the region's S3 prefix list, looked up at deployment.

        CloudFormation cannot name an AWS-managed prefix list, and a synth-time lookup
        would tie the template to one account's context.
        """
        region = Stack.of(self).region
        # Its own log group, so that its logs follow the stack's retention and deletion.
        log_group = logs.LogGroup(
            self,
            "S3PrefixListLogs",
            retention=logs.RetentionDays.ONE_MONTH,
            removal_policy=removal_policy,
        )
        skip_checkov(
            log_group,
            "CKV_AWS_158",
            "CloudWatch Logs encrypts every log group at rest; this one holds a deployment-"
            "time lookup of a public prefix-list id. A customer-managed key adds nothing.",
        )
        lookup = cr.AwsCustomResource(
            self,
            "S3PrefixList",
            on_update=cr.AwsSdkCall(
                service="EC2",
                action="describeManagedPrefixLists",
                parameters={
                    "Filters": [
                        {"Name": "prefix-list-name", "Values": [f"com.amazonaws.{region}.s3"]}
                    ]
                },
                physical_resource_id=cr.PhysicalResourceId.of("s3-prefix-list"),
                output_paths=["PrefixLists.0.PrefixListId"],
            ),
            policy=cr.AwsCustomResourcePolicy.from_sdk_calls(
                resources=cr.AwsCustomResourcePolicy.ANY_RESOURCE
            ),
            install_latest_aws_sdk=False,
            log_group=log_group,
        )
        acknowledge(
            lookup,
            "AwsSolutions-IAM5[Resource::*]",
            "Its one action, ec2:DescribeManagedPrefixLists, is a read that supports no "
            "resource-level permissions; the role belongs to CDK's deployment-time handler "
            "that looks up the S3 prefix list for the functions' security groups.",
        )
        # The handler is one function per stack, at the stack's root.
        handler = Stack.of(self).node.find_child(AWS_CUSTOM_RESOURCE_HANDLER)
        acknowledge(
            handler,
            "AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/"
            "service-role/AWSLambdaBasicExecutionRole]",
            "CDK's own handler of the S3 prefix-list lookup, run during deployment only; the "
            "managed policy only lets it write its own logs, and its one other permission "
            "is ec2:DescribeManagedPrefixLists.",
        )
        skip_helper_function_checks(handler, "it looks up the S3 prefix list")
        return lookup.get_response_field("PrefixLists.0.PrefixListId")

    def _accept_default_sg_handler(self, removal_policy: RemovalPolicy) -> None:
        """CDK's handler that empties the VPC's default security group: checkov's Lambda
        checks, and a log group with the stack's retention."""
        provider = Stack.of(self).node.try_find_child(DEFAULT_SG_PROVIDER)
        if provider is None:
            return
        adopt_cdk_helper(
            self,
            "DefaultSecurityGroupHandlerLogs",
            function=provider.node.find_child("Handler"),
            job="removes the rules of the VPC's default security group",
            removal_policy=removal_policy,
        )
