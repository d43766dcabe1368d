"""One iteration of the bridge loop (``Bridge.step``) against a fake Kafka consumer and a fake
Celery publisher (tests/unit/fakes.py): what it polls, enqueues, accepts, commits, rewinds,
pauses and resumes."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import pytest
from kafka import TopicPartition
from kafka.errors import KafkaConnectionError, TopicAuthorizationFailedError
from kafka.structs import OffsetAndMetadata

from bridge.backends.kafka.topics import DeadLetterTopics
from bridge.consumer import loop
from bridge.consumer.loop import Bridge
from bridge.hooks import BridgeHooks, LoopState, Refusal
from bridge.offsets import Partition
from bridge.settings import BridgeSettings
from tests.unit.fakes import FakeConsumer, FakeDispatcher

A0, A1 = TopicPartition("a", 0), TopicPartition("a", 1)
BACKOFF_MS = 300  # the broker's outage backoff: longer than a few steps on a busy machine
UNREACHABLE = "127.0.0.1:9"  # nothing listens: the background threads are never started


def settings(**route: Any) -> BridgeSettings:
    return BridgeSettings.model_validate(
        {
            "kafka": {"bootstrap_servers": UNREACHABLE, "group_id": "g", "max_poll_records": 10},
            "celery": {"broker_url": f"redis://{UNREACHABLE}/0",
                       "publish_retry_backoff_ms": BACKOFF_MS,
                       "publish_retry_backoff_max_ms": BACKOFF_MS},
            "routes": [{"topic": "a", "task": "t", **route}],
        }
    )  # fmt: skip


class Seen(BridgeHooks):
    """What the hooks are told."""

    def __init__(self) -> None:
        self.polls: list[Mapping[Partition, int]] = []
        self.accepted: list[Mapping[Partition, tuple[int, int]]] = []
        self.states: list[LoopState] = []

    def after_poll(self, counts: Mapping[Partition, int]) -> None:
        self.polls.append(dict(counts))

    def after_accept(self, offsets: Mapping[Partition, tuple[int, int]]) -> None:
        self.accepted.append(dict(offsets))

    def after_state(self, state: LoopState) -> None:
        self.states.append(state)


class Started:
    """A bridge started on a fake consumer (by its factory) with a fake dispatcher."""

    def __init__(self, records: Mapping[TopicPartition, int], **route: Any) -> None:
        conf = settings(**route)
        self.consumer = FakeConsumer(records)
        self.dispatcher = FakeDispatcher(conf)
        self.seen = Seen()
        self.bridge = Bridge(conf, [self.seen], consumer_factory=lambda _: self.consumer,
                             dispatcher=self.dispatcher)  # fmt: skip
        # Their DLTs exist (no admin client: nothing listens at UNREACHABLE).
        self.bridge._dead_letter_topics = DeadLetterTopics(conf.kafka, (), bootstrap_timeout_ms=0)
        assert self.bridge.start() is self.consumer

    def steps(self, count: int) -> None:
        for _ in range(count):
            self.bridge.step(self.consumer)

    def step_until(self, done: Callable[[], bool], timeout_s: float = 10) -> None:
        deadline = time.monotonic() + timeout_s
        while not done():
            assert time.monotonic() < deadline, "not reached"
            self.bridge.step(self.consumer)


@pytest.fixture
def started() -> Iterable[Callable[..., Started]]:
    made: list[Started] = []

    def start(records: Mapping[TopicPartition, int], **route: Any) -> Started:
        made.append(Started(records, **route))
        return made[-1]

    yield start
    for each in made:
        each.bridge.close()


def test_records_are_enqueued_then_accepted_and_committed(started: Callable[..., Started]) -> None:
    s = started({A0: 12, A1: 2})
    s.steps(1)  # assigned, a[0] 0-9 polled, their enqueue in flight: nothing accepted yet
    assert s.consumer.commits == []
    s.steps(1)  # 0-9 accepted and committed; a[0] 10-11 and a[1] 0-1 in flight
    assert s.consumer.commits == [{A0: OffsetAndMetadata(10, "", -1)}]
    s.steps(1)
    assert s.consumer.commits[1:] == [
        {A0: OffsetAndMetadata(12, "", -1), A1: OffsetAndMetadata(2, "", -1)}
    ]
    assert s.dispatcher.enqueued == [("a", 0, o) for o in range(12)] + [("a", 1, 0), ("a", 1, 1)]
    state = {(p.topic, p.partition): p for p in s.bridge.state().partitions}
    assert (state["a", 0].accepted, state["a", 0].committed, state["a", 0].highwater) == (
        12,
        10,
        12,
    )
    s.steps(1)  # Kafka's answer comes in the next poll
    assert [(p.committed, p.paused) for p in s.bridge.state().partitions] == [(12, None), (2, None)]
    assert s.seen.polls == [{A0: 10}, {A0: 2, A1: 2}]  # then empty polls: not told
    assert s.seen.accepted == [{A0: (0, 10)}, {A0: (10, 12), A1: (0, 2)}]
    [first] = s.seen.states  # at most one a second: the first, before anything was accepted
    assert (first.member, first.group_id) == (s.bridge.member, "g")
    assert [(p.partition, p.accepted) for p in first.partitions] == [(0, None), (1, None)]


def test_a_failed_enqueue_rewinds_pauses_every_partition_and_loses_nothing(
    started: Callable[..., Started],
) -> None:
    s = started({A0: 2, A1: 2})
    s.dispatcher.down = True
    s.steps(2)  # the enqueue failed: rewound, the broker deemed down
    assert s.consumer.position_of == {A0: 0, A1: 0}
    s.steps(1)
    assert s.consumer.paused() == {A0, A1}
    assert {p.paused for p in s.bridge.state().partitions} == {"broker-down"}
    s.dispatcher.down = False
    s.step_until(lambda: s.consumer.committed == {A0: 2, A1: 2})
    assert s.consumer.paused() == set()
    assert sorted(s.dispatcher.enqueued) == [("a", 0, 0), ("a", 0, 1), ("a", 1, 0), ("a", 1, 1)]


def test_a_batch_enqueued_across_a_revoke_and_reassign_is_not_accepted_there(
    started: Callable[..., Started],
) -> None:
    s = started({A0: 3})
    s.steps(1)  # offsets 0-2 in flight, polled in the first assignment
    s.consumer.rebalance([A0], [A0])  # revoked and assigned again in the next poll
    s.steps(1)  # polls 0-2 again (nothing committed); the first batch is not accepted
    assert s.consumer.commits == []
    s.steps(1)  # the second batch is: no "accepted out of order"
    assert s.consumer.commits == [{A0: OffsetAndMetadata(3, "", -1)}]


def test_a_revoked_partition_commits_what_it_accepted(started: Callable[..., Started]) -> None:
    s = started({A0: 12, A1: 1})
    s.consumer.answering = False
    s.steps(2)  # a[0] 0-9 accepted, their commit in flight (for good); the rest in flight
    s.steps(1)  # accepted: not committed, one commit at a time
    assert s.consumer.commits == [{A0: OffsetAndMetadata(10, "", -1)}]
    s.consumer.rebalance([A0], [])
    s.steps(1)
    assert s.consumer.commits[1:] == [{A0: OffsetAndMetadata(12, "", -1)}]  # by the revoke
    assert [p.partition for p in s.bridge.state().partitions] == [1]


def test_a_refused_record_stops_its_partition_there(started: Callable[..., Started]) -> None:
    s = started({A0: 3, A1: 3})
    s.dispatcher.refuse = [Refusal("a", 0, 1, "key", "fifo", 4)]
    s.steps(2)
    assert s.consumer.commits[0] == {
        A0: OffsetAndMetadata(1, "", -1),
        A1: OffsetAndMetadata(3, "", -1),
    }
    assert s.consumer.position_of[A0] == 1  # rewound to the refused record


def test_a_deep_queue_pauses_its_route_until_it_drains(started: Callable[..., Started]) -> None:
    s = started({A0: 6, A1: 6}, queue="q", max_queue_depth=10, resume_queue_depth=2)
    s.dispatcher.depths = {"q": 10}
    s.steps(1)  # assigned in this poll: paused from the next
    s.steps(3)
    assert s.consumer.paused() == {A0, A1}
    assert len(s.dispatcher.enqueued) == 10  # the first poll's
    s.dispatcher.depths = {"q": 2}
    s.steps(1)
    assert s.consumer.paused() == set()
    s.step_until(lambda: len(s.dispatcher.enqueued) == 12)


def test_a_poll_that_finds_the_broker_unreachable_brings_nothing(
    started: Callable[..., Started], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(loop, "_POLL_RETRY_S", 0)
    s = started({A0: 2})
    s.consumer.errors = [KafkaConnectionError("111 ECONNREFUSED")]
    s.steps(1)
    assert s.dispatcher.enqueued == []
    s.steps(2)
    assert s.consumer.committed == {A0: 2}


@pytest.mark.parametrize("error", [TopicAuthorizationFailedError(), RuntimeError("a bug")])
def test_an_error_that_is_neither_retriable_nor_a_bad_batch_still_stops_the_bridge(
    started: Callable[..., Started], error: Exception
) -> None:
    s = started({A0: 2})
    s.consumer.errors = [error]
    with pytest.raises(type(error)):
        s.steps(1)
