"""``make bench`` (retries): how late delayed retries run.

``BENCH_LATE_RETRIES`` (10 000) records, arriving at ``BENCH_LATE_RATE`` (70/s: the worker here
runs ~200 tasks/s, and every record runs twice), whose first attempt asks for a retry in 1-30
s; lateness = when the retry ran - when it was due. Target: p99 <= 1 s. (All at once, retries
queue behind thousands of first attempts: that measures the worker, not the schedule.) The run
has its own topic, group, queue, Redis key prefix and worker (2 processes). What pending
retries cost in memory is the ``memory`` part's.
"""

from __future__ import annotations

import os
import random
import statistics
import time
from typing import Any

from kafka import KafkaProducer

from bench import harness
from bench.harness import KAFKA, wait
from bench.report import Row, Target

LATE = int(os.environ.get("BENCH_LATE_RETRIES", "10000"))
LATE_RATE = int(os.environ.get("BENCH_LATE_RATE", "70"))
PART = "retries"


class Run(harness.Run):
    """A topic, a worker and a bridge of their own, on ``bench.delayed``."""

    def __init__(self, name: str, threshold_ms: int, visibility_timeout_s: int) -> None:
        super().__init__(
            name,
            {"task": "bench.delayed"},
            {
                "celery": {"visibility_timeout_s": visibility_timeout_s},
                "retry": {"redis_schedule_min_delay_ms": threshold_ms, "scheduler_interval_ms": 50},
            },
        )

    def produce(self, countdowns: list[float], per_s: int | None = None) -> None:
        """Produce one record per countdown; at most ``per_s`` a second if given."""
        producer = KafkaProducer(bootstrap_servers=KAFKA, linger_ms=10)
        start = time.monotonic()
        for i, countdown in enumerate(countdowns):
            if per_s and i % per_s == 0:
                time.sleep(max(0.0, start + i / per_s - time.monotonic()))  # pacing
                producer.flush()
            headers = [("bench", self.name.encode()), ("countdown", str(countdown).encode())]
            producer.send(self.name, key=str(i).encode(), value=b"{}", headers=headers)
        producer.flush()
        producer.close()

    def first_attempts(self) -> int:
        return int(self.redis.hlen(f"{self.name}:due"))

    def lateness(self) -> list[float]:
        return [float(x) for x in self.redis.lrange(f"{self.name}:late", 0, -1)]


def lateness_run() -> dict[str, Any]:
    run = Run("late", threshold_ms=1000, visibility_timeout_s=3600)
    rng = random.Random(7)
    try:
        run.start()
        run.produce([round(rng.uniform(1, 30), 3) for _ in range(LATE)], per_s=LATE_RATE)
        wait(lambda: len(run.lateness()) >= LATE, 600, f"{LATE} retries")
        late = sorted(run.lateness())
    finally:
        run.stop()
    p99 = late[int(0.99 * (len(late) - 1))]
    return {"retries": len(late), "records_per_s": LATE_RATE,
            "p50_s": round(statistics.median(late), 3),
            "p99_s": round(p99, 3), "max_s": round(late[-1], 3)}  # fmt: skip


def run() -> tuple[list[Row], dict[str, Any]]:
    """The lateness run and its rows: p50 and p99 (target) of how late retries ran."""
    late = lateness_run()
    note = f"{late['retries']} retries of 1-30 s, records at {LATE_RATE}/s"
    return [
        Row(PART, "retry lateness p50", late["p50_s"], "s", note=note),
        Row(PART, "retry lateness p99", late["p99_s"], "s", Target("<=", 1), note=note),
    ], late


if __name__ == "__main__":
    from bench.__main__ import main

    os.environ.setdefault("BENCH_PARTS", PART)
    raise SystemExit(main())
