"""The dead-letter flood breaker of one route (pure: no Kafka, no Redis).

When a downstream outage makes every record fail, a bridge would drain its topic into the
dead-letter topic at full speed. The breaker watches the share of the route's finished records
(handled or dead-lettered, as counted by :mod:`bridge.backends.redis.outcomes`) that were
dead-lettered, and stops consumption of the route when that share passes a ratio. The states, after
resilience4j's circuit breaker::

    closed ──(window: ≥ min_records finished, dead-lettered share > ratio)──> open
    open ──(cool_down_s passed)──> half-open
    half-open ──(probe: probe_records finished, share ≤ ratio)──> closed
    half-open ──(probe: probe_records finished, share > ratio)──> open (cool-down again)
    open | half-open ──(resume command)──> closed

Closed consumes freely; open consumes nothing; half-open lets ``probe_records`` records
through, then waits for their outcomes. Closed counts only what finished since it closed, so
a breaker that just closed is not tripped again by the outcomes that opened it.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from bridge.settings import BreakerSettings


class BreakerState(StrEnum):
    """Where a breaker is (see the module's diagram)."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half-open"


_LEVELS = {str(BreakerState.CLOSED): 0, str(BreakerState.HALF_OPEN): 1, str(BreakerState.OPEN): 2}


def level(state: str) -> int:
    """How far a state keeps records out: 0 closed, 1 half-open, 2 open (unknown: 0)."""
    return _LEVELS.get(state, 0)


@dataclass(frozen=True, slots=True)
class Outcomes:
    """Records of a route that finished in some span of time: ``handled`` by their task, or
    ``dead_lettered`` (by a worker, or by the bridge when undecodable)."""

    handled: int = 0
    dead_lettered: int = 0

    @property
    def finished(self) -> int:
        """Records that finished either way."""
        return self.handled + self.dead_lettered

    @property
    def ratio(self) -> float:
        """The dead-lettered share of the finished records (0.0 when none finished)."""
        return self.dead_lettered / self.finished if self.finished else 0.0


@dataclass(frozen=True, slots=True)
class Transition:
    """A change of state, with the outcomes that caused it (for the log and metrics)."""

    topic: str
    before: BreakerState
    after: BreakerState
    outcomes: Outcomes
    why: str
    ratio: float  # the breaker's threshold


class FloodBreaker:
    """The breaker of one route; times are seconds on any one clock (e.g. ``time.time()``).

    :param topic: the route's topic.
    :param policy: the ``[breaker]`` settings (``dead_letter_ratio`` must be set).
    :raises ValueError: ``policy.dead_letter_ratio`` is not set.
    """

    def __init__(self, topic: str, policy: BreakerSettings) -> None:
        if policy.dead_letter_ratio is None:
            raise ValueError("a breaker needs breaker.dead_letter_ratio")
        self.topic = topic
        self.ratio = policy.dead_letter_ratio
        self._policy = policy
        self.state = BreakerState.CLOSED
        self.since_s: float | None = None  # when the state began (None: closed from the start)
        self.trips = 0
        self.last = Outcomes()  # the outcomes of the last observation
        self._admitted = 0  # records let through in half-open

    def counting_since(self, now_s: float) -> float:
        """The start of the span whose outcomes :meth:`observe` wants next: the window (not
        before the breaker closed), or the probe's start in half-open."""
        if self.state is BreakerState.HALF_OPEN:
            assert self.since_s is not None
            return self.since_s
        start = now_s - self._policy.window_s
        return start if self.since_s is None else max(start, self.since_s)

    def observe(self, outcomes: Outcomes, now_s: float) -> Transition | None:
        """Take the outcomes since :meth:`counting_since`; change state if they say so."""
        self.last = outcomes
        if self.state is BreakerState.CLOSED:
            if outcomes.finished >= self._policy.min_records and outcomes.ratio > self.ratio:
                self.trips += 1
                return self._to(BreakerState.OPEN, now_s, outcomes, "dead-letter flood")
        elif self.state is BreakerState.OPEN:
            if now_s - (self.since_s or now_s) >= self._policy.cool_down_s:
                self._admitted = 0
                return self._to(BreakerState.HALF_OPEN, now_s, outcomes, "cool-down over: probe")
        elif outcomes.finished >= self._policy.probe_records:
            if outcomes.ratio > self.ratio:
                self.trips += 1
                return self._to(BreakerState.OPEN, now_s, outcomes, "probe failed")
            return self._to(BreakerState.CLOSED, now_s, outcomes, "probe succeeded")
        return None

    def resume(self, now_s: float) -> Transition | None:
        """Close at once (the ``resume`` command); ``None`` if it was closed already."""
        if self.state is BreakerState.CLOSED:
            return None
        return self._to(BreakerState.CLOSED, now_s, self.last, "resumed by command")

    def room(self) -> int | None:
        """How many more records may be consumed now: ``None`` for no limit (closed)."""
        if self.state is BreakerState.CLOSED:
            return None
        if self.state is BreakerState.OPEN:
            return 0
        return max(0, self._policy.probe_records - self._admitted)

    def admitted(self, records: int) -> None:
        """Count records let through (only a probe counts them)."""
        if self.state is BreakerState.HALF_OPEN:
            self._admitted += records

    @property
    def pausing(self) -> bool:
        """Whether the route's partitions must be paused now."""
        return self.room() == 0

    def _to(self, state: BreakerState, now_s: float, outcomes: Outcomes, why: str) -> Transition:
        before, self.state, self.since_s = self.state, state, now_s
        return Transition(self.topic, before, state, outcomes, why, self.ratio)
