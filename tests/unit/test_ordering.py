"""Ordered routes' pure parts: key names, FIFO elements, partition holds, envelopes."""

import base64
import json

import pytest

from bridge import keys
from bridge.backends.redis.messages import task_of
from bridge.backends.redis.ordering import KeyState, element, parse_element, partition_of
from bridge.consumer.backpressure import PartitionHolds, to_pause
from bridge.record import Envelope, Record, from_task_arg, to_task_arg
from bridge.routing import Router
from bridge.settings import BridgeSettings


@pytest.mark.parametrize(
    ("key", "partition"), [(b"customer-7", 3), (b"\x00\xff:k:p", 1), (b"", 0), (None, 5)]
)
def test_key_fifo_names_round_trip(key: bytes | None, partition: int) -> None:
    name = keys.ordered_queue("shop", "orders.v1", key, partition)
    assert name.startswith("bridge:shop:ordered:q:orders.v1:")
    assert keys.ordered_key_of(name) == ("orders.v1", key, partition if key is None else None)


@pytest.mark.parametrize("group", ["shop:ordered:q:eu", "a:ordered:q:b:ordered:q:c"])
def test_key_fifo_names_round_trip_whatever_the_group_id(group: str) -> None:
    # A group id may hold colons (task ids allow for it); a topic never does.
    name = keys.ordered_queue(group, "orders.v1", b"k", 2)
    assert keys.ordered_key_of(name) == ("orders.v1", b"k", None)


def test_a_key_is_one_fifo_whatever_the_partition() -> None:
    # Keyed by (topic, key): records of a key keep their order across a repartitioning.
    assert keys.ordered_queue("g", "t", b"k", 0) == keys.ordered_queue("g", "t", b"k", 9)
    assert keys.ordered_queue("g", "t", None, 0) != keys.ordered_queue("g", "t", None, 9)


def test_fifo_element_round_trip() -> None:
    message = json.dumps({"body": "e30=", "headers": {"id": "g:t:1:5"}}).encode()
    head = parse_element(element("g:t:1:5", 1_700_000_000_123, "celery", message))
    assert (head.task_id, head.appended_ms, head.queue, head.message) == (
        "g:t:1:5", 1_700_000_000_123, "celery", message,
    )  # fmt: skip
    assert partition_of(head.task_id) == 1
    assert partition_of("group:with:colons:topic:12:345") == 12


def test_a_full_partition_is_held_until_it_drains_a_quarter_below_the_limit() -> None:
    holds = PartitionHolds()
    holds.hold(("t", 0), watch="fifo-a", kind="key", limit=8)
    holds.hold(("t", 1), watch="waiting-t-1", kind="partition", limit=1)
    assert holds.update({"fifo-a": 7, "waiting-t-1": 1}) == set()
    assert holds.update({"fifo-a": 6, "waiting-t-1": 0}) == {("t", 0), ("t", 1)}
    assert holds.held == {}


def test_a_hold_says_what_is_full_and_resumes_a_quarter_below_in_whole_records() -> None:
    holds = PartitionHolds()
    holds.hold(("t", 0), watch="fifo-a", kind="key", limit=10)  # 10 - 10 // 4: resumes at 8
    holds.hold(("t", 1), watch="waiting-t-1", kind="partition", limit=1)
    assert {tp: (f.kind, f.resume_at) for tp, f in holds.held.items()} == {
        ("t", 0): ("key", 8), ("t", 1): ("partition", 0),
    }  # fmt: skip
    assert holds.update({"fifo-a": 8}) == {("t", 0), ("t", 1)}  # an unknown count is 0


def test_held_and_revoked_partitions() -> None:
    holds = PartitionHolds()
    holds.hold(("t", 0), watch="f", kind="key", limit=4)
    assigned = {("t", 0), ("t", 1), ("u", 0)}
    assert to_pause(assigned, broker_down=False, held_topics=(), held_partitions=holds.held) == {
        ("t", 0)
    }
    holds.forget([("t", 1), ("t", 0)])  # ("t", 1) was never held
    assert holds.held == {}


def test_ordered_envelope_says_what_an_exhausted_head_does() -> None:
    record = Record("orders", 2, 41, 1, b"k", b"{}")
    arg = to_task_arg(Envelope(record, "shop", "orders.shop.dlt", on_exhausted="park"))
    assert arg["ordered"] == "park"
    back = from_task_arg(json.loads(json.dumps(arg)))
    assert back.ordered
    assert back.on_exhausted == "park"
    assert not from_task_arg(to_task_arg(Envelope(record, "shop", "d"))).ordered


def test_route_fixed_interval_travels_as_retry_policy() -> None:
    settings = BridgeSettings.model_validate(
        {
            "kafka": {"bootstrap_servers": "b:9092", "group_id": "shop"},
            "celery": {"broker_url": "redis://r/0"},
            "routes": [
                {
                    "topic": "orders",
                    "task": "t",
                    "ordered": True,
                    "retry_interval_s": 3,
                    "max_retries": 5,
                    "on_exhausted": "park",
                    "max_waiting_per_key": 7,
                },
            ],
        }
    )
    route = Router.from_settings(settings).route_for("orders")
    assert route.retry_policy == {"retry_interval": 3, "max_retries": 5}
    assert (route.ordered, route.on_exhausted, route.max_waiting_per_key) == (True, "park", 7)


def test_key_state_shows_binary_keys_as_base64() -> None:
    state = KeyState("t", b"\xff", None, 2, "g:t:0:1", 1.5, None, None)
    assert state.to_dict() == {
        "topic": "t", "key": None, "key_b64": "/w==", "depth": 2,
        "head_task_id": "g:t:0:1", "oldest_age_s": 1.5,
    }  # fmt: skip
    keyless = KeyState("t", None, 4, 1, None, 0.0, 2.0, {"reason": "exhausted"}).to_dict()
    assert (keyless["key"], keyless["partition"], keyless["failing_for_s"]) == (None, 4, 2.0)


def test_task_of_reads_name_and_envelope_from_a_message() -> None:
    body = base64.b64encode(json.dumps([[{"v": 1}], {}, {}]).encode()).decode()
    message = json.dumps({"body": body, "headers": {"task": "shop.order"}}).encode()
    assert task_of(message) == ("shop.order", {"v": 1})
    empty = base64.b64encode(json.dumps([[], {}, {}]).encode()).decode()
    with pytest.raises(ValueError, match="no record envelope"):
        task_of(json.dumps({"body": empty, "headers": {"task": "x"}}).encode())
