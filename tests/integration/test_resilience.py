"""Rebalances, isolation between consumer groups, Redis outages and backpressure."""

from __future__ import annotations

import threading
import uuid
from pathlib import Path

from kafka import KafkaAdminClient, KafkaProducer

from tests.conftest import wait_for
from tests.integration.conftest import Ledger, end_offsets, read_all, start_worker
from tests.integration.helpers import (
    MakeTopic,
    StartBridge,
    assert_each_handled_once,
    headers_of,
    published_watermarks,
    send,
    send_many,
    services,
    task_ids,
    wait_committed_to_end,
)


def test_a_second_bridge_joining_and_leaving_mid_run_loses_and_duplicates_nothing(
    make_topic: MakeTopic,
    start_bridge: StartBridge,
    producer: KafkaProducer,
    ledger: Ledger,
    admin: KafkaAdminClient,
) -> None:
    topic = make_topic(partitions=4)
    route = [{"topic": topic.name, "task": "tests.flaky"}]
    kafka = {"max_poll_records": 20}
    first = start_bridge(route, kafka=kafka)
    group_id = first.group_id
    sent = send_many(producer, topic, ledger, 1000)
    wait_for(lambda: published_watermarks(ledger, group_id, topic) >= 300, what="300 published")

    second = start_bridge(route, group_id=group_id, kafka=kafka)  # rebalance: partitions split
    sent += send_many(producer, topic, ledger, 1000)
    wait_for(lambda: published_watermarks(ledger, group_id, topic) >= 1500, what="1500 published")
    assert second.stop() == 0  # leaves the group: rebalance again
    assert "partitions revoked" in second.log()
    sent += send_many(producer, topic, ledger, 1000)

    assert_each_handled_once(ledger, task_ids(group_id, topic, sent))
    wait_committed_to_end(admin, group_id, topic)
    assert "partitions revoked" in first.log()


def test_consumer_groups_are_isolated(
    make_topic: MakeTopic, start_bridge: StartBridge, producer: KafkaProducer, ledger: Ledger
) -> None:
    topic = make_topic()
    failing, healthy = f"gf-{uuid.uuid4().hex[:8]}", f"gh-{uuid.uuid4().hex[:8]}"
    route = [{"topic": topic.name, "task": "tests.flaky"}]
    start_bridge(route, group_id=failing)
    start_bridge(route, group_id=healthy)
    bad = send(producer, topic, ledger, headers=[("fail-group", failing.encode())])
    good = send(producer, topic, ledger)

    [dead] = read_all(topic.dlt(failing), expected=1)
    assert headers_of(dead)["bridge-reason"] == b"exhausted"
    assert headers_of(dead)["kafka_dlt-original-consumer-group"] == failing.encode()
    expected_done = {
        f"{healthy}:{topic.name}:0:{bad.offset}",
        f"{healthy}:{topic.name}:0:{good.offset}",
        f"{failing}:{topic.name}:0:{good.offset}",
    }
    wait_for(lambda: ledger.done() == expected_done, what="both groups done")
    attempts = ledger.attempts()
    assert attempts[f"{failing}:{topic.name}:0:{bad.offset}"] == 4  # retried in its group only
    assert attempts[f"{healthy}:{topic.name}:0:{bad.offset}"] == 1
    assert sum(end_offsets(topic.dlt(healthy)).values()) == 0


def test_redis_outage_pauses_the_bridge_which_recovers_by_itself(
    make_topic: MakeTopic,
    start_bridge: StartBridge,
    producer: KafkaProducer,
    ledger: Ledger,
    admin: KafkaAdminClient,
    redis_restarted: object,
) -> None:
    topic = make_topic(partitions=2)
    bridge = start_bridge(
        [{"topic": topic.name, "task": "tests.flaky"}], kafka={"session_timeout_ms": 10_000}
    )
    before = send_many(producer, topic, ledger, 200)
    assert_each_handled_once(ledger, task_ids(bridge.group_id, topic, before))

    services("stop-redis")
    during = send_many(producer, topic, ledger, 200)  # Kafka keeps them meanwhile
    # Stay down until the bridge has backed off 50 times: ~10 s with the tests' 200 ms cap.
    wait_for(
        lambda: "Celery broker unavailable (attempt 50)" in bridge.log(),
        timeout_s=90,
        what="50 failed publish attempts",
    )
    assert "partitions revoked" not in bridge.log()  # polling kept it in the group
    # The background duties (every 20 ms here) say it once with a traceback, then back off.
    assert bridge.log().count(" failed; trying again in ") <= 3, bridge.log()[-5000:]
    services("start-redis")

    assert_each_handled_once(ledger, task_ids(bridge.group_id, topic, before + during))
    wait_committed_to_end(admin, bridge.group_id, topic)
    assert "Celery broker available again" in bridge.log()
    assert bridge.proc.poll() is None


def test_backpressure_bounds_the_queue_while_a_slow_worker_drains_it(
    make_topic: MakeTopic,
    start_bridge: StartBridge,
    producer: KafkaProducer,
    ledger: Ledger,
    admin: KafkaAdminClient,
    tmp_path: Path,
) -> None:
    topic = make_topic(partitions=2)
    queue, limit, batch = f"bp-{uuid.uuid4().hex[:8]}", 50, 20
    route = {"topic": topic.name, "task": "tests.slow", "queue": queue}
    bridge = start_bridge(
        [{**route, "max_queue_depth": limit, "resume_queue_depth": 10}],
        kafka={"max_poll_records": batch},
    )
    depths: list[int] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            depths.append(int(ledger.client.llen(queue)))
            stop.wait(0.002)  # sampling period

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    sent = send_many(producer, topic, ledger, 400)
    wait_for(lambda: "backpressure" in bridge.log(), what="the bridge to hold the route")
    worker = start_worker(tmp_path, queue, concurrency=1)
    try:
        assert_each_handled_once(ledger, task_ids(bridge.group_id, topic, sent))
        wait_committed_to_end(admin, bridge.group_id, topic)
    finally:
        stop.set()
        sampler.join()
        worker.stop()
    assert max(depths) >= limit  # the limit was reached...
    assert max(depths) <= limit + batch  # ...and exceeded by at most one poll batch
    assert f"backpressure: {topic.name} resumed" in bridge.log()


def test_kafka_outage_the_bridge_reconnects_without_losing_its_position(
    make_topic: MakeTopic,
    start_bridge: StartBridge,
    producer: KafkaProducer,
    ledger: Ledger,
    admin: KafkaAdminClient,
    kafka_restarted: object,
) -> None:
    topic = make_topic(partitions=2)
    bridge = start_bridge([{"topic": topic.name, "task": "tests.flaky"}])
    before = send_many(producer, topic, ledger, 200)
    assert_each_handled_once(ledger, task_ids(bridge.group_id, topic, before))
    wait_committed_to_end(admin, bridge.group_id, topic)

    services("stop-kafka")
    wait_for(lambda: "ECONNREFUSED" in bridge.log(), what="the bridge to notice Kafka is gone")
    services("start-kafka")
    after = send_many(producer, topic, ledger, 200)

    assert_each_handled_once(ledger, task_ids(bridge.group_id, topic, before + after))
    wait_committed_to_end(admin, bridge.group_id, topic)
    assert bridge.proc.poll() is None


def test_sigterm_while_kafka_is_down_still_exits_in_bounded_time(
    make_topic: MakeTopic,
    start_bridge: StartBridge,
    producer: KafkaProducer,
    ledger: Ledger,
    kafka_restarted: object,
) -> None:
    topic = make_topic()
    bridge = start_bridge(
        [{"topic": topic.name, "task": "tests.flaky"}], kafka={"shutdown_timeout_ms": 2000}
    )
    sent = send_many(producer, topic, ledger, 20)
    assert_each_handled_once(ledger, task_ids(bridge.group_id, topic, sent))
    services("stop-kafka")
    wait_for(lambda: "ECONNREFUSED" in bridge.log(), what="the bridge to notice Kafka is gone")
    assert bridge.stop(timeout_s=15) == 0
    assert "bridge stopped" in bridge.log()


def test_a_bridge_started_while_redis_is_down_waits_for_it(
    make_topic: MakeTopic,
    start_bridge: StartBridge,
    producer: KafkaProducer,
    ledger: Ledger,
    admin: KafkaAdminClient,
    redis_restarted: object,
) -> None:
    topic = make_topic()
    sent = send_many(producer, topic, ledger, 50)
    services("stop-redis")
    bridge = start_bridge([{"topic": topic.name, "task": "tests.flaky"}])
    wait_for(
        lambda: "Celery broker unavailable (attempt 3)" in bridge.log(),
        what="the bridge to back off",
    )
    services("start-redis")
    assert_each_handled_once(ledger, task_ids(bridge.group_id, topic, sent))
    wait_committed_to_end(admin, bridge.group_id, topic)
