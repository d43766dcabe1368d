"""``RecordTask``: the Celery base class of every handler of Kafka records.

It turns the task argument back into a :class:`~bridge.record.Record`, lets Celery's own retry
options (``autoretry_for``, ``retry_backoff``, ``max_retries``…) decide retries, and writes a
record whose task fails non-retryably or exhausts its retries to the route's dead-letter topic.

Retries: a route may give defaults (``max_retries``, backoff factor and cap, jitter) that travel
in each record's envelope; a task's own options win. A retry delayed by
``retry.redis_schedule_min_delay_ms`` or more does not become a Celery countdown: Celery and
kombu build the very message ``retry()`` would send, and it waits in a Redis sorted set until
the bridge moves it to its queue (see :mod:`bridge.backends.redis.retries`), so it runs once
however long the delay, and costs Redis memory, not worker memory.

On ordered routes a task runs only as its key's head, and tells the key when it is done, retries
or gives up (see :mod:`bridge.backends.redis.ordering`).

Dead letters that Kafka does not take wait in Redis and the bridge writes them later; those it
refuses for good are parked there (see :mod:`bridge.backends.kafka.dead_letters`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any, TypeVar

import redis
from celery import Task
from celery.exceptions import Ignore, MaxRetriesExceededError, Reject, Retry
from celery.signals import worker_init

from bridge.backends.kafka.dead_letters import Fate, Posted
from bridge.backends.redis import outcomes
from bridge.backends.redis.ordering import KeyGate, parked_why
from bridge.backends.redis.retries import schedule_retry
from bridge.deadletter import DeadLetter, ErrorInfo, utc_now_iso
from bridge.errors import ConfigError, RetryNotScheduledError, UndecodableRecordError
from bridge.failures import Reason, is_non_retryable, reason_for
from bridge.logs import at
from bridge.record import Envelope, Record, decoded, from_task_arg
from bridge.worker import consumer_step as worker_consumer
from bridge.worker import gathered, observed, retry_defaults
from bridge.worker import metrics as worker_metrics
from bridge.worker import state as worker

log = logging.getLogger(__name__)
T = TypeVar("T")

_CONTROL_FLOW = (Retry, Ignore, Reject)


class RecordTask(Task):  # type: ignore[type-arg]
    """Base class for handlers: ``@app.task(base=RecordTask, autoretry_for=…)``."""

    # The argument is a JSON envelope, not the handler's ``record`` parameter: skip the check.
    typing = False
    # Acknowledged once it ran (Celery's default acknowledges before): a worker that dies
    # mid-task, or a task that asks to be requeued, loses nothing. A task may still opt out.
    acks_late = True
    reject_on_worker_lost = True
    # Whether its messages may carry a batch of records (RecordBatchTask).
    takes_batches = False

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if args and isinstance(args[0], Record):  # called directly, e.g. in a unit test
            return self.run(*args, **kwargs)
        self._require_settings()
        envelope = self._envelope(args)
        gate = self._open_gate(envelope) if envelope.ordered else None
        return self._handle(
            envelope,
            gate,
            lambda: self._run_retrying(decoded(envelope.record), *args[1:], **kwargs),
        )

    def _handle(self, envelope: Envelope, gate: KeyGate | None, call: Callable[[], Any]) -> Any:
        """Run ``call`` (the handler on the record, Celery's autoretry around it) and see the
        record to its end: done, a retry scheduled, or given up (dead-lettered or parked).

        :returns: what the handler returned.
        :raises Exception: what the handler raised, once the record is dead-lettered; Celery's
            ``Retry`` (a retry is scheduled), ``Ignore``, ``Reject``.
        """
        with worker_metrics.handler_run(self.name) as run:
            try:
                result = call()
            except Retry as signal:
                observed.retrying(self.request, envelope, signal)
                raise
            except _CONTROL_FLOW:
                raise
            except RetryNotScheduledError as exc:
                raise Reject(exc, requeue=True) from exc
            except Exception as exc:
                exhausted = bool(getattr(self.request, "bridge_exhausted", False)) or isinstance(
                    exc, MaxRetriesExceededError
                )
                reason = reason_for(exc, exhausted=exhausted)
                fate = self._give_up(envelope, gate, exc, reason)
                run.gave_up(fate, str(reason))
                observed.failed(self.request, envelope, exc, fate)
                raise
        if gate is not None:
            _at_key(gate.done)
        count_outcome(envelope, dead=False)
        return result

    def _require_settings(self) -> None:
        """Without the bridge's configuration a record can be neither retried nor
        dead-lettered: put it back in its queue (a worker that started refuses this at start;
        this holds wherever that check did not run).

        :raises Reject: (requeue) the configuration is missing or invalid.
        """
        try:
            worker.settings()
        except ConfigError as exc:
            task_id = self.request.id
            log.error("task %s (%s): requeued: this worker has no valid bridge configuration: "
                      "%s", task_id, self.name, exc, extra=at(task_id=task_id))  # fmt: skip
            raise Reject(exc, requeue=True) from exc

    def _envelope(self, args: tuple[Any, ...]) -> Envelope:
        """The record envelope a task message carries; a message that carries none is not
        a record of ours (no route, no DLT to send it to): logged and rejected, not retried.

        :raises Reject: the first argument is not a bridge record envelope.
        """
        try:
            return from_task_arg(args[0] if args else None)  # type: ignore[arg-type]
        except UndecodableRecordError as exc:
            task_id = self.request.id
            log.error("task %s (%s): rejected: %s", task_id, self.name, exc,
                      extra=at(task_id=task_id))  # fmt: skip
            worker_metrics.foreign_message(self.name)
            raise Reject(exc, requeue=False) from exc

    # -- ordered routes --------------------------------------------------------------------

    def _open_gate(self, envelope: Envelope) -> KeyGate:
        """Run only as the key's head: a stale copy, or a parked key's head, is dropped."""
        gate = worker.key_gate(envelope)
        if not _at_key(gate.start):
            log.warning("task %s: not the head of its key (a stale copy) or the key is parked: "
                        "dropped", gate.task_id,
                        extra=at(envelope.record, task_id=gate.task_id))  # fmt: skip
            worker_metrics.stale_copy(self.name)
            raise Ignore()
        self.request.bridge_gate = gate  # type: ignore[attr-defined]
        return gate

    def _give_up(
        self, envelope: Envelope, gate: KeyGate | None, exc: Exception, reason: Reason
    ) -> str:
        """The record will not succeed: dead-letter it, or park its key (``park`` routes).

        :returns: ``dead-lettered`` or ``parked``.
        """
        attempts = self.request.retries + 1
        if gate is not None and envelope.on_exhausted == "park":
            why = parked_why(gate.task_id, str(reason), ErrorInfo.of(exc).to_dict(), attempts)
            _at_key(lambda: gate.park(why))
            log.error("%r: %s after %d attempts, key parked until released, task %s: %s",
                      envelope.record, reason, attempts, gate.task_id, exc,
                      extra=at(envelope.record, task_id=gate.task_id))  # fmt: skip
            return "parked"
        fate = self._counted_dead_letter(envelope, exc, reason)
        count_outcome(envelope, dead=True)
        if gate is None:
            return "dead-lettered"
        if fate is Fate.WRITTEN:
            _at_key(gate.done)
        elif fate is Fate.DEFERRED:
            _at_key(lambda: gate.park(None))  # the bridge goes on once it is written
        else:
            error = ErrorInfo.of(exc).to_dict()
            refused = parked_why(gate.task_id, "dead-letter-refused", error, attempts)
            _at_key(lambda: gate.park(refused))
        return "dead-lettered"

    def _run_retrying(self, record: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return self.run(record, *args, **kwargs)
        except Retry as signal:
            if getattr(signal, "sig", None) is not None:  # sent by self.retry(): nothing to do
                raise
            # A bare ``raise Retry(when=…)`` re-sends nothing in Celery: do it, or lose the record.
            when = signal.when
            delay = when if isinstance(when, int | float) else None
            eta = when if isinstance(when, datetime) else None
            cause = signal.exc if isinstance(signal.exc, Exception) else None
            raise self.retry(exc=cause, countdown=delay, eta=eta) from signal

    def retry(
        self,
        args: Any = None,
        kwargs: Any = None,
        exc: Exception | None = None,
        throw: bool = True,
        eta: Any = None,
        countdown: float | None = None,
        max_retries: int | None = None,
        **options: Any,
    ) -> Retry:
        """Celery's ``retry``, plus: non-retryable errors are raised at once; the route's
        defaults apply where the task has no option of its own; long delays wait in Redis."""
        if exc is not None and is_non_retryable(exc):
            raise exc
        request = self.request
        route = retry_defaults.route_policy(request.args)
        max_retries = self._max_retries(route, max_retries)
        limit = self.max_retries if max_retries is None else max_retries
        exhausted = limit is not None and request.retries >= limit
        if exhausted:
            request.bridge_exhausted = True  # type: ignore[attr-defined]
        if countdown is None and eta is None:
            countdown = self._route_backoff(route, request.retries)
        if args is None and request.args and isinstance(request.args[0], dict):
            args = [retry_defaults.mark_failed(request.args[0]), *request.args[1:]]
        options.setdefault("argsrepr", observed.argsrepr(args))  # else Flower shows the envelope
        delay_s = retry_defaults.delay_s(countdown, eta, self.default_retry_delay)
        threshold_s = worker.settings().retry.redis_schedule_min_delay_ms / 1000
        gate: KeyGate | None = getattr(request, "bridge_gate", None)
        if gate is not None and not exhausted:
            _at_key(lambda: gate.retrying(delay_s))
        if not exhausted and gathered.gathers(self, request):
            return gathered.retry(self, delay_s, exc, throw, args, kwargs, **options)
        if exhausted or request.called_directly or delay_s < threshold_s:
            return self._celery_retry(
                args, kwargs, exc, throw, eta, countdown, max_retries, options
            )
        return self._retry_from_redis(args, kwargs, exc, throw, delay_s, options)

    # -- retries -------------------------------------------------------------------------

    def _own(self, option: str) -> bool:
        """Whether the task itself sets ``option`` (rather than inheriting Celery's default)."""
        return any(option in vars(cls) for cls in type(self).__mro__ if cls not in _BASES)

    def _max_retries(self, route: dict[str, Any], asked: int | None) -> int | None:
        """The ``max_retries`` asked of ``retry``, else the route's if the task has none."""
        if asked is None and not self._own("max_retries") and "max_retries" in route:
            return int(route["max_retries"])
        return asked

    def _route_backoff(self, route: dict[str, Any], retries: int) -> float | None:
        if self._own("retry_backoff"):
            return None
        cap = getattr(self, "retry_backoff_max", None) if self._own("retry_backoff_max") else None
        jitter = getattr(self, "retry_jitter", None) if self._own("retry_jitter") else None
        return retry_defaults.route_backoff_s(route, retries, own_cap_s=cap, own_jitter=jitter)

    def _celery_retry(
        self,
        args: Any,
        kwargs: Any,
        exc: Exception | None,
        throw: bool,
        eta: Any,
        countdown: float | None,
        max_retries: int | None,
        options: dict[str, Any],
    ) -> Retry:
        try:
            scheduled = super().retry(
                args=args, kwargs=kwargs, exc=exc, throw=throw, eta=eta,
                countdown=countdown, max_retries=max_retries, **options,
            )  # fmt: skip
        except Retry:
            if not self.request.called_directly:  # else Celery raised it and sent nothing
                worker_metrics.retry_scheduled(self.name, "countdown")
            raise
        except Reject as rejected:
            # Celery drops the record when its retry cannot be published: keep it instead.
            raise Reject(getattr(rejected, "reason", rejected), requeue=True) from exc
        finally:
            # Celery remembers a per-call max_retries on the task object; forget it.
            vars(self).pop("override_max_retries", None)
        worker_metrics.retry_scheduled(self.name, "countdown")
        return scheduled

    def _retry_from_redis(
        self,
        args: Any,
        kwargs: Any,
        exc: Exception | None,
        throw: bool,
        delay_s: float,
        options: dict[str, Any],
    ) -> Retry:
        request = self.request
        signature = self.signature_from_request(
            request, args, kwargs, retries=request.retries + 1, **options
        )
        due_ms = int((time.time() + delay_s) * 1000)
        try:
            queue, message = worker.held_message(
                lambda producer: signature.apply_async(producer=producer), self.app
            )
            group_id = request.args[0]["group_id"]  # type: ignore[index]
            schedule_retry(worker.redis_client(), group_id, queue, message, due_ms)
        except Exception as err:
            raise RetryNotScheduledError(f"retry of {request.id} not scheduled: {err!r}") from exc
        worker_metrics.retry_scheduled(self.name, "redis")
        log.info("task %s: retry %d due in %.3f s, waiting in Redis", request.id,
                 request.retries + 1, delay_s, extra=at(task_id=request.id))  # fmt: skip
        ret = Retry(exc=exc, when=delay_s, sig=signature)  # type: ignore[arg-type]
        if throw:
            raise ret
        return ret

    # -- dead letters --------------------------------------------------------------------

    def _counted_dead_letter(self, envelope: Envelope, exc: Exception, reason: Reason) -> Fate:
        """Write the record to its DLT; if the write fails, it is deferred (kept in Redis for
        the bridge's writer); if Kafka refuses it for good, parked in Redis.

        :raises redis.RedisError: neither written nor kept in Redis.
        """
        try:
            dl = self._dead_letter(envelope, exc, reason)
            posted = worker.dead_letter_office(dl.group_id).send_or_defer(dl)
        except Exception:
            worker_metrics.dead_letter_written(self.name, str(reason), "failed")
            raise
        _log_posted(posted)
        worker_metrics.dead_letter_written(self.name, str(reason), _METRIC_RESULT[posted.fate])
        return posted.fate

    def _dead_letter(self, envelope: Envelope, exc: Exception, reason: Reason) -> DeadLetter:
        now = utc_now_iso()
        return DeadLetter(
            record=envelope.record,
            group_id=envelope.group_id,
            dlt_topic=envelope.dlt_topic,
            reason=reason,
            error=ErrorInfo.of(exc),
            attempts=self.request.retries + 1,
            task=self.name,
            task_id=self.request.id or envelope.task_id(),
            first_failure_at=envelope.first_failure_at or now,
            dead_lettered_at=now,
            ordered=envelope.ordered,
        )


_BASES = (RecordTask, Task, object)
_METRIC_RESULT = {Fate.WRITTEN: "written", Fate.DEFERRED: "deferred", Fate.PARKED: "refused"}


def _log_posted(posted: Posted) -> None:
    dl = posted.letter
    where = at(dl.record, task_id=dl.task_id)
    if posted.fate is Fate.PARKED:
        log.critical("%r: Kafka refuses its dead letter, parked in Redis, task %s: %s",
                     dl.record, dl.task_id, posted.error, extra=where)  # fmt: skip
    elif posted.fate is Fate.DEFERRED:
        log.error("%r: dead letter not written yet, kept in Redis for the bridge, task %s: %s",
                  dl.record, dl.task_id, posted.error, extra=where)  # fmt: skip
    else:
        log.error(
            "%r dead-lettered (%s after %d attempts) to %s[%d]@%d, task %s: %s",
            dl.record, dl.reason, dl.attempts, dl.dlt_topic, posted.dlt_partition,
            posted.dlt_offset, dl.task_id, dl.error.message, extra=where,
        )  # fmt: skip


@worker_init.connect(weak=False)
def _prepare_worker(sender: Any = None, **_: Any) -> None:
    """At worker start, before it builds its consumer: add the bridge's consumer step, and
    refuse a configuration in which the guarantees cannot hold."""
    app = getattr(sender, "app", None)
    if app is None:
        return
    worker_consumer.install(app)
    handlers = sorted(name for name, task in app.tasks.items() if isinstance(task, RecordTask))
    problems = worker.start_problems(app, handlers, worker_consumer.non_record_tasks(app))
    if problems:
        # Celery logs and swallows exceptions from signal handlers (before the worker has
        # set up logging: unseen, and the worker starts); SystemExit stops it.
        raise SystemExit("kafka-celery-bridge refuses this worker:\n  " + "\n  ".join(problems))


def count_outcome(envelope: Envelope, *, dead: bool) -> None:
    """Count a finished record for its route's flood breaker, if it has one."""
    if envelope.breaker_window_s is not None:
        rec, window_s = envelope.record, envelope.breaker_window_s
        outcomes.count(worker.redis_client(), envelope.group_id, rec.topic, dead=dead,
                       window_s=window_s, now_s=time.time())  # fmt: skip


def _at_key(step: Callable[[], T]) -> T:
    """Run a step of an ordered record's key; if Redis fails, requeue the task: it runs again
    rather than leave its key without a head."""
    try:
        return step()
    except redis.RedisError as exc:
        raise Reject(f"key FIFO unavailable: {exc!r}", requeue=True) from exc
