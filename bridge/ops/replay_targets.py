"""Where replay's chosen dead letters go, batch by batch (Kafka and Redis I/O): a
:class:`Target` takes each :class:`Letter` with its decision and sends the batch on ``flush``.

:class:`SourceTarget` writes them back to their original topics (``--to source``),
:class:`TaskTarget` enqueues them into their routes' tasks (``--to task``) through the
dispatcher's exactly-once script, with the DLT partition's offset as watermark, and
:class:`Listing` only lists them (``--dry-run``). Reading the dead letters and committing is
:mod:`bridge.ops.replay`'s.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Protocol

from kafka import KafkaProducer, TopicPartition

from bridge import keys
from bridge.backends.kafka.auth import security_configs
from bridge.backends.kafka.send import close_producer, sendable
from bridge.backends.redis.dead_letter_store import DeadLetterStore
from bridge.backends.redis.dispatch import Dispatcher
from bridge.backends.redis.enqueue import Message
from bridge.ops.replay_headers import DeadView
from bridge.ops.replay_plan import Decision, Summary, describe, replay_task_id
from bridge.record import Envelope, Record
from bridge.routing import Route
from bridge.settings import BridgeSettings

# The replay command's logger: the lines of a replayed record keep the name they always had.
log = logging.getLogger("bridge.ops.replay")


@dataclass(frozen=True, slots=True)
class Letter:
    """A dead letter to replay: its view, value, and place in its DLT (none: parked)."""

    view: DeadView
    value: bytes | None
    dlt_topic: str = ""
    dlt_partition: int = -1
    dlt_offset: int = -1

    def __str__(self) -> str:
        if not self.dlt_topic:
            return f"parked dead letter {self.view.text('bridge-task-id')}"
        return f"dead letter {self.dlt_topic}[{self.dlt_partition}]@{self.dlt_offset}"


class Target(Protocol):
    """Where chosen dead letters go, batch by batch."""

    def add(self, letter: Letter, decision: Decision, route: Route | None) -> None:
        """Take one dead letter to replay (sent by :meth:`flush` at the latest)."""

    def flush(self) -> tuple[int, int]:
        """Finish the batch: ``(replayed, already replayed before)``."""

    def unpark(self, store: DeadLetterStore, task_id: str) -> bool:
        """Finish the one parked dead letter added, and forget it; False if it was gone."""

    def forget(self, tps: list[TopicPartition]) -> None:
        """``--from-beginning``: forget what was enqueued from these DLT partitions."""

    def close(self) -> None:
        """Release connections."""


class Listing:
    """``--dry-run``: lists what would be replayed, changes nothing."""

    def __init__(self, summary: Summary) -> None:
        self._summary = summary
        self._added = 0

    def add(self, letter: Letter, decision: Decision, route: Route | None) -> None:
        self._summary.listed.append(describe(letter.view, decision))
        self._added += 1

    def flush(self) -> tuple[int, int]:
        added, self._added = self._added, 0
        return added, 0

    def unpark(self, store: DeadLetterStore, task_id: str) -> bool:
        self._added = 0
        return True

    def forget(self, tps: list[TopicPartition]) -> None:
        pass

    def close(self) -> None:
        pass


class SourceTarget:
    """``--to source``: write each record back to its original topic (and partition, if it
    still exists), with an idempotent ``acks=all`` producer."""

    def __init__(self, settings: BridgeSettings) -> None:
        timeout_ms = settings.dead_letter.delivery_timeout_ms
        self._timeout_s = timeout_ms / 1000 + 5
        self._producer = KafkaProducer(
            bootstrap_servers=settings.kafka.bootstrap_servers.split(","),
            client_id=f"{settings.kafka.client_id}-replay",
            acks="all",
            enable_idempotence=True,
            delivery_timeout_ms=timeout_ms,
            max_block_ms=timeout_ms,
            request_timeout_ms=min(settings.kafka.request_timeout_ms, timeout_ms),
            **security_configs(settings.kafka),
        )
        self._futures: list[Any] = []

    def add(self, letter: Letter, decision: Decision, route: Route | None) -> None:
        origin = decision.origin
        assert origin is not None
        known = self._producer.partitions_for(origin.topic) or set()
        self._futures.append(
            self._producer.send(
                origin.topic,
                key=letter.view.key,
                value=letter.value,
                headers=sendable(decision.headers),
                partition=origin.partition if origin.partition in known else None,
            )
        )
        log.debug("replaying %s (%s[%d]@%d) to %s, replay %d", letter, origin.topic,
                  origin.partition, origin.offset, origin.topic, decision.replays)  # fmt: skip

    def flush(self) -> tuple[int, int]:
        futures, self._futures = self._futures, []
        for future in futures:
            future.get(timeout=self._timeout_s)
        return len(futures), 0

    def unpark(self, store: DeadLetterStore, task_id: str) -> bool:
        self.flush()
        return store.unpark(task_id)

    def forget(self, tps: list[TopicPartition]) -> None:
        pass

    def close(self) -> None:
        close_producer(self._producer, timeout_s=5)


class TaskTarget:
    """``--to task``: enqueue each record into its route's Celery task, with a fresh retry
    budget and the task id ``{original task id}:replay:{n}``."""

    def __init__(self, settings: BridgeSettings, replay_group: str) -> None:
        self._group_id = settings.kafka.group_id
        # Its watermarks are the replay group's, per DLT partition (never a source topic's).
        self._namespace = keys.replay_namespace(self._group_id, replay_group)
        self._dispatcher = Dispatcher(settings.celery, self._namespace)
        self._messages: list[Message] = []

    def add(self, letter: Letter, decision: Decision, route: Route | None) -> None:
        origin = decision.origin
        assert origin is not None
        assert route is not None
        record = Record(
            topic=origin.topic, partition=origin.partition, offset=origin.offset,
            timestamp_ms=origin.timestamp_ms, key=letter.view.key, raw_value=letter.value,
            headers=decision.headers, value_format=route.value_format,
            timestamp_type=origin.timestamp_type,
        )  # fmt: skip
        envelope = Envelope(
            record,
            self._group_id,
            route.dlt_topic,
            retry_policy=route.retry_policy,
            breaker_window_s=route.breaker_window_s,
        )
        task_id = replay_task_id(self._group_id, origin, decision.replays)
        message = self._dispatcher.message(route.task, route.queue, envelope, task_id=task_id)
        dlt, partition, offset = letter.dlt_topic, letter.dlt_partition, letter.dlt_offset
        self._messages.append(message._replace(topic=dlt, partition=partition, offset=offset))
        log.debug("replaying %s (%r) into %s as task %s", letter, record, route.task, task_id)

    def flush(self) -> tuple[int, int]:
        messages, self._messages = self._messages, []
        outcome = self._dispatcher.publish(messages)
        return outcome.enqueued, outcome.skipped

    def unpark(self, store: DeadLetterStore, task_id: str) -> bool:
        [message], self._messages = self._messages, []
        assert message.queue is not None
        assert message.payload is not None
        return store.unpark(task_id, (message.queue, message.payload))

    def forget(self, tps: list[TopicPartition]) -> None:
        names = [keys.published_watermark(self._namespace, tp.topic, tp.partition) for tp in tps]
        if names:
            self._dispatcher.client.delete(*names)

    def close(self) -> None:
        self._dispatcher.close()
