"""The partitions this bridge is assigned, and what it accepted on them (pure: no Kafka, no
Redis, no lock: the loop and the rebalance listener share one under which they call it).

Each rebalance that gives partitions opens a new *generation*; a partition remembers the
generation that gave it, and a batch the generation it was polled in. State of one partition::

    unassigned ──assign (generation g)──────────────────> assigned since g
    assigned ──accept a batch polled at generation >= g──> accepted up to the first refusal
    assigned ──a refusal (ordered key or partition full,
               watermark unverified)─────────────────────> held (rewound to the refused record)
    held ──what it watches drained (release)─────────────> assigned
    accepted ──commit succeeded─────────────────────────> committed
    any ──revoke────> unassigned: its pending commit handed back, its offsets and hold forgotten

A batch polled before its partition was revoked and assigned again is not accepted there: the
new assignment starts over from the committed offset (the batch's records were enqueued; when
they come again they are skipped), and accepting them would go backwards.

Every partition is a :class:`~bridge.offsets.Partition`; kafka-python's ``TopicPartition``
(the same fields) is made at the Kafka edge only.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from bridge.consumer.backpressure import Full, PartitionHolds
from bridge.hooks import Refusal
from bridge.logs import Located
from bridge.offsets import OffsetTracker, Partition

Spans = dict[Partition, tuple[int, int]]  # partition -> [first, next) offsets accepted


class Assignment:
    """Assigned partitions by generation, their accepted and committed offsets, their holds."""

    def __init__(self) -> None:
        self._since: dict[Partition, int] = {}  # assigned partition -> generation that gave it
        self._generation = 0
        self._offsets = OffsetTracker()
        self._holds = PartitionHolds()

    @property
    def generation(self) -> int:
        """How many assignments this bridge has been given (a batch is polled in one)."""
        return self._generation

    @property
    def partitions(self) -> list[Partition]:
        """The assigned partitions, sorted."""
        return sorted(self._since)

    @property
    def topics(self) -> set[str]:
        """The topics of the assigned partitions."""
        return {tp.topic for tp in self._since}

    def __contains__(self, tp: object) -> bool:
        """Whether ``tp`` (a ``(topic, partition)`` pair) is assigned."""
        return tp in self._since

    def assign(self, partitions: Iterable[tuple[str, int]]) -> None:
        """Open a generation and give it ``partitions`` (consumed from their committed offsets)."""
        self._generation += 1
        self._since.update(dict.fromkeys(_partitions(partitions), self._generation))

    def revoke(self, partitions: Iterable[tuple[str, int]]) -> dict[Partition, int]:
        """Take ``partitions`` away and forget them.

        :returns: what they had accepted and not committed (next offsets), to commit now.
        """
        gone = _partitions(partitions)
        for tp in gone:
            self._since.pop(tp, None)
        pending = {tp: o for tp, o in self._offsets.to_commit().items() if tp in gone}
        self._offsets.forget(gone)
        self._holds.forget(gone)
        return pending

    def accept(self, tp: tuple[str, int], offset: int) -> None:
        """Accept one record (its partition's records are accepted in offset order).

        :raises ValueError: ``offset`` is behind what was already accepted on ``tp``.
        """
        self._offsets.accept(Partition(*tp), offset)

    def accept_batch(
        self, records: Iterable[Located], refused: Sequence[Refusal], generation: int
    ) -> tuple[Spans, list[Refusal]]:
        """Accept a batch's records (in offset order) up to what was refused, on partitions
        assigned since ``generation`` (when the batch was polled) or earlier; hold the
        partitions of those refusals.

        :returns: the offsets accepted, and the refusals that hold their partition (to be
            rewound to the refused record).
        """
        current = {tp for tp, since in self._since.items() if since <= generation}
        stop = {Partition(r.topic, r.partition): r.offset for r in refused}
        spans: Spans = {}
        for m in records:
            tp = Partition(m.topic, m.partition)
            if tp in current and (tp not in stop or m.offset < stop[tp]):
                self._offsets.accept(tp, m.offset)
                first = getattr(m, "first", m.offset)  # a batch's message: its first record
                spans[tp] = (spans[tp][0] if tp in spans else first, m.offset + 1)
        held = [r for r in refused if (r.topic, r.partition) in current]
        for r in held:
            self._holds.hold(Partition(r.topic, r.partition), watch=r.watch, kind=r.full,
                             limit=r.limit)  # fmt: skip
        return spans, held

    def rewind(self, points: Mapping[Partition, int]) -> dict[Partition, int]:
        """Where to consume again from ``points``: on the partitions still assigned (a revoked
        partition's new owner starts from its commit)."""
        return {tp: offset for tp, offset in points.items() if tp in self._since}

    def to_commit(self) -> dict[Partition, int]:
        """Next offsets to commit: what the assigned partitions accepted past their commit."""
        return {tp: o for tp, o in self._offsets.to_commit().items() if tp in self._since}

    def committed(self, offsets: Mapping[Partition, int]) -> None:
        """Note that ``offsets`` (next offsets, as from :meth:`to_commit`) are committed."""
        self._offsets.committed(offsets)

    def offsets_of(self, tp: tuple[str, int]) -> tuple[int | None, int | None]:
        """``tp``'s next offset to accept and last committed (``None`` before any)."""
        partition = Partition(*tp)
        return self._offsets.position(partition), self._offsets.last_committed(partition)

    @property
    def held(self) -> dict[Partition, Full]:
        """Held partitions and what each waits for."""
        return self._holds.held

    def release(self, counts: Mapping[str, int]) -> set[Partition]:
        """Take the current counts of what holds watch.

        :returns: the partitions released (what they watch drained far enough).
        """
        return self._holds.update(counts)


def _partitions(partitions: Iterable[tuple[str, int]]) -> set[Partition]:
    return {Partition(*tp) for tp in partitions}
