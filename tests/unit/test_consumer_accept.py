"""A batch enqueued across a rebalance: accepted only on partitions held since it was polled."""

from __future__ import annotations

import threading
from types import SimpleNamespace
from typing import Any

from kafka import TopicPartition

from bridge.backends.redis.enqueue import Message
from bridge.consumer.backpressure import PartitionHolds
from bridge.consumer.loop import Bridge
from bridge.consumer.pipeline import Batch
from bridge.hooks import HookChain, Outcome
from bridge.offsets import OffsetTracker, Partition

TP = TopicPartition("orders", 0)


def bridge_with(assigned: dict[TopicPartition, int]) -> Any:
    """The state ``Bridge._accept`` reads: ``assigned`` maps partitions to their assignment."""
    return SimpleNamespace(
        _lock=threading.Lock(), _assigned=assigned, offsets=OffsetTracker(),
        _holds=PartitionHolds(), hooks=HookChain(), _consumer=object(),
    )  # fmt: skip


def batch(offsets: range, assignment: int) -> Batch:
    messages = [Message("orders", 0, o, "q", b"m", None) for o in offsets]
    return Batch({TP: []}, messages, assignment=assignment)


def test_a_batch_polled_in_the_current_assignment_is_accepted() -> None:
    bridge = bridge_with({TP: 1})
    Bridge._accept(bridge, batch(range(10, 15), assignment=1), Outcome(enqueued=5, skipped=0))
    assert bridge.offsets.to_commit() == {Partition("orders", 0): 15}


def test_a_batch_from_before_a_revoke_and_reassign_is_not_accepted_on_that_partition() -> None:
    # Offsets 10-14 were polled at assignment 1 and enqueued while the partition was revoked
    # and assigned again (assignment 2); the next batch starts over from the committed offset 0.
    bridge = bridge_with({TP: 2})
    Bridge._accept(bridge, batch(range(10, 15), assignment=1), Outcome(enqueued=5, skipped=0))
    assert bridge.offsets.to_commit() == {}
    Bridge._accept(bridge, batch(range(0, 3), assignment=2), Outcome(enqueued=0, skipped=3))
    assert bridge.offsets.to_commit() == {Partition("orders", 0): 3}  # not "out of order"
