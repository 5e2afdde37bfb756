"""Entry point of the CDK app (cdk.json: ``python -m infra.app``).

The only module that reads the environment or the CDK context:

* ``retain`` (default false): keep databases (snapshot) and buckets when the stack is
  deleted, and turn deletion protection on.
* ``layers_dir`` (default ``build/layers``): where ``python scripts/build_layers.py``
  put the layers.
* ``lambdas_dir`` (default ``lambdas``): the functions' code folders.
* ``target_max_capacity`` (default 2): Aurora Serverless v2 maximum ACU.
* ``alarm_email`` (optional): subscribe this address to the alarm topic.
* ``reserved_concurrency`` (default false): reserve 1 concurrent execution for the
  extract and the load (a new account's quota of 10 leaves none to reserve).
* ``endpoints_in_every_az`` (default false): interface endpoints in both AZs rather
  than one (they are billed per AZ-hour; a nightly batch can wait out an AZ outage).
* ``reprocess_changed_models`` (default true): a deployment that changes a mart's
  logic starts the reprocessing of its loaded history; false only logs what is needed.
* ``dns_firewall`` (default true): a Route 53 Resolver DNS Firewall on the VPC that
  answers only the region's AWS names.
* ``break_glass_role_arn`` (optional): an IAM role that may read the databases' master
  secrets besides the initializer.
* ``stack_name`` (default ``ShopEtl``).
* ``env`` (default ``prod``): ``dev``, ``staging`` or ``prod``; every environment but prod
  adds ``-<env>`` to the stack's name and to every name derived from it.
* ``nightly_schedule`` (default true in prod, false in dev and staging): whether the
  schedule invokes the extract every night.
* ``slack_workspace_id`` and ``slack_channel_id`` (both or neither): post the alarms and
  the failed nights to that Slack channel through AWS Chatbot.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from aws_cdk import App, Environment

from dbt_project.facts import business_calendar
from infra.constructs.slack_alerts import SlackChannel
from infra.environments import DEFAULT_ENVIRONMENT, DEFAULT_STACK_NAME, EtlEnvironment
from infra.packaging.layers import DEFAULT_OUT, REPO_ROOT, LayersNotBuilt, require_built
from infra.stack import EtlSettings, EtlStack

__all__ = ["DEFAULT_STACK_NAME", "build_app", "main"]

ROLE_ARN = re.compile(r"arn:aws[a-z-]*:iam::\d{12}:role/[\w+=,.@/-]+")
# The Slack keys, as AWS Chatbot's console shows them: upper-case letters and digits.
SLACK_ID = re.compile(r"[0-9A-Z]{1,255}")
SLACK_KEYS = ("slack_workspace_id", "slack_channel_id")


def _flag(value: Any) -> bool:
    """Context from ``-c retain=true`` arrives as a string, from cdk.json as a bool."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in {"true", "1", "yes"}:
        return True
    if text in {"false", "0", "no", ""}:
        return False
    raise ValueError(f"expected true or false, got {value!r}")


def _default(value: Any, default: Any) -> Any:
    """The context's value, or ``default`` when it is not given at all."""
    return default if value is None else value


def _role_arn(value: Any) -> str | None:
    """An IAM role's ARN, or None; anything else is refused before it reaches a policy."""
    if not value:
        return None
    text = str(value).strip()
    if not ROLE_ARN.fullmatch(text):
        raise ValueError(
            "break_glass_role_arn: expected an IAM role ARN "
            f"(arn:aws:iam::<account>:role/<name>), got {text!r}"
        )
    return text


def _slack_channel(workspace_id: Any, channel_id: Any) -> SlackChannel | None:
    """The Slack channel the alerts go to, or None; one id without the other is refused."""
    given = dict(zip(SLACK_KEYS, (workspace_id, channel_id), strict=True))
    missing = [key for key, value in given.items() if not value]
    if len(missing) == len(SLACK_KEYS):
        return None
    if missing:
        (key,) = missing
        raise ValueError(
            f"{key} is missing: Slack alerts need both ids, "
            "-c slack_workspace_id=<workspace id> -c slack_channel_id=<channel id> "
            "(AWS Chatbot's console shows them once the workspace is authorized)"
        )
    for key, value in given.items():
        if not SLACK_ID.fullmatch(str(value).strip()):
            raise ValueError(f"{key}: expected upper-case letters and digits, got {value!r}")
    return SlackChannel(workspace_id=str(workspace_id).strip(), channel_id=str(channel_id).strip())


def _path(value: Any, default: Path) -> Path:
    return Path(value).resolve() if value else default


def build_app(context: Mapping[str, Any] | None = None, *, outdir: str | None = None) -> App:
    """The app with its stack (which runs the cdk-nag AwsSolutions checks over itself).

    Raises ``LayersNotBuilt`` when the layers are missing or stale.
    """
    app = App(context=dict(context or {}), outdir=outdir)
    get = app.node.try_get_context
    environment = EtlEnvironment(
        name=str(get("env") or DEFAULT_ENVIRONMENT).strip(),
        base_stack_name=get("stack_name") or DEFAULT_STACK_NAME,
    )
    slack = _slack_channel(get("slack_workspace_id"), get("slack_channel_id"))
    settings = EtlSettings(
        retain=_flag(get("retain") or False),
        layers=require_built(_path(get("layers_dir"), DEFAULT_OUT)),
        code_root=_path(get("lambdas_dir"), REPO_ROOT / "lambdas"),
        deploy_stamp=business_calendar.utc_now().strftime("%Y-%m-%dT%H:%M:%SZ"),
        target_max_capacity=float(get("target_max_capacity") or 2),
        alarm_email=get("alarm_email") or None,
        reserved_concurrency=_flag(get("reserved_concurrency") or False),
        endpoints_in_every_az=_flag(get("endpoints_in_every_az") or False),
        reprocess_changed_models=_flag(_default(get("reprocess_changed_models"), True)),
        break_glass_role_arn=_role_arn(get("break_glass_role_arn")),
        dns_firewall=_flag(_default(get("dns_firewall"), True)),
        metrics_namespace=environment.metrics_namespace,
        nightly_schedule=_flag(_default(get("nightly_schedule"), environment.runs_nightly)),
        slack=slack,
    )
    EtlStack(
        app,
        environment.stack_name,
        settings=settings,
        description="Nightly dbt ETL: RDS PostgreSQL -> S3 stage -> Aurora Serverless v2",
        env=Environment(
            account=os.environ.get("CDK_DEFAULT_ACCOUNT"),
            region=os.environ.get("CDK_DEFAULT_REGION"),
        ),
    )
    return app


def main() -> int:
    try:
        app = build_app()
    except (LayersNotBuilt, FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    app.synth()
    return 0


if __name__ == "__main__":
    sys.exit(main())
