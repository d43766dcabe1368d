"""``make bench`` (latency): how long a single record takes from Kafka to its handler, at a pace.

A producer sends ``BENCH_LATENCY_RATE`` (100) small records per second, one at a time, each on
time by the clock (it does not catch up in bursts), for ``BENCH_LATENCY_S`` (30) seconds, with
997 keys in turn. ``bench.latency`` notes, as it starts, the milliseconds since the record's
Kafka timestamp (the producer's CreateTime; one machine, one clock): the whole way, producer ->
broker -> bridge poll -> enqueue in Redis -> worker fetch -> pool process -> handler. The same
2-process worker and a bridge with default settings run one route at a time, unordered then
ordered (each key's head published as it comes: with 997 keys a key rarely waits on itself).
Each run first sends 50 warm-up records and waits for them (connections, the first
assignment), which do not count. Targets: p99 <= 50 ms unordered, <= 100 ms ordered.
"""

from __future__ import annotations

import math
import os
import time
from typing import Any

from kafka import KafkaProducer

from bench import harness
from bench.batches import wait_fast
from bench.harness import KAFKA
from bench.report import Row, Target

RATE_PER_S = float(os.environ.get("BENCH_LATENCY_RATE", "100"))
SECONDS = float(os.environ.get("BENCH_LATENCY_S", "30"))
WARM_UP = 50
KEYS = 997
PART = "latency"
TARGET_P99_MS = {"unordered": 50.0, "ordered": 100.0}


def paced(producer: KafkaProducer, topic: str, headers: list[Any], count: int) -> float:
    """Send ``count`` records at ``RATE_PER_S``, each when the clock says; return how late the
    latest send was, in ms (a late producer would show as latency that is not the bridge's)."""
    start, late_ms = time.perf_counter(), 0.0
    for i in range(count):
        due = start + i / RATE_PER_S
        pause = due - time.perf_counter()
        if pause > 0:
            time.sleep(pause)
        late_ms = max(late_ms, (time.perf_counter() - due) * 1000)
        producer.send(topic, key=b"k%d" % (i % KEYS), value=b'{"n": %d}' % i, headers=headers)
    producer.flush()
    return late_ms


def percentile(values: list[float], p: float) -> float:
    """The nearest-rank ``p``-th percentile of ``values`` (``0 < p <= 100``; 0 when empty)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def measure(name: str, route: dict[str, Any]) -> dict[str, Any]:
    """One route's latencies: percentiles in ms, and the worst records."""
    run = harness.Run(name, {"task": "bench.latency", **route})
    run.start()
    key = f"{run.name}:latency"
    producer = KafkaProducer(bootstrap_servers=KAFKA, linger_ms=0)
    headers = [("bench", run.name.encode())]
    count = max(1, round(RATE_PER_S * SECONDS))
    try:
        paced(producer, run.name, headers, WARM_UP)
        wait_fast(lambda: run.redis.llen(key) >= WARM_UP, 120, "the warm-up records")
        run.redis.delete(key)
        load_before = os.getloadavg()[0]
        late_ms = paced(producer, run.name, headers, count)
        wait_fast(lambda: run.redis.llen(key) >= count, 120, f"{count} records")
        noted = [_text(line).split() for line in run.redis.lrange(key, 0, -1)]
    finally:
        producer.close()
        run.stop()
    ms = [float(n[2]) for n in noted]
    worst = sorted(noted, key=lambda n: -float(n[2]))[:5]
    return {
        "records": len(ms),
        "rate_per_s": RATE_PER_S,
        **{f"p{p:g}_ms": round(percentile(ms, p), 1) for p in (50, 90, 99)},
        "max_ms": round(max(ms), 1),
        "worst": [f"partition {p} offset {o}: {v} ms" for p, o, v in worst],
        "producer_late_ms": round(late_ms, 1),
        "load_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)],
    }


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def run() -> tuple[list[Row], dict[str, Any]]:
    """The part's rows: p50, p90, p99 and max of each route; p99 has the target."""
    runs = {
        "unordered": measure("latency-u", {}),
        "ordered": measure("latency-o", {"ordered": True}),
    }
    rows = []
    for route, r in runs.items():
        note = f"{r['records']} records at {r['rate_per_s']:g}/s, Kafka timestamp -> handler start"
        for stat in ("p50", "p90", "p99", "max"):
            target = Target("<=", TARGET_P99_MS[route]) if stat == "p99" else None
            rows.append(Row(PART, f"{route} {stat}", r[f"{stat}_ms"], "ms", target,
                            note if stat == "p99" else ""))  # fmt: skip
    return rows, {"runs": runs}


if __name__ == "__main__":
    from bench.__main__ import main

    os.environ.setdefault("BENCH_PARTS", PART)
    raise SystemExit(main())
