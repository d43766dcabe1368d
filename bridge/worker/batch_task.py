"""``RecordBatchTask``: the Celery base class of handlers of batches of Kafka records.

A batched route (``batch_size`` > 1) sends up to ``batch_size`` consecutive records of one
partition in one task message, whose argument is the list of their envelopes. The handler takes
a list of :class:`~bridge.record.Record` and says which records failed
(:mod:`bridge.worker.batch_outcomes`). Records that succeeded are done. Each failed record goes
on on its own, exactly as a single record whose handler raised its exception: under a request
of its own (its task id ``{group_id}:{topic}:{partition}:{offset}``, the batch's retries count:
each record of a batch is at the same attempt), Celery's autoretry and
:class:`~bridge.worker.task.RecordTask` classify it, schedule its retry or dead-letter it. On an
unordered route the retry is not a task message of its own: it waits in Redis with the record's
own due time, and the bridge gathers due retries of the same attempt into batch messages again
(:mod:`bridge.worker.gathered`), whose ``retries`` is that attempt's. On an ordered route a
batch holds one key's records and settles them in key order instead
(:mod:`bridge.worker.ordered_batch`).

The message of a batch is acknowledged once every record is settled. A worker that dies before
runs the batch again (at least once, as a single record); a retry or dead letter that cannot be
stored requeues the whole batch.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from celery.exceptions import Ignore, MaxRetriesExceededError, Reject, Retry

from bridge.errors import BatchFailed, UndecodableRecordError
from bridge.logs import at
from bridge.record import Envelope, Record, decoded
from bridge.worker import metrics as worker_metrics
from bridge.worker import ordered_batch
from bridge.worker.batch_outcomes import Replay, failure_of, run_batch
from bridge.worker.task import RecordTask, count_outcome

log = logging.getLogger(__name__)


class RecordBatchTask(RecordTask):
    """Base class for batch handlers: ``@app.task(base=RecordBatchTask, autoretry_for=…)
    def handle(records: list[Record])``; raise :class:`~bridge.BatchFailed` to name the records
    that failed."""

    takes_batches = True

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        handler = cls.__dict__.get("run")
        if handler is not None and not getattr(handler, "bridge_batch", False):
            cls.run = _per_record(handler)  # type: ignore[method-assign]

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        arg = args[0] if args else None
        if isinstance(arg, list) and arg and isinstance(arg[0], Record):
            return self.run(*args, **kwargs)  # called directly, e.g. in a unit test
        if not isinstance(arg, list) or not arg:
            return super().__call__(*args, **kwargs)  # one record (a retry), or not ours
        self._require_settings()
        envelopes = [self._envelope((item,)) for item in arg]
        handler = getattr(self, "_orig_run", self.run)  # without Celery's autoretry
        if envelopes[0].ordered:  # one key's records, settled in key order
            return ordered_batch.run_ordered(
                self, envelopes, arg, lambda batch: handler(batch, *args[1:], **kwargs)
            )
        records, failed = _decoded(envelopes)
        more, strangers = run_batch(
            records, lambda batch: handler(batch, *args[1:], **kwargs), (Ignore, Reject)
        )
        failed.update(more)
        if strangers:
            log.warning("task %s: the handler named records not in its batch: %r", self.request.id,
                        strangers, extra=at(task_id=self.request.id))  # fmt: skip
        for envelope, item in zip(envelopes, arg, strict=True):
            rec = envelope.record
            replay = failed.get((rec.topic, rec.partition, rec.offset))
            if replay is None:
                count_outcome(envelope, dead=False)
            else:
                self._settle(envelope, item, replay)
        worker_metrics.records_succeeded(self.name, len(envelopes) - len(failed))
        return {"records": len(envelopes), "failed": len(failed)}

    def _settle(self, envelope: Envelope, item: Any, replay: Replay) -> None:
        """A failed record goes on on its own, under a request of its own: Celery's autoretry
        and ``RecordTask`` retry or dead-letter it as if its handler had raised just now.

        :raises Reject: (requeue) its retry could not be scheduled: the batch runs again.
        :raises Exception: its dead letter was neither written nor kept.
        """
        rec, task_id = envelope.record, envelope.task_id()
        log.info("%r failed in batch %s: %r", rec, self.request.id, replay.exc,
                 extra=at(rec, task_id=task_id))  # fmt: skip
        request = self.request
        self.push_request(id=task_id, args=[item], kwargs={}, retries=request.retries,
                          delivery_info=request.delivery_info)  # fmt: skip
        try:
            self._handle(envelope, None, lambda: self._run_retrying(replay))
        except Retry:
            pass  # scheduled
        except Exception as out:
            if out is not replay.exc and not isinstance(out, MaxRetriesExceededError):
                raise  # not settled
        finally:
            self.pop_request()

    def retry(self, *args: Any, **kwargs: Any) -> Retry:
        """Celery's ``retry`` for a record (see :meth:`RecordTask.retry`); called by the
        handler of a whole batch, each of its records is retried on its own instead (after
        ``countdown`` or at ``eta``, as asked; gathered into batches again)."""
        request_args = self.request.args or [None]
        if isinstance(request_args[0], list):
            when = kwargs.get("eta") or kwargs.get("countdown")
            raise Retry(exc=kwargs.get("exc"), when=when)
        return super().retry(*args, **kwargs)


def _decoded(envelopes: list[Envelope]) -> tuple[list[Record], dict[Any, Replay]]:
    """The records whose value decodes, and the failures of those that do not."""
    records, failed = [], {}
    for envelope in envelopes:
        rec = envelope.record
        try:
            records.append(decoded(rec))
        except UndecodableRecordError as exc:
            failed[(rec.topic, rec.partition, rec.offset)] = Replay.of(exc)
    return records, failed


def _per_record(handler: Any) -> Callable[..., Any]:
    """The ``run`` of a batch handler (``staticmethod(fun)``, or ``fun`` when bound): a list of
    records runs it as is; one record (a retry) runs it on a list of one, and raises the
    record's failure; a :class:`Replay` raises a batch's record failure again."""
    bound = not isinstance(handler, staticmethod)
    fun = handler if bound else handler.__func__

    def run(self: RecordBatchTask, arg: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(arg, Replay):
            arg.throw()
        if isinstance(arg, Record):
            return _one(arg, lambda records: _call(self, records, *args, **kwargs))
        return _call(self, arg, *args, **kwargs)

    def _call(self: RecordBatchTask, records: Any, *args: Any, **kwargs: Any) -> Any:
        return fun(self, records, *args, **kwargs) if bound else fun(records, *args, **kwargs)

    run.bridge_batch = True  # type: ignore[attr-defined]
    run.__wrapped__ = fun  # type: ignore[attr-defined]
    return run


def _one(record: Record, call: Callable[[list[Record]], Any]) -> Any:
    """Run a batch handler on ``record`` alone; its failure is raised as a single handler's."""
    try:
        return call([record])
    except BatchFailed as failed:
        found = failure_of(record, failed)
    if found is not None:
        raise found  # outside the except: its own chain, not the BatchFailed's
    return None


# ``RecordTask`` and the tasks built on it name this module's class in start-up checks.
__all__ = ["RecordBatchTask"]
