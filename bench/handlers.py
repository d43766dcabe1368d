"""The benchmarks' Celery tasks.

- ``bench.delayed`` (bench/retries.py): retry once after the countdown in the record's header;
- ``bench.pending`` (bench/memory.py): ask for a retry in an hour, nothing else;
- ``bench.isolated`` (bench/isolation.py): simulated work, then a success noted in Redis, or a
  failure that is retried (the route's fixed interval and retry limit decide);
- ``bench.count`` and ``bench.count_batch`` (bench/batches.py): count the records done in
  ``{bench}:count`` (one ``INCRBY`` per call); a record with ``fail-once`` fails its first
  attempt (retried alone after 10 ms);
- ``bench.latency`` (bench/latency.py): note how long after its Kafka timestamp the handler
  started, in ``{bench}:latency``.
"""

from __future__ import annotations

import os
import time
from functools import cache

import redis

from bridge import BatchFailed, Record, RecordBatchTask, RecordTask
from tasks import app


@cache
def _redis() -> redis.Redis:
    return redis.Redis.from_url(os.environ["BENCH_REDIS_URL"])


@app.task(base=RecordTask, bind=True, name="bench.delayed", max_retries=1)
def delayed(self: RecordTask, record: Record) -> None:
    """First run: note when the retry is due and ask for it. Second run: note how late it is."""
    prefix = (record.header("bench") or b"").decode()
    if self.request.retries == 0:
        countdown = float(record.header("countdown") or b"1")
        _redis().hset(f"{prefix}:due", str(self.request.id), time.time() + countdown)
        raise self.retry(countdown=countdown)
    due = float(_redis().hget(f"{prefix}:due", str(self.request.id)) or 0)
    _redis().rpush(f"{prefix}:late", time.time() - due)


@app.task(base=RecordTask, bind=True, name="bench.pending", max_retries=1)
def pending(self: RecordTask, record: Record) -> None:
    """Ask for a retry due in an hour: the cheapest first attempt that leaves a pending retry."""
    raise self.retry(countdown=3600)


@app.task(base=RecordTask, name="bench.isolated", autoretry_for=(TimeoutError,))
def isolated(record: Record) -> None:
    """Sleep ``work_ms`` (header); then fail if the record has the header ``fail``, else note
    ``{key} {time}`` in ``{bench}:ok``. Failures are counted in ``{bench}:failed``."""
    prefix = (record.header("bench") or b"").decode()
    time.sleep(float(record.header("work_ms") or b"0") / 1000)
    if record.header("fail"):
        _redis().incr(f"{prefix}:failed")
        raise TimeoutError(f"{record.key_text}: this key always fails")
    _redis().rpush(f"{prefix}:ok", f"{record.key_text} {time.time()}")


def _count(records: list[Record], retries: int) -> None:
    failing = {r: TimeoutError("fails once") for r in records if r.header("fail-once")}
    failed = failing if retries == 0 else {}
    done = len(records) - len(failed)
    if done:
        _redis().incrby(f"{(records[0].header('bench') or b'').decode()}:count", done)
    if failed:
        raise BatchFailed(failed)


@app.task(base=RecordTask, bind=True, name="bench.count", autoretry_for=(TimeoutError,),
          retry_kwargs={"countdown": 0.01}, max_retries=3)  # fmt: skip
def count(self: RecordTask, record: Record) -> None:
    """Count the record done (fails once first if it says ``fail-once``)."""
    try:
        _count([record], self.request.retries)
    except BatchFailed as failed:
        raise failed.failures[0][1] from None


@app.task(base=RecordBatchTask, bind=True, name="bench.count_batch", autoretry_for=(TimeoutError,),
          retry_kwargs={"countdown": 0.01}, max_retries=3)  # fmt: skip
def count_batch(self: RecordBatchTask, records: list[Record]) -> None:
    """Count the records done; those that say ``fail-once`` fail their first attempt."""
    _count(records, self.request.retries)


@app.task(base=RecordTask, name="bench.latency")
def latency(record: Record) -> None:
    """Note ``{partition} {offset} {ms}`` in ``{bench}:latency``: the milliseconds from the
    record's Kafka timestamp (the producer's CreateTime; the machine clock is shared) to now,
    the handler's start."""
    ms = time.time() * 1000 - record.timestamp_ms
    prefix = (record.header("bench") or b"").decode()
    _redis().rpush(f"{prefix}:latency", f"{record.partition} {record.offset} {ms:.2f}")
