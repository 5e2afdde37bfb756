"""dbt's events built by protobuf's constructor are the messages its JSON parser builds,
a log line no log keeps is never made, and an event nothing hears is dropped unbuilt
while every logger and callback that would take it still gets it."""

from __future__ import annotations

import io

import pytest
from dbt.adapters.events.types import CacheAction, CatalogGenerationError, SQLQuery
from dbt.events.types import EndRunResult, NodeFinished, NodeStart
from dbt.tracking import track_behavior_change_warn
from dbt_common.events import event_manager as dbt_event_manager
from dbt_common.events import logger as dbt_logger
from dbt_common.events.base_types import EventLevel, msg_from_base_event
from dbt_common.events.event_manager import EventManager
from dbt_common.events.logger import LoggerConfig
from dbt_common.events.types import Note
from google.protobuf import json_format

from dbt_project.dbt_runner import event_messages
from dbt_project.dbt_runner.results import ErrorEvents

NODE_INFO = {
    "node_path": "marts/customer_analytics.sql",
    "node_name": "customer_analytics",
    "unique_id": "model.shop.customer_analytics",
    "resource_type": "model",
    "materialized": "incremental",
    "node_status": "success",
    "node_started_at": "2026-11-24T17:00:01.123456",
    "node_finished_at": "2026-11-24T17:00:02.654321",
    "meta": {"owner": "analytics", "tier": 1, "pii": False, "tags": ["daily", None]},
    "node_relation": {
        "database": "source",
        "schema": "nightly",
        "alias": "customer_analytics",
        "relation_name": '"source"."nightly"."customer_analytics"',
    },
    "node_checksum": "0f3a",
}
RUN_RESULT = {
    "status": "success",
    "message": "INSERT 0 40",
    "timing_info": [
        {
            "name": "compile",
            "started_at": "2026-11-24T17:00:01.123456Z",
            "completed_at": "2026-11-24T17:00:01.200000Z",
        },
        {"name": "execute", "started_at": "2026-11-24T17:00:01.200000Z"},
    ],
    "thread": "Thread-1",
    "execution_time": 1.53,
    "adapter_response": {"_message": "INSERT 0 40", "rows_affected": 40, "code": "INSERT"},
    "num_failures": 0,
}
# Events as dbt fires them in a night, with the fields each carries.
EVENTS = [
    (NodeStart, {"node_info": NODE_INFO}),
    (NodeFinished, {"node_info": NODE_INFO, "run_result": RUN_RESULT}),
    (SQLQuery, {"conn_name": "model.shop.x", "sql": "select 1", "node_info": NODE_INFO}),
    (SQLQuery, {"conn_name": "master", "sql": "select 2", "node_info": None}),
    (
        CacheAction,
        {
            "action": "add_link",
            "ref_key": {"database": "d", "schema": "s", "identifier": "a"},
            "ref_key_2": {"database": "d", "schema": "s", "identifier": "b"},
            "ref_list": [{"database": "d", "schema": "s", "identifier": "c"}],
        },
    ),
    (EndRunResult, {"results": [RUN_RESULT], "elapsed_time": 2.5, "success": True}),
]
# Values ParseDict converts or refuses by rules of its own: each goes to ParseDict.
NOT_PLAIN = [
    (SQLQuery, {"connName": "json-name", "sql": "select 1"}),  # a JSON name
    (SQLQuery, {"conn_name": 7, "sql": "select 1"}),  # a number for text
    (EndRunResult, {"elapsed_time": "2.5", "success": True}),  # text for a number
    (EndRunResult, {"elapsed_time": 1e39, "success": True}),  # too large for 32 bits
    (EndRunResult, {"elapsed_time": 1.0, "success": 1}),  # a number for a boolean
    (SQLQuery, {"conn_name": "x", "no_such_field": 1}),  # unknown
]


@pytest.fixture(autouse=True)
def installed():
    event_messages.build_messages_directly()
    event_messages.format_only_kept_lines()
    event_messages.fire_only_heard_events()


@pytest.fixture
def json_parses(monkeypatch) -> list[str]:
    """The messages protobuf's JSON reader was asked to fill."""
    calls = []
    convert = json_format._Parser.ConvertMessage

    def counted(self, value, message, path):
        if not path:  # the top-level message; nested ones are part of the same call
            calls.append(message.DESCRIPTOR.name)
        return convert(self, value, message, path)

    monkeypatch.setattr(json_format._Parser, "ConvertMessage", counted)
    return calls


@pytest.mark.parametrize(("kind", "fields"), EVENTS, ids=[e.__name__ for e, _ in EVENTS])
def test_an_event_is_the_message_dbt_s_parser_builds_without_the_parser(kind, fields, json_parses):
    event = kind(**fields)
    envelope = msg_from_base_event(event, EventLevel.INFO)
    assert json_parses == []

    assert event.pb_msg == json_format.ParseDict(fields, type(event.pb_msg)())
    assert event.pb_msg.SerializeToString(deterministic=True) == json_format.ParseDict(
        fields, type(event.pb_msg)()
    ).SerializeToString(deterministic=True)
    info = json_format.MessageToDict(envelope.info, preserving_proto_field_name=True)
    rebuilt = json_format.ParseDict({"info": info}, type(envelope)())
    assert envelope.info == rebuilt.info
    assert envelope.data == event.pb_msg


def test_none_leaves_a_field_unset_as_the_parser_does():
    event = SQLQuery(conn_name="master", sql="select 2", node_info=None)
    assert not event.pb_msg.HasField("node_info")


@pytest.mark.parametrize(("kind", "fields"), NOT_PLAIN)
def test_what_the_parser_reads_by_rules_of_its_own_goes_to_the_parser(
    kind, fields, json_parses, monkeypatch
):
    monkeypatch.setenv("PYTEST_CURRENT_TEST", "dbt raises what it cannot parse")
    try:
        expected = json_format.ParseDict(fields, getattr(kind.PROTO_TYPES_MODULE, kind.__name__)())
    except json_format.ParseError as error:
        expected = error
    json_parses.clear()

    if isinstance(expected, Exception):
        with pytest.raises(Exception, match="Unable to parse logging event dictionary"):
            kind(**fields)
    else:
        assert kind(**fields).pb_msg == expected
    assert json_parses == [kind.__name__]


def test_a_line_is_made_only_for_a_log_that_keeps_it(monkeypatch):
    made = []
    create_line = dbt_logger._TextLogger.create_line

    def counted(self, msg):
        made.append(msg.info.name)
        return create_line(self, msg)

    monkeypatch.setattr(dbt_logger._TextLogger, "create_line", counted)
    console = io.StringIO()
    manager = EventManager()
    # The console logger of a --quiet call: errors only.
    manager.add_logger(LoggerConfig(name="quiet", level=EventLevel.ERROR, output_stream=console))

    manager.fire_event(Note(msg="kept from the console"), level=EventLevel.INFO)
    manager.fire_event(Note(msg="a debug line"), level=EventLevel.DEBUG)
    assert made == [] and console.getvalue() == ""

    manager.fire_event(Note(msg="the catalog could not be read"), level=EventLevel.ERROR)
    assert made == ["Note"]
    assert console.getvalue().strip().endswith("the catalog could not be read")


def test_a_log_that_keeps_every_level_still_gets_every_line():
    console = io.StringIO()
    manager = EventManager()
    manager.add_logger(LoggerConfig(name="debug", level=EventLevel.DEBUG, output_stream=console))
    for level in (EventLevel.DEBUG, EventLevel.INFO, EventLevel.WARN, EventLevel.ERROR):
        manager.fire_event(Note(msg=f"at {level.value}"), level=level)
    lines = console.getvalue().splitlines()
    assert [line.rsplit(" ", 1)[-1] for line in lines] == ["debug", "info", "warn", "error"]


@pytest.fixture
def envelopes(monkeypatch) -> list[str]:
    """The events whose envelope dbt's event manager built."""
    built = []
    build = dbt_event_manager.msg_from_base_event

    def counted(event, level=None):
        built.append(type(event).__name__)
        return build(event, level=level)

    monkeypatch.setattr(dbt_event_manager, "msg_from_base_event", counted)
    return built


def quiet_call(console: io.StringIO, *callbacks) -> EventManager:
    """The event manager of a runner's --quiet call: a console logger of errors only,
    the runner's error callback and dbt's own behaviour-change one, and ``callbacks``."""
    manager = EventManager()
    manager.add_logger(LoggerConfig(name="quiet", level=EventLevel.ERROR, output_stream=console))
    manager.callbacks = [*callbacks, track_behavior_change_warn]
    return manager


def test_an_event_nothing_hears_is_dropped_and_warnings_and_errors_still_reach_it(envelopes):
    console, errors = io.StringIO(), ErrorEvents()
    manager = quiet_call(console, errors)

    manager.fire_event(Note(msg="a model started"), level=EventLevel.INFO)
    manager.fire_event(SQLQuery(conn_name="model.shop.x", sql="select 1", node_info=None))
    assert envelopes == [] and errors.messages == [] and console.getvalue() == ""

    # the failing warning and the error the runner reads, the error on the console too
    manager.fire_event(CatalogGenerationError(exc="permission denied for schema nightly"))
    manager.fire_event(Note(msg="the build failed"), level=EventLevel.ERROR)
    assert envelopes == ["CatalogGenerationError", "Note"]
    assert errors.messages == [
        "Encountered an error while generating catalog: permission denied for schema nightly",
        "the build failed",
    ]
    assert console.getvalue().strip().endswith("the build failed")


def test_an_event_a_callback_or_a_log_would_take_still_reaches_it():
    # a callback of another kind hears every level, as dbt's own would give it
    heard = []
    manager = quiet_call(io.StringIO(), ErrorEvents(), lambda msg: heard.append(msg.info.level))
    for level in (EventLevel.DEBUG, EventLevel.INFO, EventLevel.WARN, EventLevel.ERROR):
        manager.fire_event(Note(msg=f"at {level.value}"), level=level)
    assert heard == ["debug", "info", "warn", "error"]

    # a console at info (ETL_DBT_VERBOSE=1) gets the info line, not the debug one
    console = io.StringIO()
    manager = EventManager()
    manager.add_logger(LoggerConfig(name="info", level=EventLevel.INFO, output_stream=console))
    manager.callbacks = [ErrorEvents()]
    manager.fire_event(Note(msg="at debug"), level=EventLevel.DEBUG)
    manager.fire_event(Note(msg="at info"), level=EventLevel.INFO)
    assert [line.rsplit(" ", 1)[-1] for line in console.getvalue().splitlines()] == ["info"]
