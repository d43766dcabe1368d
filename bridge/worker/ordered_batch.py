"""Batches on ordered routes: consecutive records of one key, settled in key order.

On an ordered route with ``batch_size`` > 1, a key's head is published with up to
``batch_size`` records of its key (the records that follow it in its FIFO) in one message
(:mod:`bridge.backends.redis.ordering`). The records stay in the FIFO while the batch runs,
so a worker or a bridge that dies mid-batch loses none: the batch runs again, or its head is
published again after the stall timeout. Once the handler returns, with ``i`` the first record
(in offset order) that failed:

- the records before ``i`` are done: popped from the FIFO in one script, together;
- ``i`` goes on as the key's failing head, exactly as a head of one record whose handler
  raised its exception: retried alone with its own attempt count (its key waiting), or
  dead-lettered or parked (``on_exhausted``) as the first attempt's failure;
- the records after ``i`` stay in the FIFO, in order, and are never marked done: they run
  again once ``i`` has settled, in the key's next batch, even those the handler reported as
  succeeded (their first run came before ``i``'s last: running them again after it keeps the
  key's order). A handler that stops at the first failure (raises ``BatchFailed`` naming it
  and leaves the rest alone) runs no succeeded record twice.

An exception escaping the whole handler fails the first record (the others run again after
it). No record is ever both done and retried: a copy of a batch whose records another copy
finished (a head published again after the stall timeout while the first still ran) pops
nothing and leaves ``i`` to that other copy.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from celery.exceptions import Ignore, MaxRetriesExceededError, Reject, Retry

from bridge.errors import UndecodableRecordError
from bridge.logs import at
from bridge.record import Envelope, Record, decoded
from bridge.worker import metrics as worker_metrics
from bridge.worker import state as worker
from bridge.worker.batch_outcomes import Coordinates, Replay, run_batch
from bridge.worker.task import _at_key, count_outcome

if TYPE_CHECKING:
    from bridge.backends.redis.ordering import KeyGate
    from bridge.worker.batch_task import RecordBatchTask

log = logging.getLogger(__name__)


def first_failure(
    coords: Sequence[Coordinates], failed: Mapping[Coordinates, Replay]
) -> tuple[int, Replay | None]:
    """How many records lead the batch succeeded (in offset order) and the failure of the
    record after them (``None``: every record succeeded). Pure."""
    for i, where in enumerate(coords):
        if where in failed:
            return i, failed[where]
    return len(coords), None


def decodable_prefix(envelopes: Sequence[Envelope]) -> tuple[list[Record], dict[Any, Replay]]:
    """The records up to the first whose value does not decode (the handler runs on them: the
    rest cannot run before that one settles), and that one's failure."""
    records: list[Record] = []
    for envelope in envelopes:
        rec = envelope.record
        try:
            records.append(decoded(rec))
        except UndecodableRecordError as exc:
            return records, {(rec.topic, rec.partition, rec.offset): Replay.of(exc)}
    return records, {}


def run_ordered(
    task: RecordBatchTask,
    envelopes: list[Envelope],
    items: list[Any],
    handler: Callable[[list[Record]], Any],
) -> dict[str, int]:
    """Run a batch of one key of an ordered route as its head (a stale copy is dropped) and
    settle its records in key order (see the module's docstring).

    :raises Ignore: the batch is not its key's head (a stale copy) or the key is parked.
    :raises Reject: (requeue) Redis failed on the key, or the failed record's retry could not
        be scheduled.
    """
    gate = task._open_gate(envelopes[0])
    records, failed = decodable_prefix(envelopes)
    more, strangers = run_batch(records, handler, (Ignore, Reject))
    failed.update(more)
    if strangers:
        log.warning("task %s: the handler named records not in its batch: %r", task.request.id,
                    strangers, extra=at(task_id=task.request.id))  # fmt: skip
    coords = [(e.record.topic, e.record.partition, e.record.offset) for e in envelopes]
    done, replay = first_failure(coords, failed)
    if done and not _at_key(
        lambda: gate.batch_done([e.task_id() for e in envelopes[:done]], hold=replay is not None)
    ):
        log.warning("task %s: its records were settled by another copy of the batch: dropped",
                    task.request.id, extra=at(task_id=task.request.id))  # fmt: skip
        worker_metrics.stale_copy(task.name)
        return {"records": len(envelopes), "done": 0, "failed": 0, "again": 0}
    for envelope in envelopes[:done]:
        count_outcome(envelope, dead=False)
    worker_metrics.records_succeeded(task.name, done)
    if replay is None:
        return {"records": len(envelopes), "done": done, "failed": 0, "again": 0}
    again = envelopes[done + 1 :]
    if again:
        log.info("task %s: %d records after %r go back to their key, to run after it",
                 task.request.id, len(again), envelopes[done].record,
                 extra=at(envelopes[done].record, task_id=task.request.id))  # fmt: skip
    settle_head(task, envelopes[done], items[done], replay, worker.key_gate(envelopes[done]))
    return {"records": len(envelopes), "done": done, "failed": 1, "again": len(again)}


def settle_head(
    task: RecordBatchTask, envelope: Envelope, item: Any, replay: Replay, gate: KeyGate
) -> None:
    """The failed record, now its key's head, goes on under a request of its own with its
    key's gate: Celery's autoretry and ``RecordTask`` retry it (the key waits), dead-letter it
    (the key goes on) or park its key, as if its handler had raised just now.

    :raises Reject: (requeue) its retry could not be scheduled, or Redis failed on the key.
    :raises Exception: its dead letter was neither written nor kept.
    """
    rec, task_id = envelope.record, envelope.task_id()
    log.info("%r failed in batch %s, its key waits on it: %r", rec, task.request.id, replay.exc,
             extra=at(rec, task_id=task_id))  # fmt: skip
    # Headers given: else Celery makes headers of the batch request's own attributes (its
    # gate among them), which its retry message could not carry.
    headers = dict(task.request.headers or {})
    task.push_request(
        id=task_id,
        args=[item],
        kwargs={},
        retries=0,
        headers=headers,
        delivery_info=task.request.delivery_info,
    )  # its retry: the route's queue
    task.request.bridge_gate = gate  # type: ignore[attr-defined]
    try:
        task._handle(envelope, gate, lambda: task._run_retrying(replay))
    except Retry:
        pass  # scheduled; its key waits
    except Exception as out:
        if out is not replay.exc and not isinstance(out, MaxRetriesExceededError):
            raise  # not settled
    finally:
        task.pop_request()
