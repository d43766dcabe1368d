"""Retries of a batch handler's records, gathered into batches again (the worker's side).

A :class:`~bridge.worker.batch_task.RecordBatchTask` on an unordered route does not send a
record's retry as a task message of its own (Celery's per-task cost would then be paid once
per failed record): it keeps a retry item in Redis, scored by the record's own due time
(:mod:`bridge.backends.redis.gathered_retries`), before the message it ran in is acknowledged;
the bridge gathers due items into batch messages (:mod:`bridge.retry_batches`).
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from celery.exceptions import Retry

from bridge.backends.redis.gathered_retries import keep
from bridge.errors import RetryNotScheduledError
from bridge.logs import at
from bridge.retry_batches import RetryItem
from bridge.worker import metrics as worker_metrics
from bridge.worker import state as worker

log = logging.getLogger(__name__)


def gathers(task: Any, request: Any) -> bool:
    """Whether ``task``'s retry under ``request`` is gathered: a batch handler's, on a record
    of an unordered route, sent by a worker (not a direct call)."""
    if not getattr(task, "takes_batches", False) or request.called_directly:
        return False
    arg = request.args[0] if request.args else None
    return isinstance(arg, dict) and not arg.get("ordered") and "topic" in arg


def retry(
    task: Any, delay_s: float, exc: Exception | None, throw: bool, *call: Any, **options: Any
) -> Retry:
    """What ``task.retry`` does for a record whose retry :func:`gathers`: keep it, then raise
    (``throw``) or return Celery's ``Retry`` (with the signature of the record's retry, as a
    retry ``RecordTask`` sent).

    :raises RetryNotScheduledError: see :func:`keep_retry`.
    """
    request, (args, kwargs) = task.request, call
    keep_retry(task, request, (args or request.args)[0], delay_s)
    sig = task.signature_from_request(request, args, kwargs, retries=request.retries + 1,
                                      **options)  # fmt: skip
    ret = Retry(exc=exc, when=delay_s, sig=sig)  # type: ignore[arg-type]
    if throw:
        raise ret
    return ret


def keep_retry(task: Any, request: Any, envelope: dict[str, Any], delay_s: float) -> None:
    """Keep the retry of the record ``request`` runs (``envelope``: its task argument, with its
    first failure) for the bridge to gather, due in ``delay_s``.

    :raises RetryNotScheduledError: it could not be kept (the message it ran in is requeued).
    """
    item = RetryItem(_queue_of(task, request), task.name, envelope["topic"],
                     request.retries + 1, request.id)  # fmt: skip
    due_ms = int((time.time() + delay_s) * 1000)
    try:
        keep(worker.redis_client(), envelope["group_id"], item, json.dumps(envelope), due_ms)
    except Exception as err:
        raise RetryNotScheduledError(f"retry of {request.id} not kept: {err!r}") from err
    worker_metrics.retry_scheduled(task.name, "gathered")
    log.info("task %s: retry %d due in %.3f s, to be gathered into a batch", request.id,
             item.retries, delay_s, extra=at(task_id=request.id))  # fmt: skip


def _queue_of(task: Any, request: Any) -> str:
    """The queue the record came from (where its retries go), as Celery's own ``retry``
    finds it: the message's routing key, else the task's queue, else the default queue."""
    routing_key = (request.delivery_info or {}).get("routing_key")
    return str(routing_key or task.queue or task.app.conf.task_default_queue)
