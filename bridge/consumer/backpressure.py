"""Which partitions to pause, and why (pure: no Kafka, no Redis).

Backpressure keeps Kafka the buffer: a route whose Celery queue holds ``max_queue_depth``
records or more (each message of a batched route counted as a full batch) is *held* until
the queue drains to ``resume_queue_depth`` or less (hysteresis, so a queue hovering at the
limit does not flap). Depth is checked before every
poll, so a queue exceeds its limit by at most one poll batch.

On ordered routes a partition is also held when one of its keys, or the partition as a whole,
has as many records waiting in key FIFOs as its route allows (:class:`PartitionHolds`).

A partition is paused while the broker is down (all of them), while its route is held, or
while it is held itself.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from bridge.routing import Route

TP = TypeVar("TP", bound=tuple[str, int])


@dataclass(frozen=True, slots=True)
class Limit:
    """A route's queue-depth limits (messages)."""

    queue: str
    max_depth: int
    resume_depth: int


def limits_of(routes: Iterable[Route]) -> dict[str, Limit]:
    """The queue-depth limits of the routes that have one, by topic, in messages.

    A route's limits are in records; a batched route's message counts as a full batch
    (``batch_size`` records), so its queue pauses at ``max_queue_depth`` records or fewer (one
    message at least), and resumes below that.
    """
    return {r.topic: _limit(r) for r in routes if r.max_queue_depth is not None}


def _limit(route: Route) -> Limit:
    size = route.batch_size
    max_depth = max(1, (route.max_queue_depth or 0) // size)
    resume_depth = min((route.resume_queue_depth or 0) // size, max_depth - 1)
    return Limit(route.queue, max_depth, resume_depth)


class Backpressure:
    """Hysteresis per route: hold at ``max_depth``, release at ``resume_depth``."""

    def __init__(self, limits: Mapping[str, Limit]) -> None:
        self._limits = dict(limits)
        self._held: set[str] = set()

    @property
    def queues(self) -> set[str]:
        """The queues whose depth matters."""
        return {limit.queue for limit in self._limits.values()}

    @property
    def held(self) -> frozenset[str]:
        """Topics whose partitions must stay paused."""
        return frozenset(self._held)

    def update(self, depths: Mapping[str, int]) -> tuple[set[str], set[str]]:
        """Take new queue depths; return the topics newly held and newly released."""
        held, released = set(), set()
        for topic, limit in self._limits.items():
            depth = depths.get(limit.queue, 0)
            if topic not in self._held and depth >= limit.max_depth:
                self._held.add(topic)
                held.add(topic)
            elif topic in self._held and depth <= limit.resume_depth:
                self._held.discard(topic)
                released.add(topic)
        return held, released


@dataclass(frozen=True, slots=True)
class Full:
    """Why a partition is held: ``watch`` (a key FIFO's length or a partition's waiting
    counter, per ``kind``) reached its limit; it resumes at ``resume_at`` or below."""

    watch: str
    kind: str  # "key" | "partition"
    resume_at: int


class PartitionHolds:
    """Partitions of ordered routes held because a key or the partition has too many records
    waiting (pure).

    A partition is held when the bridge's append is refused, and released once what it
    watches has drained to a quarter below the limit (hysteresis, so it does not flap)::

        free --refused at the limit--> held --count <= resume_at--> free
    """

    def __init__(self) -> None:
        self._held: dict[Any, Full] = {}

    def hold(self, tp: Any, *, watch: str, kind: str, limit: int) -> None:
        """Hold ``tp`` until ``watch`` drains below ``limit``."""
        self._held[tp] = Full(watch, kind, limit - max(1, limit // 4))

    @property
    def held(self) -> dict[Any, Full]:
        """Held partitions and why."""
        return dict(self._held)

    def update(self, counts: Mapping[str, int]) -> set[Any]:
        """Take the current counts of what is watched; return the partitions released."""
        released = {
            tp for tp, full in self._held.items() if counts.get(full.watch, 0) <= full.resume_at
        }
        for tp in released:
            del self._held[tp]
        return released

    def forget(self, partitions: Iterable[Any]) -> None:
        """Drop revoked partitions."""
        for tp in partitions:
            self._held.pop(tp, None)


def to_pause(
    assigned: Iterable[TP],
    *,
    broker_down: bool,
    held_topics: Iterable[str],
    held_partitions: Iterable[TP] = (),
) -> set[TP]:
    """The assigned partitions that must be paused now."""
    held = {tp: "partition" for tp in held_partitions}
    return set(pause_reasons(assigned, broker_down=broker_down, held_topics=held_topics,
                             held_partitions=held))  # fmt: skip


def pause_reasons(
    assigned: Iterable[TP],
    *,
    broker_down: bool,
    held_topics: Iterable[str],
    held_partitions: Mapping[TP, str],
    flooded_topics: Iterable[str] = (),
    operator_topics: Iterable[str] = (),
) -> dict[TP, str]:
    """The assigned partitions that must be paused now, each with why: ``broker-down``,
    ``operator`` (an operator paused its route: ``python -m bridge pause``),
    ``dead-letter-flood`` (its route's flood breaker is open, or its probe took enough),
    ``backpressure`` (its route's queue is too deep), ``key-full`` / ``partition-full``
    (``held_partitions`` maps a partition to what is full: ``key`` or ``partition``), or
    ``watermark-unverified`` (held by its ``watermark``: see
    :mod:`bridge.consumer.incarnations`)."""
    topics, flooded, stopped = set(held_topics), set(flooded_topics), set(operator_topics)
    reasons: dict[TP, str] = {}
    for tp in assigned:
        if broker_down:
            reasons[tp] = "broker-down"
        elif tp[0] in stopped:
            reasons[tp] = "operator"
        elif tp[0] in flooded:
            reasons[tp] = "dead-letter-flood"
        elif tp[0] in topics:
            reasons[tp] = "backpressure"
        elif tp in held_partitions:
            held = held_partitions[tp]
            reasons[tp] = "watermark-unverified" if held == "watermark" else f"{held}-full"
    return reasons
