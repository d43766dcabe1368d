"""``make bench`` (retries): how late delayed retries run, and what pending retries cost.

- **lateness**: ``BENCH_LATE_RETRIES`` (10 000) records, arriving at ``BENCH_LATE_RATE``
  (70/s: the worker here runs ~200 tasks/s, and every record runs twice), whose first attempt
  asks for a retry in 1-30 s; lateness = when the retry ran - when it was due. Target: p99 <=
  1 s. (All at once, retries queue behind thousands of first attempts: that measures the
  worker, not the schedule.)
- **worker memory**: ``BENCH_PENDING_RETRIES`` (100 000) records whose retry is due in an hour;
  the worker's RSS (main process and pool) once all of them wait, minus its RSS before. Run
  twice side by side: retries waiting in Redis (the bridge) and, as the baseline, plain Celery
  countdowns (``redis_schedule_min_delay_ms`` above the delay). Target: <= 50 MB.

Each run has its own topic, group, queue, Redis key prefix and worker (2 processes).
"""

from __future__ import annotations

import json
import os
import random
import statistics
import time
from typing import Any

from kafka import KafkaProducer

from bench import harness
from bench.harness import KAFKA, RESULTS, wait

LATE = int(os.environ.get("BENCH_LATE_RETRIES", "10000"))
PENDING = int(os.environ.get("BENCH_PENDING_RETRIES", "100000"))
LATE_RATE = int(os.environ.get("BENCH_LATE_RATE", "70"))
PARTS = os.environ.get("BENCH_PARTS", "lateness,memory").split(",")


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


def memory_run(name: str, threshold_ms: int, visibility_timeout_s: int) -> dict[str, Any]:
    run = Run(name, threshold_ms=threshold_ms, visibility_timeout_s=visibility_timeout_s)
    try:
        run.start()
        warm_up = 1000  # quick retries, so that every pool process has done real work
        run.produce([0.01] * warm_up)
        wait(lambda: len(run.lateness()) >= warm_up, 120, "the warm-up")
        before = run.worker_rss()
        run.produce([3600.0] * PENDING)
        wait(lambda: run.first_attempts() >= warm_up + PENDING, 900, f"{PENDING} first attempts")
        time.sleep(2)  # let the last retries land where they wait
        after = run.worker_rss()
    finally:
        run.stop()
    return {"pending_retries": PENDING, "rss_before_mb": round(before / 2**20, 1),
            "rss_after_mb": round(after / 2**20, 1),
            "rss_growth_mb": round((after - before) / 2**20, 1)}  # fmt: skip


def main() -> int:
    """Run the parts in ``BENCH_PARTS``; keep the other parts of the last report."""
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / "retries.json"
    report: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
    if "lateness" in PARTS:
        print(f"delayed retries: lateness of {LATE} at {LATE_RATE} records/s…", flush=True)
        report["lateness"] = lateness_run()
    if "memory" in PARTS:
        print(f"delayed retries: worker memory with {PENDING} pending…", flush=True)
        report["memory_redis_schedule"] = memory_run("mem-redis", 1000, 3600)
        # Baseline: the same retries as plain Celery countdowns held by the worker.
        report["memory_celery_countdown"] = memory_run("mem-celery", 3_600_000 + 1, 36_000)
    report["command"] = "make bench"
    harness.save("retries", report, markdown(report))
    return 0


def markdown(report: dict[str, Any]) -> str:
    lines = []
    if lat := report.get("lateness"):
        lines += [
            f"Delayed retries ({lat['retries']} records at {lat.get('records_per_s')}/s, "
            f"countdowns 1-30 s): lateness p50 {lat['p50_s']} s, p99 **{lat['p99_s']} s**, "
            f"max {lat['max_s']} s.",
            "",
        ]
    mine, base = report.get("memory_redis_schedule"), report.get("memory_celery_countdown")
    if mine and base:
        lines += [
            f"| {mine['pending_retries']} retries pending (due in 1 h) | worker RSS before "
            "| after | growth |",
            "|---|---:|---:|---:|",
            f"| waiting in Redis (bridge) | {mine['rss_before_mb']} MB "
            f"| {mine['rss_after_mb']} MB | **{mine['rss_growth_mb']} MB** |",
            f"| plain Celery countdowns (baseline) | {base['rss_before_mb']} MB "
            f"| {base['rss_after_mb']} MB | {base['rss_growth_mb']} MB |",
            "",
        ]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
