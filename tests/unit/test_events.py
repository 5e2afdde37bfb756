"""Lambda events: what each handler accepts, and the clear refusal of everything else."""

from datetime import UTC, date, datetime

import pytest

from dbt_project.aws.events import (
    Deployment,
    InitRequest,
    parse_extract_event,
    parse_init_event,
    parse_load_event,
)
from dbt_project.errors import ConfigError
from dbt_project.request import BackfillRequest, CustomerScope, NightRequest, Trigger


def test_a_schedule_at_two_in_the_morning_tokyo_runs_the_previous_tokyo_day():
    # 2026-11-26T17:00Z is 02:00 on 27 November in Tokyo.
    request = parse_extract_event({"scheduled_time": "2026-11-26T17:00:00Z"})
    assert request.days == (date(2026, 11, 26),)
    assert request.trigger == "schedule"


def test_an_eventbridge_rule_event_uses_its_time():
    event = {
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "time": "2026-01-01T17:00:00Z",
    }
    assert parse_extract_event(event).days == (date(2026, 1, 1),)


def test_manual_day_and_the_state_machine_s_plan_and_chunks():
    assert parse_extract_event({"run_date": "2026-11-20"}).days == (date(2026, 11, 20),)
    plan = parse_extract_event({"plan": {"start": "2026-10-30", "end": "2026-11-02"}})
    assert plan == BackfillRequest(date(2026, 11, 2), date(2026, 10, 30))
    assert plan.trigger == "backfill"
    refresh = parse_extract_event({"plan": {"full_refresh": True, "budget_minutes": 5}})
    assert refresh.full_refresh and refresh.first is None and refresh.budget_minutes == 5
    chunk = {"run_date": "2026-11-02", "lookback_days": 31, "full_refresh": True}
    chunk |= {"trigger": "full_refresh", "customers": "none"}
    night = parse_extract_event({"chunk": chunk})
    assert night == NightRequest(
        date(2026, 11, 2),
        31,
        Trigger.FULL_REFRESH,
        freshness_gate=False,
        full_refresh=True,
        customers=CustomerScope.NONE,
    )


@pytest.mark.parametrize(
    ("event", "message"),
    [
        ({"run_date": "2026-02-30"}, "not a real calendar date"),
        ({"run_date": "yesterday"}, "not a real calendar date"),
        ({"run_date": "2026-11-20'; drop table orders; --"}, "not a real calendar date"),
        ({"start_date": "2026-01-01", "end_date": "2026-02-01"}, "reprocess state machine"),
        ({"full_refresh": True}, "start-execution .* --input '{\"full_refresh\": true}'"),
        ({"plan": {"start": "2026-02-01", "end": "2026-01-01"}}, "before it starts"),
        ({"plan": {"start": "2026-01-01"}}, "unrecognised execution input"),
        ({"plan": {"full_refresh": True, "budget_minutes": 0}}, "budget_minutes must be"),
        ({"plan": {"full_refresh": True, "budget_minutes": "13"}}, "budget_minutes must be"),
        ({"chunk": {"run_date": "2026-11-20"}}, "exactly the keys"),
        (
            {
                "chunk": {
                    "run_date": "2026-11-20",
                    "lookback_days": 401,
                    "full_refresh": False,
                    "trigger": "backfill",
                    "customers": "window",
                }
            },
            "lookback_days must be",
        ),
        ({"run_date": "2026-11-20", "lookback_days": 0}, "lookback_days"),
        ({"date": "2026-11-20"}, "unrecognised extract event"),
        ([], "must be a JSON object"),
    ],
)
def test_anything_else_is_refused_with_the_accepted_shapes(event, message):
    with pytest.raises(ConfigError, match=message):
        parse_extract_event(event)


def s3_event(*keys, bucket="stage-bucket"):
    return {
        "Records": [
            {"eventSource": "aws:s3", "s3": {"bucket": {"name": bucket}, "object": {"key": key}}}
            for key in keys
        ]
    }


def test_s3_keys_are_url_decoded_and_only_manifests_are_loaded():
    event = s3_event(
        "etl-data/2026-11-20/_manifest.json",
        "etl-data%2F2026-11-21%2F_manifest.json",
        "etl-data/2026-11-20/abc/customer_analytics.tsv.gz",
    )
    request = parse_load_event(event, "stage-bucket")
    assert request.manifest_keys == (
        "etl-data/2026-11-20/_manifest.json",
        "etl-data/2026-11-21/_manifest.json",
    )
    assert request.ignored == ("etl-data/2026-11-20/abc/customer_analytics.tsv.gz",)


def test_manual_manifest_key():
    assert parse_load_event(
        {"manifest_key": "etl-data/2026-11-20/_manifest.json"}, "b"
    ).manifest_keys == ("etl-data/2026-11-20/_manifest.json",)


@pytest.mark.parametrize(
    ("event", "message"),
    [
        (s3_event("etl-data/2026-11-20/_manifest.json", bucket="other"), "for bucket 'other'"),
        ({"manifest_key": "../secrets/_manifest.json"}, "must look like"),
        ({"Records": [{"eventSource": "aws:sqs"}]}, "not an S3 event record"),
        ({"hello": 1}, "unrecognised load event"),
        ({"report": {"rows": 1}}, "a report event is"),
    ],
)
def test_bad_load_events_are_refused(event, message):
    with pytest.raises(ConfigError, match=message):
        parse_load_event(event, "stage-bucket")


# 12:00 on 25 November in Tokyo: the last business day that is over is the 24th.
NOON_25TH = datetime(2026, 11, 25, 3, 0, tzinfo=UTC)


def test_the_previous_business_day_is_the_latest_a_payload_may_name():
    assert parse_extract_event({"run_date": "2026-11-24"}, now=NOON_25TH).days == (
        date(2026, 11, 24),
    )
    backfill = parse_extract_event(
        {"plan": {"start": "2026-11-20", "end": "2026-11-24"}}, now=NOON_25TH
    )
    assert backfill.last == date(2026, 11, 24)
    schedule = parse_extract_event({"scheduled_time": "2026-11-24T17:00:00Z"}, now=NOON_25TH)
    assert schedule.days == (date(2026, 11, 24),)


@pytest.mark.parametrize(
    ("event", "message"),
    [
        ({"run_date": "2026-11-25"}, "run_date 2026-11-25 is later than 2026-11-24"),
        ({"run_date": "2099-01-01", "lookback_days": 2}, "run_date 2099-01-01 is later than"),
        (
            {"plan": {"start": "2026-11-20", "end": "2026-11-26"}},
            "end 2026-11-26 is later than 2026-11-24",
        ),
        ({"plan": {"full_refresh": True, "end": "2026-11-25"}}, "end 2026-11-25 is later"),
        (
            {
                "chunk": {
                    "run_date": "2026-11-25",
                    "lookback_days": 3,
                    "full_refresh": False,
                    "trigger": "backfill",
                    "customers": "window",
                }
            },
            "run_date 2026-11-25 is later",
        ),
        ({"scheduled_time": "2099-01-01T17:00:00Z"}, "run_date 2099-01-01 is later than"),
        (
            {"detail-type": "Scheduled Event", "time": "2026-11-25T17:00:00Z"},
            "run_date 2026-11-25 is later than",
        ),
    ],
)
def test_a_day_that_is_not_over_is_refused_in_one_line(event, message):
    with pytest.raises(ConfigError, match=message) as refused:
        parse_extract_event(event, now=NOON_25TH)
    assert "\n" not in str(refused.value)


def test_no_payload_runs_the_night_the_schedule_would_run_now():
    # `aws lambda invoke --function-name <extract> out.json` sends {}
    at_two_tokyo = datetime(2026, 11, 25, 17, 0, tzinfo=UTC)
    request = parse_extract_event({}, now=at_two_tokyo)
    assert request.days == (date(2026, 11, 25),)
    assert request.lookback_days == 2
    assert (
        request.days
        == parse_extract_event({"scheduled_time": "2026-11-25T17:00:00Z"}, now=at_two_tokyo).days
    )
    # and just before midnight in Tokyo it is still the day before that
    assert parse_extract_event({}, now=datetime(2026, 11, 25, 14, 59, tzinfo=UTC)).days == (
        date(2026, 11, 24),
    )


@pytest.mark.parametrize(
    ("event", "expected"),
    [
        ({}, InitRequest(True, date(2026, 11, 25))),
        (None, InitRequest(True, date(2026, 11, 25))),
        ({"sample_data": False}, InitRequest(False, date(2026, 11, 25))),
        ({"sample_end_date": "2026-11-20"}, InitRequest(True, date(2026, 11, 20))),
    ],
)
def test_the_initializer_loads_sample_data_ending_today_unless_told(event, expected):
    assert parse_init_event(event, now=datetime(2026, 11, 25, 3, 0, tzinfo=UTC)) == expected


@pytest.mark.parametrize(
    ("event", "message"),
    [
        ({"sample_data": "yes"}, "sample_data must be true or false"),
        ({"sample_end_date": "2026-11-26"}, "after today .2026-11-25"),
        ({"sample_end_date": "soon"}, "not a real calendar date"),
        ({"sample": True}, "must be one of"),
        ([], "must be one of"),
    ],
)
def test_a_bad_initializer_event_is_refused(event, message):
    with pytest.raises(ConfigError, match=message):
        parse_init_event(event, now=datetime(2026, 11, 25, 3, 0, tzinfo=UTC))


# --- the deploy-time upgrade (a CloudFormation custom resource) ------------------------

FRAMEWORK = {"ServiceToken": "arn:aws:lambda:ap-northeast-1:123456789012:function:p"}
OLD = {"ExtractCode": "a.zip", "SourceDbHost": "h"}
NEW = {"ExtractCode": "b.zip", "SourceDbHost": "h"}
EARLY, LATE = datetime(2026, 11, 20, 9, 0, tzinfo=UTC), datetime(2026, 11, 25, 9, 0, tzinfo=UTC)


def cloudformation(kind: str, properties: dict, stamp: datetime | None, old=None) -> dict:
    event = {
        "RequestType": kind,
        "PhysicalResourceId": "shop-etl-analytics",
        "ResourceProperties": {**FRAMEWORK, **properties, "ServiceTimeout": "1200"},
    }
    if stamp is not None:
        event["ResourceProperties"]["DeployStamp"] = stamp.strftime("%Y-%m-%dT%H:%M:%SZ")
    if old is not None:
        event["OldResourceProperties"] = {**FRAMEWORK, **old}
    return event


def deployment(event: dict) -> Deployment:
    request = parse_init_event(event)
    assert request.sample_data is False and request.deployment is not None
    return request.deployment


def test_a_deployment_event_carries_its_versions_and_its_stamp():
    found = deployment(cloudformation("Update", NEW, LATE, old={**OLD, "DeployStamp": "x"}))
    assert found.kind == "Update"
    # the framework's properties and the stamp are not versions
    assert dict(found.versions) == NEW and dict(found.previous) == OLD
    assert found.stamp == LATE


def test_an_update_that_changes_only_the_stamp_needs_no_upgrade_nor_a_database():
    unchanged = deployment(cloudformation("Update", NEW, LATE, old={**NEW, "DeployStamp": "x"}))
    assert unchanged.reason_to_skip(None, False) == "no code and no database changed"


def test_new_versions_are_upgraded_to_whatever_their_stamp():
    first = deployment(cloudformation("Create", NEW, EARLY))
    assert first.reason_to_skip(None, False) is None
    # a deployer's clock behind the last one's: new code still runs
    skewed = deployment(cloudformation("Update", NEW, EARLY, old=OLD))
    assert skewed.reason_to_skip((LATE, OLD), seen=False) is None
    # a deliberate return to older code, made later, runs too
    reverted = deployment(cloudformation("Update", OLD, LATE + (LATE - EARLY), old=NEW))
    assert reverted.reason_to_skip((LATE, NEW), seen=True) is None


def test_a_rollback_to_versions_applied_before_is_answered_without_work():
    # given OLD applied at EARLY, then NEW at LATE; a later resource fails and
    # CloudFormation replays the previous template: OLD, stamped EARLY
    rollback = deployment(cloudformation("Update", OLD, EARLY, old=NEW))
    assert "rollback" in rollback.reason_to_skip((LATE, NEW), seen=True)
    # the upgrade to NEW itself failed (nothing recorded): the replay finds OLD applied
    failed = deployment(cloudformation("Update", OLD, EARLY, old=NEW))
    assert "applied already" in failed.reason_to_skip((EARLY, OLD), seen=True)


def test_an_event_without_a_stamp_always_upgrades():
    legacy = deployment(cloudformation("Update", NEW, None))
    assert legacy.stamp is None and legacy.reason_to_skip((LATE, OLD), seen=True) is None


@pytest.mark.parametrize(
    ("stamp", "message"),
    [
        ("yesterday", "DeployStamp 'yesterday' is not an ISO"),
        ("2026-11-25T09:00:00", "no time zone"),
    ],
)
def test_a_bad_deploy_stamp_is_refused(stamp, message):
    event = cloudformation("Update", NEW, None)
    event["ResourceProperties"]["DeployStamp"] = stamp
    with pytest.raises(ConfigError, match=message):
        parse_init_event(event)
