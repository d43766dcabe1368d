"""What the hooks see of the bridge loop: each poll's records, and a snapshot of the bridge
(:class:`~bridge.hooks.LoopState`: its partitions, their offsets, lag and pauses) every second,
which the metrics and ``status`` read."""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

from kafka import KafkaConsumer, TopicPartition

from bridge.consumer.assignment import Assignment
from bridge.consumer.flood import Breakers
from bridge.consumer.pauses import Pauses
from bridge.hooks import BridgeHooks, LoopState, PartitionState
from bridge.offsets import Partition

STATE_INTERVAL_S = 1.0


class Reporter:
    """Tells the hooks of one bridge what its loop does.

    :param hooks: the bridge's hooks.
    :param member: this bridge's name in ``status`` (client id, host, pid).
    :param group_id: its consumer group.
    :param assignment: its partitions and offsets, guarded by ``lock``.
    :param lock: the lock the bridge's loop shares with its rebalance listener.
    :param pauses: why its partitions are paused.
    :param breakers: its routes' flood breakers.
    """

    def __init__(self, hooks: BridgeHooks, member: str, group_id: str, assignment: Assignment,
                 lock: threading.Lock, pauses: Pauses, breakers: Breakers) -> None:  # fmt: skip
        self._hooks, self._member, self._group_id = hooks, member, group_id
        self._assignment, self._lock = assignment, lock
        self._pauses, self._breakers = pauses, breakers
        self._due = 0.0  # monotonic seconds

    def polled(self, batch: Mapping[Partition, Sequence[Any]]) -> None:
        """Count a poll's records by partition (nothing for an empty poll)."""
        if batch:
            self._hooks.after_poll({tp: len(records) for tp, records in batch.items()})

    def report(self, consumer: KafkaConsumer) -> None:
        """Hand the hooks a snapshot, at most every second."""
        now = time.monotonic()
        if now < self._due:
            return
        self._due = now + STATE_INTERVAL_S
        self._hooks.after_state(self.state(consumer))

    def state(self, consumer: KafkaConsumer) -> LoopState:
        """A snapshot of the bridge (loop thread only: it asks ``consumer`` for each
        partition's end offset)."""
        with self._lock:
            assigned = self._assignment.partitions
            offsets = {tp: self._assignment.offsets_of(tp) for tp in assigned}
        highwater, paused = consumer.highwater, self._pauses.paused
        partitions = tuple(
            PartitionState(*tp, *offsets[tp], highwater(TopicPartition(*tp)), paused.get(tp))
            for tp in assigned
        )
        return LoopState(
            member=self._member,
            group_id=self._group_id,
            at_ms=int(time.time() * 1000),
            broker_down=self._pauses.outage.down,
            partitions=partitions,
            breakers=self._breakers.reports(),
        )
