"""Handlers run by the chaos suite's real Celery worker (``celery -A tests.chaos.handlers``).

Every execution is written to the ledger (a list in Redis, ``CHAOS_LEDGER_URL``): a ``start``
line before the work, then ``ok``, ``retry`` or ``dead``, each with the record's coordinates,
the attempt and the worker generation (``CHAOS_WORKER_GEN``). The task ids of the executions
in progress are kept in ``chaos:inflight:{gen}``, so the suite kills a worker mid-task.

A record's headers say how it behaves: ``fail`` (``TimeoutError``, retried, on the first N
attempts) and ``mode: permanent`` (``PermanentError``: dead-lettered at once). Each execution
works ``WORK_S`` seconds.
"""

from __future__ import annotations

import json
import os
import time
from functools import cache

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from bridge import PermanentError, Record, RecordTask
from tasks import app

LEDGER_URL_ENV = "CHAOS_LEDGER_URL"
GEN_ENV = "CHAOS_WORKER_GEN"
EXECUTIONS = "chaos:executions"
WORK_S = 0.02


def inflight_key(gen: int) -> str:
    return f"chaos:inflight:{gen}"


@cache
def ledger() -> redis.Redis:
    # Redis restarts under the suite: a ledger write waits for it (up to ~3 min) rather than
    # failing the task, which would turn a fault of the harness into a dead letter.
    retry = Retry(ExponentialBackoff(cap=1.0, base=0.05), retries=200)
    return redis.Redis.from_url(
        os.environ[LEDGER_URL_ENV],
        retry=retry,
        retry_on_error=[redis.ConnectionError, redis.TimeoutError],
    )


def write(task: RecordTask, record: Record, event: str) -> None:
    """Append one execution event of ``record`` to the ledger."""
    line = {
        "coords": f"{record.topic}:{record.partition}:{record.offset}",
        "event": event,
        "attempt": task.request.retries,
        "gen": int(os.environ[GEN_ENV]),
        "pid": os.getpid(),
        "at": time.time(),
    }
    ledger().rpush(EXECUTIONS, json.dumps(line))


def behave(task: RecordTask, record: Record) -> None:
    """Record the execution, work, then fail or succeed as the record's headers say."""
    inflight = inflight_key(int(os.environ[GEN_ENV]))
    task_id = str(task.request.id)
    write(task, record, "start")
    ledger().sadd(inflight, task_id)
    try:
        time.sleep(WORK_S)  # simulated work: a SIGKILL finds tasks in the middle of it
        if record.header("mode") == b"permanent":
            write(task, record, "dead")
            raise PermanentError(f"record {record.offset} is invalid")
        if task.request.retries < int(record.header("fail") or b"0"):
            write(task, record, "retry")
            raise TimeoutError(f"downstream timed out on attempt {task.request.retries + 1}")
        write(task, record, "ok")
    finally:
        ledger().srem(inflight, task_id)


@app.task(
    base=RecordTask,
    bind=True,
    name="chaos.unordered",
    autoretry_for=(TimeoutError,),
    retry_kwargs={"countdown": 0.01},
    max_retries=3,
)
def unordered(self: RecordTask, record: Record) -> None:
    behave(self, record)


@app.task(base=RecordTask, bind=True, name="chaos.ordered", autoretry_for=(TimeoutError,))
def ordered(self: RecordTask, record: Record) -> None:
    """The route's fixed retry interval and retry limit decide its retries."""
    behave(self, record)
