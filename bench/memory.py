"""``make bench`` (memory): what waiting costs, in the worker, in Redis and in the bridge.

- **pending retries**: ``BENCH_MEMORY_PENDING`` (20 000) records whose first attempt runs in a
  real worker (``bench.pending``: 2 processes) and asks for a retry in an hour, which waits in
  Redis (the bridge's way); the worker's RSS (main process and pool) once all of them wait,
  minus its RSS before. The count is what fits in the suite's time: each first attempt really
  runs, and the worker does ~200-300 of them a second on this machine. Baseline: the very same
  retry messages, with the ``eta`` Celery's ``retry(countdown=3600)`` gives them, pushed to the
  queue of a second worker, which holds them until due, as Celery does with countdowns.
  Target: <= 50 MB.
- **Redis bytes per pending retry**: ``MEMORY USAGE`` of the retries' sorted set / retries.
- **Redis bytes per waiting ordered record**: ``BENCH_MEMORY_WAITING`` (20 000) records of an
  ordered route (997 keys) with no worker, all waiting in key FIFOs; ``MEMORY USAGE`` of every
  key of the group and of its queue (the heads' messages) / records.
- **bridge RSS under a backlog**: ``BENCH_BACKLOG`` (1 000 000) records on 8 partitions, a route
  with ``max_queue_depth`` 10 000 and no worker: the bridge fills the queue, pauses, and Kafka
  keeps the rest. The bridge's RSS is sampled for ``BENCH_BACKLOG_SAMPLE_S`` (25) seconds once
  the queue is full. Target: <= 200 MB.

Each run has its own topic, group, queue and Redis keys, and deletes them.
"""

from __future__ import annotations

import json
import os
import time
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from kafka import KafkaAdminClient

from bench import harness
from bench.harness import KAFKA, produce_orders, rss, wait
from bench.report import Row, Target
from bench.scaling import stable
from bench.throughput import committed
from bridge import keys

PENDING = int(os.environ.get("BENCH_MEMORY_PENDING", "20000"))
WAITING = int(os.environ.get("BENCH_MEMORY_WAITING", "20000"))
BACKLOG = int(os.environ.get("BENCH_BACKLOG", "1000000"))
SAMPLE_S = float(os.environ.get("BENCH_BACKLOG_SAMPLE_S", "25"))
MAX_DEPTH = 10_000
POLL_RECORDS = 500  # kafka.max_poll_records's default: at most one poll in flight
WARM_UP = 500  # first attempts before the "before" RSS, so every pool process has worked
MB = 2**20


class Pending(harness.Run):
    """A route on ``bench.pending`` (a retry in an hour), its worker and its bridge."""

    worker_options = ("--prefetch-multiplier", "64")

    def __init__(self, name: str, threshold_ms: int, visibility_timeout_s: int) -> None:
        super().__init__(
            name,
            {"task": "bench.pending"},
            {
                "celery": {"visibility_timeout_s": visibility_timeout_s},
                "retry": {"redis_schedule_min_delay_ms": threshold_ms},
            },
        )

    def in_redis(self) -> int:
        """Retries waiting in Redis."""
        return int(self.redis.zcard(keys.delayed_retries(self.name)))

    def held(self) -> int:
        """Messages of this queue a worker took and holds (kombu's ``unacked`` hash)."""
        found = 0
        for _, value in self.redis.hscan_iter("unacked", count=5000):
            found += json.loads(value)[2] == self.name
        return found


def retries_in_redis() -> tuple[dict[str, Any], list[bytes]]:
    """Worker RSS growth with ``PENDING`` retries waiting in Redis; and their messages."""
    run = Pending("mem-redis", threshold_ms=1000, visibility_timeout_s=3600)
    try:
        run.start()
        produce_orders(run.name, WARM_UP)
        wait(lambda: run.in_redis() >= WARM_UP, 120, "the warm-up's retries")
        before = run.worker_rss()
        began = time.perf_counter()
        produce_orders(run.name, PENDING)
        wait(lambda: run.in_redis() >= WARM_UP + PENDING, 900, f"{PENDING} retries in Redis")
        took = time.perf_counter() - began
        time.sleep(2)  # anything still settling in the worker
        after, count = run.worker_rss(), run.in_redis()
        if count != WARM_UP + PENDING:
            raise SystemExit(f"bench: {count} retries wait in Redis, not {WARM_UP + PENDING}")
        key = keys.delayed_retries(run.name)
        zset = int(cast(int, run.redis.memory_usage(key, samples=0)))
        members = cast(list[bytes], run.redis.zrange(key, 0, -1))
    finally:
        run.stop()
    detail = _growth(before, after) | {
        "pending_retries": count, "first_attempts_per_s": round(PENDING / took),
        "redis_sorted_set_bytes": zset, "redis_bytes_per_retry": round(zset / count),
    }  # fmt: skip
    return detail, [m.split(b"\0", 1)[1] for m in members[:PENDING]]


def celery_countdowns(messages: list[bytes]) -> dict[str, Any]:
    """Worker RSS growth holding ``messages`` (retries due in an hour) as Celery countdowns."""
    run = Pending("mem-celery", threshold_ms=3_600_001, visibility_timeout_s=36_000)
    try:
        run.start()
        produce_orders(run.name, WARM_UP)  # their retries are countdowns the worker holds
        wait(lambda: run.held() >= WARM_UP, 120, "the warm-up's countdowns")
        before = run.worker_rss()
        began = time.perf_counter()
        eta = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
        for i in range(0, len(messages), 1000):
            batch = [_to_queue(m, run.name, eta) for m in messages[i : i + 1000]]
            run.redis.lpush(run.name, *batch)
        wait(lambda: run.redis.llen(run.name) == 0, 600, "the worker to take the countdowns")
        wait(lambda: run.held() >= WARM_UP + len(messages), 600, "the worker to hold them")
        took = time.perf_counter() - began
        time.sleep(2)
        after, held = run.worker_rss(), run.held()
    finally:
        run.stop()
    if held != WARM_UP + len(messages):
        raise SystemExit(f"bench: the worker holds {held} countdowns, not {len(messages)}")
    return _growth(before, after) | {"countdowns": held, "taken_per_s": round(held / took)}


def _to_queue(message: bytes, queue: str, eta: str) -> bytes:
    """A retry message held in Redis as Celery's ``retry(countdown=…)`` sends it: with an
    ``eta``, to ``queue``."""
    body = json.loads(message)
    body["headers"]["eta"] = eta
    body["properties"]["delivery_info"].update(exchange=queue, routing_key=queue)
    return json.dumps(body).encode()


def _growth(before: int, after: int) -> dict[str, Any]:
    return {"rss_before_mb": round(before / MB, 1), "rss_after_mb": round(after / MB, 1),
            "rss_growth_mb": round((after - before) / MB, 1)}  # fmt: skip


def ordered_waiting() -> dict[str, Any]:
    """Redis bytes per record waiting in the key FIFOs of an ordered route (no worker)."""
    route = {"task": "bench.pending", "ordered": True, "max_waiting_per_key": WAITING,
             "max_waiting_per_partition": WAITING}  # fmt: skip
    run = harness.Run("mem-ordered", route, partitions=8)
    admin = KafkaAdminClient(bootstrap_servers=KAFKA)
    try:
        run.start(worker=False)
        produce_orders(run.name, WAITING)
        wait(lambda: committed(admin, run.name, run.name) >= WAITING, 300, "the records")
        fifos = list(run.redis.scan_iter(f"{keys.group_prefix(run.name)}ordered:q:*", 1000))
        waiting = sum(int(run.redis.llen(k)) for k in fifos)
        owned = [run.name, *run.redis.scan_iter(f"{keys.group_prefix(run.name)}*", 1000)]
        used = sum(int(cast(int, run.redis.memory_usage(k, samples=0)) or 0) for k in owned)
    finally:
        admin.close()
        run.stop()
    if waiting != WAITING:
        raise SystemExit(f"bench: {waiting} records wait in key FIFOs, not {WAITING}")
    return {"records": waiting, "keys": len(fifos), "redis_bytes": used,
            "redis_bytes_per_record": round(used / waiting)}  # fmt: skip


def backlog() -> dict[str, Any]:
    """Bridge RSS while ``BACKLOG`` records wait in Kafka behind a full queue."""
    run = harness.Run("mem-backlog", {"task": "bench.pending", "max_queue_depth": MAX_DEPTH},
                      partitions=8)  # fmt: skip
    admin = KafkaAdminClient(bootstrap_servers=KAFKA)
    try:
        run.start(worker=False)
        bridge = run.procs[0].pid
        wait(lambda: stable(admin, run.name, 1), 60, "the bridge to join its group")
        idle = rss(bridge)
        produced_s = produce_orders(run.name, BACKLOG)
        # The bridge holds the route once the queue and the batch it is enqueueing reach the
        # limit; a batch counted so may be polled again after the hold instead of landing,
        # so the queue can stop up to one poll (max_poll_records) short of it.
        full = MAX_DEPTH - POLL_RECORDS
        wait(lambda: run.redis.llen(run.name) >= full, 120, "the queue to fill")
        samples = _sample(run, bridge)
        accepted = committed(admin, run.name, run.name)
    finally:
        admin.close()
        run.stop()
    return {"records": BACKLOG, "max_queue_depth": MAX_DEPTH, "produce_s": round(produced_s, 1),
            "rss_idle_mb": round(idle / MB, 1), "rss_max_mb": round(max(samples["rss"]) / MB, 1),
            "sampled_s": SAMPLE_S, "queue_depth_min": min(samples["depth"]),
            "queue_depth_max": max(samples["depth"]), "committed": accepted,
            "lag": BACKLOG - accepted}  # fmt: skip


def _sample(run: harness.Run, pid: int) -> dict[str, list[int]]:
    samples: dict[str, list[int]] = {"rss": [], "depth": []}
    end = time.monotonic() + SAMPLE_S
    while time.monotonic() < end:
        samples["rss"].append(rss(pid))
        samples["depth"].append(int(run.redis.llen(run.name)))
        time.sleep(0.5)
    return samples


def run() -> tuple[list[Row], dict[str, Any]]:
    """The memory rows, and their detail."""
    mine, messages = retries_in_redis()
    base = celery_countdowns(messages)
    ordered = ordered_waiting()
    held = backlog()
    n = f"{PENDING:_}".replace("_", " ")
    rows = [
        Row("memory", f"worker RSS growth, {n} retries pending in Redis (bridge)",
            mine["rss_growth_mb"], "MB", Target("<=", 50), "main process + 2 pool processes"),
        Row("memory", f"worker RSS growth, {n} plain Celery countdowns (baseline)",
            base["rss_growth_mb"], "MB", None, "the same retry messages, held by the worker"),
        Row("memory", "Redis bytes per pending retry", mine["redis_bytes_per_retry"], "B",
            None, "MEMORY USAGE of the sorted set / retries"),
        Row("memory", "Redis bytes per waiting ordered record",
            ordered["redis_bytes_per_record"], "B", None,
            f"{ordered['records']} records, {ordered['keys']} keys, no worker"),
        Row("memory", f"bridge RSS, {BACKLOG:_} records waiting in Kafka".replace("_", " "),
            held["rss_max_mb"], "MB", Target("<=", 200),
            f"max over {SAMPLE_S:g} s; queue depth {held['queue_depth_min']}-"
            f"{held['queue_depth_max']} (limit {MAX_DEPTH}), lag {held['lag']}"),
    ]  # fmt: skip
    detail = {"retries_in_redis": mine, "celery_countdowns": base, "ordered_waiting": ordered,
              "backlog": held}  # fmt: skip
    return rows, detail
