"""Batched routes on the real services (issue 20): one task message per batch of consecutive
records, each failed record retried and dead-lettered on its own (its retries gathered into
batches again, each with its own attempt count), nothing run twice after it succeeded,
nothing lost when a worker is SIGKILLed mid-batch or mid-retry-batch (bridges SIGKILLed
mid-stream: test_exactly_once's test_sigkilled_bridges_lose_and_duplicate_nothing[batches])."""

from __future__ import annotations

import base64
import json
import uuid
from pathlib import Path
from typing import Any

import pytest
import redis
from kafka import KafkaAdminClient, KafkaProducer

from bridge import keys
from bridge.backends.redis.dispatch import Dispatcher
from bridge.routing import Route
from bridge.settings import CelerySettings
from tests.conftest import wait_for
from tests.integration.conftest import BROKER_URL, Ledger, Topic, read_all, start_worker
from tests.integration.helpers import (
    MakeTopic,
    StartBridge,
    assert_each_handled_once,
    consumed,
    executions,
    headers_of,
    original_offset,
    send,
    send_many,
    task_ids,
    wait_committed_to_end,
)
from tests.integration.test_exactly_once import envelope

# kombu restores a dead worker's unacknowledged message after the visibility timeout.
SWEEP: dict[str, dict[str, Any]] = {
    "celery": {"visibility_timeout_s": 2,
               "transport_options": {"unacked_restore_interval": 1, "unacked_restore_throttle": 1}},
    "retry": {"redis_schedule_min_delay_ms": 500},
}  # fmt: skip


def batched(topic: Topic, size: int, **more: Any) -> dict[str, Any]:
    """A route of ``topic`` to ``tests.batch`` in batches of ``size``, sent in full."""
    return {"topic": topic.name, "task": "tests.batch", "batch_size": size,
            "batch_max_wait_ms": 2000, **more}  # fmt: skip


def batches(ledger: Ledger) -> list[dict[str, Any]]:
    return [json.loads(b) for b in ledger.client.lrange(f"{ledger.prefix}:batches", 0, -1)]


def first_arg(message: Any) -> Any:
    """The first argument of a JSON task message (a batch's: its envelopes)."""
    return json.loads(base64.b64decode(json.loads(message)["body"]))[0][0]


def succeeded(ledger: Ledger) -> list[int]:
    entries = ledger.client.lrange(f"{ledger.prefix}:succeeded", 0, -1)
    return sorted(json.loads(e)["offset"] for e in entries)


def test_a_batch_straddling_its_watermark_is_cut_again_there(ledger_redis: redis.Redis) -> None:
    """After a rewind, the same offsets come again cut otherwise: only the records past the
    watermark are enqueued, in one message of their own."""
    queue, group_id = f"q-{uuid.uuid4().hex[:8]}", f"g-{uuid.uuid4().hex[:8]}"
    dispatcher = Dispatcher(CelerySettings(broker_url=BROKER_URL), group_id)
    route = Route("orders", "tests.batch", queue, False, "json", "orders.g.dlt", batch_size=10)
    records = [consumed(envelope(o, group_id).record) for o in range(10, 22)]
    mark = f"bridge:{group_id}:published:orders:0"
    try:
        first = dispatcher.publish([dispatcher.batched(route, records[:5])])  # 10..14
        again = dispatcher.publish(
            [dispatcher.batched(route, records[2:8]), dispatcher.batched(route, records[8:])]
        )  # 12..17 (12..14 enqueued), 18..21
        assert (first.enqueued, first.skipped) == (5, 0)
        assert (again.enqueued, again.skipped, again.refused) == (7, 3, ())
        assert ledger_redis.get(mark) == b"22"
        messages = [ledger_redis.rpop(queue) for _ in range(3)]
        offsets = [[a["offset"] for a in first_arg(m)] for m in messages]
        assert offsets == [[10, 11, 12, 13, 14], [15, 16, 17], [18, 19, 20, 21]]
        ids = [json.loads(m)["headers"]["id"] for m in messages]  # type: ignore[arg-type]
        assert ids == [f"{group_id}:orders:0:{a}-{b}" for a, b in ((10, 14), (15, 17), (18, 21))]
        assert dispatcher.publish([dispatcher.batched(route, records)]).skipped == 12
    finally:
        ledger_redis.delete(queue, mark)
        dispatcher.close()


def test_each_record_of_a_batch_ends_on_its_own(
    make_topic: MakeTopic, start_bridge: StartBridge, producer: KafkaProducer, ledger: Ledger
) -> None:
    topic = make_topic()
    bridge = start_bridge([batched(topic, 10)])
    told = {3: [("fail", b"1")], 4: [("mode", b"permanent")], 6: [("fail", b"99")],
            7: [("mode", b"value-error")]}  # fmt: skip
    sent = [
        send(
            producer,
            topic,
            ledger,
            key=f"k{i}".encode(),
            value=b'{"n": %d}' % i,
            headers=[*told.get(i, []), ("x-bytes", bytes([i, 0, 255]))],
        )
        for i in range(10)
    ]
    group = bridge.group_id

    dead = read_all(topic.dlt(group), expected=3)
    wait_for(lambda: len(ledger.done()) == 7, what="the seven records that succeed")
    assert succeeded(ledger) == [0, 1, 2, 3, 5, 8, 9]  # each once: none ran again
    [first] = [b for b in batches(ledger) if b["task_id"].endswith(":0-9")]
    assert first == {"task_id": f"{group}:{topic.name}:0:0-9", "retries": 0,
                     "offsets": list(range(10))}  # fmt: skip
    attempts = {int(tid.rsplit(":", 1)[1]): n for tid, n in ledger.attempts().items()}
    assert attempts == {0: 1, 1: 1, 2: 1, 3: 2, 4: 1, 5: 1, 6: 3, 7: 1, 8: 1, 9: 1}
    retried = [e for e in executions(ledger) if e["retries"] > 0]
    assert {(e["offset"], e["retries"]) for e in retried} == {(3, 1), (6, 1), (6, 2)}

    by_offset = {original_offset(d): d for d in dead}
    expected = {4: (b"non-retryable", b"1"), 6: (b"exhausted", b"3"), 7: (b"non-retryable", b"1")}
    assert set(by_offset) == set(expected)
    for offset, (reason, attempts_header) in expected.items():
        letter, original = by_offset[offset], sent[offset]
        headers = headers_of(letter)
        assert headers["bridge-reason"] == reason
        assert headers["bridge-attempts"] == attempts_header
        assert headers["bridge-task"] == b"tests.batch"
        assert headers["bridge-task-id"] == f"{group}:{topic.name}:0:{offset}".encode()
        assert letter.key == f"k{offset}".encode()
        assert letter.value == b'{"n": %d}' % offset
        assert headers["x-bytes"] == bytes([offset, 0, 255])
        assert original.offset == offset


def test_a_handler_that_raises_fails_each_record_which_retries_alone(
    make_topic: MakeTopic, start_bridge: StartBridge, producer: KafkaProducer, ledger: Ledger
) -> None:
    topic = make_topic()
    bridge = start_bridge([batched(topic, 5)])
    sent = send_many(producer, topic, ledger, 5, headers=[("batch-raise", b"1")])
    assert_each_handled_once(ledger, task_ids(bridge.group_id, topic, sent))
    assert {e["retries"] for e in executions(ledger)} == {1}  # each ran once more, as retry 1


@pytest.mark.parametrize("retried", [False, True], ids=["first-attempt", "retry"])
def test_a_worker_killed_mid_batch_loses_nothing(
    tmp_path: Path,
    make_topic: MakeTopic,
    start_bridge: StartBridge,
    producer: KafkaProducer,
    ledger: Ledger,
    admin: KafkaAdminClient,
    retried: bool,
) -> None:
    """Killed in a batch of first attempts, or in a batch of retries (of records that each
    failed once, gathered in batches of 5)."""
    queue = f"batch-kill-{uuid.uuid4().hex[:8]}"
    worker = start_worker(tmp_path, queue, concurrency=1, sections=SWEEP)
    topic = make_topic()
    route = (batched(topic, 5, queue=queue, task="tests.batch_later", batch_max_wait_ms=50)
             if retried else batched(topic, 10, queue=queue))  # fmt: skip
    bridge = start_bridge([route], sections=SWEEP)
    fail = [("fail", b"1")] if retried else []
    sent = send_many(producer, topic, ledger, 10, headers=[*fail, ("sleep-ms", b"100")])
    ids = task_ids(bridge.group_id, topic, sent)
    survivor = None
    try:
        if retried:
            bring_retries_forward(bridge.group_id, 10)
        wait_for(lambda: sum(e["retries"] == retried for e in executions(ledger)) >= 3,
                 what="the batch under way")  # fmt: skip
        worker.kill()
        assert len(ledger.done()) < 10
        survivor = start_worker(tmp_path, queue, concurrency=1, sections=SWEEP)
        wait_for(lambda: ledger.done() >= ids, timeout_s=60, what="every record handled")
    finally:
        (survivor or worker).stop()
    assert ledger.done() == ids
    if retried:
        again = [b["offsets"] for b in batches(ledger) if b["retries"]]
        assert {o for offsets in again for o in offsets} == set(range(10))
        assert max(len(offsets) for offsets in again) == 5  # batches of retries, not one each
    wait_committed_to_end(admin, bridge.group_id, topic)


@pytest.mark.parametrize(
    ("task", "why"),
    [("tests.no_such_task", b"is not registered"), ("tests.flaky", b"RecordTask of one record")],
    ids=["unknown-task", "single-record-task"],
)
def test_a_batch_no_worker_can_run_is_dead_lettered_record_by_record(
    make_topic: MakeTopic,
    start_bridge: StartBridge,
    producer: KafkaProducer,
    ledger: Ledger,
    task: str,
    why: bytes,
) -> None:
    """The session's worker has no configuration routing this topic (its start-up checks do
    not see the route): each record of the batch is dead-lettered as unroutable, not lost."""
    topic = make_topic()
    bridge = start_bridge([batched(topic, 5, task=task)])
    send_many(producer, topic, ledger, 5)
    dead = read_all(topic.dlt(bridge.group_id), expected=5)
    assert sorted(original_offset(d) for d in dead) == list(range(5))
    for letter in dead:
        headers = headers_of(letter)
        assert headers["bridge-reason"] == b"unroutable"
        assert why in headers["kafka_dlt-exception-message"]
        offset = original_offset(letter)
        assert headers["bridge-task-id"] == f"{bridge.group_id}:{topic.name}:0:{offset}".encode()
    assert ledger.attempts() == {}


def bring_retries_forward(group_id: str, count: int) -> None:
    """Wait until ``count`` retries of ``tests.batch_later`` are kept, then make them all due
    now (as if their 10 minutes had passed): the bridge's next round gathers them together."""
    broker = redis.Redis.from_url(BROKER_URL)
    key = keys.gathered_retries(group_id)
    wait_for(lambda: broker.zcard(key) == count, what=f"{count} retries kept")
    members: list[bytes] = broker.zrange(key, 0, -1)  # type: ignore[assignment]
    broker.zadd(key, dict.fromkeys(members, 0), xx=True)


def test_retries_of_several_batches_run_as_one_batch_each_with_its_own_attempts(
    make_topic: MakeTopic, start_bridge: StartBridge, producer: KafkaProducer, ledger: Ledger
) -> None:
    """Records failing in three batches come back in one batch of retries; each keeps its own
    attempt count: one that always fails is dead-lettered exhausted after max_retries + 1 = 3
    attempts, byte-exact, while those retried with it succeed, each once."""
    topic = make_topic()
    bridge = start_bridge([batched(topic, 5, task="tests.batch_later", batch_max_wait_ms=50)])
    told = {1: b"1", 7: b"1", 12: b"99", 13: b"2"}
    sent = [
        send(producer, topic, ledger, key=f"k{i}".encode(), value=b'{"n": %d}' % i,
             headers=[("fail", told[i])] if i in told else [("x-bytes", bytes([i, 0, 255]))])
        for i in range(15)
    ]  # fmt: skip
    group = bridge.group_id
    bring_retries_forward(group, 4)
    bring_retries_forward(group, 2)  # 12 and 13 fail their first retry
    [dead] = read_all(topic.dlt(group), expected=1)
    wait_for(lambda: len(ledger.done()) == 14, what="the fourteen records that succeed")

    assert succeeded(ledger) == [i for i in range(15) if i != 12]  # each once
    retried = [(b["retries"], sorted(b["offsets"]), b["task_id"]) for b in batches(ledger)
               if b["retries"]]  # fmt: skip
    assert [(r, offsets) for r, offsets, _ in retried] == [(1, [1, 7, 12, 13]), (2, [12, 13])]
    assert [tid.split(":")[2] for _, _, tid in retried] == ["retry-1", "retry-2"]
    attempts = {int(tid.rsplit(":", 1)[1]): n for tid, n in ledger.attempts().items()}
    assert attempts == {i: {1: 2, 7: 2, 12: 3, 13: 3}.get(i, 1) for i in range(15)}
    headers = headers_of(dead)
    assert original_offset(dead) == 12
    assert headers["bridge-reason"] == b"exhausted"
    assert headers["bridge-attempts"] == b"3"
    assert headers["bridge-task-id"] == f"{group}:{topic.name}:0:12".encode()
    assert (dead.key, dead.value, headers["fail"]) == (b"k12", b'{"n": 12}', b"99")
    assert sent[12].offset == 12
    assert (
        redis.Redis.from_url(BROKER_URL).exists(
            keys.gathered_retries(group), keys.gathered_retry_envelopes(group)
        )
        == 0
    )  # nothing left behind
