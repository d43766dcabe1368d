"""The first path, end to end: Kafka -> bridge -> Celery (retries) -> handler or DLT."""

from __future__ import annotations

import json
from datetime import datetime

from kafka import KafkaAdminClient, KafkaProducer
from kafka.partitioner.default import murmur2

from tests.conftest import wait_for
from tests.integration.conftest import Ledger, end_offsets, read_all
from tests.integration.helpers import (
    MakeTopic,
    StartBridge,
    committed_offsets,
    headers_of,
    original_offset,
    send,
    wait_committed_to_end,
)


def test_records_are_handled_once_and_offsets_committed_to_the_end(
    make_topic: MakeTopic,
    start_bridge: StartBridge,
    producer: KafkaProducer,
    ledger: Ledger,
    admin: KafkaAdminClient,
) -> None:
    topic = make_topic(partitions=3)
    bridge = start_bridge([{"topic": topic.name, "task": "tests.flaky"}])
    sent = [send(producer, topic, ledger, key=f"k{i}".encode()) for i in range(12)]
    expected = {f"{bridge.group_id}:{topic.name}:{m.partition}:{m.offset}" for m in sent}

    wait_for(lambda: ledger.done() == expected, what="every record handled")
    assert ledger.attempts() == dict.fromkeys(expected, 1)
    wait_committed_to_end(admin, bridge.group_id, topic)
    assert sum(end_offsets(topic.dlt(bridge.group_id)).values()) == 0
    assert bridge.stop() == 0


def test_transient_failures_are_retried_until_success(
    make_topic: MakeTopic, start_bridge: StartBridge, producer: KafkaProducer, ledger: Ledger
) -> None:
    topic = make_topic()
    bridge = start_bridge([{"topic": topic.name, "task": "tests.flaky"}])
    meta = send(producer, topic, ledger, headers=[("fail", b"2")])
    task_id = f"{bridge.group_id}:{topic.name}:0:{meta.offset}"

    wait_for(lambda: task_id in ledger.done(), what="the record handled after two failures")
    assert ledger.attempts() == {task_id: 3}
    executions = ledger.client.lrange(f"{ledger.prefix}:executions", 0, -1)
    assert [json.loads(e)["retries"] for e in executions] == [0, 1, 2]
    assert sum(end_offsets(topic.dlt(bridge.group_id)).values()) == 0


def test_exponential_backoff_with_jitter_retries_then_succeeds(
    make_topic: MakeTopic, start_bridge: StartBridge, producer: KafkaProducer, ledger: Ledger
) -> None:
    topic = make_topic()
    bridge = start_bridge([{"topic": topic.name, "task": "tests.backoff"}])
    meta = send(producer, topic, ledger, headers=[("fail", b"1")])
    task_id = f"{bridge.group_id}:{topic.name}:0:{meta.offset}"

    wait_for(lambda: task_id in ledger.done(), what="the record handled after one failure")
    assert ledger.attempts() == {task_id: 2}


def test_permanent_error_is_dead_lettered_at_once(
    make_topic: MakeTopic, start_bridge: StartBridge, producer: KafkaProducer, ledger: Ledger
) -> None:
    topic = make_topic()
    bridge = start_bridge([{"topic": topic.name, "task": "tests.flaky"}])
    send(producer, topic, ledger, headers=[("mode", b"permanent")])
    send(producer, topic, ledger, headers=[("mode", b"value-error")])

    dead = read_all(topic.dlt(bridge.group_id), expected=2)
    by_offset = {original_offset(r): r for r in dead}
    permanent, value_error = headers_of(by_offset[0]), headers_of(by_offset[1])
    assert permanent["bridge-reason"] == b"non-retryable"
    assert permanent["kafka_dlt-exception-fqcn"] == b"bridge.errors.PermanentError"
    assert value_error["bridge-reason"] == b"non-retryable"
    assert value_error["kafka_dlt-exception-fqcn"] == b"builtins.ValueError"
    assert permanent["bridge-attempts"] == value_error["bridge-attempts"] == b"1"
    assert sorted(ledger.attempts().values()) == [1, 1]
    assert ledger.done() == set()


def test_exhausted_record_is_dead_lettered_after_max_retries_plus_one_attempts(
    make_topic: MakeTopic, start_bridge: StartBridge, producer: KafkaProducer, ledger: Ledger
) -> None:
    topic = make_topic()
    bridge = start_bridge([{"topic": topic.name, "task": "tests.flaky"}])
    meta = send(producer, topic, ledger, headers=[("fail", b"99")])
    task_id = f"{bridge.group_id}:{topic.name}:0:{meta.offset}"

    [dead] = read_all(topic.dlt(bridge.group_id), expected=1)
    headers = headers_of(dead)
    assert headers["bridge-reason"] == b"exhausted"
    assert headers["bridge-attempts"] == b"4"  # tests.flaky has max_retries=3
    assert headers["kafka_dlt-exception-fqcn"] == b"builtins.TimeoutError"
    assert headers["kafka_dlt-exception-message"] == b"downstream timed out on attempt 4"
    first = datetime.fromisoformat(headers["bridge-first-failure-at"].decode())
    last = datetime.fromisoformat(headers["bridge-dead-lettered-at"].decode())
    assert first < last
    assert ledger.attempts() == {task_id: 4}
    assert ledger.done() == set()


def test_dead_letter_is_byte_exact_with_spring_headers(
    make_topic: MakeTopic, start_bridge: StartBridge, producer: KafkaProducer, ledger: Ledger
) -> None:
    topic = make_topic(partitions=4)
    bridge = start_bridge([{"topic": topic.name, "task": "tests.flaky", "value_format": "bytes"}])
    key, value = b"\x00\xffkey\x80", bytes(range(256))
    original = [("mode", b"permanent"), ("bin", b"\x00\x01\xfe\xff"), ("bin", b""), ("e", b"")]
    meta = send(
        producer, topic, ledger, key=key, value=value, headers=original,
        partition=2, timestamp_ms=1_700_000_000_123,
    )  # fmt: skip

    [dead] = read_all(topic.dlt(bridge.group_id), expected=1)
    assert dead.key == key
    assert dead.value == value
    assert dead.partition == (murmur2(key) & 0x7FFFFFFF) % topic.partitions  # by key
    sent_headers = [("ledger", ledger.prefix.encode()), *original]
    assert dead.headers[: len(sent_headers)] == sent_headers
    h = headers_of(dead)
    assert h["kafka_dlt-original-topic"] == topic.name.encode()
    assert h["kafka_dlt-original-consumer-group"] == bridge.group_id.encode()
    assert h["kafka_dlt-original-partition"] == b"\x00\x00\x00\x02"
    assert h["kafka_dlt-original-offset"] == meta.offset.to_bytes(8, "big")
    assert h["kafka_dlt-original-timestamp"] == (1_700_000_000_123).to_bytes(8, "big")
    assert h["kafka_dlt-exception-fqcn"] == b"bridge.errors.PermanentError"
    assert h["kafka_dlt-exception-message"] == f"record {meta.offset} is invalid".encode()
    assert b"raise PermanentError" in h["kafka_dlt-exception-stacktrace"]
    assert h["bridge-task"] == b"tests.flaky"
    assert h["bridge-task-id"] == f"{bridge.group_id}:{topic.name}:2:{meta.offset}".encode()
    for name in ("bridge-first-failure-at", "bridge-dead-lettered-at"):
        stamp = h[name].decode()
        assert stamp.endswith("Z")
        assert datetime.fromisoformat(stamp).utcoffset() is not None


def test_undecodable_record_is_dead_lettered_and_the_bridge_goes_on(
    make_topic: MakeTopic,
    start_bridge: StartBridge,
    producer: KafkaProducer,
    ledger: Ledger,
    admin: KafkaAdminClient,
) -> None:
    topic = make_topic()
    bridge = start_bridge([{"topic": topic.name, "task": "tests.flaky", "value_format": "json"}])
    send(producer, topic, ledger, value=b"\xff{not json")
    good = send(producer, topic, ledger, value=b'{"ok": true}')

    [dead] = read_all(topic.dlt(bridge.group_id), expected=1)
    assert dead.value == b"\xff{not json"
    assert headers_of(dead)["bridge-reason"] == b"undecodable"
    assert headers_of(dead)["bridge-attempts"] == b"0"
    good_id = f"{bridge.group_id}:{topic.name}:0:{good.offset}"
    wait_for(lambda: ledger.done() == {good_id}, what="the next record handled")
    wait_committed_to_end(admin, bridge.group_id, topic)
    assert bridge.proc.poll() is None


def test_sigterm_stops_gracefully_after_committing(
    make_topic: MakeTopic,
    start_bridge: StartBridge,
    producer: KafkaProducer,
    ledger: Ledger,
    admin: KafkaAdminClient,
) -> None:
    topic = make_topic(partitions=2)
    bridge = start_bridge([{"topic": topic.name, "task": "tests.flaky"}])
    for i in range(20):
        send(producer, topic, ledger, key=str(i).encode())
    wait_for(lambda: len(ledger.done()) == 20, what="20 records handled")

    assert bridge.stop() == 0
    assert "bridge stopped" in bridge.log()
    assert committed_offsets(admin, bridge.group_id, topic.name) == end_offsets(topic.name)
