"""Which routed queues a worker consumes, and when to warn (bridge.consumer.queue_consumers,
pure)."""

from __future__ import annotations

from bridge.backends.redis.fetch import processing_key
from bridge.consumer.queue_consumers import GRACE_S, REPEAT_S, NoConsumerAlarm, Notice, consumers_of

A, B = "a" * 32, "b" * 32


def test_each_channel_counts_once_per_queue_from_its_processing_lists() -> None:
    lists: list[bytes | str] = [
        processing_key(A, "orders"),
        processing_key(A, "orders\x06\x163").encode(),  # a priority key of the same queue
        processing_key(B, "orders"),
        processing_key(B, "payments"),
        "not-a-processing-list",
        b"\xff\xfe",
    ]
    assert consumers_of(lists, ["orders", "payments", "nobody"]) == {
        "orders": 2, "payments": 1, "nobody": 0,
    }  # fmt: skip


def test_a_queue_without_a_consumer_is_warned_once_after_the_grace_then_every_repeat() -> None:
    alarm = NoConsumerAlarm()
    assert alarm.update({"q": 0, "ok": 1}, 0.0) == []
    assert alarm.update({"q": 0}, GRACE_S - 1) == []  # a worker restarting: not yet
    assert alarm.update({"q": 0}, GRACE_S) == [Notice("started", "q", GRACE_S)]
    assert alarm.update({"q": 0}, GRACE_S + REPEAT_S - 1) == []  # no flood
    assert alarm.update({"q": 0}, GRACE_S + REPEAT_S) == [
        Notice("ongoing", "q", GRACE_S + REPEAT_S)
    ]
    assert alarm.warned == {"q"}
    assert alarm.update({"q": 1}, 100.0) == [Notice("ended", "q", 100.0)]
    assert alarm.update({"q": 1}, 101.0) == []
    assert alarm.warned == set()


def test_a_gap_shorter_than_the_grace_logs_nothing() -> None:
    alarm = NoConsumerAlarm()
    for now_s in (0.0, 5.0):
        assert alarm.update({"q": 0}, now_s) == []
    assert alarm.update({"q": 1}, 8.0) == []  # the restarted worker is back: no "ended" either
    assert alarm.update({"q": 0}, 9.0) == []
    assert alarm.update({"q": 0}, 9.0 + GRACE_S) == [Notice("started", "q", GRACE_S)]
