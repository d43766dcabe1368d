"""One iteration of the bridge loop (``Bridge.step``) against a fake Kafka consumer and a fake
Celery publisher: what it polls, enqueues, accepts, commits, rewinds, pauses and resumes.

The fake consumer keeps each partition's records in memory and a position per partition, runs
rebalances inside ``poll`` as kafka-python does, and refuses anything but kafka-python's
``TopicPartition`` where kafka-python does. The fake dispatcher stands for the enqueue script;
what Redis does with a batch is tested against Redis (tests/integration).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import pytest
from kafka import TopicPartition
from kafka.consumer.fetcher import ConsumerRecord
from kafka.errors import KafkaConnectionError, TopicAuthorizationFailedError
from kafka.structs import OffsetAndMetadata

from bridge.backends.kafka.topics import DeadLetterTopics
from bridge.backends.redis.dispatch import Dispatcher, Message, Ordered
from bridge.consumer import loop
from bridge.consumer.loop import Bridge
from bridge.errors import PublishError
from bridge.hooks import Outcome, Refusal
from bridge.routing import Route
from bridge.settings import BridgeSettings

A0, A1 = TopicPartition("a", 0), TopicPartition("a", 1)
UNREACHABLE = "127.0.0.1:9"  # nothing listens: the background threads are never started


def _check(tps: Iterable[Any]) -> None:
    if not all(isinstance(tp, TopicPartition) for tp in tps):  # as kafka-python checks
        raise TypeError("partitions must be TopicPartition namedtuples")


class Future:
    """A commit's future (kafka-python's ``Future`` as the bridge reads it)."""

    def __init__(self, done: bool) -> None:
        self.is_done = done


class FakeConsumer:
    """An in-memory ``KafkaConsumer``: records per partition, positions, pauses, commits."""

    def __init__(self, records: Mapping[TopicPartition, int]) -> None:
        self.logs = {tp: [self._record(tp, o) for o in range(n)] for tp, n in records.items()}
        self.position_of: dict[TopicPartition, int] = {}
        self.paused_set: set[TopicPartition] = set()
        self.committed: dict[TopicPartition, int] = {}
        self.commits: list[dict[TopicPartition, OffsetAndMetadata]] = []
        self.listener: Any = None
        self.rebalances: list[tuple[list[TopicPartition], list[TopicPartition]]] = []
        self.errors: list[Exception] = []
        self.answering = True  # False: commits stay in flight
        self._callbacks: list[Callable[[], None]] = []

    @staticmethod
    def _record(tp: TopicPartition, offset: int) -> ConsumerRecord:
        return ConsumerRecord(tp.topic, tp.partition, 0, offset, 1_700_000_000_000, 0, b"k",
                              b'{"n": %d}' % offset, [], None, 1, 8, -1)  # fmt: skip

    def rebalance(self, revoke: list[TopicPartition], assign: list[TopicPartition]) -> None:
        """Revoke and assign during the next poll."""
        self.rebalances.append((revoke, assign))

    def subscribe(self, topics: Sequence[str], listener: Any) -> None:
        self.listener = listener
        self.rebalance([], sorted(self.logs))

    def partitions_for_topic(self, topic: str) -> set[int]:
        return {tp.partition for tp in self.logs if tp.topic == topic}

    def poll(self, timeout_ms: int, max_records: int) -> dict[TopicPartition, list[Any]]:
        for callback in self._callbacks:
            callback()
        self._callbacks.clear()
        if self.errors:
            raise self.errors.pop(0)
        for revoke, assign in self.rebalances:
            self.listener.on_partitions_revoked(revoke)
            for tp in revoke:
                self.position_of.pop(tp)
                self.paused_set.discard(tp)
            for tp in assign:
                self.position_of[tp] = self.committed.get(tp, 0)
            self.listener.on_partitions_assigned(assign)
        self.rebalances.clear()
        batch, room = {}, max_records
        for tp, position in self.position_of.items():
            records = self.logs[tp][position : position + room]
            if records and tp not in self.paused_set:
                batch[tp], room = records, room - len(records)
                self.position_of[tp] = records[-1].offset + 1
        return batch

    def seek(self, tp: TopicPartition, offset: int) -> None:
        _check([tp])
        self.position_of[tp] = offset

    def position(self, tp: TopicPartition) -> int:
        _check([tp])
        return self.position_of[tp]

    def highwater(self, tp: TopicPartition) -> int:
        _check([tp])
        return len(self.logs[tp])

    def pause(self, *tps: TopicPartition) -> None:
        _check(tps)
        self.paused_set.update(tps)

    def resume(self, *tps: TopicPartition) -> None:
        _check(tps)
        self.paused_set.difference_update(tps)

    def paused(self) -> set[TopicPartition]:
        return set(self.paused_set)

    def commit_async(
        self, offsets: dict[TopicPartition, OffsetAndMetadata], callback: Any = None
    ) -> Future:
        self.commit(offsets)
        if callback is not None and self.answering:  # kafka-python runs it in a later poll
            self._callbacks.append(lambda: callback(offsets, None))
        return Future(self.answering)

    def commit(
        self, offsets: dict[TopicPartition, OffsetAndMetadata], timeout_ms: Any = None
    ) -> None:
        _check(offsets)
        self.commits.append(dict(offsets))
        self.committed.update({tp: meta.offset for tp, meta in offsets.items()})

    def close(self, autocommit: bool, timeout_ms: int) -> None:
        pass


class FakeDispatcher(Dispatcher):
    """The Celery side: builds a message per record; ``publish`` keeps what it enqueues (on
    the publisher thread), refuses what ``refuse`` says, fails while ``down``."""

    def __init__(self, settings: BridgeSettings) -> None:
        super().__init__(settings.celery, settings.kafka.group_id)
        self.enqueued: list[tuple[str, int, int]] = []
        self.depths: dict[str, int] = {}
        self.refuse: list[Refusal] = []
        self.down = False
        self._guard = threading.Lock()

    def consumed(self, route: Route, record: Any, ordered: Ordered | None = None) -> Message:
        return Message(record.topic, record.partition, record.offset, route.queue, b"task")

    def publish(
        self,
        messages: Sequence[Message],
        head_deadline_ms: int = 0,
        topic_ids: Mapping[str, str | None] | None = None,
    ) -> Outcome:
        with self._guard:
            if self.down:
                raise PublishError("Celery broker unreachable: ConnectionError()")
            stops = {(r.topic, r.partition): r.offset for r in self.refuse}
            done = [(m.topic, m.partition, m.offset) for m in messages
                    if m.offset < stops.get((m.topic, m.partition), m.offset + 1)]  # fmt: skip
            self.enqueued += done
            return Outcome(enqueued=len(done), skipped=0, refused=tuple(self.refuse))

    def queue_depths(self, queues: Iterable[str]) -> dict[str, int]:
        return {q: self.depths.get(q, 0) for q in queues}


def settings(**route: Any) -> BridgeSettings:
    return BridgeSettings.model_validate(
        {
            "kafka": {"bootstrap_servers": UNREACHABLE, "group_id": "g", "max_poll_records": 10},
            "celery": {"broker_url": f"redis://{UNREACHABLE}/0",
                       "publish_retry_backoff_ms": 1, "publish_retry_backoff_max_ms": 1},
            "routes": [{"topic": "a", "task": "t", **route}],
        }
    )  # fmt: skip


class Started:
    """A bridge started on a fake consumer (by its factory) with a fake dispatcher."""

    def __init__(self, records: Mapping[TopicPartition, int], **route: Any) -> None:
        conf = settings(**route)
        self.consumer = FakeConsumer(records)
        self.dispatcher = FakeDispatcher(conf)
        self.bridge = Bridge(conf, consumer_factory=lambda _: self.consumer,
                             dispatcher=self.dispatcher)  # fmt: skip
        # Their DLTs exist (no admin client: nothing listens at UNREACHABLE).
        self.bridge._dead_letter_topics = DeadLetterTopics(conf.kafka, (), bootstrap_timeout_ms=0)
        assert self.bridge.start() is self.consumer

    def steps(self, count: int) -> None:
        for _ in range(count):
            self.bridge.step(self.consumer)

    def step_until(self, done: Callable[[], bool], steps: int = 1000) -> None:
        for _ in range(steps):
            if done():
                return
            self.bridge.step(self.consumer)
        raise AssertionError("not reached")


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
