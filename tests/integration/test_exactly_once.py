"""Exactly-once enqueue: a record is enqueued once however often the bridge consumes it."""

from __future__ import annotations

import base64
import json
import random
import signal
import uuid
from collections.abc import Callable
from typing import Any

import pytest
import redis
from kafka import KafkaAdminClient, KafkaProducer, TopicPartition
from kafka.structs import OffsetAndMetadata

from bridge.backends.redis.dispatch import Dispatcher, publisher_app
from bridge.record import Envelope, Record, from_task_arg, task_argsrepr, to_task_arg
from bridge.routing import Route
from bridge.settings import CelerySettings
from tests.conftest import wait_for
from tests.integration.conftest import BROKER_URL, BridgeProcess, Ledger, Topic, end_offsets
from tests.integration.helpers import (
    MakeTopic,
    StartBridge,
    assert_each_handled_once,
    committed_offsets,
    consumed,
    published_by_partition,
    published_watermarks,
    send_many,
    task_ids,
    wait_committed_to_end,
)


def envelope(offset: int, group_id: str) -> Envelope:
    record = Record("orders", 0, offset, 1_700_000_000_000, b"k", b'{"a": 1}', (), "json")
    return Envelope(record, group_id, "orders.g.dlt")


@pytest.mark.parametrize("built_by", ["envelope", "consumed record"])
def test_messages_are_the_ones_celery_send_task_builds(
    ledger_redis: redis.Redis, built_by: str
) -> None:
    queue, group_id = f"q-{uuid.uuid4().hex[:8]}", f"g-{uuid.uuid4().hex[:8]}"
    settings = CelerySettings(broker_url=BROKER_URL)
    env = envelope(5, group_id)
    dispatcher = Dispatcher(settings, group_id)
    if built_by == "envelope":
        message = dispatcher.message("shop.x", queue, env)
    else:  # the poll loop's way, from what kafka-python hands it
        route = Route("orders", "shop.x", queue, False, "json", env.dlt_topic)
        message = dispatcher.consumed(route, consumed(env.record))
    dispatcher.publish([message])
    ours = json.loads(ledger_redis.rpop(queue))  # type: ignore[arg-type]
    publisher_app(settings).send_task(
        "shop.x", args=[to_task_arg(env)], kwargs={}, task_id=env.task_id(), queue=queue,
        argsrepr=shown(env.record), kwargsrepr="{}",
    )  # fmt: skip
    theirs = json.loads(ledger_redis.rpop(queue))  # type: ignore[arg-type]
    dispatcher.close()

    assert json.loads(base64.b64decode(ours["body"])) == json.loads(
        base64.b64decode(theirs["body"])
    )
    for field in ("content-type", "content-encoding"):
        assert ours[field] == theirs[field]
    # origin names the bridge; ignore_result is False for us and None for send_task, which
    # Celery's worker reads alike (falsy).
    differ = ("origin", "ignore_result")
    same_headers = {k: v for k, v in theirs["headers"].items() if k not in differ}
    assert {k: ours["headers"][k] for k in same_headers} == same_headers
    assert ours["headers"]["origin"] == f"kafka-celery-bridge@{group_id}"
    for prop in ("correlation_id", "delivery_mode", "priority", "body_encoding", "delivery_info"):
        assert ours["properties"][prop] == theirs["properties"][prop]


def test_a_record_at_or_below_the_watermark_is_not_enqueued_again(
    ledger_redis: redis.Redis,
) -> None:
    queue, group_id = f"q-{uuid.uuid4().hex[:8]}", f"g-{uuid.uuid4().hex[:8]}"
    dispatcher = Dispatcher(CelerySettings(broker_url=BROKER_URL), group_id)
    batch = [dispatcher.message("t", queue, envelope(o, group_id)) for o in range(10, 15)]
    try:
        assert dispatcher.publish(batch[:3]).enqueued == 3
        outcome = dispatcher.publish(batch)  # re-consumed after a crash before the commit
        assert (outcome.enqueued, outcome.skipped) == (2, 3)
        assert dispatcher.publish(batch).skipped == 5
        assert ledger_redis.llen(queue) == 5
        mark = ledger_redis.get(f"bridge:{group_id}:published:orders:0")
        assert mark == b"15"
        assert 0 < ledger_redis.ttl(f"bridge:{group_id}:published:orders:0") <= 7 * 24 * 3600
    finally:
        ledger_redis.delete(queue, f"bridge:{group_id}:published:orders:0")
        dispatcher.close()


def test_a_watermark_is_one_incarnations_of_its_topic(ledger_redis: redis.Redis) -> None:
    """The enqueue script against real Redis: a watermark skips the records of its own topic id,
    not those of a topic created again (another id); with no id, it refuses, never skips."""
    queue, group_id = f"q-{uuid.uuid4().hex[:8]}", f"g-{uuid.uuid4().hex[:8]}"
    dispatcher = Dispatcher(CelerySettings(broker_url=BROKER_URL), group_id)
    batch = [dispatcher.message("t", queue, envelope(o, group_id)) for o in range(3)]
    old, new = {"orders": "id-old"}, {"orders": "id-new"}
    try:
        assert dispatcher.publish(batch, 0, old).enqueued == 3
        assert dispatcher.publish(batch, 0, old).skipped == 3  # re-consumed after a crash
        assert dispatcher.publish(batch, 0, new).enqueued == 3  # the topic was created again
        assert dispatcher.publish(batch, 0, {"orders": None}).enqueued == 3  # no id: none yet
        unverified = dispatcher.publish(batch, 0, {"orders": None})
        assert (unverified.enqueued, unverified.skipped) == (0, 0)
        [refusal] = unverified.refused
        assert (refusal.offset, refusal.full) == (0, "watermark")
        assert ledger_redis.llen(queue) == 9
    finally:
        ledger_redis.delete(queue, *ledger_redis.keys(f"bridge:{group_id}:*"))
        dispatcher.close()


def test_rewound_group_offsets_enqueue_nothing_twice(
    make_topic: MakeTopic,
    start_bridge: StartBridge,
    producer: KafkaProducer,
    ledger: Ledger,
    admin: KafkaAdminClient,
) -> None:
    topic = make_topic(partitions=2)
    bridge = start_bridge([{"topic": topic.name, "task": "tests.flaky"}])
    first = send_many(producer, topic, ledger, 100)
    assert_each_handled_once(ledger, task_ids(bridge.group_id, topic, first))
    wait_committed_to_end(admin, bridge.group_id, topic)
    assert bridge.stop() == 0

    # Exactly what a crash between publish and commit leaves behind, for every record.
    admin.alter_group_offsets(
        bridge.group_id,
        {TopicPartition(topic.name, p): OffsetAndMetadata(0, "", -1) for p in range(2)},
    )
    again = start_bridge([{"topic": topic.name, "task": "tests.flaky"}], group_id=bridge.group_id)
    more = send_many(producer, topic, ledger, 10)
    assert_each_handled_once(ledger, task_ids(bridge.group_id, topic, first + more))
    wait_committed_to_end(admin, bridge.group_id, topic)
    assert "re-consumed records were already enqueued: skipped" in again.log()


# Batches of 4 out of polls of 10 (issue 20): a restarted bridge cuts the records it consumes
# again elsewhere than its predecessor did; per record, none is enqueued twice nor lost.
BATCHES = {"task": "tests.batch", "batch_size": 4, "batch_max_wait_ms": 5}
ORDERED_BATCHES = {"task": "tests.ordered_batch", "ordered": True, "batch_size": 4,
                   "batch_max_wait_ms": 5}  # fmt: skip


@pytest.mark.parametrize(
    "options",
    [{"task": "tests.flaky"}, BATCHES, ORDERED_BATCHES],
    ids=["single", "batches", "ordered-batches"],
)
def test_sigkilled_bridges_lose_and_duplicate_nothing(
    make_topic: MakeTopic,
    start_bridge: StartBridge,
    producer: KafkaProducer,
    ledger: Ledger,
    admin: KafkaAdminClient,
    options: dict[str, Any],
) -> None:
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    topic = make_topic(partitions=4)
    group_id = f"g-{uuid.uuid4().hex[:10]}"
    route = [{"topic": topic.name, **options}]
    # Static membership: a restarted bridge takes over its killed predecessor's partitions at
    # once instead of after the session timeout.
    kafka = {"max_poll_records": 10, "group_instance_id": f"{group_id}-1"}
    sent: list[Any] = []

    def more() -> None:
        sent.extend(send_many(producer, topic, ledger, 20))

    for round_ in range(6):
        sent += send_many(producer, topic, ledger, 500)
        bridge = start_bridge(route, group_id=group_id, kafka=kafka)
        target = 500 * round_ + rng.randint(25, 475)

        def published_past(target: int = target) -> bool:
            return published_watermarks(ledger, group_id, topic) >= target

        wait_for(published_past, interval_s=0.005, what=f"publishing {target} (seed {seed})")
        kill_between_publish_and_commit(bridge, admin, ledger, topic, more=more)

    start_bridge(route, group_id=group_id, kafka=kafka)
    assert_each_handled_once(ledger, task_ids(group_id, topic, sent))
    wait_committed_to_end(admin, group_id, topic)


def kill_between_publish_and_commit(
    bridge: BridgeProcess,
    admin: KafkaAdminClient,
    ledger: Ledger,
    topic: Topic,
    more: Callable[[], None],
) -> None:
    """SIGKILL the bridge at a moment when it has enqueued records it has not committed.

    The bridge is frozen (SIGSTOP) and compared: published watermark in Redis against
    committed offsets in Kafka. Not in that window: it goes on (SIGCONT), and is given ``more``
    records whenever it has caught up, so that the window comes again.
    """

    def frozen_with_uncommitted_records() -> bool:
        bridge.proc.send_signal(signal.SIGSTOP)
        committed = committed_offsets(admin, bridge.group_id, topic.name)
        published = published_by_partition(ledger, bridge.group_id, topic)
        if any(mark > committed.get(p, 0) for p, mark in published.items()):
            return True
        bridge.proc.send_signal(signal.SIGCONT)
        if sum(committed.values()) >= sum(end_offsets(topic.name).values()):
            more()
        return False

    wait_for(frozen_with_uncommitted_records, interval_s=0.001, what="an uncommitted batch")
    bridge.proc.kill()
    bridge.proc.wait()


def shown(record: Record) -> str:
    """How the bridge's messages show ``record`` in Flower (64 bytes of value, the default)."""
    r = record
    return task_argsrepr(r.topic, r.partition, r.offset, r.key, r.raw_value, 64)


def test_record_data_that_looks_like_a_marker_stays_data(ledger_redis: redis.Redis) -> None:
    queue, group_id = f"q-{uuid.uuid4().hex[:8]}", f"g-{uuid.uuid4().hex[:8]}"
    dispatcher = Dispatcher(CelerySettings(broker_url=BROKER_URL), group_id)
    hostile = b'bridge-marker-task-id "bridge-marker-argsrepr" \xff'
    record = Record("orders", 1, 7, 1, hostile, hostile, (("h", hostile),), "bytes")
    env = Envelope(record, group_id, "orders.g.dlt")
    try:
        dispatcher.publish([dispatcher.message("shop.x", queue, env)])
        message = json.loads(ledger_redis.rpop(queue))  # type: ignore[arg-type]
    finally:
        ledger_redis.delete(f"bridge:{group_id}:published:orders:1")
        dispatcher.close()
    assert message["headers"]["id"] == message["headers"]["root_id"] == env.task_id()
    assert message["properties"]["correlation_id"] == env.task_id()
    assert message["headers"]["argsrepr"] == shown(record)
    [[arg], kwargs, _] = json.loads(base64.b64decode(message["body"]))
    assert from_task_arg(arg) == env
    assert kwargs == {}
