"""Which assigned partitions the bridge pauses, and why; the Celery broker's outage backoff.

Five sources pause partitions, each checked before every poll (:meth:`Pauses.reconcile`):

- the Celery broker (Redis) is down: every partition, until the :class:`Outage` backoff lets
  the next batch try again;
- an operator paused a route (:class:`~bridge.consumer.operator_pauses.OperatorPauses`);
- a route's dead-letter flood breaker is open (:class:`~bridge.consumer.flood.Breakers`);
- a route's Celery queue is too deep (:class:`~bridge.consumer.backpressure.Backpressure`);
- a partition is held: an ordered key or the partition has too many records waiting, or a
  watermark cannot be verified (the :class:`~bridge.consumer.assignment.Assignment`'s holds).

A read from Redis that fails counts as a broker failure, and while the broker is down nothing
is read. The decisions are pure (:func:`~bridge.consumer.backpressure.pause_reasons`,
:func:`changes`); the loop makes the Kafka calls.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import TypeVar

import redis

from bridge.backoff import exponential_ms
from bridge.consumer import incarnations
from bridge.consumer.assignment import Assignment
from bridge.consumer.backpressure import Backpressure, pause_reasons
from bridge.consumer.flood import Breakers
from bridge.consumer.operator_pauses import OperatorPauses
from bridge.errors import PublishError
from bridge.hooks import Refusal
from bridge.logs import at
from bridge.offsets import Partition

log = logging.getLogger(__name__)

TP = TypeVar("TP", bound=tuple[str, int])
QueueDepths = Callable[[Iterable[str]], dict[str, int]]  # raises PublishError
WatchedSizes = Callable[[dict[str, str]], dict[str, int]]  # raises redis.RedisError


class Outage:
    """The Celery broker's outage backoff (pure, but for its log lines)::

        up ──failed──> down: every partition paused until retry_at (exponential backoff)
        down ──retry_at reached (tick)──> trying: partitions resume, the next batch tries
        trying ──failed──> down, with a longer delay
        down | trying ──a batch enqueued (recovered)──> up

    :param initial_ms: the first delay (``celery.publish_retry_backoff_ms``).
    :param max_ms: the longest delay (``celery.publish_retry_backoff_max_ms``).
    :param clock: monotonic seconds.
    """

    def __init__(
        self, initial_ms: int, max_ms: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._initial_ms, self._max_ms, self._clock = initial_ms, max_ms, clock
        self.failures = 0
        self.retry_at: float | None = None  # monotonic seconds; None: not down

    @property
    def down(self) -> bool:
        """Whether the broker is deemed down (every partition paused, nothing read)."""
        return self.retry_at is not None

    def failed(self, exc: Exception) -> None:
        """The broker failed (a publish, or a read): down for a longer delay."""
        self.failures += 1
        delay_ms = exponential_ms(self.failures, initial_ms=self._initial_ms, max_ms=self._max_ms)
        self.retry_at = self._clock() + delay_ms / 1000
        log.error(
            "Celery broker unavailable (attempt %d): all partitions paused, retry in %d ms: %s",
            self.failures, delay_ms, exc,
        )  # fmt: skip

    def recovered(self) -> None:
        """A batch was enqueued: the broker is up."""
        if self.failures:
            log.warning("Celery broker available again after %d failures", self.failures)
        self.failures = 0
        self.retry_at = None

    def tick(self) -> None:
        """Once the delay is over, let the next batch try the broker again."""
        if self.retry_at is not None and self._clock() >= self.retry_at:
            self.retry_at = None


class Pauses:
    """The pause decision of each iteration, from the four sources.

    :param assignment: the bridge's assignment (its partitions and holds), guarded by ``lock``.
    :param lock: the lock the bridge's loop shares with its rebalance listener.
    :param outage: the broker's outage backoff.
    :param backpressure: the routes' queue-depth limits.
    :param breakers: the routes' flood breakers.
    :param operator: the routes operators paused.
    :param queue_depths: reads Celery queue depths (raises ``PublishError``).
    :param watched_sizes: reads what held partitions watch (raises ``redis.RedisError``).
    :param wall_clock: Unix seconds (the breakers count by the second).
    """

    def __init__(
        self,
        assignment: Assignment,
        lock: threading.Lock,
        *,
        outage: Outage,
        backpressure: Backpressure,
        breakers: Breakers,
        operator: OperatorPauses,
        queue_depths: QueueDepths,
        watched_sizes: WatchedSizes,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._assignment, self._lock = assignment, lock
        self.outage, self._backpressure, self._breakers = outage, backpressure, breakers
        self._operator = operator
        self._queue_depths, self._watched_sizes = queue_depths, watched_sizes
        self._wall_clock = wall_clock
        self.paused: dict[Partition, str] = {}  # as of the last reconcile

    def reconcile(self, in_flight: Callable[[], Mapping[str, int]]) -> dict[Partition, str]:
        """Check every source and decide which assigned partitions to pause, and why.

        :param in_flight: gives the messages per Celery queue of the batch being enqueued
            (they may not be in Redis yet: counted as if they were).
        :returns: the partitions to pause now, each with why (also kept as :attr:`paused`).
        """
        self.outage.tick()
        self._check_queue_depths(in_flight)
        self._check_holds()
        self._check_breakers()
        self._check_operator()
        with self._lock:
            assigned = self._assignment.partitions
            held = {tp: full.kind for tp, full in self._assignment.held.items()}
        self.paused = pause_reasons(
            assigned,
            broker_down=self.outage.down,
            held_topics=self._backpressure.held,
            held_partitions=held,
            flooded_topics=self._breakers.paused_topics(),
            operator_topics=self._operator.topics(),
        )
        return self.paused

    def _check_queue_depths(self, in_flight: Callable[[], Mapping[str, int]]) -> None:
        queues = self._backpressure.queues
        if not queues or self.outage.down:
            return
        # What is in flight first, then the lengths: a batch whose enqueue ends in between
        # is counted once (in the lengths), not twice, which held a route short of its limit.
        pending = in_flight()
        try:
            depths = self._queue_depths(queues)
        except PublishError as exc:
            self.outage.failed(exc)
            return
        for queue, count in pending.items():
            depths[queue] = depths.get(queue, 0) + count
        held, released = self._backpressure.update(depths)
        for topic in held:
            log.warning("backpressure: %s paused, its queue holds %s", topic, depths)
        for topic in released:
            log.info("backpressure: %s resumed, its queue holds %s", topic, depths)

    def _check_breakers(self) -> None:
        if self.outage.down:
            return
        try:
            self._breakers.check(self._wall_clock())
        except redis.RedisError as exc:  # the broker's outage handling takes over
            self.outage.failed(exc)

    def _check_operator(self) -> None:
        if self.outage.down:
            return
        try:
            self._operator.check(self._wall_clock())
        except redis.RedisError as exc:  # the pauses stay as last read; enqueues find outages
            log.debug("operator pauses not read: %r", exc)

    def _check_holds(self) -> None:
        with self._lock:
            held = self._assignment.held
        if not held or self.outage.down:
            return
        watched = {full.watch: full.kind for full in held.values()}
        try:
            counts = self._watched_sizes(watched)
        except redis.RedisError as exc:  # the broker's outage handling takes over
            self.outage.failed(exc)
            return
        with self._lock:
            released = self._assignment.release(counts)
        for tp in released:
            what = (
                "its watermark is gone"
                if held[tp].kind == "watermark"
                else "waiting records drained"
            )
            log.info("%s[%d]: %s, partition resumed", tp.topic, tp.partition, what,
                     extra=at(topic=tp.topic, partition=tp.partition))  # fmt: skip


def announce_hold(refusal: Refusal) -> None:
    """Log why ``refusal`` holds its partition (paused once the loop reconciles)."""
    r = refusal
    where = at(topic=r.topic, partition=r.partition, offset=r.offset)
    if r.full == "watermark":
        log.error(incarnations.stopped_why(r.topic, r.partition, r.offset, r.watch), extra=where)
        return
    log.warning("%s[%d]@%d: its %s has %d records waiting: partition paused",
                r.topic, r.partition, r.offset, r.full, r.limit, extra=where)  # fmt: skip


def changes(wanted: Iterable[TP], paused: Iterable[TP]) -> tuple[set[Partition], set[Partition]]:
    """The partitions to pause and to resume so that exactly ``wanted`` are paused."""
    want = {Partition(*tp) for tp in wanted}
    now = {Partition(*tp) for tp in paused}
    return want - now, now - want
