"""The bridge's dead-letter flood breakers: one per route, driven by the counts in Redis.

:class:`Breakers` reads the routes' outcomes at most every ``breaker.check_interval_ms``, feeds
each :class:`~bridge.breaker.FloodBreaker`, applies ``resume`` commands, and logs every change
of state. The loop asks it which topics to pause and how many records a probe may still take.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from bridge.backends.redis.outcomes import OutcomeReader
from bridge.breaker import BreakerState, FloodBreaker, Outcomes, Transition
from bridge.hooks import BreakerReport
from bridge.logs import at
from bridge.settings import BreakerSettings

log = logging.getLogger(__name__)


class Breakers:
    """The breakers of one bridge's routes (all closed, and never reading Redis, when
    ``breaker.dead_letter_ratio`` is not set).

    :param reader: the group's outcome counts in Redis.
    :param topics: the routed topics.
    :param policy: the ``[breaker]`` settings.
    """

    def __init__(self, reader: OutcomeReader, topics: Iterable[str], policy: BreakerSettings):
        self._reader = reader
        self._policy = policy
        on = policy.dead_letter_ratio is not None
        self._breakers = {t: FloodBreaker(t, policy) for t in topics} if on else {}
        self._due_s = 0.0

    def check(self, now_s: float) -> list[Transition]:
        """Read the counts and resume requests if due, and move the breakers on.

        :raises redis.RedisError: Redis is unreachable (nothing changed).
        """
        if not self._breakers or now_s < self._due_s:
            return []
        self._due_s = now_s + self._policy.check_interval_ms / 1000
        since = {t: b.counting_since(now_s) for t, b in self._breakers.items()}
        counts = self._reader.read(since, keep_s=now_s - self._policy.window_s - 1)
        resumes = self._reader.resumes()
        changes: list[Transition] = []
        for topic, breaker in self._breakers.items():
            asked_s = resumes.get(topic)
            resumed = asked_s is not None and asked_s > (breaker.since_s or now_s)
            # Just resumed: the counts were read over the flood, so they wait for the next read.
            change = breaker.resume(now_s) if resumed else breaker.observe(counts[topic], now_s)
            changes += [change] if change is not None else []
        for change in changes:
            self._log(change)
        return changes

    def paused_topics(self) -> set[str]:
        """Topics whose breaker lets no record through now."""
        return {t for t, b in self._breakers.items() if b.pausing}

    def room(self, topic: str) -> int | None:
        """How many more records of ``topic`` may be consumed now (``None``: no limit)."""
        breaker = self._breakers.get(topic)
        return None if breaker is None else breaker.room()

    def admitted(self, topic: str, records: int) -> None:
        """Count records of ``topic`` let through (a probe takes only so many)."""
        breaker = self._breakers.get(topic)
        if breaker is not None:
            breaker.admitted(records)

    def reports(self) -> tuple[BreakerReport, ...]:
        """Every breaker, for ``status`` and the metrics."""
        return tuple(_report(b) for b in self._breakers.values())

    def _log(self, change: Transition) -> None:
        seen, where = change.outcomes, at(topic=change.topic)
        counted = (f"{seen.dead_lettered} of {seen.finished} finished records "
                   f"({seen.ratio:.0%}) dead-lettered")  # fmt: skip
        if change.after is BreakerState.OPEN:
            log.error("dead-letter flood breaker OPEN on %s (%s): %s, more than %.0f%%: "
                      "consumption paused; a probe of %d records in %.0f s, or resume now with "
                      "`python -m bridge resume --topic %s`", change.topic, change.why, counted,
                      change.ratio * 100, self._policy.probe_records, self._policy.cool_down_s,
                      change.topic, extra=where)  # fmt: skip
        elif change.after is BreakerState.HALF_OPEN:
            log.warning("dead-letter flood breaker half-open on %s: %s, letting %d records "
                        "through", change.topic, change.why, self._policy.probe_records,
                        extra=where)  # fmt: skip
        else:
            log.warning("dead-letter flood breaker closed on %s (%s; %s): consumption resumed",
                        change.topic, change.why, counted, extra=where)  # fmt: skip


def _report(breaker: FloodBreaker) -> BreakerReport:
    seen: Outcomes = breaker.last
    since_ms = None if breaker.since_s is None else int(breaker.since_s * 1000)
    return BreakerReport(breaker.topic, str(breaker.state), since_ms, breaker.trips,
                         seen.handled, seen.dead_lettered, round(seen.ratio, 4))  # fmt: skip
