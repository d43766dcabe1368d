"""The benchmark's Celery task: retry once after the countdown in the record's header."""

from __future__ import annotations

import os
import time
from functools import cache

import redis

from bridge import Record, RecordTask
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
