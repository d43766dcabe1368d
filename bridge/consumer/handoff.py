"""From a poll to accepted offsets: each poll's batch handed to Celery, one in flight at a time.

For each poll::

    take what is due of the records held for batched routes (Gathering) ->
    build its task messages (Intake) -> settle the batch in flight: wait for its enqueue and
    accept its offsets up to what was refused -> dead-letter this batch's undecodable records
    -> hand it to the publisher thread (Publisher) while the loop polls again

A refused record holds its partition: the partition is sent back to it (and dropped from the
batch polled after it). A failed enqueue, or a dead letter not written, rewinds every partition
of the batch (and of the one polled after it) to its first record and tells the broker's outage
backoff, which pauses every partition for a while: nothing is accepted, nothing lost.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from kafka import KafkaConsumer

from bridge.consumer import incarnations
from bridge.consumer.assignment import Assignment
from bridge.consumer.gathering import Gathering
from bridge.consumer.intake import Intake, Seek
from bridge.consumer.pauses import Outage, announce_hold
from bridge.consumer.pipeline import (
    Batch,
    InFlight,
    Publish,
    Publisher,
    partitions_of,
    rewind_points,
)
from bridge.consumer.undecodable import UndecodableLetters
from bridge.errors import PublishError
from bridge.hooks import BridgeHooks, Outcome, Refusal
from bridge.offsets import Partition

log = logging.getLogger(__name__)


class Handoff:
    """Hands the batches of one bridge to Celery (loop thread only; the enqueue itself runs on
    the publisher thread).

    :param assignment: the bridge's partitions and accepted offsets, guarded by ``lock``.
    :param lock: the lock the bridge's loop shares with its rebalance listener.
    :param intake: makes each poll's batch and its task messages.
    :param publish: enqueues a batch's messages (the dispatcher's, on the publisher thread).
    :param letters: dead-letters a batch's undecodable records before it is enqueued.
    :param outage: the Celery broker's outage backoff: told of each failure and recovery.
    :param hooks: told of each enqueue, failed enqueue and acceptance.
    :param seek: sends a partition back to an offset (the Kafka consumer's ``seek``).
    :param stall_timeout_ms: how long an ordered key's head may run before it is deemed
        stalled (``stall_timeout_ms``).
    :param gathering: holds the records of batched routes until their batch is due (guarded
        by ``lock``); default: no batched route.
    """

    def __init__(self, assignment: Assignment, lock: threading.Lock, intake: Intake,
                 publish: Publish, letters: UndecodableLetters, outage: Outage,
                 hooks: BridgeHooks, seek: Seek, *, stall_timeout_ms: int,
                 gathering: Gathering | None = None) -> None:  # fmt: skip
        self._assignment, self._lock, self._intake = assignment, lock, intake
        self._gathering = gathering or Gathering({})
        self._publisher = Publisher(publish)
        self._letters, self._outage, self._hooks = letters, outage, hooks
        self._seek, self._stall_timeout_ms = seek, stall_timeout_ms
        self._in_flight: InFlight | None = None

    def take(
        self,
        polled: Mapping[Partition, Sequence[Any]],
        consumer: KafkaConsumer,
        *,
        flush: bool = False,
    ) -> None:
        """Build this poll's messages, settle the batch in flight, then enqueue this one.

        :param polled: what the poll returned, by partition.
        :param consumer: the Kafka consumer (asked for the topics' ids).
        :param flush: take every record held for a batched route, however few.
        """
        with self._lock:
            mine = {tp: r for tp, r in polled.items() if r and tp in self._assignment}
            mine = self._gathering.take(mine, time.monotonic(), flush=flush)
            assignment = self._assignment.generation
        topic_ids = incarnations.topic_ids(consumer, {tp.topic for tp in mine})
        batch = self._intake.batch(mine, assignment, topic_ids)
        try:
            self._intake.build(batch)
        except PublishError as exc:  # no message template: Redis is down
            self.settle(batch)
            if batch.records:
                self._publish_failed(batch, None, exc, 0.0)
            return
        self.settle(batch)
        if batch.records:
            self._submit(batch)

    def settle(self, following: Batch | None = None) -> None:
        """Wait for the batch in flight and accept it; if it failed, rewind both it and
        ``following`` (polled after it), and drop ``following``."""
        flight, self._in_flight = self._in_flight, None
        if flight is None:
            return
        done = flight.result()
        if done.error is not None:
            self._publish_failed(flight.batch, following, done.error, done.seconds)
            return
        outcome = done.outcome
        assert outcome is not None
        self._hooks.after_publish(outcome, done.seconds)
        self._outage.recovered()
        if outcome.skipped:
            log.info("%d re-consumed records were already enqueued: skipped", outcome.skipped)
        held = self._accept(flight.batch, outcome)
        if following is not None:
            following.drop(partitions_of(held))

    def flush(self, consumer: KafkaConsumer) -> None:
        """Enqueue every record held for a batched route and settle it, before the consumer
        moves past them (a batch kafka-python cannot decode is skipped after them)."""
        self.take({}, consumer, flush=True)
        self.settle()

    def due_in_s(self) -> float | None:
        """How long until a held batch is due (``None``: nothing is held)."""
        with self._lock:
            return self._gathering.due_in_s(time.monotonic())

    def trim(self, tp: Partition, offset: int) -> None:
        """The consumer is sent to ``offset`` of ``tp``: forget what it will fetch again."""
        with self._lock:
            self._gathering.trim(tp, offset)

    def forget(self, partitions: Iterable[Partition]) -> None:
        """``partitions`` were revoked: drop what they held (call it under the lock)."""
        self._gathering.forget(partitions)

    def queued(self) -> dict[str, int]:
        """How many messages of the batch in flight go straight to each Celery queue and are
        not there yet (see :meth:`InFlight.queued`)."""
        return self._in_flight.queued() if self._in_flight is not None else {}

    def close(self) -> None:
        """Finish the enqueue in flight and stop the publisher thread (:meth:`settle` first to
        accept that batch: else it is not committed, and is skipped when consumed again)."""
        self._publisher.close()

    def _submit(self, batch: Batch) -> None:
        try:
            self._letters.send_all(batch.undecodable)
        except PublishError as exc:
            self._publish_failed(batch, None, exc, 0.0)
            return
        head_deadline_ms = int(time.time() * 1000) + self._stall_timeout_ms
        self._in_flight = self._publisher.submit(batch, head_deadline_ms)

    def _publish_failed(
        self, failed: Batch, following: Batch | None, exc: PublishError, seconds: float
    ) -> None:
        self._rewind(rewind_points(failed, following))
        if following is not None:
            following.clear()
        self._outage.failed(exc)
        self._hooks.after_publish_failed(failed.size, exc, seconds)

    def _accept(self, batch: Batch, outcome: Outcome) -> list[Refusal]:
        """Accept the batch's records up to what was refused (see :class:`Assignment`).

        :returns: the refusals that hold their partition (sent back to the refused record).
        """
        with self._lock:
            spans, held = self._assignment.accept_batch(
                batch.messages, outcome.refused, batch.assignment
            )
        self._hooks.after_accept(spans)
        for r in held:
            self._seek(Partition(r.topic, r.partition), r.offset)
            announce_hold(r)
        return held

    def _rewind(self, points: Mapping[Partition, int]) -> None:
        with self._lock:
            points = self._assignment.rewind(points)
        for tp, offset in points.items():
            self._seek(tp, offset)
