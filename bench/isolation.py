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
B / A >= 0.9. The runs alternate (A B B A… over ``BENCH_ISOLATION_ROUNDS``, default 3
rounds), each with a topic, group, queue, worker and bridge of its own. Results go to
``bench/results/isolation.json`` and ``isolation.md``. With ``BENCH_PARTS`` set, this runs
only if it names ``isolation``.
"""

from __future__ import annotations

import os
import statistics
import time
from collections import defaultdict
from typing import Any

from kafka import KafkaProducer

from bench import harness
from bench.harness import KAFKA, machine, save, wait

KEYS = int(os.environ.get("BENCH_ISOLATION_KEYS", "100"))
PER_KEY = int(os.environ.get("BENCH_ISOLATION_PER_KEY", "30"))
WORK_MS = float(os.environ.get("BENCH_ISOLATION_WORK_MS", "5"))
ROUNDS = int(os.environ.get("BENCH_ISOLATION_ROUNDS", "3"))
RETRY_INTERVAL_S = 0.05
TARGET = 0.9  # B / A, the other keys' records/s
FAILING = "k-000"
WARM_UP = 20  # records, on keys of their own, before the measured ones
PARTS = os.environ.get("BENCH_PARTS", "isolation").split(",")


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


def main() -> int:
    if "isolation" not in PARTS:
        return 0
    print(f"isolation: {KEYS} keys x {PER_KEY} records, {ROUNDS} rounds of A and B…", flush=True)
    runs: list[dict[str, Any]] = []
    for i in range(ROUNDS):
        for failing in (False, True) if i % 2 == 0 else (True, False):
            runs.append({"name": f"{'B' if failing else 'A'}{i + 1}", **isolation_run(failing)})
            print(f"  {runs[-1]}", flush=True)
    a = statistics.mean(r["others_per_s"] for r in runs if not r["failing_key"])
    b = statistics.mean(r["others_per_s"] for r in runs if r["failing_key"])
    report = {
        "keys": KEYS, "records_per_key": PER_KEY, "work_ms": WORK_MS, "worker_processes": 2,
        "retry_interval_s": RETRY_INTERVAL_S, "failing_key": FAILING, "runs": runs,
        "a_others_per_s": round(a, 1), "b_others_per_s": round(b, 1),
        "b_vs_a": round(b / a, 3), "target": TARGET, "target_met": b / a >= TARGET,
        "machine": machine(), "command": "make bench",
    }  # fmt: skip
    save("isolation", report, markdown(report))
    return 0


def markdown(report: dict[str, Any]) -> str:
    others = report["keys"] - 1
    lines = [
        f"Ordered route, {report['keys']} keys x {report['records_per_key']} records, "
        f"{report['work_ms']} ms of work each, a worker with {report['worker_processes']} "
        f"processes. B: every attempt of key {report['failing_key']} fails, retried every "
        f"{report['retry_interval_s']} s. Rate of the other {others} keys, first to last success:",
        "",
        f"| run | other keys' records | records/s | from produce | {report['failing_key']} "
        "failed attempts |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in report["runs"]:
        what = "one key failing" if r["failing_key"] else "clean"
        lines.append(
            f"| {r['name']} {what} | {r['others_handled']} | {r['others_per_s']} "
            f"| {r['others_per_s_from_produce']} | {r['failed_attempts']} |"
        )
    met = "met" if report["target_met"] else "NOT met"
    lines += [
        "",
        f"B / A = {report['b_others_per_s']} / {report['a_others_per_s']} = "
        f"**{report['b_vs_a']}** (target >= {report['target']}: {met})",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
