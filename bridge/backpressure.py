"""Which partitions to pause, and why (pure: no Kafka, no Redis).

Backpressure keeps Kafka the buffer: a route whose Celery queue holds ``max_queue_depth``
messages or more is *held* until the queue drains to ``resume_queue_depth`` or less
(hysteresis, so a queue hovering at the limit does not flap). Depth is checked before every
poll, so a queue exceeds its limit by at most one poll batch.

A partition is paused while the broker is down (all of them) or while its route is held.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TypeVar

TP = TypeVar("TP", bound=tuple[str, int])


@dataclass(frozen=True, slots=True)
class Limit:
    """A route's queue-depth limits (messages)."""

    queue: str
    max_depth: int
    resume_depth: int


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


def to_pause(assigned: Iterable[TP], *, broker_down: bool, held_topics: Iterable[str]) -> set[TP]:
    """The assigned partitions that must be paused now."""
    held = set(held_topics)
    return {tp for tp in assigned if broker_down or tp[0] in held}
