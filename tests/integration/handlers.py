"""Handlers run by the integration tests' real Celery worker.

A record's headers tell the handler how to behave, so any key/value bytes can be tested:
``ledger`` (required): Redis key prefix where every execution is written;
``fail``: raise ``TimeoutError`` (retryable) on the first N attempts;
``mode``: ``permanent`` raises ``PermanentError``, ``value-error`` raises ``ValueError``
(outside ``autoretry_for``, so non-retryable);
``fail-group``: always raise ``TimeoutError`` in that consumer group (task ids start with it);
``mode: wrapped-permanent`` raises a ``RuntimeError`` caused by a ``PermanentError``;
``mode: bare-retry`` raises ``Retry(when=1)`` on the first attempt, as a handler may;
``fail-until``: raise ``TimeoutError`` until that time (seconds since the epoch);
``fail-while``: raise ``PermanentError`` (dead-lettered at once) while that Redis key exists;
``sleep-ms``: simulated work, after the execution is written to the ledger.
Every success is appended to ``{ledger}:succeeded`` (key and offset), in the order they happen.
"""

from __future__ import annotations

import base64
import json
import os
import time
from functools import cache

import redis
from celery.exceptions import Retry

from bridge import BatchFailed, PermanentError, Record, RecordBatchTask, RecordTask
from tasks import app

LEDGER_URL_ENV = "TEST_LEDGER_URL"


@cache
def ledger() -> redis.Redis:
    return redis.Redis.from_url(os.environ[LEDGER_URL_ENV])


def behave(task: RecordTask, record: Record, task_id: str | None = None) -> None:
    prefix = (record.header("ledger") or b"").decode()
    task_id = task_id or str(task.request.id)
    ledger().hincrby(f"{prefix}:attempts", task_id, 1)
    ledger().rpush(
        f"{prefix}:executions",
        json.dumps(
            {
                "task_id": task_id,
                "retries": task.request.retries,
                "offset": record.offset,
                "key": key_of(record),
                "at": time.time(),
                "null_headers": [name for name, value in record.headers if value is None],
            }
        ),
    )
    sleep_ms = int(record.header("sleep-ms") or b"0")
    if sleep_ms:
        time.sleep(sleep_ms / 1000)  # simulated work, once the execution is on record
    fail_as_told(task, record)
    success = {"key": key_of(record), "offset": record.offset, "partition": record.partition}
    with ledger().pipeline(transaction=True) as pipe:
        pipe.sadd(f"{prefix}:done", task_id)
        pipe.rpush(f"{prefix}:succeeded", json.dumps(success))
        pipe.execute()


def key_of(record: Record) -> str | None:
    """The record's key as text, whatever its bytes."""
    return None if record.key is None else record.key.decode("utf-8", "backslashreplace")


def record_task_id(task: RecordTask, record: Record) -> str:
    """The record's own task id, in a batch (whose id starts with the group and the topic) or
    alone."""
    group_id = str(task.request.id).split(f":{record.topic}:", 1)[0]
    return f"{group_id}:{record.topic}:{record.partition}:{record.offset}"


def fail_as_told(task: RecordTask, record: Record) -> None:
    """Raise what the record's headers ask for on this attempt, if anything."""
    mode = record.header("mode")
    if mode == b"permanent":
        raise PermanentError(f"record {record.offset} is invalid")
    if mode == b"value-error":
        raise ValueError(f"unexpected value in record {record.offset}")
    if mode == b"bare-retry" and task.request.retries == 0:
        raise Retry("try again in a second", when=1)  # type: ignore[arg-type]
    blocker = record.header("fail-while")
    if blocker and ledger().exists(blocker.decode()):
        raise PermanentError(f"record {record.offset}: {blocker.decode()} is set")
    if mode == b"wrapped-permanent":
        try:
            raise PermanentError(f"record {record.offset} cannot be parsed")
        except PermanentError as cause:
            raise RuntimeError("handler gave up") from cause
    fail_transiently_as_told(task, record)


def fail_transiently_as_told(task: RecordTask, record: Record) -> None:
    """Raise ``TimeoutError`` (retryable) when the record's headers ask for it."""
    fail_group = record.header("fail-group")
    if fail_group and str(task.request.id).startswith(fail_group.decode() + ":"):
        raise TimeoutError(f"downstream always times out for group {fail_group.decode()}")
    if task.request.retries < int(record.header("fail") or b"0"):
        raise TimeoutError(f"downstream timed out on attempt {task.request.retries + 1}")
    if time.time() < float(record.header("fail-until") or b"0"):
        raise TimeoutError("downstream is down for a while")


@app.task(
    base=RecordTask,
    bind=True,
    name="tests.flaky",
    autoretry_for=(TimeoutError,),
    retry_kwargs={"countdown": 0.01},
    max_retries=3,
)
def flaky(self: RecordTask, record: Record) -> None:
    behave(self, record)


@app.task(
    base=RecordTask,
    bind=True,
    name="tests.backoff",
    autoretry_for=(TimeoutError,),
    retry_backoff=True,
    retry_backoff_max=1,
    retry_jitter=True,
    max_retries=2,
)
def with_backoff(self: RecordTask, record: Record) -> None:
    behave(self, record)


@app.task(base=RecordTask, bind=True, name="tests.slow")
def slow(self: RecordTask, record: Record) -> None:
    # Simulated work, so that a queue fills faster than this worker drains it.
    time.sleep(0.01)
    behave(self, record)


@app.task(
    base=RecordTask,
    bind=True,
    name="tests.exponential",
    autoretry_for=(TimeoutError,),
    retry_backoff=1,
    retry_backoff_max=2,
    retry_jitter=False,
    max_retries=5,
)
def exponential(self: RecordTask, record: Record) -> None:
    behave(self, record)


@app.task(base=RecordTask, bind=True, name="tests.route_defaults", autoretry_for=(TimeoutError,))
def route_defaults(self: RecordTask, record: Record) -> None:
    """No retry options of its own: the route's defaults decide."""
    behave(self, record)


@app.task(base=RecordTask, bind=True, name="tests.long_retry", max_retries=3)
def long_retry(self: RecordTask, record: Record) -> None:
    """Explicit retry with the delay in the ``countdown`` header (seconds)."""
    try:
        behave(self, record)
    except TimeoutError as exc:
        raise self.retry(exc=exc, countdown=float(record.header("countdown") or b"0")) from exc


@app.task(
    base=RecordTask,
    bind=True,
    name="tests.ordered",
    autoretry_for=(TimeoutError,),
)
def ordered(self: RecordTask, record: Record) -> None:
    """No retry options of its own: the route's fixed interval and retry limit decide."""
    behave(self, record)


@app.task(base=RecordTask, bind=True, name="tests.echo")
def echo(self: RecordTask, record: Record) -> None:
    """Write the record's bytes to ``{ledger}:echo`` (by task id), as the handler got them."""
    prefix = (record.header("ledger") or b"").decode()
    got = {
        "key": None if record.key is None else base64.b64encode(record.key).decode(),
        "value": None if record.raw_value is None else base64.b64encode(record.raw_value).decode(),
        "headers": [
            [name, None if value is None else base64.b64encode(value).decode()]
            for name, value in record.headers
        ],
    }
    with ledger().pipeline(transaction=True) as pipe:
        pipe.hset(f"{prefix}:echo", str(self.request.id), json.dumps(got))
        pipe.sadd(f"{prefix}:done", str(self.request.id))
        pipe.execute()


@app.task(
    base=RecordBatchTask,
    bind=True,
    name="tests.batch",
    autoretry_for=(TimeoutError,),
    retry_kwargs={"countdown": 0.01},
    max_retries=2,
)
def batch(self: RecordBatchTask, records: list[Record]) -> None:
    behave_in_batch(self, records)


def behave_in_batch(self: RecordBatchTask, records: list[Record]) -> None:
    """Each record behaves as its headers say; the batch is written to ``{ledger}:batches``
    (its task id, retries and offsets); a record with ``batch-raise`` makes the whole handler
    raise ``TimeoutError`` before any record runs, on a first attempt (each is then retried on
    its own)."""
    prefix = (records[0].header("ledger") or b"").decode()
    ledger().rpush(
        f"{prefix}:batches",
        json.dumps({"task_id": str(self.request.id), "retries": self.request.retries,
                    "offsets": [r.offset for r in records]}),
    )  # fmt: skip
    if not self.request.retries and any(r.header("batch-raise") for r in records):
        raise TimeoutError("the whole batch failed")
    failed: dict[Record, Exception] = {}
    for record in records:
        try:
            behave(self, record, record_task_id(self, record))
        except Exception as exc:
            failed[record] = exc
    if failed:
        raise BatchFailed(failed)


@app.task(
    base=RecordBatchTask,
    bind=True,
    name="tests.batch_later",
    autoretry_for=(TimeoutError,),
    retry_kwargs={"countdown": 600},
    max_retries=2,
)
def batch_later(self: RecordBatchTask, records: list[Record]) -> None:
    """``tests.batch`` whose retries are due in 10 minutes (a test brings them forward)."""
    behave_in_batch(self, records)


@app.task(
    base=RecordBatchTask, bind=True, name="tests.ordered_batch", autoretry_for=(TimeoutError,)
)
def ordered_batch(self: RecordBatchTask, records: list[Record]) -> None:
    """A handler of ordered batches as the guide advises: the records in order, and at the
    first failure that record named alone (the rest run again after it); no options of its
    own (the route's retry interval and limit decide). The batch goes to ``{ledger}:batches``."""
    prefix = (records[0].header("ledger") or b"").decode()
    ledger().rpush(
        f"{prefix}:batches",
        json.dumps({"task_id": str(self.request.id), "offsets": [r.offset for r in records]}),
    )
    for record in records:
        try:
            behave(self, record, record_task_id(self, record))
        except Exception as exc:
            raise BatchFailed({record: exc}) from None
