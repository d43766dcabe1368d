"""Ordered routes: per-key order, only the failing key waits, park and release, limits."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import time
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaAdminClient, KafkaProducer

from tests.conftest import wait_for
from tests.integration.conftest import (
    REPO,
    BridgeProcess,
    Ledger,
    Topic,
    end_offsets,
    read_all,
    start_worker,
)
from tests.integration.helpers import (
    MakeTopic,
    StartBridge,
    committed_offsets,
    executions,
    headers_of,
    original_offset,
    send,
    services,
    status_json,
    wait_committed_to_end,
)

ORDERED = {"task": "tests.ordered", "ordered": True, "retry_interval_s": 0.01}


def succeeded(ledger: Ledger) -> list[dict[str, Any]]:
    """Every success, in the order they happened."""
    return [json.loads(e) for e in ledger.client.lrange(f"{ledger.prefix}:succeeded", 0, -1)]


def by_key(events: list[dict[str, Any]]) -> dict[str, list[int]]:
    offsets: dict[str, list[int]] = defaultdict(list)
    for event in events:
        offsets[event["key"]].append(event["offset"])
    return dict(offsets)


def produce(
    producer: KafkaProducer,
    topic: Topic,
    ledger: Ledger,
    records: list[tuple[bytes, list[tuple[str, bytes]]]],
) -> dict[str, list[int]]:
    """Send (key, headers) records in this order; return each key's offsets."""
    futures = [
        producer.send(
            topic.name, key=key, value=b"{}", headers=[("ledger", ledger.prefix.encode()), *h]
        )
        for key, h in records
    ]
    producer.flush()
    offsets: dict[str, list[int]] = defaultdict(list)
    for (key, _), future in zip(records, futures, strict=True):
        offsets[key.decode()].append(future.get(timeout=10).offset)
    return dict(offsets)


def keys_idle(ledger: Ledger, group_id: str) -> bool:
    """No key FIFO holds anything and no head is out: the group's ordered state drained."""
    client = ledger.client
    waiting = [client.get(k) for k in client.scan_iter(f"bridge:{group_id}:ordered:waiting:*")]
    return not client.zcard(f"bridge:{group_id}:ordered:heads") and all(
        int(v or 0) == 0 for v in waiting
    )


def release(
    bridge: BridgeProcess, topic: Topic, key: str, *extra: str
) -> subprocess.CompletedProcess[str]:
    """``python -m bridge release`` for one key of ``topic``."""
    return subprocess.run(
        [sys.executable, "-m", "bridge", "release", "--config", str(bridge.config_path),
         "--topic", topic.name, "--key", key, *extra],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_each_key_runs_in_offset_order_through_random_failures(
    make_topic: MakeTopic,
    start_bridge: StartBridge,
    producer: KafkaProducer,
    ledger: Ledger,
    admin: KafkaAdminClient,
) -> None:
    topic = make_topic(partitions=4)
    bridge = start_bridge([{"topic": topic.name, **ORDERED, "max_retries": 5}])
    rng = random.Random(5)
    records = [
        (
            f"key-{rng.randrange(20)}".encode(),
            [("fail", str(rng.choice([0] * 8 + [1, 2])).encode())],
        )
        for _ in range(2000)
    ]
    sent = produce(producer, topic, ledger, records)
    assert len(sent) == 20

    wait_for(lambda: len(ledger.done()) == 2000, timeout_s=240, what="2000 records handled")
    assert by_key(succeeded(ledger)) == sent, "successes out of offset order"
    # One at a time: no record of a key started before the one ahead of it had succeeded.
    assert {k: sorted(v) for k, v in by_key(executions(ledger)).items()} == by_key(
        executions(ledger)
    )
    assert sum(end_offsets(topic.dlt(bridge.group_id)).values()) == 0
    wait_committed_to_end(admin, bridge.group_id, topic)
    wait_for(lambda: keys_idle(ledger, bridge.group_id), what="every key idle again")


def test_only_the_failing_key_waits(
    make_topic: MakeTopic, start_bridge: StartBridge, producer: KafkaProducer, ledger: Ledger
) -> None:
    topic = make_topic(partitions=2)
    bridge = start_bridge(
        [{"topic": topic.name, **ORDERED, "retry_interval_s": 0.2, "max_retries": 200}]
    )
    down_until = time.time() + 6
    bad = [(b"bad", [("fail-until", str(down_until).encode())])] + [(b"bad", [])] * 9
    good: list[tuple[bytes, list[tuple[str, bytes]]]] = [
        (f"good-{i % 10}".encode(), []) for i in range(100)
    ]
    sent = produce(producer, topic, ledger, bad + good)

    wait_for(
        lambda: sum(1 for e in succeeded(ledger) if e["key"] != "bad") == 100,
        timeout_s=30,
        what="every other key's records",
    )
    assert time.time() < down_until, "the other keys did not finish while one key failed"
    bad_runs = [e["offset"] for e in executions(ledger) if e["key"] == "bad"]
    assert set(bad_runs) == {sent["bad"][0]}, "records behind the failing head ran"
    assert len(bad_runs) >= 2, "the failing head was not retried"
    state = status_json(bridge)["ordered"]
    [waiting] = state["keys_waiting"]
    assert (waiting["key"], waiting["depth"]) == ("bad", 10)
    assert waiting["failing_for_s"] > 0

    wait_for(lambda: len(ledger.done()) == 110, timeout_s=30, what="the failing key to catch up")
    assert by_key(succeeded(ledger)) == sent
    assert time.time() >= down_until


def test_dead_letter_then_continue_with_the_next_record(
    make_topic: MakeTopic, start_bridge: StartBridge, producer: KafkaProducer, ledger: Ledger
) -> None:
    topic = make_topic()
    bridge = start_bridge([{"topic": topic.name, **ORDERED, "max_retries": 2}])
    records = [(b"k", []), (b"k", [("mode", b"permanent")]), (b"k", [("fail", b"9")])]
    records += [(b"k", [])] * 2
    sent = produce(producer, topic, ledger, records)["k"]

    dead = read_all(topic.dlt(bridge.group_id), expected=2)
    assert [original_offset(d) for d in dead] == sent[1:3]
    reasons = [headers_of(d)["bridge-reason"] for d in dead]
    assert reasons == [b"non-retryable", b"exhausted"]
    wait_for(lambda: len(succeeded(ledger)) == 3, what="the records after them")
    assert [e["offset"] for e in succeeded(ledger)] == [sent[0], *sent[3:]]
    assert by_key(executions(ledger))["k"] == [sent[0], sent[1], *[sent[2]] * 3, *sent[3:]]


def test_park_then_release_resumes_or_skips_the_head(
    make_topic: MakeTopic, start_bridge: StartBridge, producer: KafkaProducer, ledger: Ledger
) -> None:
    topic = make_topic()
    route = {"topic": topic.name, **ORDERED, "max_retries": 1, "on_exhausted": "park"}
    bridge = start_bridge([route])
    down_until = str(time.time() + 3).encode()
    records = [(b"resume", [("fail-until", down_until)])] + [(b"resume", [])] * 2
    records += [(b"skip", [("mode", b"permanent")])] + [(b"skip", [])] * 2
    sent = produce(producer, topic, ledger, records)

    def parked() -> set[str]:
        return {k["key"] for k in status_json(bridge)["ordered"]["keys_parked"]}

    wait_for(lambda: parked() == {"resume", "skip"}, what="both keys parked")
    [parked_skip] = [k for k in status_json(bridge)["ordered"]["keys_parked"] if k["key"] == "skip"]
    assert parked_skip["depth"] == 3
    assert parked_skip["parked"]["reason"] == "non-retryable"
    assert succeeded(ledger) == []
    assert sum(end_offsets(topic.dlt(bridge.group_id)).values()) == 0, "parked, not dead"

    out = release(bridge, topic, "skip", "--skip")
    assert out.returncode == 0, out.stderr
    assert "skipped (dead letter written)" in out.stdout
    [dead] = read_all(topic.dlt(bridge.group_id), expected=1)
    assert (dead.key, original_offset(dead)) == (b"skip", sent["skip"][0])
    assert headers_of(dead)["bridge-reason"] == b"non-retryable"
    wait_for(lambda: len(succeeded(ledger)) == 2, what="the skipped key to go on")

    wait_for(lambda: time.time() > float(down_until), interval_s=0.2, what="downstream back up")
    out = release(bridge, topic, "resume")
    assert out.returncode == 0, out.stderr
    assert "resumed" in out.stdout
    wait_for(lambda: len(succeeded(ledger)) == 5, what="the resumed key to go on")
    assert by_key(succeeded(ledger)) == {"skip": sent["skip"][1:], "resume": sent["resume"]}
    assert parked() == set()
    fails = release(bridge, topic, "resume")
    assert fails.returncode == 1
    assert "not parked" in fails.stderr


@pytest.mark.parametrize("limit", ["max_waiting_per_key", "max_waiting_per_partition"])
def test_a_full_key_or_partition_pauses_the_partition_instead_of_growing_redis(
    make_topic: MakeTopic,
    start_bridge: StartBridge,
    producer: KafkaProducer,
    ledger: Ledger,
    admin: KafkaAdminClient,
    limit: str,
) -> None:
    topic = make_topic()
    route = {
        "topic": topic.name, **ORDERED, "retry_interval_s": 0.2, "max_retries": 100, limit: 5,
    }  # fmt: skip
    bridge = start_bridge([route])
    fifo = f"bridge:{bridge.group_id}:ordered:q:{topic.name}:k:azE="  # base64url of b"k1"
    down_until = time.time() + 4
    records = [(b"k1", [("fail-until", str(down_until).encode())])] + [(b"k1", [])] * 29
    sent = produce(producer, topic, ledger, records)["k1"]

    full = "key" if limit == "max_waiting_per_key" else "partition"
    wait_for(lambda: f"its {full} has 5 records waiting" in bridge.log(), what="a pause")
    depths = []
    while time.time() < down_until - 0.5:  # observe the held state while the head fails
        depths.append(int(ledger.client.llen(fifo)))
        committed = committed_offsets(admin, bridge.group_id, topic.name).get(0, 0)
        assert committed <= sent[0] + 5, "records beyond the key's limit were accepted"
        time.sleep(0.1)  # sampling interval of an observation, not a wait for a result
    assert max(depths) == 5

    wait_for(lambda: len(succeeded(ledger)) == 30, timeout_s=60, what="all 30 in the end")
    assert [e["offset"] for e in succeeded(ledger)] == sent
    assert "partition resumed" in bridge.log()
    wait_committed_to_end(admin, bridge.group_id, topic)


def test_a_lost_head_is_published_again_after_the_stall_timeout(
    make_topic: MakeTopic, start_bridge: StartBridge, producer: KafkaProducer, ledger: Ledger
) -> None:
    topic = make_topic()
    sections = {
        "celery": {"visibility_timeout_s": 2},
        "retry": {"redis_schedule_min_delay_ms": 500},
        "ordering": {"stall_timeout_s": 3, "watchdog_interval_ms": 100},
    }
    queue = f"nobody-{topic.name}"  # no worker: the head's message stays where it is put
    bridge = start_bridge([{"topic": topic.name, **ORDERED, "queue": queue}], sections=sections)
    send(producer, topic, ledger, key=b"k")
    send(producer, topic, ledger, key=b"k")
    wait_for(lambda: ledger.client.llen(queue) == 1, what="the head published")
    ledger.client.delete(queue)  # the head's message is lost
    lost_at = time.monotonic()

    wait_for(lambda: ledger.client.llen(queue) == 1, timeout_s=10, what="the head again")
    assert time.monotonic() - lost_at >= 2, "published again before its stall timeout"
    [message] = ledger.client.lrange(queue, 0, -1)
    assert json.loads(message)["headers"]["id"] == f"{bridge.group_id}:{topic.name}:0:0"
    assert "published it again" in bridge.log()
    ledger.client.delete(queue)


def test_order_survives_a_killed_bridge_and_a_killed_worker(
    make_topic: MakeTopic,
    start_bridge: StartBridge,
    producer: KafkaProducer,
    ledger: Ledger,
    admin: KafkaAdminClient,
    tmp_path: Path,
) -> None:
    sweep = {"unacked_restore_interval": 1, "unacked_restore_throttle": 1}  # kombu: ~100 s
    sections: dict[str, dict[str, Any]] = {
        "celery": {"visibility_timeout_s": 2, "transport_options": sweep},
        "retry": {"redis_schedule_min_delay_ms": 500},
        "ordering": {"stall_timeout_s": 5, "watchdog_interval_ms": 200},
    }
    queue = f"crash-{uuid.uuid4().hex[:8]}"
    worker = start_worker(tmp_path, queue, sections=sections)
    topic = make_topic(partitions=4)
    # Few records may wait per key, so the bridge consumes as the worker drains: both are
    # mid-way through the workload when they are killed.
    route = {"topic": topic.name, **ORDERED, "queue": queue, "max_retries": 5,
             "max_waiting_per_key": 3}  # fmt: skip
    bridge = start_bridge([route], sections=sections, kafka={"max_poll_records": 10})
    rng = random.Random(7)
    records = [
        (
            f"key-{i % 10}".encode(),
            [("sleep-ms", b"10"), ("fail", b"1" if rng.random() < 0.1 else b"0")],
        )
        for i in range(400)
    ]
    sent = produce(producer, topic, ledger, records)
    try:
        wait_for(lambda: len(succeeded(ledger)) >= 100, timeout_s=60, what="100 handled")
        bridge.proc.kill()
        bridge.proc.wait()
        start_bridge([route], group_id=bridge.group_id, sections=sections)
        wait_for(lambda: len(succeeded(ledger)) >= 200, timeout_s=60, what="200 handled")
        worker.kill()
        killed_at = time.time()
        worker = start_worker(tmp_path, queue, sections=sections)
        wait_for(lambda: len(ledger.done()) == 400, timeout_s=120, what="all 400 handled")
    finally:
        worker.stop()

    # Order: a key's successes follow its offsets (a record re-run after the worker died
    # between its success and its key's release repeats in place, nothing else).
    successes = by_key(succeeded(ledger))
    assert {
        k: [o for i, o in enumerate(v) if i == 0 or v[i - 1] != o] for k, v in successes.items()
    } == sent
    runs = by_key(executions(ledger))
    assert {k: sorted(v) for k, v in runs.items()} == runs, "a record ran before the one ahead"
    # Nothing enqueued twice: only records in flight when the worker died ran again.
    first_runs = [e for e in executions(ledger) if e["retries"] == 0]
    counted = defaultdict(list)
    for e in first_runs:
        counted[e["task_id"]].append(e["at"])
    again = {tid: at for tid, at in counted.items() if len(at) > 1}
    assert len(again) <= 2, f"ran twice: {again}"  # the worker's 2 pool processes
    assert all(at[0] < killed_at < at[1] for at in again.values()), again
    assert sum(end_offsets(topic.dlt(bridge.group_id)).values()) == 0
    wait_committed_to_end(admin, bridge.group_id, topic)
    wait_for(lambda: keys_idle(ledger, bridge.group_id), what="every key idle again")


def test_a_key_waits_for_its_heads_dead_letter_while_kafka_is_down(
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
        route = {"topic": topic.name, **ORDERED, "queue": queue, "max_retries": 0}
        bridge = start_bridge([route], sections=quick_dlt)
        # The head fails for good while Kafka is away (simulated work: 2 s to stop it).
        records = [(b"k", [("mode", b"permanent"), ("sleep-ms", b"2000")]), (b"k", [])]
        sent = produce(producer, topic, ledger, records)["k"]
        wait_for(lambda: len(executions(ledger)) == 1, what="the head started")
        services("stop-kafka")
        pending = f"bridge:{bridge.group_id}:dead-letters:pending"
        wait_for(lambda: ledger.client.zcard(pending) == 1, timeout_s=60, what="pending")
        assert len(executions(ledger)) == 1, "the next record ran before its head was dead"
        kafka_back_at = time.time()
        services("start-kafka")

        [dead] = read_all(topic.dlt(bridge.group_id), expected=1, timeout_s=90)
        assert original_offset(dead) == sent[0]
        wait_for(lambda: len(succeeded(ledger)) == 1, timeout_s=60, what="the next record")
        assert [e["offset"] for e in succeeded(ledger)] == sent[1:]
        assert executions(ledger)[1]["at"] > kafka_back_at, "it did not wait for its head"
    finally:
        worker.stop()
