import json
import struct

from bridge.deadletter import (
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
from bridge.record import Record


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


def test_spring_encodings() -> None:
    headers = dict(dead_letter_headers(dead_letter()))
    assert headers["kafka_dlt-original-topic"] == b"orders"
    assert headers["kafka_dlt-original-consumer-group"] == b"shop"
    assert headers["kafka_dlt-original-partition"] == b"\x00\x00\x00\x07"
    assert headers["kafka_dlt-original-offset"] == struct.pack(">q", 2**40)
    assert headers["kafka_dlt-original-offset"] == b"\x00\x00\x01\x00\x00\x00\x00\x00"
    assert headers["kafka_dlt-original-timestamp"] == (1_700_000_000_123).to_bytes(8, "big")
    assert headers["kafka_dlt-exception-fqcn"] == b"builtins.TimeoutError"
    assert headers["kafka_dlt-exception-cause-fqcn"] == b"builtins.ConnectionError"
    assert headers["kafka_dlt-exception-message"] == b"payment timed out"
    trace = headers["kafka_dlt-exception-stacktrace"].decode()
    assert "ConnectionError: db down" in trace
    assert trace.rstrip().endswith("TimeoutError: payment timed out")


def test_bridge_headers() -> None:
    headers = dict(dead_letter_headers(dead_letter()))
    assert headers["bridge-reason"] == b"exhausted"
    assert headers["bridge-attempts"] == b"4"
    assert headers["bridge-task"] == b"shop.handle_order"
    assert headers["bridge-task-id"] == b"shop:orders:7:1099511627776"
    assert headers["bridge-first-failure-at"] == b"2026-11-22T10:00:00.000Z"
    assert headers["bridge-dead-lettered-at"] == b"2026-11-22T10:00:07.000Z"


def test_no_cause_header_without_a_cause() -> None:
    headers = dict(dead_letter_headers(dead_letter(error=ErrorInfo.of(ValueError("x")))))
    assert "kafka_dlt-exception-cause-fqcn" not in headers


def test_error_info_round_trips_through_json_form() -> None:
    info = ErrorInfo.of(failing())
    assert ErrorInfo.from_dict(info.to_dict()) == info


def test_fqcn_and_timestamp_format() -> None:
    assert fqcn(KeyError()) == "builtins.KeyError"
    assert fqcn(UndecodableRecordError("x")) == "bridge.errors.UndecodableRecordError"
    stamp = utc_now_iso()
    assert stamp.endswith("Z")
    assert len(stamp) == len("2026-11-22T10:00:07.000Z")


def test_dead_letter_round_trips_through_its_redis_form() -> None:
    dl = dead_letter()
    data = json.loads(json.dumps(to_dict(dl, write_attempts=2)))
    assert data["write_attempts"] == 2
    assert from_dict(data) == dl
