"""Commits to Kafka of what the bridge accepted (the consumer's only offsets: no auto-commit).

While the loop runs, one ``commit_async`` at a time after each poll (the next takes whatever was
accepted meanwhile; its callback runs on the loop thread, in a later poll); on stopping, one
``commit`` that waits for Kafka. A failed commit is retried after the next poll: the offsets it
carried are still pending, and a failure is logged once until commits succeed again.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Mapping
from typing import Any

from kafka import KafkaConsumer, TopicPartition
from kafka.errors import KafkaError
from kafka.structs import OffsetAndMetadata

from bridge.consumer.assignment import Assignment
from bridge.hooks import BridgeHooks
from bridge.offsets import Partition

log = logging.getLogger(__name__)


class Commits:
    """The commits of one bridge.

    :param assignment: what was accepted, guarded by ``lock``.
    :param lock: the lock the bridge's loop shares with its rebalance listener.
    :param hooks: told of every commit and every failed one.
    """

    def __init__(self, assignment: Assignment, lock: threading.Lock, hooks: BridgeHooks) -> None:
        self._assignment, self._lock, self._hooks = assignment, lock, hooks
        self._future: Any = None  # kafka-python's future of the commit in flight
        self._failing = False

    def commit_async(self, consumer: KafkaConsumer) -> None:
        """Commit what was accepted without waiting for Kafka, unless a commit is in flight."""
        if self._future is not None and not self._future.is_done:
            return
        pending = self._pending()
        if pending:
            done = functools.partial(self._answered, pending, time.perf_counter())
            self._future = consumer.commit_async(request(pending), callback=done)

    def commit(self, consumer: KafkaConsumer, timeout_ms: int | None = None) -> None:
        """Commit what was accepted and wait for Kafka's answer (on stopping).

        :param timeout_ms: how long to wait at most (``None``: kafka-python's default).
        """
        pending = self._pending()
        if not pending:
            return
        started = time.perf_counter()
        try:
            consumer.commit(request(pending), timeout_ms=timeout_ms)
        except KafkaError as exc:
            self._failed(exc)
            return
        self._succeeded(pending, time.perf_counter() - started)

    def _pending(self) -> dict[Partition, int]:
        with self._lock:
            return self._assignment.to_commit()

    def _answered(
        self, pending: Mapping[Partition, int], started: float, _offsets: Any, response: Any
    ) -> None:
        if isinstance(response, Exception):
            self._failed(response)
        else:
            self._succeeded(pending, time.perf_counter() - started)

    def _failed(self, exc: Exception) -> None:
        if not self._failing:
            log.error("commit to Kafka failed, retrying after each poll: %r", exc)
        self._failing = True
        self._hooks.after_commit_failed(exc)

    def _succeeded(self, pending: Mapping[Partition, int], seconds: float) -> None:
        self._hooks.after_commit(pending, seconds)
        if self._failing:
            log.warning("commits to Kafka succeed again")
        self._failing = False
        with self._lock:
            self._assignment.committed(pending)


def request(offsets: Mapping[Partition, int]) -> dict[TopicPartition, OffsetAndMetadata]:
    """Kafka's commit request of ``offsets`` (next offsets by partition)."""
    return {
        TopicPartition(tp.topic, tp.partition): OffsetAndMetadata(offset, "", -1)
        for tp, offset in offsets.items()
    }
