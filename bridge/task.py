"""``RecordTask``: the Celery base class of every handler of Kafka records.

It turns the task argument back into a :class:`~bridge.record.Record`, lets Celery's own retry
options (``autoretry_for``, ``retry_backoff``, ``max_retries``…) decide retries, and writes a
record whose task fails non-retryably or exhausts its retries to the route's dead-letter topic.

A dead letter that cannot be written is not dropped: the task is re-sent with the dead letter
attached, and later runs only retry the write (with exponential backoff) until it succeeds.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import Task
from celery.exceptions import Ignore, MaxRetriesExceededError, Reject, Retry

from bridge import worker
from bridge.backoff import exponential_ms
from bridge.deadletter import DeadLetter, ErrorInfo, utc_now_iso
from bridge.errors import DeadLetterError
from bridge.failures import Reason, is_non_retryable, reason_for
from bridge.record import Envelope, Record, decoded, from_task_arg

log = logging.getLogger(__name__)

_PENDING = "dead_letter"  # key of a dead letter awaiting its write, in the task argument
_CONTROL_FLOW = (Retry, Ignore, Reject)


class RecordTask(Task[Any, Any]):
    """Base class for handlers: ``@app.task(base=RecordTask, autoretry_for=…)``."""

    # The argument is a JSON envelope, not the handler's ``record`` parameter: skip the check.
    typing = False

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if args and isinstance(args[0], Record):  # called directly, e.g. in a unit test
            return self.run(*args, **kwargs)
        arg = args[0]
        envelope = from_task_arg(arg)
        if _PENDING in arg:
            return self._retry_dead_letter(envelope, arg)
        try:
            return self.run(decoded(envelope.record), *args[1:], **kwargs)
        except _CONTROL_FLOW:
            raise
        except Exception as exc:
            exhausted = bool(getattr(self.request, "bridge_exhausted", False)) or isinstance(
                exc, MaxRetriesExceededError
            )
            self._dead_letter(envelope, arg, exc, reason_for(exc, exhausted=exhausted))
            raise

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
        """Celery's ``retry``, except that non-retryable errors are raised at once, and the
        envelope remembers when the record first failed."""
        if exc is not None and is_non_retryable(exc):
            raise exc
        request = self.request
        limit = self.max_retries if max_retries is None else max_retries
        if limit is not None and request.retries >= limit:
            request.bridge_exhausted = True  # type: ignore[attr-defined]
        if args is None and request.args and isinstance(request.args[0], dict):
            args = [_mark_failed(request.args[0]), *request.args[1:]]
        return super().retry(
            args=args,
            kwargs=kwargs,
            exc=exc,
            throw=throw,
            eta=eta,
            countdown=countdown,
            max_retries=max_retries,
            **options,
        )

    # -- dead letters ----------------------------------------------------------------------

    def _dead_letter(
        self, envelope: Envelope, arg: dict[str, Any], exc: Exception, reason: Reason
    ) -> None:
        now = utc_now_iso()
        dl = DeadLetter(
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
        )
        self._write_or_defer(dl, arg)

    def _write_or_defer(self, dl: DeadLetter, arg: dict[str, Any]) -> None:
        try:
            partition, offset = worker.write_dead_letter(dl)
        except DeadLetterError as err:
            self._defer_dead_letter(dl, arg, err)
            return
        log.error(
            "%r dead-lettered (%s after %d attempts) to %s[%d]@%d, task %s: %s",
            dl.record,
            dl.reason,
            dl.attempts,
            dl.dlt_topic,
            partition,
            offset,
            dl.task_id,
            dl.error.message,
        )

    def _defer_dead_letter(self, dl: DeadLetter, arg: dict[str, Any], err: Exception) -> None:
        pending = dict(arg.get(_PENDING) or _pending_state(dl))
        pending["write_attempts"] = int(pending.get("write_attempts", 0)) + 1
        conf = worker.settings().dead_letter
        delay_ms = exponential_ms(
            pending["write_attempts"], initial_ms=conf.retry_backoff_ms, max_ms=60_000
        )
        log.critical(
            "%r could not be dead-lettered to %s (%s), task %s: write retried in %d ms",
            dl.record,
            dl.dlt_topic,
            err,
            dl.task_id,
            delay_ms,
        )
        signature = self.signature_from_request(
            self.request,
            args=({**arg, _PENDING: pending},),
            kwargs={},
            countdown=delay_ms / 1000,
            retries=self.request.retries,
        )
        signature.apply_async()

    def _retry_dead_letter(self, envelope: Envelope, arg: dict[str, Any]) -> None:
        pending = arg[_PENDING]
        dl = DeadLetter(
            record=envelope.record,
            group_id=envelope.group_id,
            dlt_topic=envelope.dlt_topic,
            reason=Reason(pending["reason"]),
            error=ErrorInfo.from_dict(pending["error"]),
            attempts=int(pending["attempts"]),
            task=self.name,
            task_id=pending["task_id"],
            first_failure_at=pending["first_failure_at"],
            dead_lettered_at=utc_now_iso(),
        )
        self._write_or_defer(dl, arg)


def _pending_state(dl: DeadLetter) -> dict[str, Any]:
    return {
        "reason": str(dl.reason),
        "error": dl.error.to_dict(),
        "attempts": dl.attempts,
        "task_id": dl.task_id,
        "first_failure_at": dl.first_failure_at,
    }


def _mark_failed(arg: dict[str, Any]) -> dict[str, Any]:
    return arg if arg.get("first_failure_at") else {**arg, "first_failure_at": utc_now_iso()}
