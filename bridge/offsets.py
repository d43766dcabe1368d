"""Per-partition commit watermarks (pure: no Kafka here).

State of one partition::

    committed ──(accept offset o, o >= committed)──> accepted = o + 1 > committed
    accepted  ──(commit succeeded up to accepted)──> committed = accepted
    any       ──(partition revoked: forget)──────> (no state)

Records are accepted in offset order within a partition, so "accepted" is always the end of a
contiguous prefix: nothing is ever committed past a record that was not accepted.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import NamedTuple


class Partition(NamedTuple):
    """A topic partition (same shape as kafka-python's ``TopicPartition``)."""

    topic: str
    partition: int


class OffsetTracker:
    """What has been accepted (published to Celery) and what has been committed to Kafka."""

    def __init__(self) -> None:
        self._accepted: dict[Partition, int] = {}
        self._committed: dict[Partition, int] = {}
        self._started: dict[Partition, int] = {}  # first offset accepted in this assignment

    def accept(self, tp: Partition, offset: int) -> None:
        """Record ``offset`` of ``tp`` as accepted; its successor becomes committable.

        :raises ValueError: ``offset`` is behind what was already accepted (out of order).
        """
        next_offset = offset + 1
        if next_offset <= self._accepted.get(tp, -1):
            raise ValueError(f"{tp.topic}[{tp.partition}]@{offset} accepted out of order")
        self._accepted[tp] = next_offset
        self._started.setdefault(tp, offset)

    def to_commit(self) -> dict[Partition, int]:
        """Next offsets to commit: each partition whose accepted watermark moved past committed."""
        return {
            tp: accepted
            for tp, accepted in self._accepted.items()
            if accepted > self._committed.get(tp, -1)
        }

    def committed(self, offsets: Mapping[Partition, int]) -> None:
        """Note that ``offsets`` (next offsets, as from :meth:`to_commit`) are now committed."""
        for tp, offset in offsets.items():
            self._committed[tp] = max(offset, self._committed.get(tp, -1))

    def forget(self, partitions: Iterable[tuple[str, int]]) -> None:
        """Drop all state of revoked partitions."""
        for topic, partition in partitions:
            tp = Partition(topic, partition)
            self._accepted.pop(tp, None)
            self._committed.pop(tp, None)
            self._started.pop(tp, None)

    def position(self, tp: Partition) -> int | None:
        """The next offset to accept on ``tp`` after what was accepted, if anything was."""
        return self._accepted.get(tp)

    def last_committed(self, tp: Partition) -> int | None:
        """The next offset committed on ``tp``: by this bridge, or else where its consumption
        started in this assignment (what the group had committed); ``None`` before either."""
        return self._committed.get(tp, self._started.get(tp))
