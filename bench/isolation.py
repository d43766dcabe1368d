"""``make bench`` (isolation): on an ordered route, one failing key must not slow the others.

``BENCH_ISOLATION_KEYS`` (100) keys with ``BENCH_ISOLATION_PER_KEY`` (30) records each go
through a bridge and a real worker (2 processes) on an ordered route; every record takes
``BENCH_ISOLATION_WORK_MS`` (5 ms) of simulated work, so the worker is the bottleneck.

- **A (clean)**: every record succeeds;
- **B (one key failing)**: the same, but every attempt of the first key's records fails with a
  retryable error, retried every ``retry_interval_s`` (0.05 s) with a ``max_retries`` it never
  reaches, so the key keeps failing for the whole run.

For both, the rate of the *other* keys: their successes per second from their first success to
their last (and, as a check, from when the records were produced, after a warm-up). Target:
B / A >= 0.9. The runs alternate (A B B A A B… over ``BENCH_ISOLATION_ROUNDS``, default 3
rounds), each with a topic, group, queue, worker and bridge of its own.
"""

from __future__ import annotations

import os
import statistics
import time
from collections import defaultdict
from typing import Any

from kafka import KafkaProducer

from bench import harness
from bench.harness import KAFKA, wait
from bench.report import Row, Target, ratio

KEYS = int(os.environ.get("BENCH_ISOLATION_KEYS", "100"))
PER_KEY = int(os.environ.get("BENCH_ISOLATION_PER_KEY", "30"))
WORK_MS = float(os.environ.get("BENCH_ISOLATION_WORK_MS", "5"))
ROUNDS = int(os.environ.get("BENCH_ISOLATION_ROUNDS", "3"))
RETRY_INTERVAL_S = 0.05
TARGET = 0.9  # B / A, the other keys' records/s
FAILING = "k-000"
WARM_UP = 20  # records, on keys of their own, before the measured ones
PART = "isolation"


def produce(run: harness.Run, keys: list[str], per_key: int, failing: str | None) -> None:
    """``per_key`` rounds of one record per key; the ``failing`` key's records fail."""
    producer = KafkaProducer(bootstrap_servers=KAFKA, linger_ms=10)
    common = [("bench", run.name.encode()), ("work_ms", str(WORK_MS).encode())]
    for _ in range(per_key):
        for key in keys:
            fail = [("fail", b"1")] if key == failing else []
            producer.send(run.name, key=key.encode(), value=b"{}", headers=common + fail)
    producer.flush()
    producer.close()


def isolation_run(failing: bool) -> dict[str, Any]:
    run = harness.Run(
        "iso-b" if failing else "iso-a",
        {"task": "bench.isolated", "ordered": True, "retry_interval_s": RETRY_INTERVAL_S,
         "max_retries": 1_000_000},
    )  # fmt: skip
    keys = [f"k-{k:03d}" for k in range(KEYS)]
    expected = WARM_UP + (KEYS - 1 if failing else KEYS) * PER_KEY
    try:
        run.start()
        # Warm-up: the bridge has joined its group and every pool process has run tasks.
        produce(run, [f"w-{k}" for k in range(WARM_UP)], 1, None)
        wait(lambda: run.redis.llen(f"{run.name}:ok") >= WARM_UP, 120, "the warm-up")
        produced_at = time.time()
        produce(run, keys, PER_KEY, FAILING if failing else None)
        wait(lambda: run.redis.llen(f"{run.name}:ok") >= expected, 300, f"{expected} successes")
        notes = [_text(n).split() for n in run.redis.lrange(f"{run.name}:ok", 0, -1)]
        failed = int(run.redis.get(f"{run.name}:failed") or 0)
    finally:
        run.stop()
    times: dict[str, list[float]] = defaultdict(list)
    for key, at in notes:
        times[key].append(float(at))
    others = sorted(t for key in keys if key != FAILING for t in times[key])
    span_s = others[-1] - others[0]
    return {
        "failing_key": failing,
        "others_handled": len(others),
        "failing_key_handled": len(times[FAILING]),
        "failed_attempts": failed,
        "others_span_s": round(span_s, 3),
        "others_per_s": round((len(others) - 1) / span_s, 1),
        "others_per_s_from_produce": round(len(others) / (others[-1] - produced_at), 1),
    }


def _text(data: bytes | str) -> str:
    return data.decode() if isinstance(data, bytes) else data


def run() -> tuple[list[Row], dict[str, Any]]:
    """Runs A and B alternated (A B B A…), and the rows: each side's rate and B / A."""
    runs: list[dict[str, Any]] = []
    for i in range(ROUNDS):
        for failing in (False, True) if i % 2 == 0 else (True, False):
            runs.append({"name": f"{'B' if failing else 'A'}{i + 1}", **isolation_run(failing)})
    a = statistics.mean(r["others_per_s"] for r in runs if not r["failing_key"])
    b = statistics.mean(r["others_per_s"] for r in runs if r["failing_key"])
    detail = {"keys": KEYS, "records_per_key": PER_KEY, "work_ms": WORK_MS,
              "worker_processes": 2, "retry_interval_s": RETRY_INTERVAL_S,
              "failing_key": FAILING, "runs": runs}  # fmt: skip
    others, rate = f"the other {KEYS - 1} keys", "records/s"
    rows = [
        Row(PART, f"clean run (A): {others}", round(a, 1), rate,
            note=f"{KEYS} keys x {PER_KEY} records, mean of {ROUNDS}"),
        Row(PART, f"one key always failing (B): {others}", round(b, 1), rate,
            note=f"mean of {ROUNDS}"),
        Row(PART, "B / A", ratio(b, a), "", Target(">=", TARGET)),
    ]  # fmt: skip
    return rows, detail


if __name__ == "__main__":
    from bench.__main__ import main

    os.environ.setdefault("BENCH_PARTS", PART)
    raise SystemExit(main())
