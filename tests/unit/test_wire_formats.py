"""What the bridge writes for other programs and other versions to read, pinned byte for byte
(issue 17, step 1): dead-letter headers (Spring Kafka's tooling reads them), the record envelope
a task message carries (workers of another version read it), and what waits in Redis (dead
letters, key FIFO elements, parked keys: they outlive an upgrade). A rename or a re-encoding
fails here; behaviour is tested elsewhere.

The task message around the envelope (Celery's headers and properties) needs a Redis channel to
build: tests/integration/test_task_message_format.py pins it.
"""

from __future__ import annotations

import json
from typing import Any

from bridge.backends.redis import ordering
from bridge.deadletter import DeadLetter, ErrorInfo, dead_letter_headers, from_dict, to_dict
from bridge.failures import Reason
from bridge.ops.replay_headers import Origin, replayed_headers
from bridge.ops.replay_plan import replay_task_id
from bridge.record import (
    ArgWriter,
    Envelope,
    Record,
    TimestampType,
    from_task_arg,
    message_origin,
    record_repr,
    task_argsrepr,
    task_id,
    to_task_arg,
)
from bridge.routing import Router
from bridge.settings import BridgeSettings

RECORD = Record(
    topic="orders",
    partition=7,
    offset=2**40,
    timestamp_ms=1_700_000_000_123,
    key=b"k\xff",
    raw_value=b'{"id": 1}',
    headers=(("trace", b"\xff\x00"), ("null", None)),
    value_format="json",
    timestamp_type=TimestampType.LOG_APPEND_TIME,
)
ERROR = ErrorInfo(
    fqcn="shop.errors.PaymentError",
    message="caf\u00e9 \udcff",  # a lone surrogate, as bytes decoded with surrogateescape give
    stacktrace="Traceback (most recent call last):\nshop.errors.PaymentError: caf\u00e9\n",
)
DEAD_LETTER = DeadLetter(
    record=RECORD,
    group_id="shop",
    dlt_topic="orders.shop.dlt",
    reason=Reason.NON_RETRYABLE,
    error=ERROR,
    attempts=3,
    task="shop.handle_order",
    task_id="shop:orders:7:1099511627776",
    first_failure_at="2026-11-22T10:00:00.000Z",
    dead_lettered_at="2026-11-22T10:00:07.250Z",
    ordered=True,
)

# -- dead-letter records -----------------------------------------------------------------------

DEAD_LETTER_HEADERS = [
    # the record's own headers first, byte-exact, a null value kept null
    ("trace", b"\xff\x00"),
    ("null", None),
    # Spring Kafka's DeadLetterPublishingRecoverer headers, with its encodings
    ("kafka_dlt-original-topic", b"orders"),
    ("kafka_dlt-original-consumer-group", b"shop"),
    ("kafka_dlt-original-partition", b"\x00\x00\x00\x07"),  # 4-byte big-endian int
    ("kafka_dlt-original-offset", b"\x00\x00\x01\x00\x00\x00\x00\x00"),  # 8-byte long: 2**40
    ("kafka_dlt-original-timestamp", b"\x00\x00\x01\x8b\xcf\xe5\x68\x7b"),  # 1700000000123
    ("kafka_dlt-original-timestamp-type", b"LogAppendTime"),
    ("kafka_dlt-exception-fqcn", b"shop.errors.PaymentError"),
    ("kafka_dlt-exception-cause-fqcn", b"shop.errors.PaymentError"),
    ("kafka_dlt-exception-message", b"caf\xc3\xa9 \\udcff"),  # UTF-8, a surrogate escaped
    ("kafka_dlt-exception-stacktrace",
     b"Traceback (most recent call last):\nshop.errors.PaymentError: caf\xc3\xa9\n"),
    # ours, UTF-8
    ("bridge-reason", b"non-retryable"),
    ("bridge-attempts", b"3"),
    ("bridge-task", b"shop.handle_order"),
    ("bridge-task-id", b"shop:orders:7:1099511627776"),
    ("bridge-first-failure-at", b"2026-11-22T10:00:00.000Z"),
    ("bridge-dead-lettered-at", b"2026-11-22T10:00:07.250Z"),
]  # fmt: skip


def test_dead_letter_headers_byte_for_byte() -> None:
    found = dead_letter_headers(DEAD_LETTER)
    assert [name for name, _ in found] == [name for name, _ in DEAD_LETTER_HEADERS], "names"
    for (name, value), (_, expected) in zip(found, DEAD_LETTER_HEADERS, strict=True):
        assert value == expected, f"header {name}"


def test_the_dead_letter_reasons() -> None:
    assert [str(reason) for reason in Reason] == [
        "exhausted", "non-retryable", "undecodable", "unroutable",
    ]  # fmt: skip


def test_the_timestamp_type_names() -> None:
    assert {t.id: str(t) for t in TimestampType} == {
        -1: "NoTimestampType", 0: "CreateTime", 1: "LogAppendTime",
    }  # fmt: skip


# -- the record envelope: a task's argument ----------------------------------------------------

ENVELOPE = {
    "v": 1,
    "group_id": "shop",
    "dlt_topic": "orders.shop.dlt",
    "topic": "orders",
    "partition": 7,
    "offset": 1099511627776,
    "timestamp_ms": 1700000000123,
    "timestamp_type": 1,
    "key": "a/8=",  # standard base64, bytes exact
    "value": "eyJpZCI6IDF9",  # the raw value, never the decoded one
    "headers": [["trace", "/wA="], ["null", None]],
    "value_format": "json",
}
RETRY_POLICY: dict[str, float | bool] = {
    "max_retries": 5,
    "retry_backoff": 2,
    "retry_backoff_max": 600,
    "retry_jitter": True,
}
# Optional fields, present only when set: the first failure, the route's retry defaults, an
# ordered route's exhausted-head policy, the flood breaker's window.
FULL_ENVELOPE = {
    **ENVELOPE,
    "first_failure_at": "2026-11-22T10:00:00.000Z",
    "retry": RETRY_POLICY,
    "ordered": "park",
    "breaker": 60,
}


def envelope(**changes: Any) -> Envelope:
    return Envelope(RECORD, "shop", "orders.shop.dlt", **changes)


def test_the_envelope_of_a_record() -> None:
    assert to_task_arg(envelope()) == ENVELOPE


def test_the_envelope_with_every_optional_field() -> None:
    full = envelope(
        first_failure_at="2026-11-22T10:00:00.000Z",
        retry_policy=RETRY_POLICY,
        on_exhausted="park",
        breaker_window_s=60,
    )
    assert to_task_arg(full) == FULL_ENVELOPE
    assert from_task_arg(FULL_ENVELOPE) == full


def test_the_envelope_as_the_poll_loop_writes_it() -> None:
    writer = ArgWriter(
        group_id="shop",
        dlt_topic="orders.shop.dlt",
        value_format="json",
        retry_policy=RETRY_POLICY,
        on_exhausted="park",
        breaker_window_s=60,
    )
    arg = writer.json(
        "orders", 7, 2**40, 1_700_000_000_123, b"k\xff", b'{"id": 1}',
        [("trace", b"\xff\x00"), ("null", None)], timestamp_type=1,
    )  # fmt: skip
    # The poll loop's hot path writes the JSON text itself: the object to_task_arg gives
    # (without first_failure_at, which only a retry adds).
    assert json.loads(arg) == {k: v for k, v in FULL_ENVELOPE.items() if k != "first_failure_at"}


def test_an_envelope_of_an_older_version_without_a_timestamp_type_reads_as_create_time() -> None:
    older = {k: v for k, v in ENVELOPE.items() if k != "timestamp_type"}
    assert from_task_arg(older).record.timestamp_type == TimestampType.CREATE_TIME


def test_the_retry_defaults_a_route_puts_in_its_envelopes() -> None:
    settings = BridgeSettings.model_validate({
        "kafka": {"bootstrap_servers": "127.0.0.1:9092", "group_id": "shop"},
        "celery": {"broker_url": "redis://127.0.0.1:6379/0"},
        "routes": [
            {"topic": "orders", "task": "shop.o", "max_retries": 5, "retry_backoff_s": 2,
             "retry_backoff_max_s": 600, "retry_jitter": True},
            {"topic": "mails", "task": "shop.m", "retry_interval_s": 1.5},
            {"topic": "plain", "task": "shop.p"},
        ],
    })  # fmt: skip
    router = Router.from_settings(settings)
    assert router.route_for("orders").retry_policy == RETRY_POLICY
    assert router.route_for("mails").retry_policy == {"retry_interval": 1.5}
    assert router.route_for("plain").retry_policy is None
    assert router.route_for("plain").dlt_topic == "plain.shop.dlt"


IDS = [  # what names a record's task, and how it shows
    ("task id", task_id("shop", "orders", 7, 5), "shop:orders:7:5"),
    ("replay's task id", replay_task_id("shop", Origin("orders", 7, 5, 0, "shop"), 2),
     "shop:orders:7:5:replay:2"),
    ("origin header", message_origin("shop"), "kafka-celery-bridge@shop"),
    ("log repr", record_repr("orders", 7, 5, b"k"), "Record(orders[7]@5 key=b'k')"),
    ("log repr, no key", record_repr("orders", 7, 5, None), "Record(orders[7]@5 key=None)"),
    ("argsrepr", task_argsrepr("orders", 7, 5, b"k", b'{"n": 1}', 64),
     "Record(orders[7]@5 key=b'k' value=b'{\"n\": 1}')"),
    ("argsrepr, cut", task_argsrepr("orders", 7, 5, b"k", b"abcdef", 3),
     "Record(orders[7]@5 key=b'k' value=b'abc'\u2026 (6 bytes))"),
    ("argsrepr, no value shown", task_argsrepr("orders", 7, 5, b"k", b"secret", 0),
     "Record(orders[7]@5 key=b'k')"),
    ("argsrepr, null value", task_argsrepr("orders", 7, 5, None, None, 64),
     "Record(orders[7]@5 key=None value=None)"),
    ("Record repr", repr(RECORD), "Record(orders[7]@1099511627776 key=b'k\\xff')"),
]  # fmt: skip


def test_task_ids_and_reprs() -> None:
    drifted = [(what, found, expected) for what, found, expected in IDS if found != expected]
    assert not drifted, drifted


def test_a_replayed_record_counts_its_replays_in_one_last_header() -> None:
    original = (("a", b"1"), ("bridge-replays", b"1"), ("b", None))
    assert replayed_headers(original, 2) == (("a", b"1"), ("b", None), ("bridge-replays", b"2"))


# -- what waits in Redis -----------------------------------------------------------------------

STORED_DEAD_LETTER = {  # pending or parked dead letters (bridge.keys.*_dead_letters)
    "envelope": {**ENVELOPE, "ordered": "dead-letter"},
    "reason": "non-retryable",
    "error": {
        "fqcn": "shop.errors.PaymentError",
        "message": "caf\u00e9 \udcff",
        "stacktrace": "Traceback (most recent call last):\nshop.errors.PaymentError: caf\u00e9\n",
    },
    "attempts": 3,
    "task": "shop.handle_order",
    "task_id": "shop:orders:7:1099511627776",
    "first_failure_at": "2026-11-22T10:00:00.000Z",
    "dead_lettered_at": "2026-11-22T10:00:07.250Z",
    "write_attempts": 2,
}


def test_a_dead_letter_as_redis_keeps_it() -> None:
    stored = to_dict(DEAD_LETTER, write_attempts=2)
    assert stored == STORED_DEAD_LETTER
    assert from_dict(json.loads(json.dumps(stored))) == DEAD_LETTER


def test_a_key_fifo_element() -> None:
    """``task_id \\0 appended_ms \\0 queue \\0 task message`` (the Lua scripts split it)."""
    element = ordering.element("shop:orders:7:5", 1_700_000_000_000, "celery", b'{"body": 1}')
    assert element == b'shop:orders:7:5\x001700000000000\x00celery\x00{"body": 1}'


def test_why_a_key_is_parked() -> None:
    why = ordering.parked_why("shop:orders:7:5", "exhausted", ERROR.to_dict(), 4, 1_700_000_000_000)
    assert why == {
        "task_id": "shop:orders:7:5",
        "reason": "exhausted",
        "error": STORED_DEAD_LETTER["error"],
        "attempts": 4,
        "parked_at_ms": 1_700_000_000_000,
    }
