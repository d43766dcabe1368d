"""``make bench`` (batches): end-to-end records/s, Kafka to handler done, single vs batched.

The same cheap handler (one Redis ``INCRBY`` per call, counting the records it got) runs on
the same 2-process worker behind one bridge, one route at a time: records one per task
(``bench.count``, a ``RecordTask``), then batches of 10 and of 100 (``bench.count_batch``, a
``RecordBatchTask``; ``batch_max_wait_ms`` 100). Each run has its topic (4 partitions), group,
queue, worker and bridge of its own; its records (``BENCH_BATCH_RECORDS``, 100 000; a tenth
for single records, which are slow, and a rate is a rate) are produced once the worker runs,
and the clock runs from the first record counted to the last. A last run of batches of 100
has 1% of its records failing once (``fail-once``): each failed record's retry is kept in Redis
due 10 ms later, and the bridge's retry mover (every 100 ms) gathers the due retries of all
batches and partitions into batch messages again (up to 100 records each, all at retry 1), so
the ~1000 failures cost a few dozen task messages, not ~1000 (one per failed record, as before
retries were gathered). Targets: batches of 100 / single >= 10; 1% failing / clean batches of
100 >= 0.8.
"""

from __future__ import annotations

import os
import time
from typing import Any

from kafka import KafkaProducer

from bench import harness
from bench.harness import KAFKA, wait
from bench.report import Row, Target, ratio

RECORDS = int(os.environ.get("BENCH_BATCH_RECORDS", "100000"))
SINGLE_RECORDS = max(1, RECORDS // 10)
PART = "batches"


def produce(run: harness.Run, count: int, failing_every: int = 0) -> None:
    """``count`` small JSON records; every ``failing_every``-th fails once (0: none)."""
    producer = KafkaProducer(bootstrap_servers=KAFKA, linger_ms=20, batch_size=512 * 1024)
    bench = ("bench", run.name.encode())
    for i in range(count):
        fails = failing_every and i % failing_every == 0
        headers = [bench, ("fail-once", b"1")] if fails else [bench]
        producer.send(run.name, key=b"k%d" % i, value=b'{"n": %d}' % i, headers=headers)
    producer.flush()
    producer.close()


def rate(name: str, route: dict[str, Any], count: int, failing_every: int = 0) -> dict[str, Any]:
    """Records/s of one run: from the first record counted to the last."""
    run = harness.Run(name, route)
    run.start()
    try:
        produce(run, count, failing_every)
        counter = f"{run.name}:count"
        wait(lambda: int(run.redis.get(counter) or 0) > 0, 120, "the first record")
        start = time.perf_counter()
        wait_fast(lambda: int(run.redis.get(counter) or 0) >= count, 600, f"{count} records")
        elapsed = time.perf_counter() - start
    finally:
        run.stop()
    return {"records": count, "seconds": round(elapsed, 2), "records_per_s": round(count / elapsed)}


def wait_fast(condition: Any, timeout_s: float, what: str) -> None:
    """As :func:`harness.wait`, looking every 20 ms (a batched run lasts a few seconds)."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit(f"bench: timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.02)


def run() -> tuple[list[Row], dict[str, Any]]:
    """The part's rows: each route's rate, and the two target ratios."""
    batched = {"task": "bench.count_batch", "batch_max_wait_ms": 100}
    runs = {
        "single": rate("batch-1", {"task": "bench.count"}, SINGLE_RECORDS),
        "batches of 10": rate("batch-10", {**batched, "batch_size": 10}, RECORDS),
        "batches of 100": rate("batch-100", {**batched, "batch_size": 100}, RECORDS),
        "batches of 100, 1% failing once": rate(
            "batch-100f", {**batched, "batch_size": 100}, RECORDS, failing_every=100
        ),
    }
    per_s = {name: r["records_per_s"] for name, r in runs.items()}
    note = "Kafka -> handler done, 2-process worker, cheap handler"
    rows = [
        Row(PART, f"records {name}", value, "records/s", None, f"{runs[name]['records']} records")
        for name, value in per_s.items()
    ]
    rows += [
        Row(PART, "batches of 10 / single", ratio(per_s["batches of 10"], per_s["single"]), "x",
            None, note),
        Row(PART, "batches of 100 / single", ratio(per_s["batches of 100"], per_s["single"]),
            "x", Target(">=", 10), note),
        Row(PART, "1% failing / clean, batches of 100",
            ratio(per_s["batches of 100, 1% failing once"], per_s["batches of 100"]), "x",
            Target(">=", 0.8), "failed records' retries gathered into batches again"),
    ]  # fmt: skip
    return rows, {"runs": runs}


if __name__ == "__main__":
    from bench.__main__ import main

    os.environ.setdefault("BENCH_PARTS", PART)
    raise SystemExit(main())
