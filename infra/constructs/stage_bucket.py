"""The stage bucket between extract and load, and the bucket of its access logs."""

from aws_cdk import CfnResource, Duration, RemovalPolicy, Stack, Token
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_s3_notifications as s3_notifications
from constructs import Construct

from dbt_project.facts.stage_layout import DATA_PREFIX, DOCS_PAGES, DOCS_PREFIX, MANIFEST_NAME
from infra.constructs.common import adopt_cdk_helper, allow_through_endpoint
from infra.nag import acknowledge, logical_id, skip_checkov

STAGE_EXPIRY = Duration.days(30)
ACCESS_LOG_EXPIRY = Duration.days(90)
# The lineage site is replaced each night and never expires; its replaced versions do.
DOCS_OLD_VERSION_EXPIRY = Duration.days(7)

# What the functions do with stage objects: the extract writes, the load reads (and
# publishes the lineage site and the run history, two pages outside the stage prefix).
WRITE_ACTIONS = ("s3:PutObject", "s3:AbortMultipartUpload")
READ_ACTIONS = ("s3:GetObject",)
# Kept from everyone but the one writer by the bucket policy (multipart uploads are
# s3:PutObject too; replication could write from another bucket).
EXCLUSIVE_WRITE_ACTIONS = (*WRITE_ACTIONS, "s3:ReplicateObject")
# Kept from everyone but the stack's own emptying on deletion: removing a staged file
# or one of its versions would sabotage or hide a night.
PROTECTED_DELETE_ACTIONS = ("s3:DeleteObject", "s3:DeleteObjectVersion", "s3:ReplicateDelete")
AUTO_DELETE_PROVIDER = "Custom::S3AutoDeleteObjectsCustomResourceProvider"


class StageBucket(Construct):
    """Private, TLS-only, S3-encrypted, versioned bucket whose staged files expire on
    their own.

    The extract writes ``etl-data/YYYY-MM-DD/`` files (``dbt_project.facts.stage_layout``) and the
    manifest last; only the manifest's creation triggers the load. Access to the bucket
    is granted per function and per prefix through the ``grant_*`` methods, which also
    acknowledge the prefix wildcard they put in the grantee's policy. The bucket policy
    lets only the one writer put staged objects and only the one publisher put the
    lineage site under ``docs/``, and no one delete staged objects but the stack's own
    emptying; versioning keeps an overwritten manifest recoverable for as long as
    the files themselves are kept.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        retain: bool,
        stage_expiry: Duration = STAGE_EXPIRY,
        access_log_expiry: Duration = ACCESS_LOG_EXPIRY,
    ) -> None:
        super().__init__(scope, construct_id)
        removal_policy = RemovalPolicy.RETAIN if retain else RemovalPolicy.DESTROY
        self._removal_policy = removal_policy
        common = {
            "encryption": s3.BucketEncryption.S3_MANAGED,
            "block_public_access": s3.BlockPublicAccess.BLOCK_ALL,
            "object_ownership": s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            "enforce_ssl": True,
            "minimum_tls_version": 1.2,
            "removal_policy": removal_policy,
            "auto_delete_objects": not retain,
        }
        # Server access logs accept S3-managed encryption only (not KMS).
        self.access_log_bucket = s3.Bucket(
            self,
            "AccessLogs",
            lifecycle_rules=[
                s3.LifecycleRule(id="expire-access-logs", expiration=access_log_expiry)
            ],
            **common,
        )
        self._skip_access_log_bucket_checks()
        self.bucket = s3.Bucket(
            self,
            "Bucket",
            server_access_logs_bucket=self.access_log_bucket,
            server_access_logs_prefix="stage-bucket/",
            versioned=True,
            lifecycle_rules=_lifecycle_rules(stage_expiry),
            **common,
        )
        self._writer_arn: str | None = None
        self._docs_publisher_arn: str | None = None
        self._deny_deletes()
        provider = Stack.of(self).node.try_find_child(AUTO_DELETE_PROVIDER)
        if provider is not None:
            adopt_cdk_helper(
                self,
                "EmptyingHandlerLogs",
                function=provider.node.find_child("Handler"),
                job="empties the buckets on stack deletion",
                removal_policy=removal_policy,
            )

    @property
    def _docs_pages(self) -> list[str]:
        """The published pages: the lineage site and the run history beside it."""
        return [self.bucket.arn_for_objects(key) for key in DOCS_PAGES]

    @property
    def _stage_objects(self) -> str:
        return self.bucket.arn_for_objects(f"{DATA_PREFIX}*")

    def _auto_delete_role_arn(self) -> str | None:
        """The role of CDK's bucket-emptying handler (learning setup only)."""
        provider = Stack.of(self).node.try_find_child(AUTO_DELETE_PROVIDER)
        if provider is None:
            return None
        role = provider.node.find_child("Role")
        if not isinstance(role, CfnResource):
            raise TypeError(f"{role.node.path} is not the provider's role resource")
        return Token.as_string(role.get_att("Arn"))

    def _deny_deletes(self) -> None:
        exempt = self._auto_delete_role_arn()
        self.bucket.add_to_resource_policy(
            iam.PolicyStatement(
                sid="StageFilesAreDeletedOnlyByExpiryOrStackDeletion",
                effect=iam.Effect.DENY,
                principals=[iam.AnyPrincipal()],
                actions=list(PROTECTED_DELETE_ACTIONS),
                resources=[self._stage_objects],
                conditions=(
                    {"ArnNotEquals": {"aws:PrincipalArn": exempt}} if exempt is not None else None
                ),
            )
        )

    def _skip_access_log_bucket_checks(self) -> None:
        skip_checkov(
            self.access_log_bucket,
            "CKV_AWS_18",
            "This is the access-log bucket itself; logging it into itself would log its own "
            "log deliveries without end.",
        )
        skip_checkov(
            self.access_log_bucket,
            "CKV_AWS_21",
            "Only S3's log delivery writes here, each log object once under a new key; "
            "nothing is overwritten, so versions would only double what expires after 90 days.",
        )

    def limit_endpoint(self, endpoint: ec2.GatewayVpcEndpoint) -> None:
        """Let the S3 gateway endpoint carry only the functions' stage traffic.

        Nothing in the VPC may reach another bucket (of this account or any other)
        through it, whatever an IAM policy allows.
        """
        allow_through_endpoint(
            endpoint,
            sid="StageObjectsOnly",
            actions=[*WRITE_ACTIONS, *READ_ACTIONS],
            resources=[self._stage_objects],
        )
        allow_through_endpoint(
            endpoint,
            sid="LineageSiteOnly",
            actions=list(WRITE_ACTIONS),
            resources=self._docs_pages,
        )
        allow_through_endpoint(
            endpoint,
            sid="StagePrefixListingOnly",
            actions=["s3:ListBucket"],
            resources=[self.bucket.bucket_arn],
            conditions={"StringLike": {"s3:prefix": [f"{DATA_PREFIX}*"]}},
        )

    def notify_on_manifest(self, function: lambda_.IFunction) -> None:
        """Invoke ``function`` when a run's manifest (written last) is created."""
        self.bucket.add_event_notification(
            s3.EventType.OBJECT_CREATED,
            s3_notifications.LambdaDestination(function),
            s3.NotificationKeyFilter(prefix=DATA_PREFIX, suffix=MANIFEST_NAME),
        )
        # The first notification makes CDK add its deployment-time handler, one per
        # stack, at the stack's root.
        for child in Stack.of(self).node.children:
            if child.node.id.startswith("BucketNotificationsHandler"):
                adopt_cdk_helper(
                    self,
                    "NotificationsHandlerLogs",
                    function=child.node.find_child("Resource"),
                    job="writes the stage bucket's notification configuration",
                    removal_policy=self._removal_policy,
                )
                acknowledge(
                    child,
                    "AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/"
                    "service-role/AWSLambdaBasicExecutionRole]",
                    "CDK's own handler that writes the stage bucket's notification "
                    "configuration during deployment; the managed policy only lets it write "
                    "its own logs; its one other permission, s3:PutBucketNotification, is "
                    "scoped to the stage bucket.",
                )

    def grant_write(self, grantee: iam.IGrantable) -> iam.Grant:
        """Make ``grantee`` the one writer of the stage prefix.

        Its role may put (and abort multipart uploads of) objects under the stage prefix
        only; narrower than ``Bucket.grant_put``, which adds object-lock, tagging and
        ``s3:Abort*`` actions the extract does not use. The bucket policy denies the same
        to every other principal, the account's administrators included, so that nothing
        can stage a manifest the extract did not write.
        """
        if self._writer_arn is not None:
            raise ValueError("the stage has one writer, granted already")
        self._writer_arn = _role_arn(grantee, "the stage writer")
        grant = iam.Grant.add_to_principal(
            grantee=grantee, actions=list(WRITE_ACTIONS), resource_arns=[self._stage_objects]
        )
        self._only_writer(
            "StageFilesAreWrittenOnlyByTheExtract", self._stage_objects, self._writer_arn
        )
        self._acknowledge_object_wildcard(grantee, "s3:PutObject and s3:AbortMultipartUpload")
        return grant

    def _only_writer(self, sid: str, objects: str, writer_arn: str) -> None:
        """Deny writing ``objects`` to every principal but the role ``writer_arn``."""
        self.bucket.add_to_resource_policy(
            iam.PolicyStatement(
                sid=sid,
                effect=iam.Effect.DENY,
                principals=[iam.AnyPrincipal()],
                actions=list(EXCLUSIVE_WRITE_ACTIONS),
                resources=[objects],
                conditions={"ArnNotEquals": {"aws:PrincipalArn": writer_arn}},
            )
        )

    def grant_read(self, grantee: iam.IGrantable) -> None:
        """Get objects under the stage prefix only.

        Listing is allowed for that prefix too, only so that a missing file reads as
        ``NoSuchKey`` (which the load reports as "re-run the extract") rather than
        ``AccessDenied``.
        """
        iam.Grant.add_to_principal(
            grantee=grantee, actions=list(READ_ACTIONS), resource_arns=[self._stage_objects]
        )
        self._acknowledge_object_wildcard(grantee, "s3:GetObject")
        grantee.grant_principal.add_to_principal_policy(
            iam.PolicyStatement(
                actions=["s3:ListBucket"],
                resources=[self.bucket.bucket_arn],
                conditions={"StringLike": {"s3:prefix": [f"{DATA_PREFIX}*"]}},
            )
        )

    def grant_publish_docs(self, grantee: iam.IGrantable) -> iam.Grant:
        """Make ``grantee`` the one publisher of the pages under ``docs/``: the lineage site
        (``index.html``) and the run history beside it (``DOCS_PAGES``).

        Its role may put (and abort a multipart upload of) exactly those objects; the
        bucket policy denies writing anything under ``docs/`` to every other principal,
        the account's administrators included, so that nobody can replace the site a
        reader trusts. The pages do not expire (only their replaced versions do).
        """
        if self._docs_publisher_arn is not None:
            raise ValueError("the lineage site has one publisher, granted already")
        self._docs_publisher_arn = _role_arn(grantee, "the lineage site's publisher")
        self._only_writer(
            "LineageSiteIsWrittenOnlyByTheLoad",
            self.bucket.arn_for_objects(f"{DOCS_PREFIX}*"),
            self._docs_publisher_arn,
        )
        return iam.Grant.add_to_principal(
            grantee=grantee,
            actions=list(WRITE_ACTIONS),
            resource_arns=self._docs_pages,
        )

    def _acknowledge_object_wildcard(self, grantee: iam.IGrantable, actions: str) -> None:
        """Accept the ``<bucket>/etl-data/*`` resource a stage grant puts in the role's policy."""
        principal = grantee.grant_principal
        if not isinstance(principal, Construct):
            return  # no policy of this stack to flag
        objects = f"<{logical_id(self.bucket.node.default_child)}.Arn>/{DATA_PREFIX}*"
        acknowledge(
            principal,
            f"AwsSolutions-IAM5[Resource::{objects}]",
            f"Object keys carry the business date ({DATA_PREFIX}YYYY-MM-DD/...), unknown at "
            "deploy time. The wildcard covers only the stage prefix of this one bucket, "
            f"and only {actions}.",
        )


def _role_arn(grantee: iam.IGrantable, what: str) -> str:
    arn = getattr(grantee.grant_principal, "role_arn", None)
    if arn is None:
        raise TypeError(f"{what} must be a role: the bucket policy names it")
    return arn


def _lifecycle_rules(stage_expiry: Duration) -> list[s3.LifecycleRule]:
    """Staged files expire, then their old versions and delete markers; the lineage site
    under ``docs/`` stays, only its replaced versions go; incomplete uploads are aborted."""
    return [
        s3.LifecycleRule(
            id="expire-stage-files",
            prefix=DATA_PREFIX,
            expiration=stage_expiry,
            noncurrent_version_expiration=stage_expiry,
        ),
        # Separate rule: S3 refuses it beside an expiration in days.
        s3.LifecycleRule(
            id="remove-expired-delete-markers",
            prefix=DATA_PREFIX,
            expired_object_delete_marker=True,
        ),
        s3.LifecycleRule(
            id="expire-replaced-docs",
            prefix=DOCS_PREFIX,
            noncurrent_version_expiration=DOCS_OLD_VERSION_EXPIRY,
        ),
        s3.LifecycleRule(
            id="abort-incomplete-uploads",
            abort_incomplete_multipart_upload_after=Duration.days(1),
        ),
    ]
