"""dbt's events made cheaper: messages built by protobuf's constructor instead of its
JSON parser, and no text made for a log line that no log keeps.

dbt fires an event for each step of each node (its start, each query, its result) and
builds two protobuf messages for each: the event's own fields, and the envelope with
the level, time and thread. It builds both with ``json_format.ParseDict``, protobuf's
pure-Python JSON reader, even with its logs off: 14 % of a warm night's profile went
there. The message class's own constructor, in C, takes the same
fields as keyword arguments, nested messages as dicts, in a twentieth of the time.

The fast path only takes what the constructor and ``ParseDict`` read alike: field
names as the proto spells them, and timestamps as RFC 3339 text, which it converts as
``ParseDict`` does. Anything else (a camelCase name, a value of another type that
``ParseDict`` would convert or refuse, an unknown field) goes to ``ParseDict`` itself,
which builds or refuses it exactly as before.

dbt also makes the text line of every event for its console log, then hands it to a
Python logger set to the console's level, which drops all but errors under --quiet;
making the line (formatting, then scrubbing each secret of the environment out of it)
was 5 % of a warm night's profile. A line is now made only when the logger would
keep it, which is the test the logger itself applies first.

Even with no line made, each event's envelope is still built (its text, time, thread)
for the loggers and callbacks to look at. A debug or info event that no logger keeps
and no callback hears is now dropped before that: the callbacks of a quiet call are
the runner's own, which reads warnings and errors only, and dbt's count of
behaviour-change warnings. Three warm extracts, best of three: 1.80 s of CPU against
1.56 s. A warning, an error, or any other callback: the event goes the usual way.
"""

from __future__ import annotations

import logging
from functools import cache

_TIMESTAMP = "google.protobuf.Timestamp"
_STRUCT = "google.protobuf.Struct"
_FLOAT32_MAX = 3.4028234663852886e38
_FIELDS: dict = {}
# protobuf's, bound when the fast path is installed (dbt imports protobuf anyway).
F = Timestamp = None


class _NotPlain(Exception):
    """A value the fast path leaves to ParseDict."""


def _scalar_ok(field, value) -> bool:
    """Whether the constructor stores ``value`` in ``field`` as ParseDict would."""
    if field.type == F.TYPE_STRING:
        return isinstance(value, str)
    if field.type == F.TYPE_BOOL:
        return isinstance(value, bool)
    if field.cpp_type in (F.CPPTYPE_INT32, F.CPPTYPE_INT64, F.CPPTYPE_UINT32, F.CPPTYPE_UINT64):
        return isinstance(value, int) and not isinstance(value, bool)
    if field.cpp_type in (F.CPPTYPE_FLOAT, F.CPPTYPE_DOUBLE):
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            return False
        # ParseDict refuses a float too large for 32 bits; NaN and infinities: its rules.
        limit = _FLOAT32_MAX if field.cpp_type == F.CPPTYPE_FLOAT else float("inf")
        return abs(value) <= limit and abs(value) != float("inf")
    return False  # enums (names or numbers), bytes (base64 in JSON): ParseDict's rules


def _keywords(descriptor, values: dict) -> dict:
    """``values`` as constructor arguments of the message ``descriptor`` describes."""
    fields = _fields(descriptor)
    keywords = {}
    for name, value in values.items():
        field = fields.get(name) if isinstance(name, str) else None
        # A JSON name, or a member of a oneof (ParseDict refuses two): ParseDict's rules.
        if field is None or field.name != name or field.containing_oneof is not None:
            raise _NotPlain(name)
        if value is None:
            kind = field.message_type
            if field.enum_type is not None or (kind and kind.full_name.startswith("google.")):
                raise _NotPlain(name)  # NullValue and Value take None as a value
            continue  # ParseDict clears the field: on a new message, it stays unset
        keywords[name] = _value(field, value)
    return keywords


def _value(field, value):
    """``value`` as the constructor takes it for ``field``; _NotPlain if not plain."""
    kind = field.message_type
    google = kind is not None and kind.full_name.startswith("google.protobuf.")
    if kind is not None and kind.GetOptions().map_entry:
        key_field, value_field = kind.fields_by_name["key"], kind.fields_by_name["value"]
        if (
            value_field.message_type is None
            and isinstance(value, dict)
            and all(
                _scalar_ok(key_field, k) and _scalar_ok(value_field, v) for k, v in value.items()
            )
        ):
            return value
    elif field.is_repeated:
        items = value if isinstance(value, list) else [None]  # not a list: not plain
        if kind is None and all(_scalar_ok(field, item) for item in items):
            return value
        if kind is not None and not google and all(isinstance(item, dict) for item in items):
            return [_keywords(kind, item) for item in value]
    elif kind is None:
        if _scalar_ok(field, value):
            return value
    elif kind.full_name == _TIMESTAMP and isinstance(value, str):
        stamp = Timestamp()
        stamp.FromJsonString(value)
        return stamp
    elif kind.full_name == _STRUCT and isinstance(value, dict) and _plain_json(value):
        return value  # the constructor fills a Struct from a dict as ParseDict does
    elif not google and isinstance(value, dict):
        return _keywords(kind, value)
    raise _NotPlain(field.name)


def _fields(descriptor) -> dict:
    """A message's fields by the names ParseDict resolves: JSON names first."""
    fields = _FIELDS.get(descriptor)
    if fields is None:
        fields = {field.name: field for field in descriptor.fields}
        fields.update({field.json_name: field for field in descriptor.fields})
        _FIELDS[descriptor] = fields
    return fields


def _plain_json(value) -> bool:
    """JSON made of dicts with text keys, lists, text, finite numbers, booleans and None."""
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain_json(v) for k, v in value.items())
    if isinstance(value, list):
        return all(_plain_json(item) for item in value)
    if isinstance(value, float):
        return abs(value) != float("inf") and value == value
    return value is None or isinstance(value, (str, int, bool))


# dbt's level names, as its logger hands them to Python's (``send_to_logger``).
_LEVELS = {
    "test": logging.DEBUG,
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warn": logging.WARNING,
    "error": logging.ERROR,
}


@cache  # installed once per process
def format_only_kept_lines() -> None:
    """Make a log line only when its logger would keep it."""
    from dbt_common.events import logger as dbt_logger

    write_line = dbt_logger._Logger.write_line

    def write_kept_line(self, msg) -> None:
        python_logger = self._python_logger
        if python_logger is None:
            return  # the line would be made, then sent nowhere
        level = "error" if dbt_logger._is_print_event(msg) else msg.info.level
        if level in _LEVELS and not python_logger.isEnabledFor(_LEVELS[level]):
            return
        write_line(self, msg)

    dbt_logger._Logger.write_line = write_kept_line


@cache  # installed once per process
def build_messages_directly() -> None:
    """Install the fast path in dbt's event types."""
    global F, Timestamp
    from dbt_common.events import base_types
    from google.protobuf.descriptor import FieldDescriptor as F
    from google.protobuf.json_format import ParseDict
    from google.protobuf.timestamp_pb2 import Timestamp

    def parse_dict(js_dict, message, *args, **kwargs):
        if not args and not kwargs and isinstance(js_dict, dict):
            try:
                return type(message)(**_keywords(message.DESCRIPTOR, js_dict))
            except (_NotPlain, TypeError, ValueError):
                pass
        return ParseDict(js_dict, message, *args, **kwargs)

    base_types.ParseDict = parse_dict


# The attribute by which a callback says it reads warnings and errors only.
WARNINGS_AND_ERRORS_ONLY = "reads_warnings_and_errors_only"
# dbt's callbacks that read one warning only: (module, name).
_DBT_WARNING_CALLBACKS = frozenset({("dbt.tracking", "track_behavior_change_warn")})
_BELOW_WARNINGS = {"test": logging.DEBUG, "debug": logging.DEBUG, "info": logging.INFO}
_UNKNOWN = object()


def _heard(manager, level: int) -> bool:
    """Whether a logger or callback of ``manager`` would take an event at ``level``."""
    for callback in manager.callbacks:
        if getattr(callback, WARNINGS_AND_ERRORS_ONLY, False):
            continue
        name = (getattr(callback, "__module__", None), getattr(callback, "__qualname__", None))
        if name not in _DBT_WARNING_CALLBACKS:
            return True
    for logger in manager.loggers:
        python_logger = getattr(logger, "_python_logger", _UNKNOWN)
        if python_logger is _UNKNOWN:
            return True  # a logger of another kind: it sees everything, as before
        if python_logger is not None and python_logger.isEnabledFor(level):
            return True
    return False


@cache  # installed once per process
def fire_only_heard_events() -> None:
    """Drop a debug or info event before its envelope is built when nothing takes it."""
    from dbt_common.events.event_manager import EventManager

    fire_event = EventManager.fire_event

    def fire_heard_event(self, e, level=None, node=None, force_warn_or_error_handling=False):
        if not force_warn_or_error_handling:
            below = _BELOW_WARNINGS.get(level.value if level else e.level_tag().value)
            if below is not None and not _heard(self, below):
                return
        fire_event(self, e, level, node, force_warn_or_error_handling)

    EventManager.fire_event = fire_heard_event
