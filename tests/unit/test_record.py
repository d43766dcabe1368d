import json
from datetime import UTC, datetime

import pytest

from bridge.errors import UndecodableRecordError
from bridge.record import (
    ArgWriter,
    Envelope,
    Record,
    TimestampType,
    check_value,
    decode_value,
    decoded,
    from_task_arg,
    is_bridge_origin,
    message_origin,
    to_task_arg,
)

BINARY = bytes(range(256))


def sample(**changes: object) -> Record:
    fields: dict[str, object] = {
        "topic": "orders",
        "partition": 3,
        "offset": 41,
        "timestamp_ms": 1_700_000_000_123,
        "key": b"\x00k\xff",
        "raw_value": b'{"id": 1}',
        "headers": (("trace", b"\x01\x02"), ("trace", b""), ("bin", BINARY)),
        "value_format": "json",
    }
    fields.update(changes)
    return Record(**fields)  # type: ignore[arg-type]


def test_task_arg_round_trip_is_byte_exact_and_json_safe() -> None:
    envelope = Envelope(sample(raw_value=BINARY, value_format="bytes"), "shop", "orders.shop.dlt")
    arg = json.loads(json.dumps(to_task_arg(envelope)))
    back = from_task_arg(arg)
    assert back == envelope
    assert back.record.raw_value == BINARY
    assert back.record.key == b"\x00k\xff"
    assert back.record.headers == envelope.record.headers


def test_tombstone_and_keyless_records_round_trip() -> None:
    envelope = Envelope(sample(key=None, raw_value=None, headers=()), "g", "t.g.dlt")
    back = from_task_arg(json.loads(json.dumps(to_task_arg(envelope))))
    assert back.record.key is None
    assert back.record.raw_value is None
    assert decoded(back.record).value is None


def test_first_failure_at_travels_and_is_kept() -> None:
    envelope = Envelope(sample(), "g", "d").failed_at("2026-01-01T00:00:00.000Z")
    assert envelope.failed_at("later").first_failure_at == "2026-01-01T00:00:00.000Z"
    assert from_task_arg(to_task_arg(envelope)).first_failure_at == "2026-01-01T00:00:00.000Z"


def test_task_id_is_deterministic() -> None:
    assert Envelope(sample(), "shop", "d").task_id() == "shop:orders:3:41"


@pytest.mark.parametrize(
    ("raw", "fmt", "value"),
    [
        (b'{"a": [1, 2]}', "json", {"a": [1, 2]}),
        ("héllo".encode(), "text", "héllo"),
        (b"\xff\x00", "bytes", b"\xff\x00"),
        (None, "json", None),
    ],
)
def test_decode_value_by_format(raw: bytes | None, fmt: str, value: object) -> None:
    assert decode_value(raw, fmt) == value  # type: ignore[arg-type]


@pytest.mark.parametrize(("raw", "fmt"), [(b"{nope", "json"), (b"\xff", "text"), (b"\xff", "json")])
def test_undecodable_value_raises(raw: bytes, fmt: str) -> None:
    with pytest.raises(UndecodableRecordError, match=f"not valid {fmt}"):
        decode_value(raw, fmt)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "broken",
    [
        {"v": 99},
        {"v": 1, "topic": "t"},
        {**to_task_arg(Envelope(sample(), "g", "d")), "key": "not base64!"},
        # base64 with a foreign character: leniently decoded it would be another key
        {**to_task_arg(Envelope(sample(), "g", "d")), "key": "AGv/\n!"},
        {**to_task_arg(Envelope(sample(), "g", "d")), "value_format": "xml"},
    ],
)
def test_not_an_envelope_raises(broken: dict[str, object]) -> None:
    with pytest.raises(UndecodableRecordError, match="not a bridge record envelope"):
        from_task_arg(broken)


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"v": 99}, "unknown envelope version 99"),
        ({"value_format": "xml"}, "unknown value format 'xml'"),
        ({"partition": None}, "partition is None, not int"),
        ({"offset": True}, "offset is True, not int"),
        ({"first_failure_at": 5}, "first_failure_at is 5, not str"),  # optional, but not any
        ({"retry": "often"}, "retry is 'often', not dict"),
    ],
)
def test_what_is_wrong_with_an_envelope_is_named(change: dict[str, object], why: str) -> None:
    arg = {**to_task_arg(Envelope(sample(), "g", "d")), **change}
    with pytest.raises(UndecodableRecordError) as raised:
        from_task_arg(arg)
    assert str(raised.value) == f"not a bridge record envelope: {why}"


def test_a_missing_field_is_named() -> None:
    arg = to_task_arg(Envelope(sample(), "g", "d"))
    del arg["partition"]
    with pytest.raises(
        UndecodableRecordError, match=r"^not a bridge record envelope: 'partition'$"
    ):
        from_task_arg(arg)


def test_a_header_name_that_is_not_a_string_is_named() -> None:
    arg = {**to_task_arg(Envelope(sample(), "g", "d")), "headers": [[5, "AA=="]]}
    with pytest.raises(
        UndecodableRecordError, match=r"^not a bridge record envelope: header name 5 "
    ):
        from_task_arg(arg)


def test_decoded_decodes_the_value_by_its_format() -> None:
    assert decoded(sample()).value == {"id": 1}
    assert decoded(sample(raw_value=b"[1]", value_format="bytes")).value == b"[1]"


def test_record_accessors() -> None:
    record = sample(key=b"user-1")
    assert record.timestamp == datetime(2023, 11, 14, 22, 13, 20, 123000, tzinfo=UTC)
    assert record.key_text == "user-1"
    assert record.header("trace") == b""
    assert record.header("missing") is None
    three = sample(headers=(("n", b"1"), ("n", b"2"), ("n", b"3")))
    assert three.header("n") == b"3"  # the last of them
    assert repr(record) == "Record(orders[3]@41 key=b'user-1')"


@pytest.mark.parametrize(
    "record",
    [
        sample(),
        sample(key=None, raw_value=None, headers=()),
        sample(topic='odd "topic" \\ é', raw_value=BINARY, value_format="bytes"),
        sample(headers=(('naïve "name"', b"\xff"), ("empty", b""), ("null", None))),
        sample(timestamp_type=TimestampType.LOG_APPEND_TIME),
        sample(timestamp_ms=-1, timestamp_type=TimestampType.NO_TIMESTAMP_TYPE),
    ],
    ids=["plain", "tombstone", "odd-topic", "odd-headers", "log-append-time", "no-timestamp"],
)
@pytest.mark.parametrize(
    ("retry_policy", "on_exhausted"),
    [(None, None), ({"max_retries": 3, "retry_jitter": False}, "park")],
    ids=["defaults", "policy"],
)
def test_arg_writer_gives_what_to_task_arg_gives(
    record: Record, retry_policy: dict[str, float | bool] | None, on_exhausted: str | None
) -> None:
    envelope = Envelope(record, 'g "1"', "orders.g.dlt", None, retry_policy, on_exhausted)
    writer = ArgWriter(group_id='g "1"', dlt_topic="orders.g.dlt",
                       value_format=record.value_format, retry_policy=retry_policy,
                       on_exhausted=on_exhausted)  # fmt: skip
    text = writer.json(record.topic, record.partition, record.offset, record.timestamp_ms,
                       record.key, record.raw_value, record.headers,
                       timestamp_type=record.timestamp_type.id)  # fmt: skip
    assert json.loads(text) == to_task_arg(envelope)
    assert from_task_arg(json.loads(text)) == envelope
    head = text[: text.index(',"topic":')]  # the route's part, written once: compact
    assert (": " in head, ", " in head) == (False, False)


def test_arg_writer_takes_a_record_without_headers() -> None:
    writer = ArgWriter(group_id="g", dlt_topic="d", value_format="json")
    no_headers: list[tuple[str, bytes | None]] = []
    for headers in (None, no_headers):
        text = writer.json("t", 0, 1, 2, None, b"{}", headers, timestamp_type=None)
        assert json.loads(text)["headers"] == []


def test_a_null_header_value_stays_null_not_empty() -> None:
    """kafka-python gives ``None`` for a header value that is null on the wire (a Java
    producer's ``null``); the handler gets ``None`` too, and empty bytes stay empty."""
    writer = ArgWriter(group_id="g", dlt_topic="d", value_format="json")
    text = writer.json("t", 0, 1, 2, b"k", b"{}", [("h", None), ("e", b"")], timestamp_type=0)
    assert json.loads(text)["headers"] == [["h", None], ["e", ""]]
    assert from_task_arg(json.loads(text)).record.headers == (("h", None), ("e", b""))


@pytest.mark.parametrize(
    ("kafka_id", "name"),
    [(0, "CreateTime"), (1, "LogAppendTime"), (-1, "NoTimestampType"), (None, "NoTimestampType")],
)
def test_timestamp_types_are_named_as_java_names_them(kafka_id: int | None, name: str) -> None:
    writer = ArgWriter(group_id="g", dlt_topic="d", value_format="bytes")
    text = writer.json("t", 0, 1, 2, b"k", b"v", [], timestamp_type=kafka_id)
    record = from_task_arg(json.loads(text)).record
    assert record.timestamp_type == name
    assert record.timestamp_type.id == (-1 if kafka_id is None else kafka_id)


def test_an_envelope_from_before_timestamp_types_reads_as_create_time() -> None:
    """Envelopes written by an older bridge (task messages, key FIFOs, parked dead letters in
    Redis) have no ``timestamp_type`` and no null header values."""
    arg = to_task_arg(Envelope(sample(), "g", "d"))
    del arg["timestamp_type"]
    assert from_task_arg(arg).record.timestamp_type == TimestampType.CREATE_TIME
    assert from_task_arg(arg).record == sample()


@pytest.mark.parametrize("bad", [2, "CreateTime", True, 0.0, None])
def test_an_unknown_timestamp_type_is_not_an_envelope(bad: object) -> None:
    arg = {**to_task_arg(Envelope(sample(), "g", "d")), "timestamp_type": bad}
    with pytest.raises(UndecodableRecordError, match="timestamp type"):
        from_task_arg(arg)


@pytest.mark.parametrize(
    "raw",
    [b'{"a": 1}', b"NaN", b'"\\ud800"', b"123456789012345678901234567890", b" [] "],
    ids=["object", "nan", "lone-surrogate", "big-int", "spaces"],
)
def test_check_value_accepts_what_json_loads_accepts(raw: bytes) -> None:
    check_value(raw, "json")
    decode_value(raw, "json")


@pytest.mark.parametrize(
    "raw",
    [b"{", b"\xff", b"[" * 100_000 + b"]" * 100_000, b"\xef\xbb\xbf{}"],
    ids=["truncated", "not-utf8", "nested-too-deep", "bom"],
)
def test_check_value_refuses_what_json_loads_refuses(raw: bytes) -> None:
    with pytest.raises(UndecodableRecordError):
        check_value(raw, "json")
    with pytest.raises(UndecodableRecordError):
        decode_value(raw, "json")


@pytest.mark.parametrize(
    ("origin", "bridge"),
    [
        (message_origin("shop"), True),
        ("kafka-celery-bridge@", True),
        ("gen42@worker-1", False),  # a task sent by Celery itself
        (None, False),
        (b"kafka-celery-bridge@shop", False),
    ],
)
def test_a_bridge_sent_task_message_is_known_by_its_origin(origin: object, bridge: bool) -> None:
    assert is_bridge_origin(origin) is bridge
