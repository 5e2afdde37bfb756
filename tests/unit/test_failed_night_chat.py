"""A failed night reaches Slack: the load sends it to the chat topic as an AWS Chatbot
custom notification, and a passed night does not."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import pytest

from dbt_project.aws import handlers
from dbt_project.load import LoadStatus
from dbt_project.load import report as reports
from dbt_project.load.load import LoadResult
from dbt_project.pipeline import AnalyticsTests
from dbt_project.settings import Settings

RUN_ID = "6f1c1d4e-2b7a-4c55-9a51-0d8f0e7f3a10"
FAILED_TEST = "test.shop.not_null_customer_analytics_customer_id"
CHAT_TOPIC = "arn:aws:sns:ap-northeast-1:123456789012:FailedNights"


def loaded_night() -> LoadResult:
    return LoadResult(
        "etl-data/2026-11-25/_manifest.json", RUN_ID, date(2026, 11, 25), LoadStatus.LOADED
    )


def test_a_failed_night_is_a_chatbot_custom_notification_naming_the_failed_test():
    report = reports.build(loaded_night(), AnalyticsTests(passed=False, failures=[FAILED_TEST]))
    notification = json.loads(json.dumps(reports.chat_notification(report)))
    # AWS Chatbot's custom notification schema: version 1.0, source custom
    assert notification["version"] == "1.0" and notification["source"] == "custom"
    content = notification["content"]
    assert content["textType"] == "client-markdown"
    assert "2026-11-25" in content["title"] and reports.TESTS_FAILED in content["title"]
    assert FAILED_TEST in content["description"] and RUN_ID in content["description"]
    assert any(report["run_results_key"] in step for step in content["nextSteps"])


class Sns:
    def __init__(self) -> None:
        self.published: list[dict] = []

    def publish(self, **message) -> None:
        self.published.append(message)


@pytest.mark.parametrize(
    ("tests", "sent"),
    [(AnalyticsTests(passed=False, failures=[FAILED_TEST]), 1), (AnalyticsTests(passed=True), 0)],
)
def test_the_load_sends_only_a_failed_night_to_the_chat_topic(monkeypatch, tests, sent):
    # given a load whose night is kept elsewhere, and an SNS client that records
    sns = Sns()
    monkeypatch.setattr(reports, "record", lambda conn, report: None)
    monkeypatch.setattr("boto3.client", lambda service, **kwargs: sns)
    settings = Settings(project_dir=Path(), work_dir=Path(), failed_nights_topic=CHAT_TOPIC)
    # when the night's report is made
    handlers._report(settings, analytics=None, result=loaded_night(), tests=tests)
    # then
    assert len(sns.published) == sent
    for message in sns.published:
        assert message["TopicArn"] == CHAT_TOPIC
        assert json.loads(message["Message"])["metadata"]["eventType"] == "FailedNight"
