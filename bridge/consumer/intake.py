"""What one poll becomes: a :class:`~bridge.consumer.pipeline.Batch` of task messages.

Of the records polled on assigned partitions, a route's flood breaker lets through only so
many while it probes (the partition is rewound to the first record it did not take). Each record
gets its task message from the dispatcher (on an ordered route, with its key's FIFO and limits;
on a batched route, consecutive records share one, up to ``batch_size``); a record its route
cannot decode gets none and is set aside, to be dead-lettered just before its batch is
enqueued.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from bridge.backends.redis.dispatch import Dispatcher
from bridge.backends.redis.enqueue import Message, Ordered
from bridge.backends.redis.ordering import KeyQueues
from bridge.consumer.flood import Breakers
from bridge.consumer.gathering import cuts
from bridge.consumer.pipeline import Batch, Undecodable
from bridge.errors import UndecodableRecordError
from bridge.offsets import Partition
from bridge.record import Record, TimestampType, check_value
from bridge.routing import Route, Router

Seek = Callable[[Partition, int], None]


class Intake:
    """Builds the batches of one bridge.

    :param router: the routes, by topic.
    :param dispatcher: builds task messages.
    :param key_queues: names the key FIFOs of ordered routes.
    :param breakers: the routes' flood breakers.
    :param seek: sends a partition back to an offset (the Kafka consumer's ``seek``).
    """

    def __init__(self, router: Router, dispatcher: Dispatcher, key_queues: KeyQueues,
                 breakers: Breakers, seek: Seek) -> None:  # fmt: skip
        self._router, self._dispatcher, self._key_queues = router, dispatcher, key_queues
        self._breakers, self._seek = breakers, seek

    def batch(
        self,
        polled: Mapping[Partition, Sequence[Any]],
        generation: int,
        topic_ids: dict[str, str | None] | None,
    ) -> Batch:
        """The batch of ``polled`` (records of assigned partitions), its messages not built."""
        return Batch(self._admit(polled), assignment=generation, topic_ids=topic_ids)

    def build(self, batch: Batch) -> None:
        """Build the task message of every record of ``batch``.

        :raises PublishError: no message template (Redis is down).
        """
        for tp, records in batch.records.items():
            route = self._router.route_for(tp.topic)
            if route.batch_size > 1 and not route.ordered:  # ordered: batched in Redis
                batch.messages += self._batches(tp, records, route, batch)
            else:
                batch.messages += [self._message(tp, msg, batch) for msg in records]

    def _batches(
        self, tp: Partition, records: Sequence[Any], route: Route, batch: Batch
    ) -> list[Message]:
        """The messages of a batched route's records: up to ``batch_size`` consecutive
        decodable records each; an undecodable one is set aside, alone."""
        decodable = [self._decodable(tp, msg, route, batch) for msg in records]
        return [
            self._dispatcher.batched(route, run) if ok else _advance_only(run[0])
            for ok, run in cuts(records, route.batch_size, decodable)
        ]

    def _decodable(self, tp: Partition, msg: Any, route: Route, batch: Batch) -> bool:
        try:
            check_value(msg.value, route.value_format)
        except UndecodableRecordError as exc:  # dead-lettered when its batch is enqueued
            batch.undecodable.append(Undecodable(tp, to_record(msg, route), exc))
            return False
        return True

    def _admit(self, polled: Mapping[Partition, Sequence[Any]]) -> dict[Partition, Any]:
        admitted: dict[Partition, Any] = {}
        for tp, records in polled.items():
            room = self._breakers.room(tp.topic)
            if room is not None and room < len(records):
                self._seek(tp, records[room].offset)
                records = records[:room]
            if records:
                self._breakers.admitted(tp.topic, len(records))
                admitted[tp] = records
        return admitted

    def _message(self, tp: Partition, msg: Any, batch: Batch) -> Message:
        route = self._router.route_for(tp.topic)
        if not self._decodable(tp, msg, route, batch):
            return _advance_only(msg)
        if not route.ordered:
            return self._dispatcher.consumed(route, msg)
        ordered = Ordered(
            self._key_queues.fifo(msg.topic, msg.key, msg.partition),
            route.max_waiting_per_key,
            route.max_waiting_per_partition,
            route.batch_size,
        )
        return self._dispatcher.consumed(route, msg, ordered)


def _advance_only(msg: Any) -> Message:
    """The message of a record the bridge dead-letters: it only moves the watermark."""
    return Message(msg.topic, msg.partition, msg.offset, None, None)


def to_record(msg: Any, route: Route) -> Record:
    """The :class:`~bridge.record.Record` of a record as kafka-python consumed it."""
    return Record(
        topic=msg.topic,
        partition=msg.partition,
        offset=msg.offset,
        timestamp_ms=msg.timestamp,
        key=msg.key,
        raw_value=msg.value,
        headers=tuple(msg.headers or ()),
        value_format=route.value_format,
        timestamp_type=TimestampType.of(msg.timestamp_type),
    )
