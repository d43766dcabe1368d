"""Operators' action on a parked key of an ordered route: resume its head, or skip it.

A key parks when its head exhausts its retries on a route with ``on_exhausted = "park"``
(or when Kafka refuses the head's dead letter). Releasing it either runs the head again with a
fresh retry budget (*resume*), or writes the head to the route's DLT and goes on with the
key's next record (*skip*), so a skipped record is never lost.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import redis

from bridge.backends.kafka.dead_letters import DeadLetterOffice, DeadLetterProducer
from bridge.backends.redis.client import broker_client
from bridge.backends.redis.dead_letter_store import DeadLetterStore
from bridge.backends.redis.messages import task_of
from bridge.backends.redis.ordering import Head, KeyQueues
from bridge.deadletter import DeadLetter, ErrorInfo, utc_now_iso
from bridge.errors import NotParkedError
from bridge.failures import Reason
from bridge.record import from_task_arg
from bridge.settings import BridgeSettings

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Released:
    """What a release did."""

    fifo: str
    task_id: str
    skipped: bool
    dead_letter: str | None  # "written" | "parked" (Kafka refused it) | None (resumed)


def release(
    settings: BridgeSettings, topic: str, key: bytes | None, partition: int, *, skip: bool
) -> Released:
    """Release the parked key ``key`` of ``topic`` (``key`` None: the keyless records of
    ``partition``).

    :raises NotParkedError: the key is not parked.
    :raises DeadLetterError: ``skip``, and the head could not be dead-lettered (the key stays
        parked).
    """
    client = broker_client(settings.celery, socket_timeout=5)
    try:
        queues = KeyQueues(client, settings.kafka.group_id)
        fifo = queues.fifo(topic, key, partition)
        head, why = queues.head(fifo), queues.parked_why(fifo)
        if head is None or why is None:
            raise NotParkedError(f"{topic} key {key!r}: not parked")
        outcome = _dead_letter(settings, client, head, why) if skip else None
        deadline_ms = int(time.time() * 1000) + settings.stall_timeout_ms
        queues.release(fifo, head, skip=skip, deadline_ms=deadline_ms)
    finally:
        client.close()
    log.warning("%s: parked head %s %s", fifo, head.task_id, "skipped" if skip else "resumed")
    return Released(fifo, head.task_id, skip, outcome)


def _dead_letter(
    settings: BridgeSettings, client: redis.Redis, head: Head, why: dict[str, Any]
) -> str:
    task, arg = task_of(head.message)
    envelope = from_task_arg(arg)
    now = utc_now_iso()
    reason = why.get("reason", "exhausted")
    dl = DeadLetter(
        record=envelope.record,
        group_id=envelope.group_id,
        dlt_topic=envelope.dlt_topic,
        reason=Reason(reason) if reason in set(Reason) else Reason.EXHAUSTED,
        error=ErrorInfo.from_dict(why["error"]),
        attempts=int(why.get("attempts", 1)),
        task=task,
        task_id=head.task_id,
        first_failure_at=envelope.first_failure_at or now,
        dead_lettered_at=now,
    )
    producer = DeadLetterProducer(settings.kafka, settings.dead_letter)
    try:  # refused for good: parked; not written: raised, the key stays parked
        posted = DeadLetterOffice(producer, DeadLetterStore(client, dl.group_id)).send(dl)
    finally:
        producer.close(timeout_s=settings.kafka.shutdown_timeout_ms / 1000)
    return posted.fate.value
