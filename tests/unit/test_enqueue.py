"""The enqueue script's KEYS and ARGV as one batch builds them, and its refusals read back
(bridge/backends/redis/lua/enqueue.lua documents the layout; test_lua_scripts runs it)."""

from __future__ import annotations

import pytest

from bridge.backends.redis.enqueue import EnqueueBatch, Message, Ordered
from bridge.hooks import Refusal

FIFO, FIFO2 = "bridge:g:ordered:o:k:YQ==", "bridge:g:ordered:o:k:Yg=="


def batch() -> EnqueueBatch:
    """Two partitions of ``a`` (dead-lettered records, two queues), two keys of ``o``."""
    b = EnqueueBatch("g", None)
    for m in (
        Message("a", 0, 5, "q1", b"m5"),
        Message("a", 1, 9, None, None),  # dead-lettered by the bridge: advance only
        Message("a", 0, 6, "q2", b"m6"),
        Message("o", 0, 3, "q1", b"e3", Ordered(FIFO, 10, 100)),
        Message("o", 0, 4, "q1", b"e4", Ordered(FIFO2, 10, 100)),
        Message("a", 0, 7, "q1", b"m7"),
        Message("a", 1, 10, "q1", None),  # no payload: advance only, whatever the queue
    ):
        b.add(m)
    return b


def test_keys_are_watermarks_waiting_counters_heads_queues_fifos() -> None:
    assert batch().keys() == [
        "bridge:g:published:a:0", "bridge:g:published:a:1", "bridge:g:published:o:0",
        "bridge:g:ordered:waiting:a:0", "bridge:g:ordered:waiting:a:1",
        "bridge:g:ordered:waiting:o:0",
        "bridge:g:ordered:heads",
        "q1", "q2",
        FIFO, FIFO2,
    ]  # fmt: skip


def test_args_are_counts_strict_flags_then_seven_per_record() -> None:
    assert batch().args(ttl_s=60, head_deadline_ms=1234) == [
        3, 60, 2, 1234,  # partitions, watermark TTL, queues, head stall deadline
        0, 0, 0,  # no partition refuses what is below its watermark (no topic ids)
        1, 5, 1, 1, 0, 0, b"m5",
        2, 9, 0, 0, 0, 0, b"",
        1, 6, 1, 2, 0, 0, b"m6",
        3, 3, 2, 1, 10, 100, b"e3",
        3, 4, 2, 2, 10, 100, b"e4",
        1, 7, 1, 1, 0, 0, b"m7",
        2, 10, 0, 0, 0, 0, b"",
    ]  # fmt: skip


def test_refusals_name_the_limit_and_the_key_to_watch() -> None:
    b = batch()
    unverified, full_key, full_partition = [1, 6, 3, 0], [3, 4, 1, 2], [3, 3, 2, 1]
    assert b.refusals([*unverified, *full_key, *full_partition]) == (
        Refusal("a", 0, 6, "watermark", "bridge:g:published:a:0", 1),
        Refusal("o", 0, 4, "key", FIFO2, 10),
        Refusal("o", 0, 3, "partition", "bridge:g:ordered:waiting:o:0", 100),
    )
    assert b.refusals([]) == ()
    with pytest.raises(ValueError, match="zip"):  # a reply not in fours: the script changed
        b.refusals([1, 6, 3])
