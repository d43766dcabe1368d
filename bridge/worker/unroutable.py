"""Records that reach a worker with no ``RecordTask`` to run them: dead-lettered as
``unroutable`` instead of lost (Redis I/O; the worker's consumer step,
:mod:`bridge.worker.consumer_step`, calls it).

Two setup mistakes send a record where nothing handles it: a route whose task name no worker
registers (a typo), and a handler declared without ``base=RecordTask`` (it gets the envelope
as a dict and fails, with neither a retry nor a dead letter). Celery discards the first: it
rejects the message, which on Redis is an acknowledgement, and only then sends its
``task_unknown`` signal. The bridge had committed the record's offset long before: both were
lost.

Here the worker's consumer stores the record's dead letter in Redis among the dead letters
Kafka has not taken yet (:meth:`~bridge.backends.kafka.dead_letters.DeadLetterOffice.defer`,
pending, due at once) and only then acknowledges the message; the bridge's dead-letter writer
writes it to the route's DLT within a second. Why not write to Kafka from the worker: its
consumer runs in the worker's event loop, which a Kafka write (with its retries) would hold for
seconds, whereas one Redis transaction on the broker the message came from is a round trip,
and needs neither a Kafka producer nor the bridge's configuration in that process. A worker
that dies before the transaction leaves the message unacknowledged: it is delivered again.

An ordered record is dead-lettered only as its key's head (a stale copy is dropped, as
``RecordTask`` drops it). Its key leaves the stall watch and goes on once the bridge has
written the dead letter, as after any pending dead letter (:mod:`bridge.backends.redis.ordering`).

Each group counts its unroutable records per topic (:func:`bridge.keys.unroutable`), and
keeps the last one, for ``status``; they count as dead letters for the route's flood breaker
(:mod:`bridge.backends.redis.outcomes`), which pauses a route whose every record is unroutable.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, cast

import redis

from bridge import keys
from bridge.backends.kafka.dead_letters import DeadLetterOffice
from bridge.backends.redis import outcomes
from bridge.backends.redis.dead_letter_store import DeadLetterStore
from bridge.backends.redis.ordering import KeyQueues
from bridge.deadletter import DeadLetter, ErrorInfo, utc_now_iso
from bridge.errors import UndecodableRecordError, UnroutableError
from bridge.failures import Reason
from bridge.record import Envelope, from_task_arg


def envelope_in(body: Any) -> Envelope | None:
    """The record envelope a decoded task message body (``[args, kwargs, embed]``) carries
    as its first argument, or ``None`` when it is not a bridge record (pure)."""
    try:
        args = body[0]
        return from_task_arg(args[0]) if args and isinstance(args[0], dict) else None
    except (TypeError, KeyError, IndexError, UndecodableRecordError):
        return None


def envelopes_in(body: Any) -> list[Envelope]:
    """The record envelopes a decoded task message body carries: one record's, or a batch's
    (a list of envelopes as first argument); none when it is not bridge records (pure)."""
    one = envelope_in(body)
    if one is not None:
        return [one]
    try:
        batch = body[0][0]
        if isinstance(batch, list) and batch:
            return [from_task_arg(arg) for arg in batch]
    except (TypeError, KeyError, IndexError, AttributeError, UndecodableRecordError):
        pass
    return []


def not_registered(task: str, node: str, cause: BaseException | None = None) -> UnroutableError:
    """The error of a record whose task no worker of its queue registers (pure)."""
    error = UnroutableError(
        f"task {task!r} is not registered in worker {node}: no handler has that name; check "
        f"the route's task (a typo?) and that the worker imports the handler's module"
    )
    error.__cause__ = cause
    return error


def not_a_record_task(task: str, node: str) -> UnroutableError:
    """The error of a record whose task is registered, but not built on ``RecordTask`` (pure)."""
    return UnroutableError(
        f"task {task!r} in worker {node} is not a RecordTask: it would get the record "
        f"envelope as a dict; declare it with @app.task(base=RecordTask, ...)"
    )


def not_a_batch_task(task: str, node: str) -> UnroutableError:
    """The error of a batch of records whose task is a ``RecordTask`` of one record (pure)."""
    return UnroutableError(
        f"task {task!r} in worker {node} is a RecordTask of one record and got a batch: its "
        f"route has batch_size > 1; declare it with @app.task(base=RecordBatchTask, ...)"
    )


def dead_letter(envelope: Envelope, task: str, task_id: str, error: UnroutableError) -> DeadLetter:
    """The dead letter of a record no worker ran (pure): ``unroutable``, after 0 attempts."""
    now = utc_now_iso()
    return DeadLetter(
        record=envelope.record,
        group_id=envelope.group_id,
        dlt_topic=envelope.dlt_topic,
        reason=Reason.UNROUTABLE,
        error=ErrorInfo.of(error),
        attempts=0,
        task=task,
        task_id=task_id,
        first_failure_at=envelope.first_failure_at or now,
        dead_lettered_at=now,
        ordered=envelope.ordered,
    )


def keep(client: redis.Redis, envelope: Envelope, dl: DeadLetter, node: str) -> bool:
    """Store ``dl`` for the bridge to write, and count it for its route, in one transaction.

    :returns: False when the record is an ordered key's stale copy, or its key is parked:
        nothing was stored (the message can go).
    :raises redis.RedisError: Redis failed; the dead letter may or may not be stored.
    """
    if envelope.ordered and not _leave_stall_watch(client, envelope):
        return False
    topic = dl.record.topic
    last = {"task": dl.task, "task_id": dl.task_id, "worker": node,
            "error": dl.error.message, "at": dl.dead_lettered_at}  # fmt: skip
    counts = keys.unroutable(dl.group_id)
    with client.pipeline(transaction=True) as pipe:
        DeadLetterOffice(None, DeadLetterStore(client, dl.group_id)).defer(dl, pipe)
        pipe.hincrby(counts, topic, 1)
        pipe.hset(counts, f"{topic}:last", json.dumps(last))
        pipe.execute()
    if envelope.breaker_window_s is not None:  # a route whose every record is unroutable stops
        outcomes.count(client, dl.group_id, topic, dead=True,
                       window_s=envelope.breaker_window_s, now_s=time.time())  # fmt: skip
    return True


def _leave_stall_watch(client: redis.Redis, envelope: Envelope) -> bool:
    """Take an ordered record's key out of the stall watch until the bridge has written its
    dead letter (a key is not republished meanwhile); False: not the head, or parked."""
    rec, task_id = envelope.record, envelope.task_id()
    queues = KeyQueues(client, envelope.group_id)
    fifo = queues.fifo(rec.topic, rec.key, rec.partition)
    if not queues.start(fifo, task_id, int(time.time() * 1000)):
        return False
    return queues.park(fifo, task_id, None)


@dataclass(frozen=True, slots=True)
class UnroutableCount:
    """A route's records dead-lettered as ``unroutable``, and the last of them."""

    records: int
    last: dict[str, Any] | None

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form."""
        return {"records": self.records, "last": self.last}


def read_counts(client: redis.Redis, group_id: str) -> dict[str, UnroutableCount]:
    """Unroutable records per topic of ``group_id`` (topics without any are left out).

    :raises redis.RedisError: Redis is unreachable.
    """
    raw = cast(Mapping[bytes, bytes], client.hgetall(keys.unroutable(group_id)))
    fields = {k.decode(): v for k, v in raw.items()}
    return {
        name: UnroutableCount(int(value), _last(fields.get(f"{name}:last")))
        for name, value in fields.items()
        if not name.endswith(":last")
    }


def _last(data: bytes | None) -> dict[str, Any] | None:
    return None if data is None else cast(dict[str, Any], json.loads(data))
