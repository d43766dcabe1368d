"""Records held back for batched routes until their batch is full or waited long enough (pure).

A batched route (``batch_size`` > 1) carries up to ``batch_size`` consecutive records of one
partition in one task message. Its polled records wait here, per partition and in offset
order, so that a poll that ends mid-batch does not cut a small batch; a route with
``batch_size = 1`` never waits. State of one partition of a batched route::

    empty ──records polled──> holding (the oldest polled at t)
    holding ──full batches (multiples of batch_size)──> released to the poll's batch
    holding ──t + batch_max_wait_ms passed, or flush──> everything released
    holding ──seek to offset o──> records at o or later forgotten (they are fetched again)
    holding ──partition revoked──> empty (the next owner consumes them from the commit)

Held records are not accepted: nothing is committed past them, so a bridge that stops or dies
while it holds records loses none of them. Times are the bridge's monotonic clock (s).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class BatchShape:
    """A batched route's ``batch_size`` and ``batch_max_wait_ms`` (in seconds)."""

    size: int
    max_wait_s: float


@dataclass(slots=True)
class _Held:
    records: list[Any] = field(default_factory=list)
    polled_s: list[float] = field(default_factory=list)  # when each record was polled


class Gathering:
    """The records held back on the partitions of batched routes.

    :param shapes: the batched routes' shapes, by topic; other topics are never held.
    """

    def __init__(self, shapes: Mapping[str, BatchShape]) -> None:
        self._shapes = dict(shapes)
        self._held: dict[Any, _Held] = {}

    def take(
        self, polled: Mapping[Any, Sequence[Any]], now_s: float, *, flush: bool = False
    ) -> dict[Any, Sequence[Any]]:
        """What a poll's batch carries: the records of other routes as polled; of batched
        routes, what was held and ``polled`` (records with an ``offset``, in offset order),
        cut at the last full batch, or whole once the oldest waited its route's
        ``batch_max_wait_ms`` (or when ``flush``); the rest is held.

        :param polled: records by partition (``(topic, partition)`` pairs).
        :param now_s: the time of the poll.
        """
        ready: dict[Any, Sequence[Any]] = {}
        for tp, records in polled.items():
            if tp[0] in self._shapes:
                held = self._held.setdefault(tp, _Held())
                held.records.extend(records)
                held.polled_s.extend([now_s] * len(records))
            elif records:
                ready[tp] = records
        for tp, held in list(self._held.items()):
            count = self._ready_count(tp, held, now_s, flush)
            if count:
                ready[tp] = held.records[:count]
                del held.records[:count], held.polled_s[:count]
            if not held.records:
                del self._held[tp]
        return ready

    def _ready_count(self, tp: Any, held: _Held, now_s: float, flush: bool) -> int:
        shape = self._shapes[tp[0]]
        count = len(held.records)
        if flush or (count and now_s - held.polled_s[0] >= shape.max_wait_s):
            return count
        return count - count % shape.size

    def due_in_s(self, now_s: float) -> float | None:
        """How long until the oldest held record's batch is due (0: now); ``None``: nothing
        is held."""
        due = [
            held.polled_s[0] + self._shapes[tp[0]].max_wait_s - now_s
            for tp, held in self._held.items()
        ]
        return max(0.0, min(due)) if due else None

    def trim(self, tp: tuple[str, int], offset: int) -> None:
        """The consumer was sent back (or on) to ``offset`` of ``tp``: forget the held records
        it will fetch again (at ``offset`` or later)."""
        held = self._held.get(tp)
        if held is None:
            return
        keep = sum(1 for r in held.records if r.offset < offset)
        del held.records[keep:], held.polled_s[keep:]
        if not held.records:
            del self._held[tp]

    def forget(self, partitions: Iterable[tuple[str, int]]) -> None:
        """Drop what ``partitions`` (revoked) held."""
        for tp in partitions:
            self._held.pop(tp, None)

    @property
    def held(self) -> int:
        """How many records are held."""
        return sum(len(h.records) for h in self._held.values())


def shapes_of(routes: Iterable[Any]) -> dict[str, BatchShape]:
    """The shapes of the batched routes (``batch_size`` > 1) among ``routes``, by topic."""
    return {
        r.topic: BatchShape(r.batch_size, r.batch_max_wait_ms / 1000)
        for r in routes
        if r.batch_size > 1
    }


def cuts(
    records: Sequence[Any], size: int, decodable: Iterable[bool]
) -> list[tuple[bool, list[Any]]]:
    """``records`` (consecutive, of one partition) cut into batches of at most ``size``,
    each with whether it is decodable: an undecodable record (``decodable`` False) is cut
    out alone (the bridge dead-letters it), so that each batch is a run of consecutive
    records."""
    out: list[tuple[bool, list[Any]]] = []
    run: list[Any] = []
    for record, ok in zip(records, decodable, strict=True):
        if run and (not ok or len(run) == size):
            out.append((True, run))
            run = []
        if ok:
            run.append(record)
        else:
            out.append((False, [record]))
    if run:
        out.append((True, run))
    return out
