"""The stage bucket between extract and load, and the bucket of its access logs."""

from aws_cdk import Duration, RemovalPolicy, Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_s3_notifications as s3_notifications
from constructs import Construct

from dbt_project.layout import DATA_PREFIX, MANIFEST_NAME
from infra.nag import acknowledge, logical_id

STAGE_EXPIRY = Duration.days(30)
ACCESS_LOG_EXPIRY = Duration.days(90)


class StageBucket(Construct):
    """Private, TLS-only, S3-encrypted bucket whose staged files expire on their own.

    The extract writes ``etl-data/YYYY-MM-DD/`` files (``dbt_project.layout``) and the
    manifest last; only the manifest's creation triggers the load. Access to the bucket
    is granted per function and per prefix through the ``grant_*`` methods, which also
    acknowledge the prefix wildcard they put in the grantee's policy.
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
        self.bucket = s3.Bucket(
            self,
            "Bucket",
            server_access_logs_bucket=self.access_log_bucket,
            server_access_logs_prefix="stage-bucket/",
            lifecycle_rules=[
                s3.LifecycleRule(
                    id="expire-stage-files", prefix=DATA_PREFIX, expiration=stage_expiry
                ),
                s3.LifecycleRule(
                    id="abort-incomplete-uploads",
                    abort_incomplete_multipart_upload_after=Duration.days(1),
                ),
            ],
            **common,
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
                acknowledge(
                    child,
                    "AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/"
                    "service-role/AWSLambdaBasicExecutionRole]",
                    "CDK's own handler that writes the stage bucket's notification "
                    "configuration during deployment; the managed policy only lets it write "
                    "its own logs; its one other permission, s3:PutBucketNotification, is "
                    "scoped to the stage bucket.",
                )

    def grant_write_stage(self, grantee: iam.IGrantable) -> iam.Grant:
        """Put (and abort multipart uploads of) objects under the stage prefix only.

        Narrower than ``Bucket.grant_put``, which adds object-lock, tagging and
        ``s3:Abort*`` actions the extract does not use.
        """
        grant = iam.Grant.add_to_principal(
            grantee=grantee,
            actions=["s3:PutObject", "s3:AbortMultipartUpload"],
            resource_arns=[self.bucket.arn_for_objects(f"{DATA_PREFIX}*")],
        )
        self._acknowledge_object_wildcard(grantee, "s3:PutObject and s3:AbortMultipartUpload")
        return grant

    def grant_read_stage(self, grantee: iam.IGrantable) -> None:
        """Get objects under the stage prefix only.

        Listing is allowed for that prefix too, only so that a missing file reads as
        ``NoSuchKey`` (which the load reports as "re-run the extract") rather than
        ``AccessDenied``.
        """
        iam.Grant.add_to_principal(
            grantee=grantee,
            actions=["s3:GetObject"],
            resource_arns=[self.bucket.arn_for_objects(f"{DATA_PREFIX}*")],
        )
        self._acknowledge_object_wildcard(grantee, "s3:GetObject")
        grantee.grant_principal.add_to_principal_policy(
            iam.PolicyStatement(
                actions=["s3:ListBucket"],
                resources=[self.bucket.bucket_arn],
                conditions={"StringLike": {"s3:prefix": [f"{DATA_PREFIX}*"]}},
            )
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
