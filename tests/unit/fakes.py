"""Fakes of the bridge's Kafka consumer and of its Celery dispatcher, for unit tests of the loop.

The fake consumer keeps each partition's records in memory and a position per partition, runs
rebalances inside ``poll`` as kafka-python does, and refuses anything but kafka-python's
``TopicPartition`` where kafka-python does. The fake dispatcher stands for the enqueue script;
what Redis does with a batch is tested against Redis (tests/integration).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from kafka import TopicPartition
from kafka.consumer.fetcher import ConsumerRecord
from kafka.structs import OffsetAndMetadata

from bridge.backends.redis.dispatch import Dispatcher
from bridge.backends.redis.enqueue import Message, Ordered
from bridge.errors import PublishError
from bridge.hooks import Outcome, Refusal
from bridge.routing import Route
from bridge.settings import BridgeSettings


def _check(tps: Iterable[Any]) -> None:
    if not all(isinstance(tp, TopicPartition) for tp in tps):  # as kafka-python checks
        raise TypeError("partitions must be TopicPartition namedtuples")


class Future:
    """A commit's future (kafka-python's ``Future`` as the bridge reads it)."""

    def __init__(self, done: bool) -> None:
        self.is_done = done


class FakeConsumer:
    """An in-memory ``KafkaConsumer``: records per partition, positions, pauses, commits."""

    def __init__(self, records: Mapping[TopicPartition, int]) -> None:
        self.logs = {tp: [self._record(tp, o) for o in range(n)] for tp, n in records.items()}
        self.position_of: dict[TopicPartition, int] = {}
        self.paused_set: set[TopicPartition] = set()
        self.committed: dict[TopicPartition, int] = {}
        self.commits: list[dict[TopicPartition, OffsetAndMetadata]] = []
        self.listener: Any = None
        self.rebalances: list[tuple[list[TopicPartition], list[TopicPartition]]] = []
        self.errors: list[Exception] = []
        self.answering = True  # False: commits stay in flight
        self._callbacks: list[Callable[[], None]] = []

    @staticmethod
    def _record(tp: TopicPartition, offset: int) -> ConsumerRecord:
        return ConsumerRecord(tp.topic, tp.partition, 0, offset, 1_700_000_000_000, 0, b"k",
                              b'{"n": %d}' % offset, [], None, 1, 8, -1)  # fmt: skip

    def rebalance(self, revoke: list[TopicPartition], assign: list[TopicPartition]) -> None:
        """Revoke and assign during the next poll."""
        self.rebalances.append((revoke, assign))

    def subscribe(self, topics: Sequence[str], listener: Any) -> None:
        self.listener = listener
        self.rebalance([], sorted(self.logs))

    def partitions_for_topic(self, topic: str) -> set[int]:
        return {tp.partition for tp in self.logs if tp.topic == topic}

    def poll(self, timeout_ms: int, max_records: int) -> dict[TopicPartition, list[Any]]:
        for callback in self._callbacks:
            callback()
        self._callbacks.clear()
        if self.errors:
            raise self.errors.pop(0)
        for revoke, assign in self.rebalances:
            self.listener.on_partitions_revoked(revoke)
            for tp in revoke:
                self.position_of.pop(tp)
                self.paused_set.discard(tp)
            for tp in assign:
                self.position_of[tp] = self.committed.get(tp, 0)
            self.listener.on_partitions_assigned(assign)
        self.rebalances.clear()
        batch, room = {}, max_records
        for tp, position in self.position_of.items():
            records = self.logs[tp][position : position + room]
            if records and tp not in self.paused_set:
                batch[tp], room = records, room - len(records)
                self.position_of[tp] = records[-1].offset + 1
        return batch

    def seek(self, tp: TopicPartition, offset: int) -> None:
        _check([tp])
        self.position_of[tp] = offset

    def position(self, tp: TopicPartition) -> int:
        _check([tp])
        return self.position_of[tp]

    def highwater(self, tp: TopicPartition) -> int:
        _check([tp])
        return len(self.logs[tp])

    def pause(self, *tps: TopicPartition) -> None:
        _check(tps)
        self.paused_set.update(tps)

    def resume(self, *tps: TopicPartition) -> None:
        _check(tps)
        self.paused_set.difference_update(tps)

    def paused(self) -> set[TopicPartition]:
        return set(self.paused_set)

    def commit_async(
        self, offsets: dict[TopicPartition, OffsetAndMetadata], callback: Any = None
    ) -> Future:
        self.commit(offsets)
        if callback is not None and self.answering:  # kafka-python runs it in a later poll
            self._callbacks.append(lambda: callback(offsets, None))
        return Future(self.answering)

    def commit(
        self, offsets: dict[TopicPartition, OffsetAndMetadata], timeout_ms: Any = None
    ) -> None:
        _check(offsets)
        self.commits.append(dict(offsets))
        self.committed.update({tp: meta.offset for tp, meta in offsets.items()})

    def close(self, autocommit: bool, timeout_ms: int) -> None:
        pass


class FakeDispatcher(Dispatcher):
    """The Celery side: builds a message per record; ``publish`` keeps what it enqueues (on
    the publisher thread), refuses what ``refuse`` says, fails while ``down``."""

    def __init__(self, settings: BridgeSettings) -> None:
        super().__init__(settings.celery, settings.kafka.group_id)
        self.enqueued: list[tuple[str, int, int]] = []
        self.depths: dict[str, int] = {}
        self.refuse: list[Refusal] = []
        self.down = False
        self._guard = threading.Lock()

    def consumed(self, route: Route, record: Any, ordered: Ordered | None = None) -> Message:
        return Message(record.topic, record.partition, record.offset, route.queue, b"task",
                       ordered)  # fmt: skip

    def publish(
        self,
        messages: Sequence[Message],
        head_deadline_ms: int = 0,
        topic_ids: Mapping[str, str | None] | None = None,
    ) -> Outcome:
        with self._guard:
            if self.down:
                raise PublishError("Celery broker unreachable: ConnectionError()")
            stops = {(r.topic, r.partition): r.offset for r in self.refuse}
            done = [(m.topic, m.partition, m.offset) for m in messages
                    if m.offset < stops.get((m.topic, m.partition), m.offset + 1)]  # fmt: skip
            self.enqueued += done
            return Outcome(enqueued=len(done), skipped=0, refused=tuple(self.refuse))

    def queue_depths(self, queues: Iterable[str]) -> dict[str, int]:
        return {q: self.depths.get(q, 0) for q in queues}
