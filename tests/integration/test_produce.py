"""bridge.produce against the real broker: writes, retries across a Kafka restart, refusals,
the async form and the ``bridge.produce`` Celery task.

The restart test stops Kafka: run it under the exclusive lock
(``flock -x /tmp/kcb-services.lock .venv/bin/pytest tests/integration/test_produce.py``).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kafka.errors
import pytest
from celery import Celery
from kafka import KafkaAdminClient
from kafka.admin import NewTopic
from kafka.errors import MessageSizeTooLargeError, UnknownTopicOrPartitionError
from prometheus_client import REGISTRY

from bridge.backends.kafka.send import is_retryable
from bridge.errors import ProduceRefusedError
from bridge.payload import headers_to_task_arg, to_task_arg
from bridge.settings import KafkaSettings, ProduceSettings
from bridge.worker.producer import Produced, Producer
from tests.conftest import BOOTSTRAP, wait_for
from tests.integration.conftest import BROKER_URL, end_offsets, read_all, start_worker
from tests.integration.helpers import MakeTopic, free_port, headers_of, scrape, services

KAFKA = KafkaSettings(bootstrap_servers=BOOTSTRAP, group_id="tests-produce")
FAST = ProduceSettings(retry_backoff_ms=10, retry_backoff_max_ms=50)
# Three retries of up to 10 s each: far longer than any refusal may take.
RETRY_WINDOW_S = 3 * FAST.delivery_timeout_ms / 1000


@pytest.fixture
def producer() -> Iterator[Producer]:
    client = Producer(KAFKA, FAST)
    yield client
    client.close()


def metric(name: str, error: str | None = None) -> float:
    labels = {} if error is None else {"error": error}
    return REGISTRY.get_sample_value(name, labels) or 0.0


def the_only_record(topic: str) -> Any:
    [record] = read_all(topic, expected=1)
    assert sum(end_offsets(topic).values()) == 1
    return record


def test_produce_returns_partition_and_offset_of_the_byte_exact_record(
    make_topic: MakeTopic, producer: Producer
) -> None:
    topic = make_topic(partitions=3)
    value, key = b"\x00\xff binary \xfe", b"\x01key"
    headers: list[tuple[str, bytes | str]] = [
        ("trace", b"\x00\x01"),
        ("source", "shop"),
        ("trace", b"again"),
    ]
    records_before = metric("bridge_produce_records_total")

    produced = producer.produce(topic.name, value, key=key, headers=headers)

    record = the_only_record(topic.name)
    assert produced == Produced(topic.name, record.partition, record.offset)
    assert (record.key, record.value) == (key, value)
    assert record.headers == [("trace", b"\x00\x01"), ("source", b"shop"), ("trace", b"again")]
    assert producer.stats().records == 1
    assert metric("bridge_produce_records_total") == records_before + 1


def test_str_and_json_values_are_encoded_utf8(make_topic: MakeTopic, producer: Producer) -> None:
    topic = make_topic()
    producer.produce(topic.name, "héllo", key="clé")
    producer.produce(topic.name, {"id": "o-1", "amount": 10}, headers={"kind": "order"})
    first, second = read_all(topic.name, expected=2)
    assert (first.key, first.value) == ("clé".encode(), "héllo".encode())
    assert second.value == b'{"id":"o-1","amount":10}'
    assert headers_of(second) == {"kind": b"order"}


# 2 s per attempt and up to 40 retries: a window of ~2 minutes for Kafka to come back.
OUTAGE_POLICY = ProduceSettings(
    retries=40, retry_backoff_ms=100, retry_backoff_max_ms=1000, delivery_timeout_ms=2000
)


def test_a_kafka_restart_within_the_retries_writes_the_record_exactly_once(
    make_topic: MakeTopic, kafka_restarted: object
) -> None:
    topic = make_topic()
    producer = Producer(KAFKA, OUTAGE_POLICY)
    try:
        producer.produce(topic.name, b"before", key=b"k")  # connected, topic metadata known
        produced = produce_across_a_kafka_restart(producer, topic.name, b"during the outage")
    finally:
        producer.close()

    assert produced == Produced(topic.name, 0, 1)
    records = read_all(topic.name, expected=2)
    assert [(r.offset, r.value) for r in records] == [(0, b"before"), (1, b"during the outage")]
    assert end_offsets(topic.name) == {0: 2}  # exactly once: nothing after it
    assert_only_retried_while_down(producer)


def test_a_new_producer_while_kafka_is_down_writes_once_it_is_back(
    make_topic: MakeTopic, kafka_restarted: object
) -> None:
    topic = make_topic()
    producer = Producer(KAFKA, OUTAGE_POLICY)  # as in a freshly forked worker: not connected
    try:
        produced = produce_across_a_kafka_restart(producer, topic.name, b"first")
    finally:
        producer.close()

    assert produced == Produced(topic.name, 0, 0)
    assert the_only_record(topic.name).value == b"first"
    assert_only_retried_while_down(producer)


def produce_across_a_kafka_restart(producer: Producer, topic: str, value: bytes) -> Produced:
    """Stop Kafka, produce, and start Kafka again once the producer has retried."""
    services("stop-kafka")
    started = threading.Thread(target=start_kafka_after_first_retry, args=(producer,))
    started.start()
    try:
        return producer.produce(topic, value, key=b"k")
    finally:
        started.join(timeout=180)


def assert_only_retried_while_down(producer: Producer) -> None:
    retries = producer.stats().retries  # e.g. KafkaTimeoutError, NodeNotReadyError
    assert retries
    assert all(is_retryable(getattr(kafka.errors, name)()) for name in retries), retries
    assert producer.stats().errors == {}


def start_kafka_after_first_retry(producer: Producer) -> None:
    wait_for(lambda: producer.stats().retries, timeout_s=60, what="the first retry")
    services("start-kafka")


def test_a_value_too_large_for_the_producer_is_refused_at_once(
    make_topic: MakeTopic, producer: Producer
) -> None:
    topic = make_topic()
    retries_before = metric("bridge_produce_retries_total", "MessageSizeTooLargeError")
    errors_before = metric("bridge_produce_errors_total", "MessageSizeTooLargeError")

    started = time.monotonic()
    with pytest.raises(ProduceRefusedError, match=topic.name) as refused:
        producer.produce(topic.name, b"x" * 2_000_000)  # above max_request_size (1 MiB)
    elapsed_s = time.monotonic() - started

    assert isinstance(refused.value.__cause__, MessageSizeTooLargeError)
    assert elapsed_s < RETRY_WINDOW_S / 10, elapsed_s
    assert producer.stats().retries == {}
    assert metric("bridge_produce_retries_total", "MessageSizeTooLargeError") == retries_before
    assert metric("bridge_produce_errors_total", "MessageSizeTooLargeError") == errors_before + 1
    assert sum(end_offsets(topic.name).values()) == 0


@pytest.fixture
def small_topic(admin: KafkaAdminClient) -> Iterator[str]:
    """A topic whose broker-side limit is 1 KiB (``max.message.bytes``)."""
    name = f"t-{uuid.uuid4().hex[:10]}"
    admin.create_topics(
        [NewTopic(name, 1, 1, topic_configs={"max.message.bytes": "1024"})],
        wait_for_metadata=True,
    )
    yield name
    admin.delete_topics([name])


def test_a_record_the_broker_finds_too_large_is_refused_at_once(
    small_topic: str, producer: Producer
) -> None:
    started = time.monotonic()
    with pytest.raises(ProduceRefusedError, match=small_topic) as refused:
        producer.produce(small_topic, b"x" * 4096)
    elapsed_s = time.monotonic() - started

    assert type(refused.value.__cause__).__name__ in {
        "MessageSizeTooLargeError",
        "RecordListTooLargeError",
    }, repr(refused.value.__cause__)
    assert elapsed_s < RETRY_WINDOW_S / 10, elapsed_s
    assert producer.stats().retries == {}
    assert sum(producer.stats().errors.values()) == 1


def test_an_unknown_topic_is_refused_at_once(producer: Producer) -> None:
    topic = f"missing-{uuid.uuid4().hex[:10]}"  # the test broker creates no topics
    errors_before = metric("bridge_produce_errors_total", "UnknownTopicOrPartitionError")

    started = time.monotonic()
    with pytest.raises(ProduceRefusedError, match=topic) as refused:
        producer.produce(topic, b"v")
    elapsed_s = time.monotonic() - started

    assert isinstance(refused.value.__cause__, UnknownTopicOrPartitionError)
    assert elapsed_s < RETRY_WINDOW_S / 10, elapsed_s
    assert producer.stats().retries == {}
    assert producer.stats().errors == {"UnknownTopicOrPartitionError": 1}
    assert metric("bridge_produce_errors_total", "UnknownTopicOrPartitionError") == (
        errors_before + 1
    )


def test_async_calls_on_success_and_on_error(make_topic: MakeTopic, producer: Producer) -> None:
    topic = make_topic()
    outcomes: list[Produced | BaseException] = []

    ok = producer.produce_async(
        topic.name, b"async", key=b"k", on_success=outcomes.append, on_error=outcomes.append
    )
    missing = f"missing-{uuid.uuid4().hex[:10]}"
    refused = producer.produce_async(
        missing, b"v", on_success=outcomes.append, on_error=outcomes.append
    )
    wait_for(lambda: len(outcomes) == 2, what="both callbacks")

    record = the_only_record(topic.name)
    assert outcomes[0] == Produced(topic.name, 0, record.offset) == ok.result()
    assert isinstance(outcomes[1], ProduceRefusedError)
    assert missing in str(outcomes[1])
    assert refused.exception() is outcomes[1]
    assert producer.stats().retries == {}


@pytest.fixture(scope="module")
def client_app() -> Celery:
    """Another Celery app: it knows the task only by name."""
    app = Celery("client", broker=BROKER_URL)
    app.conf.update(task_serializer="json", accept_content=["json"])
    return app


def test_the_celery_task_writes_the_record_and_returns_where(
    make_topic: MakeTopic, worker: Path, worker_queue: str, client_app: Celery
) -> None:
    topic = make_topic()
    headers = headers_to_task_arg([("trace", b"\x00\xff"), ("source", "shop")])
    result = client_app.send_task(
        "bridge.produce",
        args=[topic.name, to_task_arg(b"\x00value")],
        kwargs={"key": "k1", "headers": headers},
        queue=worker_queue,
    )

    record = the_only_record(topic.name)
    assert (record.key, record.value) == (b"k1", b"\x00value")
    assert record.headers == [("trace", b"\x00\xff"), ("source", b"shop")]
    where = {"topic": topic.name, "partition": record.partition, "offset": record.offset}
    wait_for(
        lambda: f"Task bridge.produce[{result.id}] succeeded" in worker.read_text(),
        what="the task's success in the worker log",
    )
    line = next(x for x in worker.read_text().splitlines() if result.id in x and "succeeded" in x)
    assert line.endswith(f": {where!r}")


def test_the_celery_task_fails_at_once_on_a_refused_record(
    worker: Path, worker_queue: str, client_app: Celery
) -> None:
    missing = f"missing-{uuid.uuid4().hex[:10]}"
    result = client_app.send_task("bridge.produce", args=[missing, "v"], queue=worker_queue)
    bad_arg = client_app.send_task(
        "bridge.produce", args=[missing, {"b64": "not base64!"}], queue=worker_queue
    )

    for task_id, why in ((result.id, "UnknownTopicOrPartitionError"), (bad_arg.id, "base64")):
        lines = task_failure(worker, task_id)
        assert any("ProduceRefusedError" in x and why in x for x in lines), lines
        assert not any("retry" in x.lower() for x in lines), lines


def task_failure(worker_log: Path, task_id: str) -> list[str]:
    """The worker's log lines about a task, once it has failed."""
    wait_for(
        lambda: f"Task bridge.produce[{task_id}] raised" in worker_log.read_text(),
        what=f"task {task_id} to fail",
    )
    return [x for x in worker_log.read_text().splitlines() if task_id in x]


def test_a_workers_metrics_count_what_its_bridge_produce_tasks_wrote_and_refused(
    make_topic: MakeTopic, client_app: Celery, tmp_path: Path
) -> None:
    port, queue = free_port(), f"produce-metrics-{uuid.uuid4().hex[:8]}"
    metrics = {"worker_port": port, "worker_addr": "127.0.0.1"}
    worker = start_worker(tmp_path, queue, concurrency=2, sections={"metrics": metrics})
    try:
        topic, missing = make_topic(), f"missing-{uuid.uuid4().hex[:10]}"
        for value in ("a", "b", "c"):
            client_app.send_task("bridge.produce", args=[topic.name, value], queue=queue)
        refused = client_app.send_task("bridge.produce", args=[missing, "v"], queue=queue)
        read_all(topic.name, expected=3)
        task_failure(worker.log_path, refused.id)

        def counts() -> tuple[float, float]:
            samples = scrape(port)
            written = sum(v for n, _, v in samples if n == "bridge_produce_records_total")
            errors = sum(
                v
                for n, labels, v in samples
                if n == "bridge_produce_errors_total"
                and labels.get("error") == "UnknownTopicOrPartitionError"
            )
            return written, errors

        wait_for(lambda: counts() == (3, 1), what=f"3 written and 1 refused, got {counts()}")
    finally:
        worker.stop()
