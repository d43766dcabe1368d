"""The retry path: backoff, route defaults, long delays that run once, dead letters kept."""

from __future__ import annotations

import itertools
import time
import uuid
from pathlib import Path
from typing import Any

from kafka import KafkaProducer

from tests.conftest import wait_for
from tests.integration.conftest import Ledger, end_offsets, read_all, start_worker
from tests.integration.helpers import (
    MakeTopic,
    StartBridge,
    executions,
    headers_of,
    send,
    services,
)


def test_delays_grow_exponentially_up_to_the_cap_and_wait_in_redis(
    make_topic: MakeTopic, start_bridge: StartBridge, producer: KafkaProducer, ledger: Ledger
) -> None:
    topic = make_topic()
    bridge = start_bridge([{"topic": topic.name, "task": "tests.exponential"}])
    meta = send(producer, topic, ledger, headers=[("fail", b"3")])
    task_id = f"{bridge.group_id}:{topic.name}:0:{meta.offset}"

    wait_for(lambda: task_id in ledger.done(), what="success after three failures")
    runs = executions(ledger)
    assert [r["retries"] for r in runs] == [0, 1, 2, 3]
    gaps = [b["at"] - a["at"] for a, b in itertools.pairwise(runs)]
    # tests.exponential: retry_backoff=1, retry_backoff_max=2, no jitter -> 1 s, 2 s, 2 s.
    for gap, expected in zip(gaps, [1, 2, 2], strict=True):
        assert expected - 0.05 <= gap <= expected + 0.5, gaps
    assert sum(end_offsets(topic.dlt(bridge.group_id)).values()) == 0


def test_route_defaults_apply_to_a_task_without_options_of_its_own(
    make_topic: MakeTopic, start_bridge: StartBridge, producer: KafkaProducer, ledger: Ledger
) -> None:
    topic = make_topic()
    route = {
        "topic": topic.name,
        "task": "tests.route_defaults",
        "max_retries": 1,
        "retry_backoff_s": 1,
        "retry_jitter": False,
    }
    bridge = start_bridge([route])
    send(producer, topic, ledger, headers=[("fail", b"99")])

    [dead] = read_all(topic.dlt(bridge.group_id), expected=1)
    assert headers_of(dead)["bridge-reason"] == b"exhausted"
    assert headers_of(dead)["bridge-attempts"] == b"2"  # the route's max_retries=1
    first, second = executions(ledger)
    assert 0.95 <= second["at"] - first["at"] <= 1.5  # the route's backoff: 1 s


def test_non_retryable_cause_dead_letters_at_once(
    make_topic: MakeTopic, start_bridge: StartBridge, producer: KafkaProducer, ledger: Ledger
) -> None:
    topic = make_topic()
    bridge = start_bridge([{"topic": topic.name, "task": "tests.flaky"}])
    send(producer, topic, ledger, headers=[("mode", b"wrapped-permanent")])

    [dead] = read_all(topic.dlt(bridge.group_id), expected=1)
    headers = headers_of(dead)
    assert headers["bridge-reason"] == b"non-retryable"
    assert headers["bridge-attempts"] == b"1"
    assert headers["kafka_dlt-exception-fqcn"] == b"builtins.RuntimeError"
    # Spring's cause header names what the listener raised, never that exception's cause...
    assert headers["kafka_dlt-exception-cause-fqcn"] == b"builtins.RuntimeError"
    # ...which is in the stack trace
    assert b"bridge.errors.PermanentError" in headers["kafka_dlt-exception-stacktrace"]
    assert len(executions(ledger)) == 1


def test_a_retry_delayed_beyond_the_visibility_timeout_runs_exactly_once(
    make_topic: MakeTopic,
    start_bridge: StartBridge,
    producer: KafkaProducer,
    ledger: Ledger,
    tmp_path: Path,
) -> None:
    visibility_timeout_s, countdown_s = 2, 5  # the retry waits 2.5 visibility timeouts
    sweep = {"unacked_restore_interval": 1, "unacked_restore_throttle": 1}  # kombu: ~100 s
    sections: dict[str, dict[str, Any]] = {
        "celery": {"visibility_timeout_s": visibility_timeout_s, "transport_options": sweep},
        "retry": {"redis_schedule_min_delay_ms": 500, "scheduler_interval_ms": 20},
    }
    queue = f"vt-{uuid.uuid4().hex[:8]}"
    worker = start_worker(tmp_path, queue, sections=sections)
    try:
        topic = make_topic()
        route = {"topic": topic.name, "task": "tests.long_retry", "queue": queue}
        bridge = start_bridge([route], sections=sections)
        meta = send(producer, topic, ledger, headers=[("fail", b"1"), ("countdown", b"5")])
        task_id = f"{bridge.group_id}:{topic.name}:0:{meta.offset}"
        wait_for(lambda: task_id in ledger.done(), timeout_s=30, what="the delayed retry")
        runs = executions(ledger)
        assert len(runs) == 2, f"the retry ran {len(runs) - 1} times: {runs}"
        first, second = runs
        assert countdown_s - 0.05 <= second["at"] - first["at"] <= countdown_s + 1
        # Absence can only be seen over time: two more visibility timeouts (and sweeps), in
        # which Redis would hand a countdown held by a worker out again.
        time.sleep(2 * visibility_timeout_s + 1)
        assert ledger.attempts() == {task_id: 2}
    finally:
        worker.stop()


def test_a_dead_letter_due_while_kafka_is_down_arrives_after_recovery(
    make_topic: MakeTopic,
    start_bridge: StartBridge,
    producer: KafkaProducer,
    ledger: Ledger,
    tmp_path: Path,
    kafka_restarted: object,
) -> None:
    quick_dlt = {"dead_letter": {"retries": 1, "delivery_timeout_ms": 1500}}
    queue = f"dl-{uuid.uuid4().hex[:8]}"
    worker = start_worker(tmp_path, queue, sections=quick_dlt)
    try:
        topic = make_topic()
        route = {"topic": topic.name, "task": "tests.long_retry", "queue": queue}
        bridge = start_bridge([{**route}], sections=quick_dlt)
        headers = [("fail", b"99"), ("countdown", b"3")]
        meta = send(producer, topic, ledger, headers=headers)
        wait_for(lambda: len(executions(ledger)) == 1, what="the first attempt")
        services("stop-kafka")  # the retries run out while Kafka is away
        key = f"bridge:{bridge.group_id}:dead-letters:pending"
        wait_for(lambda: ledger.client.zcard(key) == 1, timeout_s=60, what="a pending dead letter")
        services("start-kafka")

        [dead] = read_all(topic.dlt(bridge.group_id), expected=1, timeout_s=90)
        assert dead.value == b"{}"
        assert headers_of(dead)["bridge-reason"] == b"exhausted"
        assert headers_of(dead)["kafka_dlt-original-offset"] == meta.offset.to_bytes(8, "big")
        assert len(executions(ledger)) == 4  # tests.long_retry: max_retries=3
        wait_for(lambda: ledger.client.zcard(key) == 0, what="the pending set to empty")
    finally:
        worker.stop()


def test_a_bare_raise_retry_is_retried_not_lost(
    make_topic: MakeTopic, start_bridge: StartBridge, producer: KafkaProducer, ledger: Ledger
) -> None:
    topic = make_topic()
    bridge = start_bridge([{"topic": topic.name, "task": "tests.flaky"}])
    meta = send(producer, topic, ledger, headers=[("mode", b"bare-retry")])
    task_id = f"{bridge.group_id}:{topic.name}:0:{meta.offset}"

    wait_for(lambda: task_id in ledger.done(), what="the retried record handled")
    first, second = executions(ledger)
    assert (first["retries"], second["retries"]) == (0, 1)
    assert 0.95 <= second["at"] - first["at"] <= 1.5  # Retry(when=1)
