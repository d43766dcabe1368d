import json
import struct
from dataclasses import replace

import pytest

from bridge.deadletter import (
    FAILURE_HEADERS,
    DeadLetter,
    ErrorInfo,
    dead_letter_headers,
    fqcn,
    from_dict,
    to_dict,
    utc_now_iso,
)
from bridge.errors import UndecodableRecordError
from bridge.failures import Reason
from bridge.record import Record, TimestampType


def failing() -> Exception:
    try:
        try:
            raise ConnectionError("db down")
        except ConnectionError as cause:
            raise TimeoutError("payment timed out") from cause
    except TimeoutError as exc:
        return exc


def dead_letter(**changes: object) -> DeadLetter:
    record = Record(
        "orders", 7, 2**40, 1_700_000_000_123, b"k", b"v", (("orig", b"\xff\x00"),), "bytes"
    )
    fields: dict[str, object] = {
        "record": record,
        "group_id": "shop",
        "dlt_topic": "orders.shop.dlt",
        "reason": Reason.EXHAUSTED,
        "error": ErrorInfo.of(failing()),
        "attempts": 4,
        "task": "shop.handle_order",
        "task_id": "shop:orders:7:1099511627776",
        "first_failure_at": "2026-11-22T10:00:00.000Z",
        "dead_lettered_at": "2026-11-22T10:00:07.000Z",
    }
    fields.update(changes)
    return DeadLetter(**fields)  # type: ignore[arg-type]


def test_original_headers_come_first_and_byte_exact() -> None:
    headers = dead_letter_headers(dead_letter())
    assert headers[0] == ("orig", b"\xff\x00")


SPRING_LISTENER_FAILURE_HEADERS = {  # DeadLetterRecordManager, spring-kafka 3.x and 4.x
    "kafka_dlt-original-topic",
    "kafka_dlt-original-partition",
    "kafka_dlt-original-offset",
    "kafka_dlt-original-timestamp",
    "kafka_dlt-original-timestamp-type",
    "kafka_dlt-original-consumer-group",
    "kafka_dlt-exception-fqcn",
    "kafka_dlt-exception-cause-fqcn",
    "kafka_dlt-exception-message",
    "kafka_dlt-exception-stacktrace",
}


def texts(dl: DeadLetter) -> dict[str, str]:
    """The dead-letter headers as text (the last value of each)."""
    return {n: (v or b"").decode(errors="replace") for n, v in dead_letter_headers(dl)}


def test_spring_encodings() -> None:
    headers = dict(dead_letter_headers(dead_letter()))
    assert {n for n in headers if n.startswith("kafka_dlt-")} == SPRING_LISTENER_FAILURE_HEADERS
    assert headers["kafka_dlt-original-topic"] == b"orders"
    assert headers["kafka_dlt-original-consumer-group"] == b"shop"
    assert headers["kafka_dlt-original-partition"] == b"\x00\x00\x00\x07"
    assert headers["kafka_dlt-original-offset"] == struct.pack(">q", 2**40)
    assert headers["kafka_dlt-original-offset"] == b"\x00\x00\x01\x00\x00\x00\x00\x00"
    assert headers["kafka_dlt-original-timestamp"] == (1_700_000_000_123).to_bytes(8, "big")
    assert headers["kafka_dlt-original-timestamp-type"] == b"CreateTime"
    assert headers["kafka_dlt-exception-fqcn"] == b"builtins.TimeoutError"
    assert headers["kafka_dlt-exception-message"] == b"payment timed out"
    trace = texts(dead_letter())["kafka_dlt-exception-stacktrace"]
    assert "ConnectionError: db down" in trace
    assert trace.rstrip().endswith("TimeoutError: payment timed out")


def test_the_cause_header_names_the_exception_raised_as_spring_does() -> None:
    """Spring names the listener's own exception, found by unwrapping its own wrapper, never
    that exception's cause; the bridge wraps nothing: both headers name what was raised."""
    chained = texts(dead_letter())
    assert chained["kafka_dlt-exception-cause-fqcn"] == "builtins.TimeoutError"
    bare = texts(dead_letter(error=ErrorInfo.of(ValueError("x"))))
    assert bare["kafka_dlt-exception-fqcn"] == "builtins.ValueError"
    assert bare["kafka_dlt-exception-cause-fqcn"] == "builtins.ValueError"


def test_an_exception_without_a_message_still_has_the_message_header() -> None:
    headers = dict(dead_letter_headers(dead_letter(error=ErrorInfo.of(KeyError()))))
    assert headers["kafka_dlt-exception-message"] == b""


@pytest.mark.parametrize("kind", list(TimestampType))
def test_the_timestamp_type_is_named_as_java_names_it(kind: TimestampType) -> None:
    record = replace(dead_letter().record, timestamp_type=kind)
    written = texts(dead_letter(record=record))["kafka_dlt-original-timestamp-type"]
    assert written == {-1: "NoTimestampType", 0: "CreateTime", 1: "LogAppendTime"}[kind.id]


def test_a_null_header_value_stays_null_in_the_headers() -> None:
    record = replace(dead_letter().record, headers=(("n", None), ("e", b"")))
    assert dead_letter_headers(dead_letter(record=record))[:2] == [("n", None), ("e", b"")]


def test_dead_lettered_again_replaces_the_failure_and_appends_the_origin() -> None:
    """Spring's defaults for a record that comes with dead-letter headers already:
    ``stripPreviousExceptionHeaders`` and ``appendOriginalHeaders``."""
    first = dead_letter_headers(dead_letter())
    again = replace(dead_letter().record, topic="orders.retry", offset=5, headers=tuple(first))
    error = ErrorInfo.of(ValueError("second"))
    headers = dead_letter_headers(dead_letter(record=again, error=error, attempts=1))
    names = [name for name, _ in headers]
    for name in FAILURE_HEADERS:
        assert names.count(name) == 1, name
    assert [v for n, v in headers if n == "kafka_dlt-original-topic"] == [
        b"orders",
        b"orders.retry",
    ]
    assert [v for n, v in headers if n == "kafka_dlt-original-offset"] == [
        struct.pack(">q", 2**40), struct.pack(">q", 5),
    ]  # fmt: skip
    last = texts(dead_letter(record=again, error=error, attempts=1))
    assert last["kafka_dlt-exception-message"] == "second"
    assert last["bridge-attempts"] == "1"
    assert headers[0] == ("orig", b"\xff\x00")


def test_bridge_headers() -> None:
    headers = dict(dead_letter_headers(dead_letter()))
    assert headers["bridge-reason"] == b"exhausted"
    assert headers["bridge-attempts"] == b"4"
    assert headers["bridge-task"] == b"shop.handle_order"
    assert headers["bridge-task-id"] == b"shop:orders:7:1099511627776"
    assert headers["bridge-first-failure-at"] == b"2026-11-22T10:00:00.000Z"
    assert headers["bridge-dead-lettered-at"] == b"2026-11-22T10:00:07.000Z"


def test_the_stack_trace_is_the_whole_chain_as_python_prints_it() -> None:
    trace = ErrorInfo.of(failing()).stacktrace
    assert trace.startswith("Traceback (most recent call last):\n")
    assert "ConnectionError: db down\n\nThe above exception was the direct cause" in trace
    assert trace.endswith("TimeoutError: payment timed out\n")


def test_a_record_without_a_timestamp_keeps_kafkas_minus_one() -> None:
    record = replace(dead_letter().record, timestamp_ms=-1)
    headers = dict(dead_letter_headers(dead_letter(record=record)))
    assert headers["kafka_dlt-original-timestamp"] == b"\xff" * 8


def test_error_info_round_trips_through_json_form() -> None:
    info = ErrorInfo.of(failing())
    assert ErrorInfo.from_dict(info.to_dict()) == info
    older = {**info.to_dict(), "cause_fqcn": "builtins.ConnectionError"}  # pending in Redis
    assert ErrorInfo.from_dict(older) == info


def test_fqcn_and_timestamp_format() -> None:
    assert fqcn(KeyError()) == "builtins.KeyError"
    assert fqcn(UndecodableRecordError("x")) == "bridge.errors.UndecodableRecordError"
    stamp = utc_now_iso()
    assert stamp.endswith("Z")
    assert len(stamp) == len("2026-11-22T10:00:07.000Z")


def test_dead_letter_round_trips_through_its_redis_form() -> None:
    dl = dead_letter()
    assert to_dict(dl)["write_attempts"] == 0  # not yet tried
    data = json.loads(json.dumps(to_dict(dl, write_attempts=2)))
    assert data["write_attempts"] == 2
    assert from_dict(data) == dl


def test_an_ordered_dead_letter_stays_ordered_through_its_redis_form() -> None:
    dl = dead_letter(ordered=True)
    data = json.loads(json.dumps(to_dict(dl)))
    assert from_dict(data).ordered is True
    assert from_dict(json.loads(json.dumps(to_dict(dead_letter())))).ordered is False
