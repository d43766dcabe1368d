"""What a record's task leaves for operators to see: how its retry messages show in Flower
(``argsrepr``: the record, not its envelope), and each failed attempt, kept in Redis for the
console (:mod:`bridge.attempt_log`). Neither may fail the record: a note Redis does not take is
logged and dropped."""

from __future__ import annotations

import logging
from typing import Any

import redis
from celery.exceptions import Retry

from bridge.attempt_log import Attempt, delay_of
from bridge.backends.redis import attempts
from bridge.deadletter import utc_now_iso
from bridge.errors import UndecodableRecordError
from bridge.logs import at
from bridge.record import Envelope, from_task_arg, task_argsrepr
from bridge.worker import state as worker

log = logging.getLogger(__name__)


def argsrepr(args: Any) -> str | None:
    """A retry message's ``argsrepr``: the record (``args[0]``, an envelope), as the bridge's
    first message shows it; ``None`` (Celery's own) for other arguments."""
    if not args or not isinstance(args[0], dict):
        return None
    try:
        rec = from_task_arg(args[0]).record
    except UndecodableRecordError:
        return None
    shown = worker.settings().celery.argsrepr_value_bytes
    return task_argsrepr(rec.topic, rec.partition, rec.offset, rec.key, rec.raw_value, shown)


def retrying(request: Any, envelope: Envelope, signal: Retry) -> None:
    """The attempt failed with ``signal.exc`` and its retry is scheduled (none: not a failure)."""
    if isinstance(signal.exc, BaseException):
        _note(request, envelope, signal.exc, "retry", delay_of(signal.when))


def failed(request: Any, envelope: Envelope, exc: BaseException, fate: str) -> None:
    """The attempt failed with ``exc`` and the record was given up (``fate``)."""
    _note(request, envelope, exc, fate)


def _note(
    request: Any, envelope: Envelope, exc: BaseException, outcome: str, delay_s: float | None = None
) -> None:
    kept = worker.settings().retry
    if not kept.attempt_history:
        return
    number = (request.retries or 0) + 1
    attempt = Attempt.of(number, utc_now_iso(), request.hostname or "", outcome, exc, delay_s)
    try:
        attempts.note(worker.redis_client(), envelope.group_id, request.id, attempt,
                      kept.attempt_history, kept.attempt_history_ttl_s)  # fmt: skip
    except redis.RedisError as err:
        log.warning("task %s: attempt %d not kept for the console: %r", request.id, number, err,
                    extra=at(envelope.record, task_id=request.id))  # fmt: skip
