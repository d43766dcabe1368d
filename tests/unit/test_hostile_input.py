"""Hostile input, property-based: whatever bytes, keys and headers a record brings, the pure
path it takes (value check, task argument, envelope, dead-letter headers) either carries it
byte-exact or refuses it with :class:`UndecodableRecordError`, never another exception."""

from __future__ import annotations

import json
import struct
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from bridge.deadletter import DeadLetter, ErrorInfo, dead_letter_headers, from_dict, to_dict
from bridge.errors import UndecodableRecordError
from bridge.failures import Reason
from bridge.record import (
    ArgWriter,
    Envelope,
    Record,
    check_value,
    decode_value,
    decoded,
    from_task_arg,
    record_repr,
    task_argsrepr,
    to_task_arg,
)
from bridge.settings import VALUE_FORMATS
from bridge.worker.transport import malformed
from tests.strategies import header_names, json_documents, json_values

names = header_names
header_values = st.one_of(st.none(), st.binary(max_size=64))
headers = st.lists(st.tuples(names, header_values), max_size=12)
# Duplicate names, kept in order.
repeated = st.lists(st.sampled_from(["", "a", "a", "trace", "\u00e9"]), max_size=8).flatmap(
    lambda ns: st.tuples(*(st.tuples(st.just(n), header_values) for n in ns))
)
keys = st.one_of(st.none(), st.binary(max_size=64))
values = st.one_of(st.none(), st.binary(max_size=512))
json_texts = json_documents()
hostile_values = st.one_of(
    values,
    json_texts,
    st.text().map(str.encode),
    st.sampled_from(
        [
            b"\xef\xbb\xbf{}",  # a UTF-8 byte order mark
            b'"\\ud800"',  # an escaped lone surrogate: json.loads takes it, orjson does not
            b"NaN",
            b"1" * 5000,  # more digits than Python converts to an int
            b"[" * 5000 + b"]" * 5000,  # nested deeper than the recursion limit
            b"[" * 900 + b"]" * 900,  # orjson's limit is 1024, json.loads' about 1000
            b'{"a": 1, "a": 2}',
            b"\x00",
            b"",
        ]
    ),
)
formats = st.sampled_from(sorted(VALUE_FORMATS))
ints32 = st.integers(0, 2**31 - 1)
ints64 = st.integers(0, 2**63 - 1)


def refusal(call: Any, *args: Any) -> UndecodableRecordError | None:
    """The refusal ``call`` raised, if any; any other exception fails the test."""
    try:
        call(*args)
    except UndecodableRecordError as exc:
        return exc
    return None


def outcome(call: Any, *args: Any) -> str:
    """``ok`` or ``undecodable``; any other exception fails the test."""
    return "ok" if refusal(call, *args) is None else "undecodable"


@given(hostile_values, formats)
def test_check_value_agrees_with_decode_value(raw: bytes | None, value_format: Any) -> None:
    assert outcome(check_value, raw, value_format) == outcome(decode_value, raw, value_format)


@given(st.binary(max_size=512))
def test_any_bytes_decode_or_are_undecodable_with_a_message(raw: bytes) -> None:
    for value_format in VALUE_FORMATS:
        exc = refusal(decode_value, raw, value_format)
        assert exc is None or str(exc).startswith(f"value is not valid {value_format}: ")
    assert decode_value(raw, "bytes") == raw


def test_a_deep_nesting_orjson_takes_decodes_or_is_undecodable_in_a_deep_stack() -> None:
    """A worker runs handlers deeper in its stack than the bridge checks values."""
    raw = b"[" * 1000 + b"]" * 1000

    def nested(depth: int) -> str:
        return nested(depth - 1) if depth else outcome(decode_value, raw, "json")

    assert nested(200) in ("ok", "undecodable")


@given(st.text(), ints32, ints64, ints64, keys, values, headers, formats, st.booleans())
@example('t\u2028"\\', 0, 0, 0, b"", b"", [("", None), ("", b"")], "json", True)
def test_arg_writer_writes_what_to_task_arg_gives(
    topic: str,
    partition: int,
    offset: int,
    timestamp_ms: int,
    key: bytes | None,
    value: bytes | None,
    hdrs: list[tuple[str, bytes | None]],
    value_format: Any,
    ordered: bool,
) -> None:
    policy: dict[str, float | bool] = {"max_retries": 3.0, "retry_jitter": True}
    on_exhausted = "park" if ordered else None
    writer = ArgWriter(
        group_id="g\u00e9", dlt_topic="d", value_format=value_format, retry_policy=policy,
        on_exhausted=on_exhausted,
    )  # fmt: skip
    written = writer.json(
        topic, partition, offset, timestamp_ms, key, value, hdrs, timestamp_type=0
    )
    record = Record(topic, partition, offset, timestamp_ms, key, value, tuple(hdrs), value_format)
    envelope = Envelope(record, "g\u00e9", "d", None, policy, on_exhausted)
    assert json.loads(written) == to_task_arg(envelope)
    assert from_task_arg(json.loads(written)) == envelope


@given(keys, values, st.one_of(headers, repeated))
def test_envelope_round_trip_to_the_dead_letter_is_byte_exact(
    key: bytes | None, value: bytes | None, hdrs: Any
) -> None:
    """What the bridge writes, what the worker rebuilds, what the dead letter carries."""
    written = ArgWriter(group_id="g", dlt_topic="t.g.dlt", value_format="bytes").json(
        "t", 1, 2, 3, key, value, list(hdrs), timestamp_type=1
    )
    record = from_task_arg(json.loads(written)).record
    assert (record.key, record.raw_value) == (key, value)
    original = list(hdrs)
    assert list(record.headers) == original
    dl = dead_letter(record, ErrorInfo.of(ValueError("bad")))
    assert dead_letter_headers(dl)[: len(original)] == original
    assert from_dict(json.loads(json.dumps(to_dict(dl)))) == dl


def dead_letter(record: Record, error: ErrorInfo) -> DeadLetter:
    return DeadLetter(
        record, "g", "t.g.dlt", Reason.NON_RETRYABLE, error, 1, "task", "g:t:1:2",
        "2026-11-22T10:00:00.000Z", "2026-11-22T10:00:00.000Z",
    )  # fmt: skip


@given(st.text())
@example("\udc80\ud800 lone surrogates, as from bytes decoded with surrogateescape")
def test_dead_letter_headers_take_any_exception_message(message: str) -> None:
    """A handler may put any text in its exception, even what UTF-8 cannot encode."""
    record = Record("t", 0, 0, 0, None, None, (), "bytes")
    hdrs = dict(dead_letter_headers(dead_letter(record, ErrorInfo.of(ValueError(message)))))
    assert all(isinstance(v, bytes) for v in hdrs.values())
    shown = (hdrs["kafka_dlt-exception-message"] or b"").decode("utf-8")
    assert shown == message.encode("utf-8", "backslashreplace").decode("utf-8")
    assert struct.unpack(">i", hdrs["kafka_dlt-original-partition"] or b"") == (0,)


def test_thousands_of_headers_round_trip_in_order() -> None:
    hdrs = [(f"h{i % 7}", i.to_bytes(4, "big") if i % 3 else None) for i in range(5000)]
    written = ArgWriter(group_id="g", dlt_topic="d", value_format="json").json(
        "t", 0, 9, 1, b"\x00", b"{}", hdrs, timestamp_type=0
    )
    record = from_task_arg(json.loads(written)).record
    assert list(record.headers) == hdrs
    assert len(dead_letter_headers(dead_letter(record, ErrorInfo.of(ValueError())))) > 5000


@given(st.text(), st.integers(), st.integers(), keys)
def test_record_repr_takes_any_key(topic: str, partition: int, offset: int, key: Any) -> None:
    assert record_repr(topic, partition, offset, key).startswith(f"Record({topic}[")


@given(st.binary(max_size=300), st.integers(0, 100))
def test_argsrepr_shows_at_most_the_bytes_asked(value: bytes, shown: int) -> None:
    found = task_argsrepr("t", 0, 1, None, value, shown)
    assert found.startswith("Record(t[0]@1 key=None")
    if shown:
        assert repr(value[:shown]) in found
        assert (f"({len(value)} bytes)" in found) == (len(value) > shown)
    else:
        assert "value" not in found


# -- task arguments that are not bridge envelopes ------------------------------------------

GOOD: dict[str, Any] = to_task_arg(
    Envelope(Record("t", 0, 1, 2, b"k", b"{}", (("h", b"v"),), "json"), "g", "t.g.dlt")
)


@st.composite
def spoiled(draw: st.DrawFn) -> dict[str, Any]:
    """A bridge envelope with some fields replaced by any JSON value, or removed."""
    arg = dict(GOOD)
    for field in draw(st.lists(st.sampled_from(sorted(GOOD)), min_size=1, max_size=3)):
        if draw(st.booleans()):
            arg[field] = draw(json_values(max_leaves=10, size=3))
        else:
            arg.pop(field, None)
    return arg


@given(st.one_of(json_values(max_leaves=10, size=3), spoiled()))
@example({"x": 1})
@example("a string")
@example({**GOOD, "topic": 5})
@example({**GOOD, "partition": True})
@example({**GOOD, "headers": [[1, "dg=="]]})
def test_a_foreign_task_argument_is_an_envelope_or_undecodable(arg: Any) -> None:
    exc = refusal(from_task_arg, arg)
    if exc is not None:
        assert str(exc).startswith("not a bridge record envelope: ")
        return
    envelope = from_task_arg(arg)
    rec = envelope.record
    assert isinstance(envelope.group_id, str)
    assert isinstance(envelope.dlt_topic, str)
    assert isinstance(rec.topic, str)
    for number in (rec.partition, rec.offset, rec.timestamp_ms):
        assert type(number) is int
    assert all(type(v) in (bytes, type(None)) for v in (rec.key, rec.raw_value))
    assert all(type(n) is str and type(v) is bytes for n, v in rec.headers)
    assert outcome(lambda: decoded(rec)) in ("ok", "undecodable")
    repr(rec)


@pytest.mark.parametrize("arg", [None, [], 3, "", {"v": 1}])
def test_not_an_envelope_names_what_is_wrong(arg: Any) -> None:
    with pytest.raises(UndecodableRecordError, match="not a bridge record envelope"):
        from_task_arg(arg)


# -- queue elements on a worker's Redis queue ----------------------------------------------


KOMBU_MESSAGE = {
    "body": "W1tdLCB7fSwge31d",
    "content-encoding": "utf-8",
    "content-type": "application/json",
    "headers": {"task": "tests.echo", "id": "t1"},
    "properties": {"delivery_tag": "d1", "delivery_info": {"exchange": "", "routing_key": "q"}},
}


@given(json_values(max_leaves=10, size=3))
@example({"x": 1})
@example({**KOMBU_MESSAGE, "properties": {}})
@example({**KOMBU_MESSAGE, "body": None})
@example({**KOMBU_MESSAGE, "headers": []})
def test_a_queue_element_is_a_kombu_message_or_says_why_not(element: Any) -> None:
    problem = malformed(element)
    assert problem is None or isinstance(problem, str)
    assert malformed({**KOMBU_MESSAGE, "extra": element}) is None
    assert problem is not None or isinstance(element, dict)
