"""Gathering the retries of batched routes into batches (pure: bridge.retry_batches)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from bridge.retry_batches import Gathered, RetryItem, gather
from bridge.worker.gathered import gathers


def item(offset: int, retries: int = 1, topic: str = "t", task: str = "shop.many") -> str:
    return RetryItem("q", task, topic, retries, f"g:{topic}:0:{offset}").member()


def test_a_member_names_its_item_and_back() -> None:
    one = RetryItem("q", "shop.many", "orders", 3, "g:orders:2:17")
    assert RetryItem.parse(one.member()) == one
    assert RetryItem.parse(one.member().encode()) == one


@pytest.mark.parametrize("member", ["", "a\0b", "q\0t\0topic\0x\0id", b"\xff"])
def test_what_is_not_a_member_is_a_stranger(member: str | bytes) -> None:
    batches, strangers = gather([member, item(1)], lambda _: 10)
    assert strangers == [member]
    assert [b.members for b in batches] == [(item(1),)]


def test_items_of_one_attempt_topic_and_task_go_together_up_to_the_batch_size() -> None:
    due = [item(1), item(2, retries=2), item(3), item(4, topic="u"), item(5), item(6),
           item(7, task="shop.other")]  # fmt: skip
    batches, _ = gather(due, lambda topic: 2 if topic == "t" else 10)
    assert [(b.topic, b.task, b.retries, b.members) for b in batches] == [
        ("t", "shop.many", 1, (item(1), item(3))),
        ("t", "shop.many", 2, (item(2, retries=2),)),
        ("u", "shop.many", 1, (item(4, topic="u"),)),
        ("t", "shop.many", 1, (item(5), item(6))),
        ("t", "shop.other", 1, (item(7, task="shop.other"),)),
    ]


def test_a_batch_size_below_one_still_moves_each_item() -> None:
    batches, _ = gather([item(1), item(2)], lambda _: 0)
    assert [len(b.members) for b in batches] == [1, 1]


def test_a_batch_of_retries_has_a_deterministic_task_id_and_a_batch_repr() -> None:
    batch = Gathered("q", "shop.many", "orders", 2, (item(1), item(2)))
    again = Gathered("q", "shop.many", "orders", 2, (item(1), item(2)))
    other = Gathered("q", "shop.many", "orders", 2, (item(1), item(3)))
    assert batch.task_id("g") == again.task_id("g") != other.task_id("g")
    assert batch.task_id("g").startswith("g:orders:retry-2:")
    assert batch.argsrepr() == "Records(orders retry 2, 2 records)"


def request(arg: object, *, direct: bool = False) -> SimpleNamespace:
    return SimpleNamespace(args=[arg], called_directly=direct)


@pytest.mark.parametrize(
    ("batches", "req", "expected"),
    [
        (True, request({"topic": "t"}), True),
        (False, request({"topic": "t"}), False),  # a RecordTask of one record
        (True, request({"topic": "t", "ordered": "park"}), False),  # an ordered route
        (True, request({"topic": "t"}, direct=True), False),  # called directly
        (True, request([{"topic": "t"}]), False),  # a whole batch: each record retries
    ],
)
def test_which_retries_are_gathered(batches: bool, req: SimpleNamespace, expected: bool) -> None:
    assert gathers(SimpleNamespace(takes_batches=batches), req) is expected
