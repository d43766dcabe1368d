"""Batches on ordered routes on the real services (issue 20, part 3): a batch carries
consecutive records of one key; a record failing in the middle of a batch holds its key back
(the records after it run again after it), other keys go on, no record that succeeded before
it runs twice; an exhausted one is dead-lettered on its own; a worker SIGKILLed mid-batch
loses nothing and keeps the order."""

from __future__ import annotations

import json
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

from kafka import KafkaAdminClient, KafkaProducer

from tests.conftest import wait_for
from tests.integration import test_batches
from tests.integration.conftest import Ledger, read_all, start_worker
from tests.integration.helpers import (
    MakeTopic,
    StartBridge,
    executions,
    headers_of,
    original_offset,
    wait_committed_to_end,
)
from tests.integration.test_ordered import by_key, keys_idle, produce, succeeded

SWEEP = {**test_batches.SWEEP, "ordering": {"stall_timeout_s": 5, "watchdog_interval_ms": 200}}


def route(topic: Any, size: int, **more: Any) -> dict[str, Any]:
    return {"topic": topic.name, "task": "tests.ordered_batch", "ordered": True,
            "batch_size": size, "batch_max_wait_ms": 300, "retry_interval_s": 0.01,
            "max_retries": 5, **more}  # fmt: skip


def batches(ledger: Ledger) -> list[dict[str, Any]]:
    return [json.loads(b) for b in ledger.client.lrange(f"{ledger.prefix}:batches", 0, -1)]


def runs(ledger: Ledger) -> Counter[str]:
    return Counter(e["task_id"] for e in executions(ledger))


def test_a_record_failing_mid_batch_holds_back_its_key_only(
    make_topic: MakeTopic,
    start_bridge: StartBridge,
    producer: KafkaProducer,
    ledger: Ledger,
    admin: KafkaAdminClient,
) -> None:
    topic = make_topic()
    bridge = start_bridge([route(topic, 4, retry_interval_s=1)])
    keys = [b"a", b"b", b"c"]
    records = [(keys[i % 3], [("fail", b"1" if i == 6 else b"0")]) for i in range(30)]
    sent = produce(producer, topic, ledger, records)  # a: 0, 3, 6 (fails once), 9, ...
    group = bridge.group_id

    wait_for(lambda: len(ledger.done()) == 30, timeout_s=60, what="30 records handled")
    successes = succeeded(ledger)
    assert by_key(successes) == sent, "a key's successes out of offset order, or twice"
    # Other keys went on while record 6 waited a second for its retry.
    sixth = next(i for i, s in enumerate(successes) if s["offset"] == 6)
    assert {s["key"] for s in successes[sixth:]} == {"a"}
    # Each record ran once, record 6 twice (its retry, alone): none ran again after success.
    counted = runs(ledger)
    assert counted.pop(f"{group}:{topic.name}:0:6") == 2
    assert set(counted.values()) == {1}
    retry = [e for e in executions(ledger) if e["retries"] > 0]
    assert [(e["offset"], e["retries"]) for e in retry] == [(6, 1)]
    # Batches are consecutive records of one key, named by their first and last offsets.
    multi = [b for b in batches(ledger) if len(b["offsets"]) > 1]
    assert multi
    for batch in multi:
        first, last = batch["offsets"][0], batch["offsets"][-1]
        assert batch["task_id"] == f"{group}:{topic.name}:0:{first}-{last}"
        assert {o % 3 for o in batch["offsets"]} == {first % 3}
        key = "abc"[first % 3]
        at = sent[key].index(first)
        assert batch["offsets"] == sent[key][at : at + len(batch["offsets"])]
    assert sum(len(b["offsets"]) for b in batches(ledger)) < 30 + 10  # batched, not one by one
    wait_committed_to_end(admin, group, topic)
    wait_for(lambda: keys_idle(ledger, group), what="every key idle again")


def test_an_exhausted_record_mid_batch_is_dead_lettered_and_its_key_goes_on(
    make_topic: MakeTopic, start_bridge: StartBridge, producer: KafkaProducer, ledger: Ledger
) -> None:
    topic = make_topic()
    bridge = start_bridge([route(topic, 5, max_retries=2)])
    told = {2: [("fail", b"99"), ("x-bytes", b"\x00\xff")], 4: [("mode", b"permanent")]}
    records = [(b"k", told.get(i, [])) for i in range(8)]
    sent = produce(producer, topic, ledger, records)["k"]
    group = bridge.group_id

    dead = read_all(topic.dlt(group), expected=2)
    wait_for(lambda: len(ledger.done()) == 6, timeout_s=60, what="the six records that succeed")
    assert [s["offset"] for s in succeeded(ledger)] == [o for o in sent if o not in (2, 4)]
    counted = runs(ledger)
    assert counted[f"{group}:{topic.name}:0:2"] == 3
    assert {n for tid, n in counted.items() if not tid.endswith((":2", ":4"))} == {1}
    expected = {2: (b"exhausted", b"3"), 4: (b"non-retryable", b"1")}
    assert {original_offset(d) for d in dead} == set(expected)
    for letter in dead:
        offset = original_offset(letter)
        headers = headers_of(letter)
        assert (headers["bridge-reason"], headers["bridge-attempts"]) == expected[offset]
        assert headers["bridge-task-id"] == f"{group}:{topic.name}:0:{offset}".encode()
        assert headers["bridge-task"] == b"tests.ordered_batch"
        assert (letter.key, letter.value) == (b"k", b"{}")
        if offset == 2:
            assert headers["x-bytes"] == b"\x00\xff"
    wait_for(lambda: keys_idle(ledger, group), what="the key idle again")


def test_a_worker_killed_mid_batch_loses_nothing_and_keeps_order(
    make_topic: MakeTopic,
    start_bridge: StartBridge,
    producer: KafkaProducer,
    ledger: Ledger,
    admin: KafkaAdminClient,
    tmp_path: Path,
) -> None:
    queue = f"ob-kill-{uuid.uuid4().hex[:8]}"
    worker = start_worker(tmp_path, queue, sections=SWEEP)
    topic = make_topic(partitions=2)
    bridge = start_bridge([route(topic, 10, queue=queue)], sections=SWEEP)
    records = [(f"key-{i % 4}".encode(), [("sleep-ms", b"20")]) for i in range(120)]
    sent = produce(producer, topic, ledger, records)
    survivor = None
    try:
        wait_for(lambda: len(succeeded(ledger)) >= 30, timeout_s=60, what="30 handled")
        worker.kill()
        killed_at = time.time()
        assert len(ledger.done()) < 120
        survivor = start_worker(tmp_path, queue, sections=SWEEP)
        wait_for(lambda: len(ledger.done()) == 120, timeout_s=120, what="all 120 handled")
    finally:
        (survivor or worker).stop()
    # A key's successes follow its offsets; the records of a batch cut by the kill ran again
    # from the first the batch had not finished (repeating a run of its key in place).
    for key, offsets in by_key(succeeded(ledger)).items():
        first_seen = list(dict.fromkeys(offsets))
        last_seen = list(reversed(dict.fromkeys(reversed(offsets))))
        assert first_seen == last_seen == sent[key], f"{key}: out of order"
    again = [tid for tid, n in runs(ledger).items() if n > 1]
    first_runs = {e["task_id"]: e["at"] for e in reversed(executions(ledger))}
    assert all(first_runs[tid] < killed_at for tid in again), "ran twice, not for the kill"
    assert len(again) <= 2 * 10  # at most the two batches in flight
    wait_committed_to_end(admin, bridge.group_id, topic)
    wait_for(lambda: keys_idle(ledger, bridge.group_id), what="every key idle again")
