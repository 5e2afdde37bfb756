"""Lambda events parsed into typed requests, before any database work.

Everything a handler accepts is listed here; anything else is refused with a
message that shows the accepted shapes.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from urllib.parse import unquote_plus

from dbt_project.errors import ConfigError
from dbt_project.facts import business_calendar
from dbt_project.facts.business_calendar import (
    BUSINESS_TIMEZONE,
    DEFAULT_LOOKBACK_DAYS,
    business_date,
    previous_business_day,
)
from dbt_project.facts.names import DEPLOY_STAMP_PROPERTY, REPROCESS_PROPERTY
from dbt_project.facts.stage_layout import DATA_PREFIX, MANIFEST_NAME
from dbt_project.plan import Chunk
from dbt_project.request import (
    DEFAULT_BUDGET_MINUTES,
    BackfillRequest,
    NightRequest,
    Trigger,
    check_run_date,
    parse_date,
)

EXTRACT_SHAPES = (
    "{} (the previous business day, as the schedule runs it), "
    'a schedule ({"scheduled_time": "<ISO time>"} or an EventBridge "Scheduled Event"), '
    'or {"run_date": "YYYY-MM-DD"}, which may add "lookback_days" and "skip_freshness": true '
    "(the reprocess state machine sends its own plan and chunk events)"
)
# What the reprocess state machine is started with (its execution input).
REPROCESS_SHAPES = (
    '{"start": "YYYY-MM-DD", "end": "YYYY-MM-DD"} (a backfill) or {"full_refresh": true} '
    '(the whole history, rebuilt; "end" is optional), either with an optional '
    f'"budget_minutes" (default {DEFAULT_BUDGET_MINUTES:g}) a chunk must fit'
)
_STATE_MACHINE = (
    "aws stepfunctions start-execution --state-machine-arn <ReprocessStateMachineArn> --input "
)
_OPTIONS = {"lookback_days", "skip_freshness"}
# What the extract function is asked to run: one night (a chunk is one), or a plan.
ExtractRequest = NightRequest | BackfillRequest


def _flag(event: dict, name: str) -> bool:
    value = event.get(name, False)
    if not isinstance(value, bool):
        raise ConfigError(f"{name} must be true or false, not {value!r}")
    return value


def _timestamp(value) -> datetime:
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError as exc:
        raise ConfigError(f"the schedule time {value!r} is not an ISO timestamp") from exc


def _scheduled(event: dict, moment, now: datetime | None) -> NightRequest:
    day = previous_business_day(_timestamp(moment))
    return NightRequest.of(
        day, trigger=Trigger.SCHEDULE, skip_freshness=_flag(event, "skip_freshness"), now=now
    )


def parse_reprocess_input(event, *, now: datetime | None = None) -> BackfillRequest:
    """The reprocess state machine's input: a range, or the whole history."""
    if not isinstance(event, dict):
        raise ConfigError(f"the execution input must be a JSON object: {REPROCESS_SHAPES}")
    keys = set(event)
    budget = event.get("budget_minutes", DEFAULT_BUDGET_MINUTES)
    if keys <= {"full_refresh", "end", "budget_minutes"} and _flag(event, "full_refresh"):
        return BackfillRequest.refresh(event.get("end"), budget_minutes=budget, now=now)
    if keys <= {"start", "end", "budget_minutes"} and {"start", "end"} <= keys:
        return BackfillRequest.of(event["start"], event["end"], budget_minutes=budget, now=now)
    raise ConfigError(
        f"unrecognised execution input with keys {sorted(keys)}; send {REPROCESS_SHAPES}"
    )


def _moved_to_the_state_machine(event: dict) -> ConfigError:
    example = (
        "'{\"full_refresh\": true}'"
        if "full_refresh" in event
        else '\'{"start": "YYYY-MM-DD", "end": "YYYY-MM-DD"}\''
    )
    return ConfigError(
        "a range or a full refresh runs in chunks on the reprocess state machine, not in "
        f"one invocation of this function: {_STATE_MACHINE}{example}"
    )


def _chunk(event: dict, now: datetime | None) -> NightRequest:
    if set(event) != {"chunk"}:
        raise ConfigError('a chunk event is {"chunk": {...}}, as the state machine sends it')
    night = Chunk.from_event(event["chunk"]).night()
    check_run_date(night.run_date, now=now)
    return night


def parse_extract_event(event, *, now: datetime | None = None) -> ExtractRequest:
    """``now`` (the clock by default) bounds every day: none after the previous business day."""
    if not isinstance(event, dict):
        raise ConfigError(f"the extract event must be a JSON object: {EXTRACT_SHAPES}")
    keys = set(event)
    if "scheduled_time" in event and keys <= {"scheduled_time", "skip_freshness"}:
        return _scheduled(event, event["scheduled_time"], now)
    if event.get("detail-type") == "Scheduled Event" and "time" in event:
        return _scheduled(event, event["time"], now)
    if "plan" in keys:
        if keys != {"plan"}:
            raise ConfigError('a plan event is {"plan": <the execution input>}')
        return parse_reprocess_input(event["plan"], now=now)
    if "chunk" in keys:
        return _chunk(event, now)
    if keys & {"start_date", "end_date", "full_refresh"}:
        raise _moved_to_the_state_machine(event)
    skip = _flag(event, "skip_freshness") if "skip_freshness" in event else False
    if keys <= {"skip_freshness"}:
        # `aws lambda invoke` with no payload: the night a schedule would run now.
        return NightRequest.of(skip_freshness=skip, now=now)
    lookback = event.get("lookback_days", DEFAULT_LOOKBACK_DAYS)
    if keys <= {"run_date"} | _OPTIONS and "run_date" in keys:
        return NightRequest.of(
            event["run_date"], lookback_days=lookback, skip_freshness=skip, now=now
        )
    raise ConfigError(f"unrecognised extract event with keys {sorted(keys)}; send {EXTRACT_SHAPES}")


@dataclass(frozen=True)
class LoadRequest:
    manifest_keys: tuple[str, ...]
    ignored: tuple[str, ...] = ()


@dataclass(frozen=True)
class ReportRequest:
    """The reprocess state machine's last step: what its run came to, to report."""

    plan: dict
    rows: int
    execution: dict


def _report(event: dict) -> ReportRequest:
    body = event["report"]
    if (
        set(event) != {"report"}
        or not isinstance(body, dict)
        or set(body)
        != {
            "plan",
            "rows",
            "execution",
        }
    ):
        raise ConfigError(
            'a report event is {"report": {"plan": ..., "rows": ..., "execution": ...}}, '
            "as the reprocess state machine sends it"
        )
    return ReportRequest(body["plan"], body["rows"], body["execution"])


def parse_load_event(event, bucket: str) -> LoadRequest | ReportRequest:
    if not isinstance(event, dict):
        raise ConfigError('the load event must be an S3 event or {"manifest_key": "..."}')
    if "report" in event:
        return _report(event)
    if "manifest_key" in event:
        key = str(event["manifest_key"])
        if not (key.startswith(DATA_PREFIX) and key.endswith("/" + MANIFEST_NAME)):
            raise ConfigError(
                f"manifest_key {key!r} must look like {DATA_PREFIX}YYYY-MM-DD/{MANIFEST_NAME}"
            )
        return LoadRequest((key,))
    records = event.get("Records")
    if not isinstance(records, list) or not records:
        raise ConfigError(
            'unrecognised load event: send an S3 ObjectCreated event or {"manifest_key": '
            f'"{DATA_PREFIX}YYYY-MM-DD/{MANIFEST_NAME}"}}'
        )
    keys, ignored = [], []
    for record in records:
        s3 = record.get("s3", {}) if isinstance(record, dict) else {}
        record_bucket = s3.get("bucket", {}).get("name")
        raw_key = s3.get("object", {}).get("key")
        if record.get("eventSource") != "aws:s3" or not raw_key:
            raise ConfigError("the load event has a record that is not an S3 event record")
        if record_bucket != bucket:
            raise ConfigError(
                f"the S3 event is for bucket {record_bucket!r}, this function loads from {bucket!r}"
            )
        key = unquote_plus(raw_key)  # S3 event keys arrive URL-encoded
        if key.startswith(DATA_PREFIX) and key.endswith("/" + MANIFEST_NAME):
            keys.append(key)
        else:
            ignored.append(key)
    return LoadRequest(tuple(keys), tuple(ignored))


# What the provider framework adds to every custom resource's properties.
_FRAMEWORK_PROPERTIES = {"ServiceToken", "ServiceTimeout"}


@dataclass(frozen=True)
class Deployment:
    """A deployment's event for the initializer (a CloudFormation custom resource).

    ``versions`` are the resource's properties (the code hashes and database addresses)
    but the deploy stamp; ``previous`` are those of the last deployment, on an Update.
    ``stamp`` says when the template was made; CloudFormation replays an older template,
    its stamp with it, when it rolls an update back.
    """

    kind: str  # Create, Update or Delete
    physical_resource_id: str
    versions: tuple[tuple[str, str], ...] = ()
    previous: tuple[tuple[str, str], ...] | None = None
    stamp: datetime | None = None
    # Whether a change of a mart's logic starts the reprocessing of its history (the
    # CDK context reprocess_changed_models, a property of the custom resource).
    reprocess: bool = True

    def reason_to_skip(self, applied: tuple[datetime, dict] | None, seen: bool) -> str | None:
        """Why the upgrade need not run, or None when it must.

        ``applied`` is the stamp and versions of the last upgrade the analytics database
        recorded, ``seen`` whether it ever applied these versions. A rollback goes back
        to versions applied before, with an older stamp: it is answered without work, so
        that a deterministic failure cannot leave the stack in UPDATE_ROLLBACK_FAILED. A
        deployment of new code always runs, whatever its stamp (clocks differ).
        """
        if self.kind == "Delete":
            return "the data outlives the deployment"
        if self.previous == self.versions:
            return "no code and no database changed"
        if self.stamp is None or applied is None:
            return None
        applied_stamp, applied_versions = applied
        if applied_versions == dict(self.versions):
            return f"these versions are applied already (deployment of {applied_stamp})"
        if seen and self.stamp <= applied_stamp:
            return (
                f"a rollback to versions applied before: the deployment of {self.stamp} is "
                f"older than the applied one of {applied_stamp}"
            )
        return None


@dataclass(frozen=True)
class InitRequest:
    # Sample rows go only into empty source tables; False never adds any.
    sample_data: bool = True
    # The day the sample history ends on: the initialisation day unless given.
    sample_end_date: date | None = None
    # Set when a deployment runs the initializer: Create and Update upgrade the
    # analytics side (unless Deployment.reason_to_skip says otherwise), Delete does nothing.
    deployment: Deployment | None = None


INIT_SHAPES = (
    '{}, {"sample_data": false}, or {"sample_data": true, "sample_end_date": "YYYY-MM-DD"}'
)


# What CloudFormation names the resource that upgrades the analytics side on deploy.
DEPLOYMENT_RESOURCE_ID = "shop-etl-analytics"


def _versions(properties) -> tuple[tuple[str, str], ...]:
    if not isinstance(properties, dict):
        raise ConfigError("the custom resource's properties must be a JSON object")
    ignored = _FRAMEWORK_PROPERTIES | {DEPLOY_STAMP_PROPERTY}
    return tuple(sorted((k, str(v)) for k, v in properties.items() if k not in ignored))


def _stamp(properties: dict) -> datetime | None:
    value = properties.get(DEPLOY_STAMP_PROPERTY)
    if value is None:
        return None
    try:
        stamp = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError as exc:
        raise ConfigError(f"{DEPLOY_STAMP_PROPERTY} {value!r} is not an ISO timestamp") from exc
    if stamp.tzinfo is None:
        raise ConfigError(f"{DEPLOY_STAMP_PROPERTY} {value!r} has no time zone")
    return stamp


def _deployment(event: dict) -> Deployment:
    kind = event["RequestType"]
    if kind not in ("Create", "Update", "Delete"):
        raise ConfigError(f"unknown CloudFormation RequestType {kind!r}")
    properties = event.get("ResourceProperties", {})
    old = event.get("OldResourceProperties")
    reprocess = str((properties or {}).get(REPROCESS_PROPERTY, "true")).lower()
    if reprocess not in ("true", "false"):
        raise ConfigError(f"{REPROCESS_PROPERTY} must be true or false, not {reprocess!r}")
    return Deployment(
        kind=kind,
        physical_resource_id=event.get("PhysicalResourceId") or DEPLOYMENT_RESOURCE_ID,
        versions=_versions(properties),
        previous=_versions(old) if kind == "Update" and old is not None else None,
        stamp=_stamp(properties),
        reprocess=reprocess == "true",
    )


def parse_init_event(event, *, now: datetime | None = None) -> InitRequest:
    if event is None:
        event = {}
    if isinstance(event, dict) and "RequestType" in event:
        return InitRequest(sample_data=False, deployment=_deployment(event))
    if not isinstance(event, dict) or set(event) - {"sample_data", "sample_end_date"}:
        raise ConfigError(f"the db_initializer event must be one of {INIT_SHAPES}")
    sample = event.get("sample_data", True)
    if not isinstance(sample, bool):
        raise ConfigError(f"sample_data must be true or false, not {sample!r}")
    today = business_date(now or business_calendar.utc_now())
    end = event.get("sample_end_date")
    end = today if end is None else parse_date(end, "sample_end_date")
    if end > today:
        raise ConfigError(
            f"sample_end_date {end} is after today ({today}, {BUSINESS_TIMEZONE}); "
            "a sample history cannot end in the future"
        )
    return InitRequest(sample, end)
