"""One run of the enqueue script (``lua/enqueue.lua``), built and read back without Redis (pure).

The records' messages (:class:`Message`, :class:`Ordered`) become the script's KEYS and ARGV:
one index per partition (its published watermark and waiting counter), per Celery queue and per
key FIFO, then seven arguments per record. What the script returns about refused records is read
back as :class:`~bridge.hooks.Refusal`\\ s naming the key to watch. The dispatcher
(:mod:`bridge.backends.redis.dispatch`) builds the messages and runs the script.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from bridge import keys
from bridge.hooks import Refusal

_UNVERIFIED = 3  # the script's refusal code of a record below a watermark it cannot verify
_STRADDLES = 4  # a batch whose first records were enqueued already, and not its last ones


@dataclass(frozen=True, slots=True)
class Ordered:
    """Where an ordered record waits: its key's FIFO, and the limits on waiting records;
    ``batch_size`` > 1: the key's head goes with up to that many of its records, in one
    message."""

    fifo: str
    max_per_key: int
    max_per_partition: int
    batch_size: int = 1


class Batched(NamedTuple):
    """What a task message carrying several records (a batch) adds to its :class:`Message`,
    whose ``offset`` is the batch's last one."""

    first: int  # the offset of its first record
    size: int  # how many records it carries
    # The message of the same records from an offset on (of one record: a plain message).
    recut: Callable[[int], Message]


class Message(NamedTuple):
    """One record's task message, ready for its queue (``payload`` is None: advance only).

    For an ordered record, ``payload`` is its key FIFO element (see
    :mod:`bridge.backends.redis.ordering`). A batch's message (``batch``) carries consecutive
    records of its partition, up to ``offset``.
    A named tuple, not a dataclass: one is built per record, and this builds 3x faster.
    """

    topic: str
    partition: int
    offset: int
    queue: str | None
    payload: bytes | None
    ordered: Ordered | None = None
    batch: Batched | None = None

    @property
    def first(self) -> int:
        """The offset of the first record it carries."""
        return self.offset if self.batch is None else self.batch.first

    @property
    def record_count(self) -> int:
        """How many records it carries."""
        return 1 if self.batch is None else self.batch.size


class Straddle(NamedTuple):
    """A batch refused because its partition's watermark falls inside it (after a rewind that
    cut the records into other batches): its records from ``mark`` on are still to enqueue."""

    topic: str
    partition: int
    first: int
    mark: int


class EnqueueBatch:
    """The keys and arguments of one run of the enqueue script.

    :param topic_ids: each topic's id (:mod:`bridge.consumer.incarnations`), which names its
        partitions' watermarks; ``None``: watermarks not tied to topic ids.
    """

    def __init__(self, group_id: str, topic_ids: Mapping[str, str | None] | None) -> None:
        self.group_id = group_id
        self.topic_ids = topic_ids
        self.marks: dict[tuple[str, int], int] = {}
        self.queues: dict[str, int] = {}
        self.fifos: dict[str, int] = {}
        self.argv: list[Any] = []
        self._limits: dict[int, tuple[int, int]] = {}  # partition index: (per key, partition)

    def add(self, m: Message) -> None:
        """Append one record (in offset order within its partition)."""
        w = self.marks.setdefault((m.topic, m.partition), len(self.marks) + 1)
        if m.queue is None or m.payload is None:  # dead-lettered by the bridge
            self.argv += [w, m.offset, 0, 0, 0, 0, b""]
        elif m.batch is not None:
            q = self.queues.setdefault(m.queue, len(self.queues) + 1)
            self.argv += [w, m.offset, 3, q, m.batch.first, m.batch.size, m.payload]
        elif m.ordered is None:
            q = self.queues.setdefault(m.queue, len(self.queues) + 1)
            self.argv += [w, m.offset, 1, q, 0, 0, m.payload]
        else:
            o = m.ordered
            f = self.fifos.setdefault(o.fifo, len(self.fifos) + 1)
            self._limits[w] = (o.max_per_key, o.max_per_partition)
            self.argv += [w, m.offset, 2, f, o.max_per_key, o.max_per_partition, m.payload]

    def keys(self) -> list[str]:
        """The script's KEYS: watermarks, waiting counters, the heads set, queues, FIFOs."""
        marks = [self._watermark(t, p) for t, p in self.marks]
        waiting = [keys.ordered_waiting(self.group_id, t, p) for t, p in self.marks]
        heads = keys.ordered_heads(self.group_id)
        return [*marks, *waiting, heads, *self.queues, *self.fifos]

    def args(self, ttl_s: int, head_deadline_ms: int) -> list[Any]:
        """The script's ARGV.

        :param ttl_s: how long the watermarks live (s).
        :param head_deadline_ms: the stall deadline of a head published by this run.
        """
        counts = [len(self.marks), ttl_s, len(self.queues), head_deadline_ms]
        return [*counts, *self.strict(), *self.argv]

    def strict(self) -> list[int]:
        """Per partition: 1 where a record below the watermark is refused, not skipped."""
        if self.topic_ids is None:
            return [0] * len(self.marks)
        return [int(self.topic_ids.get(t) is None) for t, _ in self.marks]

    def _watermark(self, topic: str, partition: int) -> str:
        topic_id = None if self.topic_ids is None else self.topic_ids.get(topic)
        return keys.published_watermark(self.group_id, topic, partition, topic_id)

    def straddles(self, flat: Sequence[int]) -> list[Straddle]:
        """The batches to cut again, from the script's ``w, offset, code, x`` quadruples."""
        partitions = list(self.marks)
        found = []
        for w, offset, code, mark in zip(*[iter(flat)] * 4, strict=True):
            if code == _STRADDLES:
                topic, partition = partitions[w - 1]
                found.append(Straddle(topic, partition, offset, mark))
        return found

    def refusals(self, flat: Sequence[int]) -> tuple[Refusal, ...]:
        """The refused records, from the script's ``w, offset, code, x`` quadruples (the
        batches to cut again aside: :meth:`straddles`)."""
        partitions = list(self.marks)
        fifos = list(self.fifos)
        found = []
        for w, offset, code, f in zip(*[iter(flat)] * 4, strict=True):
            topic, partition = partitions[w - 1]
            if code == _STRADDLES:
                continue
            if code == _UNVERIFIED:
                watch = self._watermark(topic, partition)
                found.append(Refusal(topic, partition, offset, "watermark", watch, 1))
                continue
            watch = (
                fifos[f - 1] if code == 1 else keys.ordered_waiting(self.group_id, topic, partition)
            )
            full = "key" if code == 1 else "partition"
            found.append(Refusal(topic, partition, offset, full, watch, self._limits[w][code - 1]))
        return tuple(found)


def recut(messages: Sequence[Message], straddles: Sequence[Straddle]) -> tuple[list[Message], int]:
    """What is left to enqueue of ``messages`` (one run of the script's) once it stopped at
    ``straddles``: in each such partition, the straddling batch cut at its watermark and the
    messages after it; and how many records that cut leaves out (enqueued already).
    """
    at = {(s.topic, s.partition): s for s in straddles}
    again: list[Message] = []
    skipped = 0
    for m in messages:
        s = at.get((m.topic, m.partition))
        if s is None or m.offset < s.first:
            continue
        if m.batch is not None and m.batch.first == s.first:
            cut = m.batch.recut(s.mark)
            skipped += m.record_count - cut.record_count
            m = cut
        again.append(m)
    return again, skipped
