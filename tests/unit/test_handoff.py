"""A poll's batch on its way to accepted offsets (bridge/consumer/handoff.py), against a fake
Celery publisher and a fake dead-letter producer: what is accepted when, what a failure or a
refusal rewinds, and the undecodable records dead-lettered before their batch."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import pytest
import redis
from kafka import TopicPartition

from bridge.backends.kafka.dead_letters import DeadLetterOffice
from bridge.backends.redis.enqueue import Message, Ordered
from bridge.backends.redis.ordering import KeyQueues
from bridge.consumer.assignment import Assignment
from bridge.consumer.flood import Breakers
from bridge.consumer.handoff import Handoff
from bridge.consumer.intake import Intake
from bridge.consumer.pauses import Outage
from bridge.consumer.undecodable import UndecodableLetters
from bridge.errors import DeadLetterError, PublishError
from bridge.hooks import BridgeHooks, Outcome, Refusal
from bridge.offsets import Partition
from bridge.routing import Route, Router
from bridge.settings import BridgeSettings
from tests.conftest import wait_for
from tests.unit.fakes import FakeConsumer, FakeDispatcher
from tests.unit.test_dead_letter_office import Store
from tests.unit.test_undecodable import Client, Producer

A0, A1 = Partition("a", 0), Partition("a", 1)
NOWHERE = redis.Redis.from_url("redis://127.0.0.1:9/0")  # names keys only: never connects
STALL_MS = 60_000
MADE: list[Handing] = []


def settings() -> BridgeSettings:
    return BridgeSettings.model_validate(
        {
            "kafka": {"bootstrap_servers": "127.0.0.1:9", "group_id": "g"},
            "celery": {"broker_url": "redis://127.0.0.1:9/0"},
            "routes": [{"topic": "a", "task": "t", "queue": "q", "value_format": "json"}],
        }
    )


class Seen(BridgeHooks):
    def __init__(self) -> None:
        self.published: list[int] = []
        self.failed: list[int] = []
        self.accepted: list[dict[Partition, tuple[int, int]]] = []

    def after_publish(self, outcome: Outcome, seconds: float) -> None:
        self.published.append(outcome.enqueued)

    def after_publish_failed(self, records: int, exc: BaseException, seconds: float) -> None:
        self.failed.append(records)

    def after_accept(self, offsets: Mapping[Partition, tuple[int, int]]) -> None:
        self.accepted.append(dict(offsets))


class Dispatcher(FakeDispatcher):
    """Keeps each enqueue's head deadline and what it sent; ``no_template``: no message
    can be built."""

    def __init__(self, conf: BridgeSettings) -> None:
        super().__init__(conf)
        self.deadlines: list[int] = []
        self.sent: list[tuple[int, bool]] = []  # offset, with a task message
        self.no_template = False

    def consumed(self, route: Route, record: Any, ordered: Ordered | None = None) -> Message:
        if self.no_template:
            raise PublishError("no message template: Redis unreachable")
        return super().consumed(route, record, ordered)

    def seen_publish(
        self, messages: Sequence[Message], deadline_ms: int, ids: Mapping[str, str | None] | None
    ) -> Outcome:
        """``publish``, keeping what it was given."""
        self.deadlines.append(deadline_ms)
        self.sent += [(m.offset, m.payload is not None) for m in messages]
        return self.publish(messages, deadline_ms, ids)


class Handing:
    """A Handoff of partitions a[0] and a[1], and the fakes around it."""

    def __init__(self, producer: Producer | None = None) -> None:
        conf = settings()
        router = Router.from_settings(conf)
        self.consumer = FakeConsumer({TopicPartition("a", 0): 30, TopicPartition("a", 1): 30})
        self.dispatcher = Dispatcher(conf)
        self.assignment, self.lock = Assignment(), threading.Lock()
        self.assignment.assign([A0, A1])
        self.outage, self.seen = Outage(1000, 1000), Seen()
        self.seeks: list[tuple[tuple[str, int], int]] = []
        self.producer = producer or Producer()
        office = DeadLetterOffice(self.producer, Store())  # type: ignore[arg-type]
        letters = UndecodableLetters("g", router, office, Client(), self.seen)  # type: ignore[arg-type]
        intake = Intake(router, self.dispatcher, KeyQueues(NOWHERE, "g"),
                        Breakers(None, router.topics, conf.breaker),  # type: ignore[arg-type]
                        self._seek)  # fmt: skip
        self.handoff = Handoff(self.assignment, self.lock, intake, self.dispatcher.seen_publish,
                               letters, self.outage, self.seen, self._seek,
                               stall_timeout_ms=STALL_MS)  # fmt: skip
        MADE.append(self)

    def _seek(self, tp: tuple[str, int], offset: int) -> None:
        self.seeks.append(((tp[0], tp[1]), offset))

    def polled(self, spans: Mapping[Partition, range]) -> dict[Partition, list[Any]]:
        logs = self.consumer.logs
        return {tp: logs[TopicPartition(*tp)][s.start : s.stop] for tp, s in spans.items()}

    def take(self, spans: Mapping[Partition, range]) -> None:
        self.handoff.take(self.polled(spans), self.consumer)

    def accepted(self) -> dict[Partition, int]:
        return self.assignment.to_commit()

    def not_json(self, tp: Partition, offsets: Iterable[int]) -> None:
        log = self.consumer.logs[TopicPartition(*tp)]
        for o in offsets:
            log[o] = log[o]._replace(value=b"{not json")


def test_a_batch_is_accepted_once_the_next_poll_settles_it() -> None:
    h = Handing()
    before_ms = int(time.time() * 1000)
    h.take({A0: range(0, 10)})
    assert h.accepted() == {}  # in flight
    # once enqueued, its messages count in the queue's length, not as in flight: not twice
    wait_for(lambda: h.handoff.queued() == {}, timeout_s=10, what="the enqueue to end")
    assert h.accepted() == {}  # still: accepted when the next poll settles it
    h.take({A0: range(10, 12), A1: range(0, 2)})
    assert h.accepted() == {A0: 10}
    assert h.seen.accepted == [{A0: (0, 10)}]
    h.handoff.settle()
    assert h.accepted() == {A0: 12, A1: 2}
    assert h.handoff.queued() == {}
    assert h.seen.published == [10, 4]
    assert h.dispatcher.deadlines[0] >= before_ms + STALL_MS
    assert h.dispatcher.deadlines[0] <= int(time.time() * 1000) + STALL_MS
    assert h.seeks == []


def test_an_empty_poll_settles_the_batch_in_flight() -> None:
    h = Handing()
    h.take({A0: range(0, 3)})
    h.take({})
    assert h.accepted() == {A0: 3}
    assert h.handoff.queued() == {}


def test_a_failed_enqueue_rewinds_it_and_the_next_batch_and_deems_the_broker_down() -> None:
    h = Handing()
    h.outage.failed(PublishError("an earlier failure"))
    h.outage.recovered()
    h.dispatcher.down = True
    h.take({A0: range(0, 10)})
    h.dispatcher.down = False
    h.take({A0: range(10, 12), A1: range(0, 2)})
    assert sorted(h.seeks) == [(A0, 0), (A1, 0)]
    assert h.outage.down
    assert h.seen.failed == [10]
    assert h.handoff.queued() == {}  # the next batch was dropped, not enqueued
    h.handoff.settle()
    assert (h.accepted(), h.dispatcher.enqueued) == ({}, [])


def test_a_success_tells_the_outage_backoff_the_broker_is_up() -> None:
    h = Handing()
    h.outage.failed(PublishError("down"))
    h.outage.retry_at = None  # its delay is over: the next batch tries
    h.take({A0: range(0, 2)})
    h.handoff.settle()
    assert h.outage.failures == 0


def test_a_refused_record_holds_its_partition_in_this_batch_and_the_next() -> None:
    h = Handing()
    h.dispatcher.refuse = [Refusal("a", 0, 4, "key", "fifo", 4)]
    h.take({A0: range(0, 10), A1: range(0, 3)})
    h.dispatcher.refuse = []
    h.take({A0: range(10, 12), A1: range(3, 5)})
    assert h.accepted() == {A0: 4, A1: 3}
    assert h.seeks == [(A0, 4)]
    h.handoff.settle()
    assert h.accepted() == {A0: 4, A1: 5}  # a[0] 10-11 dropped: they come again after 4-9
    assert ("a", 0, 10) not in h.dispatcher.enqueued


def test_no_message_template_settles_the_batch_in_flight_then_rewinds_this_one() -> None:
    h = Handing()
    h.take({A0: range(0, 5)})
    h.dispatcher.no_template = True
    h.take({A0: range(5, 8), A1: range(0, 2)})
    assert h.accepted() == {A0: 5}
    assert sorted(h.seeks) == [(A0, 5), (A1, 0)]
    assert h.outage.down
    assert h.seen.failed == [5]


def test_undecodable_records_are_dead_lettered_before_their_batch_is_enqueued() -> None:
    h = Handing()
    h.not_json(A0, [2, 3])
    h.take({A0: range(0, 5)})
    assert [dl.record.offset for dl in h.producer.written] == [2, 3]
    h.handoff.settle()
    assert h.accepted() == {A0: 5}
    # Without a task message, the script only moves their partition's watermark past them.
    assert h.dispatcher.sent == [(0, True), (1, True), (2, False), (3, False), (4, True)]


def test_a_dead_letter_not_written_fails_its_batch_like_an_enqueue() -> None:
    h = Handing(Producer(DeadLetterError("KafkaTimeoutError"), fail_at=1))
    h.not_json(A0, [2, 3])
    h.take({A0: range(0, 5)})
    assert [dl.record.offset for dl in h.producer.written] == [2]
    assert h.handoff.queued() == {}
    assert h.seeks == [(A0, 0)]
    assert h.outage.down
    assert h.seen.failed == [5]
    h.handoff.settle()
    assert (h.accepted(), h.dispatcher.enqueued) == ({}, [])


def test_records_of_partitions_no_longer_assigned_are_left_out() -> None:
    h = Handing()
    h.assignment.revoke([A1])
    h.take({A0: range(0, 2), A1: range(0, 2)})
    h.handoff.settle()
    assert h.dispatcher.enqueued == [("a", 0, 0), ("a", 0, 1)]


@pytest.fixture(autouse=True)
def _close_every_handoff() -> Iterable[None]:
    yield
    while MADE:
        MADE.pop().handoff.close()  # its publisher thread
