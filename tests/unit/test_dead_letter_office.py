"""The dead-letter office's decisions, without Kafka or Redis: what each sender's fallback does
when Kafka writes, refuses for good, or cannot be reached (a fake producer and store)."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
import redis

from bridge.backends.kafka.dead_letters import (
    DEFER_MS,
    DeadLetterOffice,
    DeadLetterProducer,
    Fate,
    resend_delay_ms,
)
from bridge.deadletter import DeadLetter, to_dict
from bridge.errors import DeadLetterError, DeadLetterRefusedError
from bridge.settings import DeadLetterSettings, KafkaSettings
from tests.unit.test_deadletter_headers import dead_letter

NOW_S = 1_800_000_000.0
NOW_MS = 1_800_000_000_000


class Producer:
    """Writes at ``(3, 41)``, or raises ``error``."""

    def __init__(self, error: Exception | None = None) -> None:
        self.error = error
        self.written: list[DeadLetter] = []

    def write(self, dl: DeadLetter) -> tuple[int, int]:
        if self.error is not None:
            raise self.error
        self.written.append(dl)
        return 3, 41


class Store:
    """Records what the office asks of the dead-letter store; ``park`` raises ``park_error``."""

    def __init__(self, park_error: Exception | None = None) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.park_error = park_error

    def defer(self, data: dict[str, Any], due_ms: int, pipe: Any = None) -> None:
        self.calls.append(("defer", data, due_ms, pipe))

    def written(self, data: dict[str, Any]) -> None:
        self.calls.append(("written", data))

    def retry_later(self, old: dict[str, Any], new: dict[str, Any], due_ms: int) -> None:
        self.calls.append(("retry_later", old, new, due_ms))

    def park(self, data: dict[str, Any]) -> None:
        if self.park_error is not None:
            raise self.park_error
        self.calls.append(("park", data))


REFUSED = DeadLetterRefusedError("MessageSizeTooLargeError")
UNREACHABLE = DeadLetterError("KafkaTimeoutError: retries outlasted")


def office(producer: Producer | None, store: Store) -> DeadLetterOffice:
    return DeadLetterOffice(producer, store, clock=lambda: NOW_S)  # type: ignore[arg-type]


@pytest.mark.parametrize("send", ["send", "send_or_defer"])
def test_a_written_dead_letter_says_where_and_leaves_redis_alone(send: str) -> None:
    producer, store, dl = Producer(), Store(), dead_letter()
    posted = getattr(office(producer, store), send)(dl)
    assert (posted.fate, posted.dlt_partition, posted.dlt_offset) == (Fate.WRITTEN, 3, 41)
    assert posted.letter is dl
    assert posted.error is None
    assert producer.written == [dl]
    assert store.calls == []


@pytest.mark.parametrize("send", ["send", "send_or_defer"])
def test_a_dead_letter_kafka_refuses_for_good_is_parked_not_deferred(send: str) -> None:
    store, dl = Store(), dead_letter()
    posted = getattr(office(Producer(REFUSED), store), send)(dl)
    assert (posted.fate, posted.error) == (Fate.PARKED, REFUSED)
    assert store.calls == [("park", to_dict(dl))]


def test_send_raises_when_kafka_is_unreachable_and_keeps_nothing_the_sender_still_has() -> None:
    store = Store()
    with pytest.raises(DeadLetterError, match="retries outlasted"):
        office(Producer(UNREACHABLE), store).send(dead_letter())
    assert store.calls == []


def test_a_refused_dead_letter_redis_cannot_park_is_an_error_not_a_loss() -> None:
    store = Store(park_error=redis.ConnectionError("Redis down"))
    with pytest.raises(redis.ConnectionError):
        office(Producer(REFUSED), store).send(dead_letter())


def test_send_or_defer_keeps_what_kafka_did_not_take_for_the_bridge_in_a_second() -> None:
    store, dl = Store(), dead_letter(ordered=True)
    posted = office(Producer(UNREACHABLE), store).send_or_defer(dl)
    assert (posted.fate, posted.error, posted.retry_in_ms) == (Fate.DEFERRED, UNREACHABLE, 1000)
    assert store.calls == [("defer", to_dict(dl), NOW_MS + DEFER_MS, None)]


def test_an_unexpected_error_is_neither_deferred_nor_parked() -> None:
    store = Store()
    with pytest.raises(TypeError):
        office(Producer(TypeError("a bug")), store).send_or_defer(dead_letter())
    assert store.calls == []


def test_defer_tries_no_kafka_and_joins_the_callers_transaction() -> None:
    store, dl, pipe = Store(), dead_letter(), object()
    posted = office(None, store).defer(dl, pipe)  # type: ignore[arg-type]
    assert posted.fate is Fate.DEFERRED
    assert store.calls == [("defer", to_dict(dl), NOW_MS, pipe)]


def test_an_office_without_producer_refuses_to_send() -> None:
    store = Store()
    with pytest.raises(RuntimeError, match="only defers"):
        office(None, store).send_or_defer(dead_letter())
    assert store.calls == []


def pending(write_attempts: int) -> dict[str, Any]:
    return to_dict(dead_letter(ordered=True), write_attempts=write_attempts)


def test_resend_forgets_the_pending_letter_it_wrote_as_stored() -> None:
    producer, store, data = Producer(), Store(), pending(2)
    posted = office(producer, store).resend(data)
    assert posted.fate is Fate.WRITTEN
    assert posted.letter.ordered
    assert producer.written == [posted.letter]
    assert store.calls == [("written", data)]


def test_resend_parks_the_pending_letter_as_stored() -> None:
    store, data = Store(), pending(2)  # write_attempts stays: the member to move is this one
    posted = office(Producer(REFUSED), store).resend(data)
    assert (posted.fate, posted.error) == (Fate.PARKED, REFUSED)
    assert store.calls == [("park", data)]


@pytest.mark.parametrize(
    ("attempts", "delay_ms"), [(0, 1000), (1, 2000), (4, 16_000), (5, 32_000), (6, 60_000)]
)
def test_resend_backs_off_exponentially_up_to_a_minute(attempts: int, delay_ms: int) -> None:
    store, data = Store(), pending(attempts)
    posted = office(Producer(UNREACHABLE), store).resend(data)
    assert (posted.fate, posted.write_attempts, posted.retry_in_ms) == (
        Fate.DEFERRED, attempts + 1, delay_ms,
    )  # fmt: skip
    assert store.calls == [
        ("retry_later", data, {**data, "write_attempts": attempts + 1}, NOW_MS + delay_ms)
    ]


def test_resend_delays_double_from_one_second_to_a_minute() -> None:
    assert [resend_delay_ms(n) for n in range(1, 9)] == [
        1000, 2000, 4000, 8000, 16_000, 32_000, 60_000, 60_000,
    ]  # fmt: skip


def test_a_pending_letter_of_an_older_version_without_write_attempts_is_resent() -> None:
    store, data = Store(), pending(0)
    del data["write_attempts"]
    posted = office(Producer(UNREACHABLE), store).resend(data)
    assert posted.write_attempts == 1
    assert store.calls[0][2]["write_attempts"] == 1


class OneAtATime:
    """A Kafka producer that counts how many were made."""

    made = 0

    def __init__(self, **configs: Any) -> None:
        type(self).made += 1
        time.sleep(0.01)  # not a wait for a result: it widens the window of a racing thread

    def send(self, topic: str, **record: Any) -> OneAtATime:
        return self

    is_done = True

    def get(self, timeout: float) -> Any:
        return type("Meta", (), {"partition": 0, "offset": 7})()


def test_threads_that_write_at_once_share_one_kafka_producer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("bridge.backends.kafka.send.KafkaProducer", OneAtATime)
    OneAtATime.made = 0
    kafka = KafkaSettings(bootstrap_servers="127.0.0.1:1", group_id="unit")
    producer = DeadLetterProducer(kafka, DeadLetterSettings())
    assert OneAtATime.made == 0  # made on the first write, not before
    start, written = threading.Barrier(8), []

    def write() -> None:
        start.wait()
        written.append(producer.write(dead_letter()))

    threads = [threading.Thread(target=write) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert written == [(0, 7)] * 8
    assert OneAtATime.made == 1
