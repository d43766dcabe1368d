"""Undecodable records (bridge/consumer/undecodable.py) without Kafka or Redis: what their dead
letters say, how each fate is logged, counted and reported, and how the loop goes past a record
batch kafka-python cannot decode (a fake producer, store, Redis client and consumer)."""

from __future__ import annotations

import logging
import threading
from dataclasses import replace
from typing import Any

import pytest
import redis
from kafka import TopicPartition

from bridge.backends.kafka.dead_letters import DeadLetterOffice
from bridge.consumer.assignment import Assignment
from bridge.consumer.batches import find
from bridge.consumer.pauses import Outage
from bridge.consumer.pipeline import Undecodable
from bridge.consumer.undecodable import (
    BadBatches,
    UndecodableLetters,
    placeholder,
    undecodable_letter,
)
from bridge.deadletter import DeadLetter
from bridge.errors import (
    DeadLetterError,
    DeadLetterRefusedError,
    PublishError,
    UndecodableBatchError,
    UndecodableRecordError,
)
from bridge.failures import Reason
from bridge.hooks import BridgeHooks
from bridge.offsets import Partition
from bridge.record import Record, TimestampType
from bridge.routing import Route, Router
from tests.unit.fakes import FakeConsumer
from tests.unit.test_batches import TP, failure, fetched, three_batches
from tests.unit.test_dead_letter_office import Store

LOGGER = "bridge.consumer.undecodable"
ROUTE = Route("orders", "shop.handle", "celery", False, "json", "orders.shop.dlt")
COUNTED = Route("orders", "shop.handle", "celery", False, "json", "orders.shop.dlt",
                breaker_window_s=60)  # fmt: skip
RECORD = Record("orders", 3, 12, 1_700_000_000_000, b"k", b"{not json", (), "json")
NOT_JSON = UndecodableRecordError("value is not JSON")


class Producer:
    """Writes every dead letter at ``(0, n)``; from the ``fail_at``-th on, raises ``error``."""

    def __init__(self, error: Exception | None = None, fail_at: int = 0) -> None:
        self.error, self.fail_at = error, fail_at
        self.written: list[DeadLetter] = []

    def write(self, dl: DeadLetter) -> tuple[int, int]:
        if self.error is not None and len(self.written) >= self.fail_at:
            raise self.error
        self.written.append(dl)
        return 0, len(self.written) - 1


class Pipeline:
    def __init__(self, client: Client) -> None:
        self._client = client

    def hincrby(self, key: str, field: str, amount: int) -> None:
        self._client.calls.append(("hincrby", key, field.split(":")[0], amount))

    def expire(self, key: str, seconds: int) -> None:
        self._client.calls.append(("expire", key, seconds))

    def execute(self) -> None:
        pass


class Client:
    """The Redis client the flood breakers' counts go to."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def pipeline(self, transaction: bool) -> Pipeline:
        return Pipeline(self)


class Seen(BridgeHooks):
    def __init__(self) -> None:
        self.dead: list[tuple[str, str, bool]] = []
        self.accepted: list[dict[Partition, tuple[int, int]]] = []

    def after_dead_letter(self, topic: str, reason: str, deferred: bool) -> None:
        self.dead.append((topic, reason, deferred))

    def after_accept(self, offsets: Any) -> None:
        self.accepted.append(dict(offsets))


class Letters:
    """UndecodableLetters with a fake producer, store, Redis client and hooks."""

    def __init__(self, producer: Producer, store: Store | None = None, route: Route = ROUTE):
        self.producer, self.store = producer, store or Store()
        self.client, self.seen = Client(), Seen()
        office = DeadLetterOffice(producer, self.store)  # type: ignore[arg-type]
        self.letters = UndecodableLetters("shop", Router([route]), office, self.client,  # type: ignore[arg-type]
                                          self.seen)  # fmt: skip


def test_the_dead_letter_of_an_undecodable_record() -> None:
    dl = undecodable_letter(ROUTE, RECORD, NOT_JSON, "shop")
    assert (dl.record, dl.group_id, dl.dlt_topic, dl.task) == (
        RECORD,
        "shop",
        "orders.shop.dlt",
        "shop.handle",
    )
    assert (dl.reason, dl.attempts, dl.task_id) == (Reason.UNDECODABLE, 0, "shop:orders:3:12")
    assert (dl.error.fqcn, dl.error.message) == (
        "bridge.errors.UndecodableRecordError",
        "value is not JSON",
    )
    assert dl.first_failure_at == dl.dead_lettered_at
    assert dl.ordered is False


def test_a_record_of_a_batch_that_cannot_be_decoded_is_where_it_was() -> None:
    record = placeholder("orders", 3, 41, ROUTE)
    assert (record.topic, record.partition, record.offset) == ("orders", 3, 41)
    assert (record.key, record.raw_value, record.headers) == (None, b"", ())
    assert (record.timestamp_ms, record.timestamp_type) == (-1, TimestampType.NO_TIMESTAMP_TYPE)
    assert record.value_format == "json"


def test_a_written_dead_letter_is_logged_counted_and_reported(
    caplog: pytest.LogCaptureFixture,
) -> None:
    made = Letters(Producer(), route=COUNTED)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        made.letters.send(COUNTED, RECORD, NOT_JSON)
    [dl] = made.producer.written
    assert dl.reason is Reason.UNDECODABLE
    [line] = [r for r in caplog.records if r.name == LOGGER]
    assert line.levelno == logging.WARNING
    assert line.getMessage() == (
        f"undecodable {RECORD!r} dead-lettered to orders.shop.dlt: value is not JSON"
    )
    assert (line.topic, line.partition, line.offset, line.task_id) == (  # type: ignore[attr-defined]
        "orders",
        3,
        12,
        "shop:orders:3:12",
    )
    assert made.client.calls == [
        ("hincrby", "bridge:shop:outcomes:orders", "d", 1),
        ("expire", "bridge:shop:outcomes:orders", 120),
    ]
    assert made.seen.dead == [("orders", "undecodable", False)]
    assert made.store.calls == []


def test_without_a_breaker_nothing_is_counted() -> None:
    made = Letters(Producer())
    made.letters.send(ROUTE, RECORD, NOT_JSON)
    assert made.client.calls == []
    assert made.seen.dead == [("orders", "undecodable", False)]


def test_a_dead_letter_kafka_refuses_is_parked_and_logged_critical(
    caplog: pytest.LogCaptureFixture,
) -> None:
    made = Letters(Producer(DeadLetterRefusedError("MessageSizeTooLargeError")))
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        made.letters.send(ROUTE, RECORD, NOT_JSON)
    assert [c[0] for c in made.store.calls] == ["park"]
    [line] = [r for r in caplog.records if r.name == LOGGER]
    assert line.levelno == logging.CRITICAL
    assert line.getMessage() == (
        f"undecodable {RECORD!r}: Kafka refuses its dead letter, parked in Redis: "
        "MessageSizeTooLargeError"
    )
    assert made.seen.dead == [("orders", "undecodable", False)]


@pytest.mark.parametrize(
    ("error", "park_error", "says"),
    [
        (DeadLetterError("KafkaTimeoutError"), None, "not dead-lettered: KafkaTimeoutError"),
        (DeadLetterRefusedError("too large"), redis.ConnectionError("down"), "not parked"),
    ],
)
def test_a_dead_letter_neither_written_nor_parked_is_a_failed_publish(
    error: Exception, park_error: Exception | None, says: str
) -> None:
    made = Letters(Producer(error), Store(park_error), route=COUNTED)
    with pytest.raises(PublishError, match=says) as raised:
        made.letters.send(COUNTED, RECORD, NOT_JSON)
    assert isinstance(raised.value.__cause__, type(park_error or error))
    assert made.client.calls == []  # neither counted nor reported: it comes again
    assert made.seen.dead == []


def test_a_batch_s_undecodable_records_go_in_order_and_stop_at_the_first_failure() -> None:
    made = Letters(Producer(DeadLetterError("down"), fail_at=2))
    pending = [
        Undecodable(Partition("orders", 3), replace(RECORD, offset=o), NOT_JSON)
        for o in (4, 5, 6, 7)
    ]
    with pytest.raises(PublishError):
        made.letters.send_all(pending)
    assert [dl.record.offset for dl in made.producer.written] == [4, 5]
    assert len(made.seen.dead) == 2


# -- a record batch kafka-python cannot decode -------------------------------------------------


class Skipping:
    """BadBatches on partition ``TP`` (assigned), the consumer at the damaged batch (10..19)."""

    def __init__(self, producer: Producer, max_records: int = 100) -> None:
        self.made = Letters(producer)
        self.assignment, self.lock = Assignment(), threading.Lock()
        self.assignment.assign([TP])
        self.outage = Outage(1000, 1000)
        self.consumer = FakeConsumer({TP: 30})
        self.consumer.position_of[TP] = 10
        self.settled = 0
        self.on_settle: Any = None
        router = Router([ROUTE])
        self.skipping = BadBatches(self.made.letters, router, self.assignment, self.lock,
                                   self.outage, self.made.seen, settle=self._settle,
                                   max_records=max_records)  # fmt: skip
        self.records = fetched(three_batches("corrupt data"))
        self.records.take(100)  # the batch before it
        self.error = failure(self.records)

    def _settle(self) -> None:
        self.settled += 1
        if self.on_settle is not None:
            self.on_settle()

    def skip(self) -> None:
        self.skipping.skip(self.consumer, self.error)

    @property
    def written(self) -> list[int]:
        return [dl.record.offset for dl in self.made.producer.written]


def test_a_batch_that_cannot_be_decoded_is_dead_lettered_accepted_and_gone_past(
    caplog: pytest.LogCaptureFixture,
) -> None:
    s = Skipping(Producer())
    with caplog.at_level(logging.ERROR, logger=LOGGER):
        s.skip()
    assert s.settled == 1
    assert not s.records  # discarded: the next poll fetches the partition afresh
    assert s.written == list(range(10, 20))
    dl = s.made.producer.written[0]
    assert dl.record == placeholder("orders", 3, 10, ROUTE)
    assert dl.error.fqcn == "bridge.errors.UndecodableBatchError"
    assert dl.error.message.startswith(
        "orders[3]@10..19 (zstd): Kafka's client cannot decode this record batch: "
    )
    assert s.assignment.to_commit() == {Partition("orders", 3): 20}
    assert s.made.seen.accepted == [{Partition("orders", 3): (10, 20)}]
    assert s.consumer.position_of[TP] == 20
    [line] = [r for r in caplog.records if r.name == LOGGER]
    assert line.getMessage().startswith(
        "orders[3]@10..19 (zstd): Kafka's client cannot decode the record batch ("
    )
    assert line.getMessage().endswith(
        "): dead-lettering offsets 10..19 with their coordinates only"
    )
    assert (line.topic, line.partition, line.offset) == ("orders", 3, 10)  # type: ignore[attr-defined]


def test_at_most_max_records_offsets_at_a_time() -> None:
    s = Skipping(Producer(), max_records=4)
    s.skip()
    assert s.written == [10, 11, 12, 13]
    assert s.consumer.position_of[TP] == 14


def test_a_failed_write_stops_there_and_the_broker_is_deemed_down() -> None:
    s = Skipping(Producer(DeadLetterError("KafkaTimeoutError"), fail_at=3))
    s.skip()
    assert s.written == [10, 11, 12]
    assert s.assignment.to_commit() == {Partition("orders", 3): 13}
    assert s.made.seen.accepted == [{Partition("orders", 3): (10, 13)}]
    assert s.consumer.position_of[TP] == 13
    assert s.outage.down


def test_nothing_written_nothing_accepted_and_no_seek() -> None:
    s = Skipping(Producer(DeadLetterError("KafkaTimeoutError")))
    s.skip()
    assert s.written == []
    assert s.made.seen.accepted == []
    assert s.consumer.position_of[TP] == 10
    assert s.outage.down


def test_a_batch_of_a_partition_no_longer_assigned_is_left_alone() -> None:
    s = Skipping(Producer())
    s.assignment.revoke([TP])
    s.skip()
    assert (s.settled, s.written) == (0, [])
    assert not s.records  # discarded all the same


@pytest.mark.parametrize("settling", ["rewinds", "revokes", "fails"])
def test_after_the_batch_in_flight_settles_only_the_same_position_goes_on(settling: str) -> None:
    s = Skipping(Producer())

    def settle() -> None:
        if settling == "rewinds":  # a refused or failed enqueue sent the partition back
            s.consumer.position_of[TP] = 7
        elif settling == "revokes":
            s.assignment.revoke([TP])
        else:
            s.outage.failed(PublishError("Celery broker unreachable"))

    s.on_settle = settle
    s.skip()
    assert (s.settled, s.written, s.made.seen.accepted) == (1, [], [])


def test_an_error_not_raised_decoding_a_batch_is_raised_again() -> None:
    s = Skipping(Producer())
    s.error = RuntimeError("a bug")
    with pytest.raises(RuntimeError, match="a bug"):
        s.skip()
    assert (s.settled, s.written) == (0, [])


def test_the_error_dead_lettered_says_what_kafka_python_raised() -> None:
    s = Skipping(Producer())
    bad = find(s.error)
    assert bad is not None
    s.skip()
    error = s.made.producer.written[0].error
    assert error.fqcn == f"bridge.errors.{UndecodableBatchError.__name__}"
    assert repr(s.error) in error.message
    assert bad.tp == TopicPartition("orders", 3)
