"""Which partitions the bridge pauses and why (bridge/consumer/pauses.py), without Kafka or
Redis: the outage backoff, and each source read through a fake reader."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Mapping

import pytest
import redis
from kafka import TopicPartition

from bridge.breaker import Outcomes
from bridge.consumer.assignment import Assignment
from bridge.consumer.backpressure import Backpressure, Limit
from bridge.consumer.flood import Breakers
from bridge.consumer.operator_pauses import OperatorPauses
from bridge.consumer.pauses import Outage, Pauses, announce_hold, changes
from bridge.errors import PublishError
from bridge.hooks import Refusal
from bridge.offsets import Partition
from bridge.settings import BreakerSettings
from tests.conftest import bridge_messages, bridge_records

A0, A1, B0 = Partition("a", 0), Partition("a", 1), Partition("b", 0)
LOGGER = "bridge.consumer.pauses"


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Redis:
    """What the pauses read from Redis: queue depths, sizes of what holds watch, outcomes.
    ``down`` makes every read fail as the real readers do; ``reads`` counts them."""

    def __init__(self) -> None:
        self.depths: dict[str, int] = {}
        self.sizes: dict[str, int] = {}
        self.outcomes: dict[str, Outcomes] = {}
        self.paused: dict[str, dict[str, str]] = {}
        self.down = False
        self.why = "Connection refused"
        self.reads = 0

    def queue_depths(self, queues: Iterable[str]) -> dict[str, int]:
        self.reads += 1
        if self.down:
            raise PublishError("queue depths unknown: ConnectionError()")
        return {q: self.depths.get(q, 0) for q in queues}

    def paused_routes(self) -> dict[str, dict[str, str]]:
        self._read()
        return dict(self.paused)

    def watched_sizes(self, watched: dict[str, str]) -> dict[str, int]:
        self._read()
        return {name: self.sizes.get(name, 0) for name in watched}

    def _read(self) -> None:
        self.reads += 1
        if self.down:
            raise redis.ConnectionError(self.why)


class Reader:
    """The outcome counts the flood breakers read (``OutcomeReader``'s two methods)."""

    def __init__(self, source: Redis) -> None:
        self._redis = source

    def read(self, since_s: Mapping[str, float], keep_s: float) -> dict[str, Outcomes]:
        self._redis._read()
        return {topic: self._redis.outcomes.get(topic, Outcomes()) for topic in since_s}

    def resumes(self) -> dict[str, float]:
        return {}


QA = {"a": Limit("qa", max_depth=10, resume_depth=2)}


def pauses_of(
    source: Redis,
    assignment: Assignment,
    *,
    limits: Mapping[str, Limit] = QA,
    ratio: float | None = None,
    clock: Clock | None = None,
    operator: bool = False,
) -> Pauses:
    """The pauses over ``source``; ``operator``: operator pauses are read from it too (else
    from nowhere, so that ``source.reads`` counts the other sources only)."""
    clock = clock or Clock()
    policy = BreakerSettings(dead_letter_ratio=ratio, min_records=2, check_interval_ms=10)
    breakers = Breakers(Reader(source), ["a", "b"], policy)  # type: ignore[arg-type]
    read = source.paused_routes if operator else dict
    return Pauses(
        assignment, threading.Lock(),
        outage=Outage(initial_ms=100, max_ms=1000, clock=clock),
        backpressure=Backpressure(limits),
        breakers=breakers, operator=OperatorPauses(read, ["a", "b"]),
        queue_depths=source.queue_depths, watched_sizes=source.watched_sizes, wall_clock=clock,
    )  # fmt: skip


def assigned(*partitions: Partition) -> Assignment:
    assignment = Assignment()
    assignment.assign(partitions)
    return assignment


def nothing_in_flight() -> dict[str, int]:
    return {}


# -- the outage backoff -------------------------------------------------------------------------


def test_the_outage_backoff_pauses_until_its_delay_is_over_and_grows(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    outage = Outage(initial_ms=100, max_ms=1000, clock=clock)
    assert not outage.down
    with caplog.at_level(logging.ERROR, LOGGER):
        outage.failed(PublishError("boom"))
    assert bridge_messages(caplog) == [
        "Celery broker unavailable (attempt 1): all partitions paused, retry in 100 ms: boom"
    ]
    assert outage.retry_at == pytest.approx(100.1)
    downs = []
    for clock.now in (100.09, 100.1):
        outage.tick()
        downs.append(outage.down)
    assert downs == [True, False]  # then trying: the next batch tries the broker
    outage.failed(PublishError("again"))
    assert outage.retry_at == pytest.approx(100.3)  # 200 ms: the delay doubled
    assert outage.failures == 2


def test_the_outage_delay_is_capped() -> None:
    clock = Clock()
    outage = Outage(initial_ms=100, max_ms=1000, clock=clock)
    for _ in range(6):
        outage.failed(PublishError("down"))
    assert outage.retry_at == pytest.approx(101.0)


def test_a_recovery_after_failures_is_logged_once_and_resets_the_backoff(
    caplog: pytest.LogCaptureFixture,
) -> None:
    outage = Outage(initial_ms=100, max_ms=1000, clock=Clock())
    outage.failed(PublishError("down"))
    outage.failed(PublishError("down"))
    with caplog.at_level(logging.WARNING, LOGGER):
        outage.recovered()
        outage.recovered()
    assert bridge_messages(caplog)[-1:] == ["Celery broker available again after 2 failures"]
    assert len([m for m in bridge_messages(caplog) if "available again" in m]) == 1
    assert (outage.failures, outage.down) == (0, False)
    outage.failed(PublishError("down"))
    assert outage.retry_at == pytest.approx(100.1)  # the first delay again


# -- the five sources -----------------------------------------------------------------------------


def test_nothing_paused_and_nothing_read_when_no_source_is_configured() -> None:
    source = Redis()
    pauses = pauses_of(source, assigned(A0, B0), limits={})
    assert pauses.paused == {}  # before the first reconcile too
    assert pauses.reconcile(nothing_in_flight) == {}
    assert source.reads == 0  # no queue limit, no hold, no breaker


def test_a_deep_queue_pauses_its_route_until_it_drains(caplog: pytest.LogCaptureFixture) -> None:
    source = Redis()
    pauses = pauses_of(source, assigned(A0, A1, B0))
    source.depths = {"qa": 7}
    with caplog.at_level(logging.INFO, LOGGER):
        in_flight = {"qa": 3, "other": 2}
        assert pauses.reconcile(lambda: in_flight) == {A0: "backpressure", A1: "backpressure"}
        source.depths = {"qa": 5}
        assert pauses.reconcile(nothing_in_flight) == {A0: "backpressure", A1: "backpressure"}
        source.depths = {"qa": 2}
        assert pauses.reconcile(nothing_in_flight) == {}
    assert bridge_messages(caplog) == [
        "backpressure: a paused, its queue holds {'qa': 10, 'other': 2}",  # 7 + 3 in flight
        "backpressure: a resumed, its queue holds {'qa': 2}",
    ]


def test_what_is_in_flight_is_read_before_the_queue_depths() -> None:
    # A batch whose enqueue ends between the two reads is then counted twice (conservative:
    # the route is held a batch early); read the other way round it would not be counted at
    # all, and the queue could pass its limit by more than one batch.
    source = Redis()
    source.depths = {"qa": 6}
    reads: list[str] = []
    queue_depths = source.queue_depths

    def depths(queues: Iterable[str]) -> dict[str, int]:
        reads.append("depths")
        return queue_depths(queues)

    def in_flight() -> dict[str, int]:
        reads.append("in flight")
        return {"qa": 1}

    source.queue_depths = depths  # type: ignore[method-assign]
    pauses = pauses_of(source, assigned(A0, A1, B0))
    assert pauses.reconcile(in_flight) == {}  # 6 + 1 < 10
    assert reads == ["in flight", "depths"]


@pytest.mark.parametrize(
    ("full", "reason", "released"),
    [
        ("key", "key-full", "a[0]: waiting records drained, partition resumed"),
        ("partition", "partition-full", "a[0]: waiting records drained, partition resumed"),
        ("watermark", "watermark-unverified", "a[0]: its watermark is gone, partition resumed"),
    ],
)
def test_a_held_partition_is_paused_until_what_it_watches_drains(
    full: str, reason: str, released: str, caplog: pytest.LogCaptureFixture
) -> None:
    source, assignment = Redis(), assigned(A0, A1)
    assignment.accept_batch((), [Refusal("a", 0, 5, full, "w", 8)], 1)
    pauses = pauses_of(source, assignment)
    source.sizes = {"w": 7}
    assert pauses.reconcile(nothing_in_flight) == {A0: reason}
    source.sizes = {"w": 6}
    with caplog.at_level(logging.INFO, LOGGER):
        assert pauses.reconcile(nothing_in_flight) == {}
    assert bridge_messages(caplog) == [released]
    assert (bridge_records(caplog)[0].topic, bridge_records(caplog)[0].partition) == ("a", 0)  # type: ignore[attr-defined]
    assert assignment.held == {}


def test_a_flooded_route_is_paused() -> None:
    source = Redis()
    pauses = pauses_of(source, assigned(A0, B0), ratio=0.5)
    source.outcomes = {"b": Outcomes(handled=1, dead_lettered=3)}
    assert pauses.reconcile(nothing_in_flight) == {B0: "dead-letter-flood"}


def test_a_route_an_operator_paused_is_paused_until_resumed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    source, clock = Redis(), Clock()
    pauses = pauses_of(source, assigned(A0, A1, B0), limits={}, clock=clock, operator=True)
    source.paused = {"a": {"by": "ops@host", "at": "2026-12-04T10:00:00Z", "why": "incident 7"},
                     "elsewhere": {}}  # fmt: skip
    with caplog.at_level(logging.WARNING, "bridge.consumer.operator_pauses"):
        assert pauses.reconcile(nothing_in_flight) == {A0: "operator", A1: "operator"}
        source.paused = {}
        clock.now += 0.5
        assert pauses.reconcile(nothing_in_flight) == {A0: "operator", A1: "operator"}
        assert source.reads == 1  # read at most once a second
        clock.now += 0.5
        assert pauses.reconcile(nothing_in_flight) == {}
    assert bridge_messages(caplog) == [
        "route a paused by ops@host at 2026-12-04T10:00:00Z (incident 7): consumption paused "
        "until `python -m bridge resume --topic a`",
        "route a resumed by an operator",
    ]


def test_an_operator_pause_gives_way_to_a_broker_outage_only() -> None:
    source = Redis()
    pauses = pauses_of(source, assigned(A0, B0), ratio=0.5, operator=True)
    source.paused = {"b": {}}
    source.outcomes = {"b": Outcomes(handled=1, dead_lettered=3)}
    assert pauses.reconcile(nothing_in_flight) == {B0: "operator"}


def test_operator_pauses_unread_stay_as_last_read() -> None:
    source, clock = Redis(), Clock()
    pauses = pauses_of(source, assigned(A0, B0), limits={}, clock=clock, operator=True)
    source.paused = {"a": {}}
    assert pauses.reconcile(nothing_in_flight) == {A0: "operator"}
    source.down, clock.now = True, clock.now + 1
    assert pauses.reconcile(nothing_in_flight) == {A0: "operator"}
    assert not pauses.outage.down  # an enqueue finds a real outage


@pytest.mark.parametrize("failing", ["queue depths", "holds", "breakers"])
def test_a_failed_read_is_a_broker_outage_and_nothing_is_read_while_it_lasts(
    failing: str, caplog: pytest.LogCaptureFixture
) -> None:
    source, clock, assignment = Redis(), Clock(), assigned(A0, B0)
    if failing == "holds":
        assignment.accept_batch((), [Refusal("b", 0, 5, "key", "w", 8)], 1)
        source.sizes = {"w": 7}
    limits = QA if failing == "queue depths" else {}
    ratio = 0.5 if failing == "breakers" else None
    pauses = pauses_of(source, assignment, limits=limits, ratio=ratio, clock=clock)
    source.down = True
    source.why = f"Connection refused ({failing})"  # repeats are held back once logging is set up
    with caplog.at_level(logging.ERROR, LOGGER):
        assert pauses.reconcile(nothing_in_flight) == {A0: "broker-down", B0: "broker-down"}
    assert (source.reads, pauses.outage.failures) == (1, 1)
    queues = failing == "queue depths"
    why = "queue depths unknown: ConnectionError()" if queues else source.why
    assert bridge_messages(caplog)[-1].endswith(f"retry in 100 ms: {why}")
    clock.now += 0.05
    pauses.reconcile(nothing_in_flight)
    assert source.reads == 1  # down: nothing read
    clock.now += 0.05  # the backoff's 100 ms are over: read again
    source.down = False
    assert pauses.reconcile(nothing_in_flight) == ({B0: "key-full"} if failing == "holds" else {})
    assert source.reads == 2


def test_a_hold_is_announced_with_what_is_full(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, LOGGER):
        announce_hold(Refusal("a", 0, 5, "key", "fifo", 8))
        announce_hold(Refusal("a", 1, 6, "watermark", "bridge:g:published:a:1", 1))
    assert bridge_messages(caplog)[0] == "a[0]@5: its key has 8 records waiting: partition paused"
    assert bridge_messages(caplog)[1].startswith("a[1]@6: below its published watermark")
    assert "(delete bridge:g:published:a:1 to enqueue from here)" in bridge_messages(caplog)[1]
    located = [(r.levelno, r.topic, r.partition, r.offset) for r in bridge_records(caplog)]  # type: ignore[attr-defined]
    assert located == [(logging.WARNING, "a", 0, 5), (logging.ERROR, "a", 1, 6)]


@pytest.mark.parametrize(
    ("wanted", "paused", "to_pause", "to_resume"),
    [
        ({A0, A1}, set(), {A0, A1}, set()),
        ({A0}, {A0, B0}, set(), {B0}),
        ({A0, A1}, {A1, B0}, {A0}, {B0}),
        (set(), set(), set(), set()),
    ],
)
def test_changes_pause_and_resume_what_differs(
    wanted: set[Partition], paused: set[Partition], to_pause: set[Partition],
    to_resume: set[Partition],
) -> None:  # fmt: skip
    assert changes(wanted, [TopicPartition(*tp) for tp in paused]) == (to_pause, to_resume)
