"""Published watermarks tied to a topic's incarnation (pure: no Kafka, no Redis)."""

from __future__ import annotations

import uuid
from types import SimpleNamespace
from typing import Any

import pytest

from bridge import keys
from bridge.backends.redis.enqueue import EnqueueBatch, Message
from bridge.consumer.backpressure import pause_reasons
from bridge.consumer.incarnations import stopped_why, topic_ids
from bridge.hooks import Refusal

OLD, NEW = uuid.UUID(int=1), uuid.UUID(int=2)


def consumer(ids: dict[str, uuid.UUID | None]) -> Any:
    """A consumer whose cluster metadata knows ``ids`` (kafka-python 3.0's shape)."""
    return SimpleNamespace(_cluster=SimpleNamespace(topic_id=ids.get))


def test_a_topic_created_again_has_another_watermark() -> None:
    before = topic_ids(consumer({"orders": OLD}), ["orders"])
    after = topic_ids(consumer({"orders": NEW}), ["orders"])
    assert before == {"orders": str(OLD)}
    old_key = keys.published_watermark("g", "orders", 0, before["orders"])
    new_key = keys.published_watermark("g", "orders", 0, after["orders"])
    assert old_key == f"bridge:g:published:orders:0:{OLD}"
    assert new_key != old_key  # so the new records find no watermark and are enqueued
    assert keys.published_watermark("g", "orders", 0, before["orders"]) == old_key  # a crash


@pytest.mark.parametrize(
    "metadata",
    [
        consumer({}),  # not in the metadata (yet)
        consumer({"orders": uuid.UUID(int=0)}),  # Kafka's "no id"
        SimpleNamespace(),  # a kafka-python without its cluster metadata where 3.0 has it
    ],
)
def test_an_unknown_topic_id_is_none(metadata: Any) -> None:
    assert topic_ids(metadata, ["orders"]) == {"orders": None}


def message(topic: str, offset: int) -> Message:
    return Message(topic, 0, offset, "q", b"payload")


def script_input(ids: dict[str, str | None] | None) -> tuple[list[str], list[int]]:
    """The watermark keys and the refuse-instead-of-skip flags one enqueue would use."""
    batch = EnqueueBatch("g", ids)
    for m in (message("a", 5), message("b", 7)):
        batch.add(m)
    return batch.keys()[:2], batch.strict()


def test_what_the_enqueue_script_is_told() -> None:
    marks, strict = script_input({"a": "id-a", "b": None})
    assert marks == ["bridge:g:published:a:0:id-a", "bridge:g:published:b:0"]
    assert strict == [0, 1]  # b cannot tell a watermark of its own from an old one's
    assert script_input(None) == (["bridge:g:published:a:0", "bridge:g:published:b:0"], [0, 0])
    assert script_input({})[1] == [1, 1]  # not given: unknown


def test_a_record_below_a_watermark_it_cannot_verify_holds_its_partition() -> None:
    batch = EnqueueBatch("g", {"b": None})
    batch.add(message("b", 7))
    [refusal] = batch.refusals([1, 7, 3, 0])  # what the script returns for it
    assert refusal == Refusal("b", 0, 7, "watermark", "bridge:g:published:b:0", 1)
    tp = ("b", 0)
    reasons = pause_reasons(
        [tp], broker_down=False, held_topics=(), held_partitions={tp: "watermark"}
    )
    assert reasons == {tp: "watermark-unverified"}
    assert "delete bridge:g:published:b:0 to enqueue from here" in stopped_why(
        "b", 0, 7, refusal.watch
    )
