"""What a function may be granted on a database: its own login, or the master secret.

Secrets are read through the Secrets Manager interface endpoint, whose policy carries
reads of exactly the secrets granted here; a master secret's own policy refuses its
value to everyone but the one function granted the master login (and a break-glass
role, if the deployment names one).
"""

import re
from collections.abc import Callable

from aws_cdk import Stack
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_secretsmanager as secretsmanager
from constructs import Construct

from infra.constructs.common import allow_through_endpoint

# What the functions do with a secret through the endpoint (Powertools reads the value).
SECRET_READ_ACTIONS = ["secretsmanager:GetSecretValue", "secretsmanager:DescribeSecret"]


class DatabaseEndpoint:
    """One database as the functions see it: address, database name, master secret,
    network; and what a function may be granted on it.

    ``grant_login`` lets a function log in as its own login with an IAM token;
    ``grant_master_login`` lets one function, and only it, read the master secret.
    """

    def __init__(
        self,
        scope: Construct,
        label: str,
        *,
        host: str,
        port: int,
        name: str,
        secret: secretsmanager.ISecret,
        connections: ec2.Connections,
        grant_connect: Callable[[iam.IGrantable, str], iam.Grant],
        break_glass_role_arn: str | None,
    ) -> None:
        self.host = host
        self.port = port
        self.name = name
        self.secret = secret
        self.connections = connections
        self._scope = scope
        self._label = label
        # dbuser:<resource id>/<login>: the instance's or the cluster's own grant
        self._grant_connect = grant_connect
        self._break_glass_role_arn = break_glass_role_arn
        self._master_reader: lambda_.IFunction | None = None

    def grant_login(self, function: lambda_.IFunction, login: str) -> iam.Grant:
        """Let ``function`` reach the database and log in as ``login`` with an IAM token.

        ``rds-db:connect`` on exactly that database user; no secret to read.
        """
        self.allow_from(function)
        return self._grant_connect(function, login)

    def grant_master_login(
        self, function: lambda_.IFunction, secrets_endpoint: ec2.InterfaceVpcEndpoint
    ) -> None:
        """Let ``function`` reach the database and read its master secret through
        ``secrets_endpoint``; the secret's policy refuses its value to everyone else.

        Only the initializer, which creates the other logins, is given this. With the
        Data API on, whoever reads a master secret gets SQL as the master user from
        anywhere: IAM alone would let any administrator of the account do so.
        """
        if self._master_reader is not None:
            raise ValueError(f"the {self._label} master secret has one reader, granted already")
        self._master_reader = function
        self.allow_from(function)
        grant_secret_read(
            self.secret, function, secrets_endpoint, sid=f"{self._label}MasterSecretOnly"
        )
        self._refuse_master_secret_to_others(function)

    def allow_from(self, function: lambda_.IFunction) -> None:
        """PostgreSQL from ``function``'s security group, to this database's only."""
        self.connections.allow_from(
            function, ec2.Port.tcp(self.port), f"PostgreSQL from the {_label(function)} function"
        )

    def _refuse_master_secret_to_others(self, reader: lambda_.IFunction) -> None:
        if reader.role is None:
            raise TypeError("the master secret's reader must have a role: its policy names it")
        stack = Stack.of(self._scope)
        allowed = [reader.role.role_arn]
        if self._break_glass_role_arn:
            allowed.append(self._break_glass_role_arn)
        # RDS rotates the secret with its service-linked role; it must keep its access.
        allowed.append(
            f"arn:{stack.partition}:iam::{stack.account}:role/aws-service-role/"
            "rds.amazonaws.com/AWSServiceRoleForRDS"
        )
        policy = secretsmanager.ResourcePolicy(
            self._scope, f"{self._label}MasterSecretPolicy", secret=self.secret
        )
        policy.document.add_statements(
            iam.PolicyStatement(
                sid="MasterPasswordOnlyForTheInitializer",
                effect=iam.Effect.DENY,
                principals=[iam.AnyPrincipal()],
                actions=["secretsmanager:GetSecretValue"],
                resources=["*"],  # in a secret's policy, "*" is this secret
                conditions={
                    "ArnNotEquals": {"aws:PrincipalArn": allowed},
                    # A service acting as itself (not as a caller's role) is not a reader.
                    "Bool": {"aws:PrincipalIsAWSService": "false"},
                },
            )
        )


def grant_secret_read(
    secret: secretsmanager.ISecret,
    function: lambda_.IFunction,
    secrets_endpoint: ec2.InterfaceVpcEndpoint,
    *,
    sid: str,
) -> iam.Grant:
    """Read ``secret`` from inside the VPC: IAM, HTTPS to the Secrets Manager endpoint, and
    the endpoint's policy statement ``sid`` that carries reads of this secret by this
    account's principals."""
    function.connections.allow_to(secrets_endpoint, ec2.Port.tcp(443), "Secrets Manager endpoint")
    allow_through_endpoint(
        secrets_endpoint,
        sid=sid,
        actions=SECRET_READ_ACTIONS,
        resources=[secret.secret_arn],
        conditions={"StringEquals": {"aws:PrincipalAccount": Stack.of(function).account}},
    )
    return secret.grant_read(function)


def _label(function: lambda_.IFunction) -> str:
    """``DbInitializer`` -> ``db_initializer``: the function as its spec names it."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", function.node.id).lower()
