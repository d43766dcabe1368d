"""The batch in flight and the one polled after it (pure: no Kafka, no Redis)."""

from __future__ import annotations

from typing import NamedTuple

from bridge.dispatch import Message, Ordered
from bridge.pipeline import Batch, Undecodable, rewind_points


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
