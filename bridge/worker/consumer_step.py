"""The bridge's step in each Celery worker's consumer (the main process, which fetches task
messages and hands them to the pool): a record that no ``RecordTask`` can run is
dead-lettered as ``unroutable`` (:mod:`bridge.worker.unroutable`) instead of lost, and the worker
says which tasks it runs on which queues (:mod:`bridge.backends.redis.worker_registry`).

Celery hands a message whose task name the worker does not register to
``Consumer.on_unknown_task`` (which discards it), and any other message to its task's
*strategy*. The step replaces the first for bridge records (other messages keep Celery's
handling), and wraps the strategies of registered tasks that are not ``RecordTask``: a bridge
record would reach such a handler as a dict. That check reads one header (``origin``) and
decodes only what a bridge sent. The strategies of ``RecordTask`` tasks of one record are
wrapped too: a batch of records (a batched route's, told by its ``argsrepr`` header) is
dead-lettered record by record, as it would be rejected; other messages pass untouched.

:func:`install` adds the step to an app's workers. ``bridge.worker.task`` does it at ``worker_init``
(before the worker builds its consumer) for every worker that imports ``bridge.RecordTask``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from celery import Celery, bootsteps, signals
from celery.exceptions import NotRegistered

from bridge.backends.redis import worker_registry
from bridge.deadletter import DeadLetter
from bridge.errors import UnroutableError
from bridge.logs import at
from bridge.record import BATCH_REPR_PREFIX, Envelope, is_bridge_origin
from bridge.worker import metrics as worker_metrics
from bridge.worker import unroutable

log = logging.getLogger(__name__)

Strategy = Callable[..., Any]


def install(app: Celery) -> None:
    """Add the bridge's consumer step to ``app``'s workers; call it before a worker builds
    its consumer (at import, or from ``worker_init``). Calling it again changes nothing."""
    app.steps["consumer"].add(RecordGuard)


class RecordGuard(bootsteps.StartStopStep):
    """Dead-letters bridge records no ``RecordTask`` can run; keeps the worker's
    registration fresh in Redis while it consumes."""

    requires = ("celery.worker.consumer.tasks:Tasks",)

    def __init__(self, c: Any, **kwargs: Any) -> None:
        super().__init__(c, **kwargs)
        self._timer: Any = None
        self._channel: Any = None
        guard(c)

    def start(self, c: Any) -> None:
        self._channel = c.connection.default_channel
        self._register(c)
        self._timer = c.timer.call_repeatedly(
            worker_registry.INTERVAL_S, self._register, (c,), priority=10
        )

    def stop(self, c: Any) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def shutdown(self, c: Any) -> None:
        self.stop(c)
        try:
            with self._channel.conn_or_acquire() as client:
                worker_registry.unregister(client, c.hostname)
        except Exception as exc:  # it expires anyway
            log.debug("registration of %s not removed: %r", c.hostname, exc)

    def _register(self, c: Any) -> None:
        try:
            with self._channel.conn_or_acquire() as client:
                worker_registry.register(client, registration(c))
        except Exception as exc:  # not a Redis broker, or Redis is down: status sees less
            log.debug("registration of %s not written: %r", c.hostname, exc)


def guard(c: Any) -> None:
    """Make the consumer ``c`` dead-letter bridge records of unknown tasks and of tasks that
    are not ``RecordTask``, before it builds its message handler (which reads both)."""
    discard = c.on_unknown_task
    build = c.update_strategies

    def on_unknown_task(body: Any, message: Any, exc: BaseException) -> None:
        envelopes = envelopes_of(message)
        if not envelopes:
            discard(body, message, exc)
            return
        name = str(message.headers.get("task"))
        error = unroutable.not_registered(name, c.hostname, NotRegistered(name))
        if dead_letter(c, message, envelopes, name, error):  # as Celery does, once it is safe
            signals.task_unknown.send(sender=c, message=message, exc=exc, name=name,
                                      id=message.headers.get("id"))  # fmt: skip

    def update_strategies() -> None:
        build()
        wrap(c, non_record_tasks(c.app), guarded)
        wrap(c, single_record_tasks(c.app), batch_guarded)

    c.on_unknown_task = on_unknown_task
    c.update_strategies = update_strategies


def wrap(c: Any, names: list[str], guard: Callable[[Any, str, Strategy], Strategy]) -> None:
    """Wrap the strategies of the tasks ``names`` of the consumer ``c`` in ``guard``."""
    for name in names:
        if name in c.strategies:
            c.strategies[name] = guard(c, name, c.strategies[name])


def guarded(c: Any, name: str, strategy: Strategy) -> Strategy:
    """``strategy`` of a task that is not a ``RecordTask``, dead-lettering bridge records."""

    def guarded_strategy(message: Any, *args: Any, **kwargs: Any) -> Any:
        if is_bridge_origin((message.headers or {}).get("origin")):
            envelopes = envelopes_of(message)
            if envelopes:
                dead_letter(
                    c, message, envelopes, name, unroutable.not_a_record_task(name, c.hostname)
                )
                return None
        return strategy(message, *args, **kwargs)

    return guarded_strategy


def batch_guarded(c: Any, name: str, strategy: Strategy) -> Strategy:
    """``strategy`` of a ``RecordTask`` of one record, dead-lettering the records of a batch
    (told by its ``argsrepr`` header: no other message is decoded here)."""

    def batch_guarded_strategy(message: Any, *args: Any, **kwargs: Any) -> Any:
        headers = message.headers or {}
        if str(headers.get("argsrepr") or "").startswith(BATCH_REPR_PREFIX):
            envelopes = envelopes_of(message)
            if len(envelopes) > 1:  # the bridge sends one record in a message of its own
                error = unroutable.not_a_batch_task(name, c.hostname)
                dead_letter(c, message, envelopes, name, error)
                return None
        return strategy(message, *args, **kwargs)

    return batch_guarded_strategy


def envelopes_of(message: Any) -> list[Envelope]:
    """The record envelopes a task message carries (a batch's: several), or none (not bridge
    records, or a body that does not decode: Celery's own handling applies)."""
    try:
        return unroutable.envelopes_in(message.decode())
    except Exception:  # ContentDisallowed, DecodeError: not ours to judge
        return []


def dead_letter(
    c: Any, message: Any, envelopes: list[Envelope], task: str, error: UnroutableError
) -> bool:
    """Store the ``unroutable`` dead letter of each record the message carries for the
    bridge, then acknowledge the message; if Redis fails, requeue it (it stays
    unacknowledged if that fails too; records stored before are stored again).

    :returns: whether the message was acknowledged.
    """
    kept = []
    for envelope in envelopes:
        # One record's message has its task id; a batch's records each their own.
        given = message.headers.get("id") if len(envelopes) == 1 else None
        dl = unroutable.dead_letter(envelope, task, str(given or envelope.task_id()), error)
        try:
            with message.channel.conn_or_acquire() as client:
                kept.append((dl, unroutable.keep(client, envelope, dl, c.hostname)))
        except Exception as exc:
            log.error("%r: unroutable (%s) and its dead letter not stored, requeued: %r",
                      dl.record, error, exc, extra=at(dl.record, task_id=dl.task_id))  # fmt: skip
            message.reject_log_error(log, c.connection_errors, requeue=True)
            return False
    message.ack_log_error(log, c.connection_errors)
    for dl, stored in kept:
        _log_unroutable(c, dl, stored, task, error)
    return True


def _log_unroutable(c: Any, dl: DeadLetter, kept: bool, task: str, error: UnroutableError) -> None:
    task_id = dl.task_id
    where = at(dl.record, task_id=task_id)
    if not kept:
        log.warning("task %s: not the head of its key (a stale copy) or the key is parked: "
                    "dropped", task_id, extra=where)  # fmt: skip
        worker_metrics.stale_copy(task)
        return
    log.error("%r dead-lettered as unroutable (the bridge writes it to %s), task %s: %s",
              dl.record, dl.dlt_topic, task_id, error, extra=where)  # fmt: skip
    worker_metrics.dead_letter_written(task, str(dl.reason), "deferred")
    if c.event_dispatcher is not None:  # Flower shows the task as failed, with the reason
        c.event_dispatcher.send("task-failed", uuid=task_id, exception=repr(error))


def registration(c: Any) -> worker_registry.Registration:
    """What the consumer ``c``'s worker runs: its queues and tasks."""
    from bridge.worker.task import RecordTask  # bridge.worker.task installs this module's step

    tasks = c.app.tasks
    consumer = c.task_consumer
    return worker_registry.Registration(
        node=c.hostname,
        queues=tuple(sorted(q.name for q in (consumer.queues if consumer else ()))),
        record_tasks=tuple(sorted(n for n, t in tasks.items() if isinstance(t, RecordTask))),
        other_tasks=tuple(non_record_tasks(c.app)),
        at_ms=int(time.time() * 1000),
    )


def single_record_tasks(app: Celery) -> list[str]:
    """The names of ``app``'s ``RecordTask`` tasks that take no batches."""
    from bridge.worker.task import RecordTask  # bridge.worker.task installs this module's step

    return sorted(
        name
        for name, task in app.tasks.items()
        if isinstance(task, RecordTask) and not task.takes_batches
    )


def non_record_tasks(app: Celery) -> list[str]:
    """The names of ``app``'s tasks that are not ``RecordTask`` (Celery's ``celery.*`` aside)."""
    from bridge.worker.task import RecordTask  # bridge.worker.task installs this module's step

    return sorted(
        name
        for name, task in app.tasks.items()
        if not isinstance(task, RecordTask) and not name.startswith("celery.")
    )
