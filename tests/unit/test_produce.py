"""bridge.produce without services: argument encoding, error classification, backoff, config."""

from __future__ import annotations

import base64
import json
import threading
from typing import Any

import pytest
from kafka.errors import (
    BrokerNotAvailableError,
    ClusterAuthorizationFailedError,
    CorruptRecordError,
    InvalidRecordError,
    KafkaConnectionError,
    KafkaError,
    KafkaTimeoutError,
    LeaderNotAvailableError,
    MessageSizeTooLargeError,
    NetworkExceptionError,
    NotEnoughReplicasAfterAppendError,
    NotEnoughReplicasError,
    NotLeaderForPartitionError,
    RecordListTooLargeError,
    RequestTimedOutError,
    SaslAuthenticationFailedError,
    TopicAuthorizationFailedError,
    UnknownTopicOrPartitionError,
)
from pydantic import ValidationError

from bridge import payload
from bridge.backends.kafka.send import (
    Outgoing,
    RetryingSender,
    close_producer,
    is_retryable,
    retry_delays_ms,
)
from bridge.errors import ProduceRefusedError
from bridge.settings import BridgeSettings, KafkaSettings, ProduceSettings, SendRetrySettings
from bridge.worker.producer import Produced, Producer

RETRYABLE = [
    LeaderNotAvailableError(),
    NotEnoughReplicasError(),
    NotEnoughReplicasAfterAppendError(),
    NotLeaderForPartitionError(),
    RequestTimedOutError(),
    BrokerNotAvailableError(),
    KafkaConnectionError("connection refused"),
    NetworkExceptionError(),
    KafkaTimeoutError("Failed to update metadata after 10.0 secs."),
]
NON_RETRYABLE = [
    MessageSizeTooLargeError("The message is 2000000 bytes when serialized"),
    RecordListTooLargeError(),
    InvalidRecordError(),
    CorruptRecordError(),
    TopicAuthorizationFailedError(),
    ClusterAuthorizationFailedError(),
    SaslAuthenticationFailedError(),
    ValueError("not a Kafka error"),
]


@pytest.mark.parametrize("exc", RETRYABLE, ids=lambda e: type(e).__name__)
def test_retryable_kafka_errors(exc: KafkaError) -> None:
    assert is_retryable(exc)
    assert is_retryable(exc, missing_topic_is_final=True)


@pytest.mark.parametrize("exc", NON_RETRYABLE, ids=lambda e: type(e).__name__)
def test_non_retryable_errors(exc: Exception) -> None:
    assert not is_retryable(exc)
    assert not is_retryable(exc, missing_topic_is_final=True)


def test_unknown_topic_is_final_only_where_topics_are_not_created() -> None:
    exc = UnknownTopicOrPartitionError("topic 'nope'")
    assert not is_retryable(exc, missing_topic_is_final=True)  # bridge.produce
    assert is_retryable(exc)  # the dead-letter producer: a DLT may be created meanwhile


def test_default_backoff_is_100_ms_doubling_capped_at_1_s() -> None:
    assert retry_delays_ms(ProduceSettings()) == [100, 200, 400]
    policy = ProduceSettings(retries=6, retry_backoff_ms=100, retry_backoff_max_ms=1000)
    assert retry_delays_ms(policy) == [100, 200, 400, 800, 1000, 1000]
    assert retry_delays_ms(ProduceSettings(retries=0)) == []


def test_produce_section_defaults_and_validation() -> None:
    base = {
        "kafka": {"bootstrap_servers": "b:9092", "group_id": "g"},
        "celery": {"broker_url": "redis://r/0"},
        "routes": [{"topic": "t", "task": "x"}],
    }
    conf = BridgeSettings.model_validate(base)
    assert conf.produce == ProduceSettings(
        retries=3, retry_backoff_ms=100, retry_backoff_max_ms=1000, delivery_timeout_ms=10_000
    )
    with pytest.raises(ValidationError, match=r"produce\.retries"):
        BridgeSettings.model_validate({**base, "produce": {"retries": -1}})
    with pytest.raises(ValidationError, match=r"produce\.retry_backof_ms"):
        BridgeSettings.model_validate({**base, "produce": {"retry_backof_ms": 5}})


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (b"\x00\xffraw", b"\x00\xffraw"),
        (bytearray(b"ab"), b"ab"),
        ("héllo", "héllo".encode()),
        ({"id": 1, "name": "é"}, '{"id":1,"name":"é"}'.encode()),
        ([1, "a", None], b'[1,"a",null]'),
        (None, None),
    ],
)
def test_values_to_bytes(value: Any, expected: bytes | None) -> None:
    assert payload.to_bytes(value) == expected


@pytest.mark.parametrize(
    ("value", "error", "match"),
    [
        (3, TypeError, "value must be bytes, str, dict, list or None, not int"),
        ({"x": {1, 2}}, ValueError, "value cannot be encoded as JSON"),
        ([float("nan")], ValueError, "value cannot be encoded as JSON"),
    ],
)
def test_values_that_cannot_be_encoded(value: Any, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        payload.to_bytes(value)


def test_headers_from_pairs_or_mapping_keep_order_and_bytes() -> None:
    pairs = [("a", b"\x00"), ("b", "é"), ("a", b"again")]
    assert payload.header_list(pairs) == [("a", b"\x00"), ("b", "é".encode()), ("a", b"again")]
    assert payload.header_list({"x": "1", "y": b"2"}) == [("x", b"1"), ("y", b"2")]
    assert payload.header_list(None) == []


@pytest.mark.parametrize(
    "headers", ["a=1", [("a",)], [(1, b"x")], [("a", 1)], 5], ids=lambda h: repr(h)
)
def test_bad_headers(headers: Any) -> None:
    with pytest.raises(TypeError):
        payload.header_list(headers)


@pytest.mark.parametrize(
    "value", [b"\x00\x01\xfe", "text é", {"a": [1, 2]}, [1], None], ids=lambda v: repr(v)
)
def test_task_args_round_trip_and_stay_json(value: payload.Value) -> None:
    arg = json.loads(json.dumps(payload.to_task_arg(value)))  # what the task message carries
    assert payload.from_task_arg(arg) == payload.to_bytes(value)


def test_task_arg_forms() -> None:
    assert payload.to_task_arg(b"\x00\x01") == {"b64": base64.b64encode(b"\x00\x01").decode()}
    assert payload.from_task_arg({"b64": "AAE="}) == b"\x00\x01"
    assert payload.from_task_arg({"json": {"a": 1}}) == b'{"a":1}'
    assert payload.from_task_arg("é") == "é".encode()


@pytest.mark.parametrize(
    ("arg", "match"),
    [
        ({"b64": "not base64!"}, "key: invalid base64"),
        ({"b64": "AA==", "extra": 1}, "key must be a string"),
        ({"order": 1}, "key must be a string"),
        (12, "key must be a string"),
    ],
)
def test_bad_task_args_name_the_argument(arg: Any, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        payload.from_task_arg(arg, what="key")


def test_task_headers_round_trip() -> None:
    headers: list[tuple[str, bytes | str]] = [("trace", b"\x00\xff"), ("source", "shop")]
    arg = payload.headers_to_task_arg(headers)
    assert arg == [["trace", {"b64": "AP8="}], ["source", "shop"]]
    assert payload.headers_from_task_arg(arg) == [("trace", b"\x00\xff"), ("source", b"shop")]
    assert payload.headers_from_task_arg({"a": "1"}) == [("a", b"1")]


@pytest.mark.parametrize("arg", ["a", [["a"]], [[1, "x"]], [["a", None]], [["a", 3]]])
def test_bad_task_headers(arg: Any) -> None:
    with pytest.raises(ValueError, match="header"):
        payload.headers_from_task_arg(arg)


def offline_producer() -> Producer:
    """A producer whose broker does not exist: only paths that never reach Kafka may run."""
    kafka = KafkaSettings(bootstrap_servers="127.0.0.1:1", group_id="unit")
    return Producer(kafka, ProduceSettings())


def test_a_value_that_cannot_be_encoded_is_refused_before_kafka_and_counted() -> None:
    producer = offline_producer()
    with pytest.raises(ProduceRefusedError, match=r"record for 'orders' refused: value must be"):
        producer.produce("orders", 3.5)  # type: ignore[arg-type]
    assert producer.stats().errors == {"SerializationError": 1}
    assert producer.stats().retries == {}


def test_unknown_per_call_options_and_bad_values_are_named() -> None:
    producer = offline_producer()
    with pytest.raises(TypeError, match=r"unknown per-call option\(s\) \['delivery_timeout_ms'\]"):
        producer.produce("orders", b"v", delivery_timeout_ms=5)
    with pytest.raises(ValidationError, match="retries"):
        producer.produce("orders", b"v", retries=-1)


def test_async_failure_goes_to_on_error_and_the_future() -> None:
    producer = offline_producer()
    errors: list[BaseException] = []
    called = threading.Event()

    def on_error(exc: BaseException) -> None:
        errors.append(exc)
        called.set()

    future = producer.produce_async("orders", object(), on_error=on_error)  # type: ignore[arg-type]
    assert isinstance(future.exception(timeout=10), ProduceRefusedError)
    assert called.wait(10)
    assert errors == [future.exception()]
    producer.close()


def test_produced_as_task_result() -> None:
    assert Produced("t", 1, 42).to_dict() == {"topic": "t", "partition": 1, "offset": 42}


class PendingSends:
    """A producer whose ``close`` gives up in its flush, as kafka-python's does."""

    def __init__(self) -> None:
        self._closed = False
        self._sender = self
        self.forced = False

    def close(self, timeout: float) -> None:
        raise KafkaTimeoutError("Timeout waiting for future")

    def force_close(self) -> None:
        self.forced = True


def test_a_producer_with_sends_pending_is_closed_for_good() -> None:
    producer: Any = PendingSends()
    close_producer(producer, timeout_s=0)
    assert producer.forced
    assert producer._closed  # its __del__ does not try (and raise) again


class Unanswered(PendingSends):
    """A producer that answers no send (kafka-python's, wedged after a broker restart): the
    wait for each send times out with the send still pending."""

    made: list[Unanswered] = []  # every instance, in order
    is_done = False

    def __init__(self, **configs: Any) -> None:
        super().__init__()
        Unanswered.made.append(self)

    def send(self, topic: str, **record: Any) -> Unanswered:
        return self

    def get(self, timeout: float) -> None:
        raise KafkaTimeoutError(f"Timeout after waiting for {timeout} secs.")


class WithoutMetadata(Unanswered):
    """A producer that never finds metadata again (kafka-python's, after a broker restart):
    each send fails once ``max_block_ms`` has passed."""

    def send(self, topic: str, **record: Any) -> Unanswered:
        raise KafkaTimeoutError("Failed to update metadata after 5.0 secs.")


@pytest.mark.parametrize(
    ("wedged", "error"),
    [(Unanswered, "Timeout after waiting"), (WithoutMetadata, "metadata")],
    ids=["answers-no-send", "finds-no-metadata"],
)
def test_a_producer_that_times_out_is_replaced(
    monkeypatch: pytest.MonkeyPatch, wedged: type[Unanswered], error: str
) -> None:
    monkeypatch.setattr("bridge.backends.kafka.send.KafkaProducer", wedged)
    Unanswered.made.clear()
    kafka = KafkaSettings(bootstrap_servers="127.0.0.1:1", group_id="unit")
    policy = SendRetrySettings(retries=2, retry_backoff_ms=1, retry_backoff_max_ms=1)
    sender = RetryingSender(kafka, policy, client_suffix="unit")
    with pytest.raises(KafkaTimeoutError, match=error):
        sender.send(Outgoing("t", b"v", key=b"k"))
    assert len(Unanswered.made) == 3  # one per attempt: each timed-out one was dropped
    assert all(producer.forced and producer._closed for producer in Unanswered.made)
