"""The assignment's state machine (bridge/consumer/assignment.py), without Kafka: generations,
accepting a batch up to its refusals, holds, rewinds, pending commits, revokes."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import pytest
from kafka import TopicPartition

from bridge.backends.redis.enqueue import Batched, Message
from bridge.consumer.assignment import Assignment
from bridge.consumer.backpressure import Full
from bridge.hooks import Refusal
from bridge.offsets import Partition

A0, A1, B0 = Partition("a", 0), Partition("a", 1), Partition("b", 0)


class Rec(NamedTuple):
    topic: str
    partition: int
    offset: int


def recs(tp: Partition, offsets: range) -> list[Rec]:
    return [Rec(tp.topic, tp.partition, o) for o in offsets]


def key_full(tp: Partition, offset: int, limit: int = 4) -> Refusal:
    return Refusal(tp.topic, tp.partition, offset, "key", f"fifo:{tp.topic}", limit)


Step = Callable[[Assignment], object]

# Each case: steps on a fresh assignment, then what it would commit and which partitions it holds.
CASES: dict[str, tuple[list[Step], dict[Partition, int], set[Partition]]] = {
    "a batch of the current generation is accepted": (
        [lambda a: a.assign([A0]), lambda a: a.accept_batch(recs(A0, range(10, 15)), (), 1)],
        {A0: 15},
        set(),
    ),
    "a batch of a later generation is accepted on a partition assigned before": (
        [
            lambda a: a.assign([A0]),
            lambda a: a.assign([B0]),
            lambda a: a.accept_batch(recs(A0, range(3)) + recs(B0, range(2)), (), 2),
        ],
        {A0: 3, B0: 2},
        set(),
    ),
    "a batch polled before a revoke and assign again is not accepted there": (
        [
            lambda a: a.assign([A0]),
            lambda a: a.revoke([A0]),
            lambda a: a.assign([A0]),
            lambda a: a.accept_batch(recs(A0, range(10, 15)), (), 1),
        ],
        {},
        set(),
    ),
    "the next batch then starts over from the committed offset": (
        [
            lambda a: a.assign([A0]),
            lambda a: a.accept_batch(recs(A0, range(10, 15)), (), 1),
            lambda a: a.revoke([A0]),
            lambda a: a.assign([A0]),
            lambda a: a.accept_batch(recs(A0, range(0, 3)), (), 2),
        ],
        {A0: 3},
        set(),
    ),
    "a batch on a revoked partition is not accepted": (
        [
            lambda a: a.assign([A0, A1]),
            lambda a: a.revoke([A1]),
            lambda a: a.accept_batch(recs(A0, range(2)) + recs(A1, range(2)), (), 1),
        ],
        {A0: 2},
        set(),
    ),
    "a refusal stops its partition there and holds it": (
        [
            lambda a: a.assign([A0, B0]),
            lambda a: a.accept_batch(recs(A0, range(5)) + recs(B0, range(3)), [key_full(A0, 2)], 1),
        ],
        {A0: 2, B0: 3},
        {A0},
    ),
    "a refusal at the first record accepts nothing there": (
        [
            lambda a: a.assign([A0]),
            lambda a: a.accept_batch(recs(A0, range(5)), [key_full(A0, 0)], 1),
        ],
        {},
        {A0},
    ),
    "a refusal on a partition reassigned since does not hold it": (
        [
            lambda a: a.assign([A0]),
            lambda a: a.revoke([A0]),
            lambda a: a.assign([A0]),
            lambda a: a.accept_batch(recs(A0, range(5)), [key_full(A0, 2)], 1),
        ],
        {},
        set(),
    ),
    "a revoke forgets the hold": (
        [
            lambda a: a.assign([A0]),
            lambda a: a.accept_batch(recs(A0, range(5)), [key_full(A0, 2)], 1),
            lambda a: a.revoke([A0]),
        ],
        {},
        set(),
    ),
    "what was committed is not committed again": (
        [
            lambda a: a.assign([A0, B0]),
            lambda a: a.accept_batch(recs(A0, range(5)) + recs(B0, range(3)), (), 1),
            lambda a: a.committed({A0: 5}),
        ],
        {B0: 3},
        set(),
    ),
    "one record accepted on its own": (
        [lambda a: a.assign([A0]), lambda a: a.accept(A0, 7), lambda a: a.accept(A0, 8)],
        {A0: 9},
        set(),
    ),
    "a partition accepted on but never assigned is not committed": (
        [lambda a: a.assign([A0]), lambda a: a.accept(B0, 7)],
        {},
        set(),
    ),
}


@pytest.mark.parametrize(("steps", "to_commit", "held"), CASES.values(), ids=CASES.keys())
def test_the_assignment_state_machine(
    steps: list[Step], to_commit: dict[Partition, int], held: set[Partition]
) -> None:
    assignment = Assignment()
    for step in steps:
        step(assignment)
    assert assignment.to_commit() == to_commit
    assert set(assignment.held) == held


def test_each_assignment_opens_a_generation_and_partitions_are_one_shape() -> None:
    assignment = Assignment()
    assert assignment.generation == 0
    assignment.assign([TopicPartition("b", 0), TopicPartition("a", 1)])
    assignment.assign([TopicPartition("a", 0)])
    assert assignment.generation == 2
    assert assignment.partitions == [A0, A1, B0]
    assert all(type(tp) is Partition for tp in assignment.partitions)
    assert assignment.topics == {"a", "b"}
    assert TopicPartition("a", 1) in assignment
    assert A1 in assignment
    assert Partition("c", 0) not in assignment


def test_accepting_a_batch_returns_its_spans_and_the_holding_refusals() -> None:
    assignment = Assignment()
    assignment.assign([A0, A1, B0])
    refused = [key_full(A0, 3), key_full(B0, 0)]
    spans, held = assignment.accept_batch(
        recs(A0, range(1, 6)) + recs(A1, range(4, 6)) + recs(B0, range(2)), refused, 1
    )
    assert spans == {A0: (1, 3), A1: (4, 6)}
    assert held == refused
    assert assignment.held[A0] == Full("fifo:a", "key", 3)  # resumes a quarter below 4


def test_accepting_backwards_in_the_same_assignment_is_an_error() -> None:
    assignment = Assignment()
    assignment.assign([A0])
    assignment.accept_batch(recs(A0, range(5)), (), 1)
    with pytest.raises(ValueError, match=r"a\[0\]@3 accepted out of order"):
        assignment.accept_batch(recs(A0, range(3, 4)), (), 1)


def test_a_revoke_hands_back_what_its_partitions_have_not_committed() -> None:
    assignment = Assignment()
    assignment.assign([A0, A1, B0])
    assignment.accept_batch(recs(A0, range(5)) + recs(A1, range(2)) + recs(B0, range(3)), (), 1)
    assignment.committed({A1: 2})
    assert assignment.revoke([TopicPartition("a", 0), TopicPartition("a", 1)]) == {A0: 5}
    assert assignment.partitions == [B0]
    assert assignment.offsets_of(A0) == (None, None)  # forgotten
    assert assignment.revoke([Partition("c", 0)]) == {}  # never assigned: nothing


def test_offsets_of_a_partition_are_its_accepted_and_committed_next_offsets() -> None:
    assignment = Assignment()
    assignment.assign([A0])
    assert assignment.offsets_of(A0) == (None, None)
    assignment.accept_batch(recs(A0, range(10, 15)), (), 1)
    assert assignment.offsets_of(A0) == (15, 10)  # committed: where consumption started
    assignment.committed({A0: 15})
    assert assignment.offsets_of(TopicPartition("a", 0)) == (15, 15)


def test_a_rewind_goes_back_on_the_partitions_still_assigned() -> None:
    assignment = Assignment()
    assignment.assign([A0, B0])
    assignment.revoke([B0])
    assert assignment.rewind({A0: 3, B0: 7, A1: 1}) == {A0: 3}


def test_holds_are_released_once_what_they_watch_drains() -> None:
    assignment = Assignment()
    assignment.assign([A0, B0])
    assignment.accept_batch(recs(A0, range(2)) + recs(B0, range(2)),
                            [key_full(A0, 1, limit=8), key_full(B0, 0, limit=8)], 1)  # fmt: skip
    assert assignment.release({"fifo:a": 7, "fifo:b": 6}) == {B0}  # resumes at 6
    assert set(assignment.held) == {A0}
    assert assignment.release({}) == {A0}  # nothing counted: drained
    assert assignment.held == {}


def test_a_batch_message_accepts_the_span_of_its_records() -> None:
    assignment = Assignment()
    assignment.assign([A0])
    batch = Message("a", 0, 14, "q", b"m", batch=Batched(10, 5, lambda mark: batch))
    spans, _ = assignment.accept_batch([batch, Message("a", 0, 15, "q", b"m")], [], 1)
    assert spans == {A0: (10, 16)}
    assert assignment.offsets_of(A0)[0] == 16
