"""The batch in flight and the one polled after it (pure: no Kafka, no Redis)."""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from concurrent.futures import Future
from typing import NamedTuple

import pytest

from bridge.backends.redis.enqueue import Message, Ordered
from bridge.consumer.pipeline import (
    Batch,
    InFlight,
    Published,
    Publisher,
    Undecodable,
    rewind_points,
)
from bridge.errors import PublishError
from bridge.hooks import Outcome


class Tp(NamedTuple):
    topic: str
    partition: int


class Rec(NamedTuple):
    offset: int


def batch(spans: dict[Tp, range]) -> Batch:
    b = Batch({tp: [Rec(o) for o in span] for tp, span in spans.items()})
    for tp, span in spans.items():
        b.messages += [Message(tp.topic, tp.partition, o, "q", b"m") for o in span]
    return b


A0, A1, B0 = Tp("a", 0), Tp("a", 1), Tp("b", 0)


def test_a_failed_batch_and_the_next_rewind_to_the_first_record_of_each_partition() -> None:
    failed = batch({A0: range(10, 15), A1: range(3, 5)})
    following = batch({A0: range(15, 20), B0: range(7, 9)})
    assert rewind_points(failed, following) == {A0: 10, A1: 3, B0: 7}
    assert rewind_points(failed, None) == {A0: 10, A1: 3}


def test_dropping_partitions_forgets_their_records_and_messages_only() -> None:
    following = batch({A0: range(15, 20), B0: range(7, 9)})
    following.drop({("a", 0)})
    assert list(following.records) == [B0]
    assert [(m.topic, m.offset) for m in following.messages] == [("b", 7), ("b", 8)]
    assert following.size == 2


def test_dropping_partitions_keeps_the_undecodable_records_of_the_others() -> None:
    following = batch({A0: range(15, 17), A1: range(3, 4), B0: range(7, 8)})
    error = ValueError("not JSON")
    following.undecodable = [Undecodable(tp, Rec(o), error) for tp, o in [(A0, 15), (B0, 7)]]
    following.drop({("a", 0), ("a", 1)})
    assert [(u.tp, u.record.offset) for u in following.undecodable] == [(B0, 7)]
    following.drop(set())  # nothing stopped: all stays
    assert (following.size, len(following.undecodable)) == (1, 1)


def test_clear_forgets_everything() -> None:
    following = batch({A0: range(15, 20)})
    following.clear()
    assert (following.records, following.messages, following.size) == ({}, [], 0)


def test_queued_counts_only_messages_that_go_straight_to_a_queue() -> None:
    b = batch({A0: range(3)})
    b.messages += [
        Message("a", 0, 3, None, None),  # dead-lettered by the bridge: advance only
        Message("a", 0, 4, "q", b"m", Ordered("fifo", 10, 100)),  # waits in its key's FIFO
        Message("a", 0, 5, "other", b"m"),
    ]
    assert b.queued() == {"q": 3, "other": 1}


def test_a_batch_in_flight_counts_its_messages_only_until_its_enqueue_ends() -> None:
    b = batch({A0: range(3)})
    future: Future[Published] = Future()
    flight = InFlight(b, future)
    assert flight.queued() == {"q": 3}  # not in the queue yet
    future.set_result(Published(None, None, 0.0))
    assert flight.queued() == {}  # in the queue's length now: counted there, not twice


class Enqueues:
    """A publish function for the publisher thread that notes its calls; the first call waits
    for ``go``, and ``overlap`` is set when a call starts while another is running."""

    def __init__(self) -> None:
        self.calls: list[tuple[list[int], int, Mapping[str, str | None] | None, str]] = []
        self.go, self.overlap = threading.Event(), threading.Event()
        self._running = 0

    def __call__(
        self, messages: Sequence[Message], deadline_ms: int, ids: Mapping[str, str | None] | None
    ) -> Outcome:
        if self._running:
            self.overlap.set()
        self._running += 1
        self.calls.append(([m.offset for m in messages], deadline_ms, ids, thread_name()))
        try:
            assert self.go.wait(10.0)
            if deadline_ms < 0:
                raise PublishError("redis down")
            return Outcome(enqueued=len(messages), skipped=0)
        finally:
            self._running -= 1


def thread_name() -> str:
    return threading.current_thread().name


def test_the_publisher_enqueues_one_batch_at_a_time_in_order_on_its_thread() -> None:
    enqueues = Enqueues()
    publisher = Publisher(enqueues)
    first, second = batch({A0: range(0, 3)}), batch({A0: range(3, 5)})
    first.topic_ids = {"a": "id-a"}
    in_flight = [publisher.submit(first, 250), publisher.submit(second, 500)]
    # A second enqueue beside the first would reach Redis out of order: it must not start
    # (a wrong publisher would start it at once; the right one never fails this wait).
    assert not enqueues.overlap.wait(0.2)
    enqueues.go.set()
    done = [f.result() for f in in_flight]
    publisher.close()
    assert [(d.outcome, d.error) for d in done] == [(Outcome(3, 0), None), (Outcome(2, 0), None)]
    assert all(0.0 <= d.seconds < 10.0 for d in done)
    assert [call[:3] for call in enqueues.calls] == [
        ([0, 1, 2], 250, {"a": "id-a"}), ([3, 4], 500, None),
    ]  # fmt: skip
    assert {call[3].rsplit("_", 1)[0] for call in enqueues.calls} == {"bridge-publish"}
    assert in_flight[0].batch is first


def test_close_finishes_the_batch_in_flight_and_takes_no_more() -> None:
    enqueues = Enqueues()
    publisher = Publisher(enqueues)
    in_flight = publisher.submit(batch({A0: range(1)}), -1)
    threading.Timer(0.05, enqueues.go.set).start()
    publisher.close()
    assert in_flight.future.done()
    failed = in_flight.result()
    assert (failed.outcome, str(failed.error)) == (None, "redis down")  # its error, not thrown
    assert 0.04 <= failed.seconds < 10.0  # how long it took: at least the wait
    with pytest.raises(RuntimeError, match="after shutdown"):
        publisher.submit(batch({A0: range(1)}), 1)
