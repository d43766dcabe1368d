"""Prometheus metrics of a bridge and of a prefork worker equal what really happened.

A known workload (successes, transient failures, non-retryable and exhausted records,
undecodable values, a retry that waits in Redis) runs through a bridge and a worker of its
own, both serving /metrics; every counter is compared with the test handlers' ledger and the
dead-letter topic.
"""

from __future__ import annotations

import contextlib
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
from kafka import KafkaProducer
from prometheus_client.multiprocess import MultiProcessCollector

from tests.conftest import wait_for
from tests.integration.conftest import Ledger, Topic, WorkerProcess, read_all, start_worker
from tests.integration.helpers import (
    MakeTopic,
    Samples,
    StartBridge,
    free_port,
    headers_of,
    scrape,
    send,
)

T = TypeVar("T")
FLAKY, LONG = "tests.flaky", "tests.long_retry"


def test_bridge_and_worker_counters_equal_the_ledger(
    make_topic: MakeTopic,
    start_bridge: StartBridge,
    producer: KafkaProducer,
    ledger: Ledger,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    bridge_port, worker_port = free_port(), free_port()
    multiproc = tmp_path / "prometheus"
    multiproc.mkdir()  # prometheus_client needs it at import, before the worker empties it
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(multiproc))  # to look at each child
    queue = f"metrics-{uuid.uuid4().hex[:8]}"
    metrics = {"worker_port": worker_port, "worker_addr": "127.0.0.1"}
    worker = start_worker(tmp_path, queue, concurrency=2, sections={"metrics": metrics})
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR")  # the worker's alone
    try:
        flaky, long = make_topic(partitions=2), make_topic()
        bridge = start_bridge(
            [{"topic": flaky.name, "task": FLAKY, "queue": queue},
             {"topic": long.name, "task": LONG, "queue": queue}],
            sections={"metrics": {"redis_interval_s": 0.1}},
            args=["--metrics-port", str(bridge_port), "--metrics-addr", "127.0.0.1"],
        )  # fmt: skip
        produce_workload(producer, flaky, long, ledger)
        dead = read_all(flaky.dlt(bridge.group_id), expected=6, timeout_s=60)
        wait_for(lambda: len(ledger.done()) == 8, timeout_s=60, what="8 successes")

        reasons = Counter(headers_of(d)["bridge-reason"].decode() for d in dead)
        assert reasons == {"undecodable": 2, "non-retryable": 2, "exhausted": 2}
        expected_worker = worker_expected(ledger, reasons, {flaky.name: FLAKY, long.name: LONG})
        assert expected_worker["executions"] == {FLAKY: 23, LONG: 2}  # the workload as designed
        scraped = settled(lambda: worker_counts(scrape(worker_port)), expected_worker)
        assert scraped == expected_worker

        expected_bridge = bridge_expected(flaky, long, undecodable=reasons["undecodable"])
        scraped_bridge = settled(lambda: bridge_counts(scrape(bridge_port)), expected_bridge)
        assert scraped_bridge == expected_bridge

        assert_summed_over_two_children(worker, multiproc, scrape(worker_port))
    finally:
        worker.stop()


def test_a_parked_ordered_key_shows_in_the_redis_gauges_and_the_outcomes(
    make_topic: MakeTopic,
    start_bridge: StartBridge,
    producer: KafkaProducer,
    ledger: Ledger,
    tmp_path: Path,
) -> None:
    bridge_port, worker_port = free_port(), free_port()
    queue = f"metrics-{uuid.uuid4().hex[:8]}"
    metrics = {"worker_port": worker_port, "worker_addr": "127.0.0.1"}
    worker = start_worker(tmp_path, queue, sections={"metrics": metrics})
    try:
        topic = make_topic()
        route = {"topic": topic.name, "task": "tests.ordered", "queue": queue, "ordered": True,
                 "retry_interval_s": 0.01, "max_retries": 1, "on_exhausted": "park"}  # fmt: skip
        bridge = start_bridge([route], sections={"metrics": {"redis_interval_s": 0.1}},
                              args=["--metrics-port", str(bridge_port)])  # fmt: skip
        send(producer, topic, ledger, key=b"stuck", headers=[("mode", b"permanent")])
        for key in (b"stuck", b"stuck", b"ok", b"ok", b"ok"):
            send(producer, topic, ledger, key=key)
        wait_for(lambda: len(ledger.done()) == 3, timeout_s=60, what="the other key's 3 records")

        group = bridge.group_id
        expected = {
            "appended": {(): 6},
            "published": {},  # ordered records are appended, not published as they come
            "parked keys": {(group,): 1},
            "retrying keys": {(group,): 0},
            "waiting": {(group, topic.name, "0"): 3},  # the parked head and the 2 behind it
            "outcomes": {("tests.ordered", "success", ""): 3,
                         ("tests.ordered", "parked", "non-retryable"): 1},
        }  # fmt: skip

        def read() -> dict[str, Any]:
            bridge_samples, worker_samples = scrape(bridge_port), scrape(worker_port)
            return {
                "appended": by(bridge_samples, "bridge_records_appended_total"),
                "published": by(bridge_samples, "bridge_tasks_published_total"),
                "parked keys": by(bridge_samples, "bridge_ordered_keys_parked", "group",
                                  keep_zero=True),
                "retrying keys": by(bridge_samples, "bridge_ordered_keys_retrying", "group",
                                    keep_zero=True),
                "waiting": by(bridge_samples, "bridge_ordered_records_waiting", "group", "topic",
                              "partition"),
                "outcomes": by(worker_samples, "bridge_worker_task_outcomes_total", "task",
                               "outcome", "reason"),
            }  # fmt: skip

        assert settled(read, expected) == expected
    finally:
        worker.stop()


def produce_workload(producer: KafkaProducer, flaky: Topic, long: Topic, ledger: Ledger) -> None:
    """13 records on ``flaky`` (tests.flaky: max_retries=3), over 2 partitions; 1 on ``long``."""
    plan: list[tuple[list[tuple[str, bytes]], bytes]] = [
        *[([("sleep-ms", b"300")], b"{}")] * 4,  # succeed at once, slowly: both children work
        *[([("fail", b"2")], b"{}")] * 3,  # two retries each, then success
        *[([("mode", b"permanent")], b"{}")] * 2,  # non-retryable
        *[([("fail", b"99")], b"{}")] * 2,  # exhausted: 4 attempts
        *[([], b"\xff{not json")] * 2,  # undecodable: the bridge dead-letters them
    ]
    for i, (headers, value) in enumerate(plan):
        send(producer, flaky, ledger, key=f"k{i}".encode(), value=value, headers=headers,
             partition=i % 2)  # fmt: skip
    # One retry in 1.5 s: it waits in Redis (redis_schedule_min_delay_ms is 1000 ms).
    send(producer, long, ledger, headers=[("fail", b"1"), ("countdown", b"1.5")])


def worker_expected(
    ledger: Ledger, reasons: Counter[str], tasks: dict[str, str]
) -> dict[str, dict[Any, float]]:
    """What the worker's counters must say, from the ledger and the dead-letter topic."""
    task_of = {tid: tasks[tid.split(":")[1]] for tid in ledger.attempts()}
    executions = Counter[str]()
    for tid, n in ledger.attempts().items():
        executions[task_of[tid]] += n
    success = Counter(task_of[tid] for tid in ledger.done())
    dead = {r: n for r, n in reasons.items() if r != "undecodable"}  # workers wrote these
    retried = {
        task: executions[task] - success[task] - (sum(dead.values()) if task == FLAKY else 0)
        for task in executions
    }
    outcomes: dict[Any, float] = {(t, "success", ""): n for t, n in success.items()}
    outcomes |= {(t, "retry", ""): n for t, n in retried.items()}
    outcomes |= {(FLAKY, "dead-lettered", r): n for r, n in dead.items()}
    return {
        "outcomes": outcomes,
        "executions": dict(executions),
        # tests.flaky retries in 10 ms (a countdown); tests.long_retry's 1.5 s waits in Redis
        "retries": {(FLAKY, "countdown"): retried[FLAKY], (LONG, "redis"): retried[LONG]},
        "dead letter writes": {(FLAKY, r, "written"): n for r, n in dead.items()},
    }


def worker_counts(samples: Samples) -> dict[str, dict[Any, float]]:
    """The worker's counters, as scraped (zero samples left out)."""
    executions: Counter[str] = Counter()
    for labels, value in find(samples, "bridge_worker_handler_duration_seconds_count"):
        executions[labels["task"]] += int(value)
    return {
        "outcomes": by(samples, "bridge_worker_task_outcomes_total", "task", "outcome", "reason"),
        "executions": dict(executions),
        "retries": by(samples, "bridge_worker_retries_scheduled_total", "task", "via"),
        "dead letter writes": by(
            samples, "bridge_worker_dead_letter_writes_total", "task", "reason", "result"
        ),
    }


def bridge_expected(flaky: Topic, long: Topic, undecodable: int) -> dict[str, Any]:
    """What the bridge's metrics must say once everything is handled and committed."""
    partitions = [(flaky.name, "0"), (flaky.name, "1"), (long.name, "0")]
    return {
        "consumed": {(flaky.name,): 13, (long.name,): 1},
        "committed": {(flaky.name,): 13, (long.name,): 1},
        "published": {(): 12},  # every record but the undecodable ones
        "skipped": {},
        "bridge dead letters": {(flaky.name, "undecodable", "false"): undecodable},
        "lag": dict.fromkeys(partitions, 0),
        "uncommitted": dict.fromkeys(partitions, 0),
        "assigned": 3,
        "delayed retries waiting": 0,
        "dead letters waiting": 0,
    }


def bridge_counts(samples: Samples) -> dict[str, Any]:
    """The bridge's metrics, as scraped (zero counter samples left out)."""
    assigned = by(samples, "bridge_assigned_partitions", keep_zero=True)
    delayed = by(samples, "bridge_delayed_retries_waiting", keep_zero=True)
    return {
        "consumed": by(samples, "bridge_records_consumed_total", "topic"),
        "committed": by(samples, "bridge_records_committed_total", "topic"),
        "published": by(samples, "bridge_tasks_published_total"),
        "skipped": by(samples, "bridge_records_skipped_total"),
        "bridge dead letters": by(
            samples, "bridge_dead_letters_total", "topic", "reason", "deferred"
        ),
        "lag": by(samples, "bridge_consumer_lag_records", "topic", "partition", keep_zero=True),
        "uncommitted": by(
            samples, "bridge_uncommitted_records", "topic", "partition", keep_zero=True
        ),
        "assigned": assigned.get(()),
        "delayed retries waiting": delayed.get(()),
        "dead letters waiting": sum(by(samples, "bridge_dead_letters_waiting").values()),
    }


def assert_summed_over_two_children(worker: WorkerProcess, path: Path, samples: Samples) -> None:
    """Both pool processes handled records, and /metrics is the sum of their files."""
    per_pid: dict[int, float] = {}
    for db in path.glob("counter_*.db"):
        families = MultiProcessCollector.merge([str(db)], accumulate=True)  # type: ignore[no-untyped-call]
        per_pid[int(db.stem.split("_")[1])] = sum(
            s.value for f in families for s in f.samples
            if s.name == "bridge_worker_task_outcomes_total"
        )  # fmt: skip
    children = {pid: n for pid, n in per_pid.items() if n}
    assert worker.proc.pid not in children  # the main process handles nothing
    assert len(children) == 2, per_pid
    scraped = sum(v for _, v in find(samples, "bridge_worker_task_outcomes_total"))
    assert scraped == sum(children.values())


def by(
    samples: Samples, name: str, *labels: str, keep_zero: bool = False
) -> dict[tuple[str, ...], float]:
    """Samples of ``name`` keyed by the values of ``labels``."""
    found: dict[tuple[str, ...], float] = {}
    for sample_labels, value in find(samples, name):
        if value or keep_zero:
            key = tuple(sample_labels[label] for label in labels)
            found[key] = found.get(key, 0) + value
    return found


def find(samples: Samples, name: str) -> list[tuple[dict[str, str], float]]:
    return [(labels, value) for n, labels, value in samples if n == name]


def settled(read: Callable[[], T], expected: T, timeout_s: float = 30) -> T:
    """Read until ``expected`` is seen (counters lag the ledger by a moment); return the last
    reading, so that a mismatch shows in the caller's assertion."""
    last = [read()]

    def seen() -> bool:
        last[0] = read()
        return last[0] == expected

    with contextlib.suppress(AssertionError):
        wait_for(seen, timeout_s=timeout_s, interval_s=0.2, what="metrics to settle")
    return last[0]
