"""One enqueue in flight while the loop polls and builds the next batch.

The enqueue script of a poll batch spends most of its time in Redis (on another core) and on
the socket, with the GIL released; so the loop hands it to one publisher thread, polls and
builds the next batch meanwhile, and only then waits for it. At most one batch is in flight,
and batches are enqueued in poll order, so each partition's records still reach Redis in
offset order. A batch is accepted (its offsets may be committed) only once its enqueue has
returned: nothing is committed earlier than before.

:class:`Batch` is pure: the records one poll returned, their messages, and which partitions
to drop when an earlier batch's outcome says so. :class:`Publisher` is the thread.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from bridge.backends.redis.enqueue import Message
from bridge.errors import PublishError
from bridge.hooks import Outcome

Tp = tuple[str, int]


@dataclass(slots=True)
class Undecodable:
    """A record its route cannot decode: dead-lettered just before its batch is enqueued."""

    tp: Any
    record: Any
    error: Exception


@dataclass(slots=True)
class Batch:
    """What one poll returned, by partition (:class:`~bridge.offsets.Partition` keys), and the
    task messages built for it, in the same order; ``assignment`` counts the assignments the
    bridge had been given when it was polled; ``topic_ids`` its topics' ids then
    (:mod:`bridge.consumer.incarnations`)."""

    records: dict[Any, Sequence[Any]]
    messages: list[Message] = field(default_factory=list)
    assignment: int = 0
    undecodable: list[Undecodable] = field(default_factory=list)
    topic_ids: dict[str, str | None] | None = None

    def first_offsets(self) -> dict[Any, int]:
        """The first offset of each partition's records: where a rewind goes."""
        return {tp: records[0].offset for tp, records in self.records.items() if records}

    def drop(self, partitions: Iterable[Tp]) -> None:
        """Forget the records of ``partitions`` (``(topic, partition)`` pairs): an earlier
        batch stopped them, and the consumer was sent back to where they start again."""
        gone = set(partitions)
        if not gone:
            return
        self.records = {
            tp: r for tp, r in self.records.items() if (tp.topic, tp.partition) not in gone
        }
        self.messages = [m for m in self.messages if (m.topic, m.partition) not in gone]
        self.undecodable = [u for u in self.undecodable if (u.tp.topic, u.tp.partition) not in gone]

    def queued(self) -> dict[str, int]:
        """How many of its messages go straight to each Celery queue (unordered routes)."""
        counts: dict[str, int] = {}
        for m in self.messages:
            if m.queue is not None and m.payload is not None and m.ordered is None:
                counts[m.queue] = counts.get(m.queue, 0) + 1
        return counts

    def clear(self) -> None:
        """Forget every record: an earlier batch failed and the consumer was rewound."""
        self.records, self.messages, self.undecodable = {}, [], []

    @property
    def size(self) -> int:
        """How many records the batch holds."""
        return sum(len(r) for r in self.records.values())


def rewind_points(failed: Batch, following: Batch | None) -> dict[Any, int]:
    """Where each partition must be consumed from again when ``failed`` was not enqueued and
    ``following`` (polled after it) is dropped: the first offset of each partition, the failed
    batch's where it has one."""
    points = following.first_offsets() if following is not None else {}
    return {**points, **failed.first_offsets()}


Publish = Callable[[Sequence[Message], int, Mapping[str, str | None] | None], Outcome]


@dataclass(frozen=True, slots=True)
class Published:
    """How an enqueue ended: its outcome, or the error that stopped it, and its seconds."""

    outcome: Outcome | None
    error: PublishError | None
    seconds: float


@dataclass(slots=True)
class InFlight:
    """A batch handed to the publisher thread, and the future of how its enqueue ended."""

    batch: Batch
    future: Future[Published]

    def result(self) -> Published:
        """How the enqueue ended, once it has (waits for it)."""
        return self.future.result()

    def queued(self) -> dict[str, int]:
        """The batch's messages per Celery queue while its enqueue runs; none once it has
        ended: they are in the queues' lengths then (or were not enqueued at all)."""
        return {} if self.future.done() else self.batch.queued()


class Publisher:
    """The one thread that runs the enqueue scripts, one batch at a time, in order."""

    def __init__(self, publish: Publish) -> None:
        self._publish = publish
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bridge-publish")

    def submit(self, batch: Batch, head_deadline_ms: int) -> InFlight:
        """Start enqueueing ``batch``'s messages."""
        future = self._executor.submit(
            self._timed, batch.messages, head_deadline_ms, batch.topic_ids
        )
        return InFlight(batch, future)

    def _timed(
        self,
        messages: Sequence[Message],
        head_deadline_ms: int,
        topic_ids: Mapping[str, str | None] | None,
    ) -> Published:
        started = time.perf_counter()
        try:
            outcome = self._publish(messages, head_deadline_ms, topic_ids)
        except PublishError as exc:
            return Published(None, exc, time.perf_counter() - started)
        return Published(outcome, None, time.perf_counter() - started)

    def close(self) -> None:
        """Finish the batch in flight, if any, and stop the thread."""
        self._executor.shutdown(wait=True)


def partitions_of(refused: Iterable[Any]) -> set[Tp]:
    """The ``(topic, partition)`` pairs of refusals (or anything with those attributes)."""
    return {(r.topic, r.partition) for r in refused}
