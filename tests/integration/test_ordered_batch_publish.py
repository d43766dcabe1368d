"""lua/fifo_publish.lua in real Redis: a batched ordered route's key head goes with the records
that follow it in its FIFO, in ONE message equal to the one the dispatcher builds for those
records as a batch (bridge.backends.redis.dispatch.Dispatcher.batched), whichever script
publishes it (enqueue, done, batch done, republish, release)."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from bridge import keys
from bridge.backends.redis.dispatch import Dispatcher
from bridge.backends.redis.enqueue import Message, Ordered
from bridge.backends.redis.ordering import KeyQueues, parse_element
from bridge.record import Record, task_id
from bridge.routing import Route
from bridge.settings import CelerySettings
from tests.integration.conftest import BROKER_URL, reachable_redis
from tests.integration.helpers import consumed

TOPIC = "orders"


class Key:
    """One test's batched ordered route and the key FIFOs of its records."""

    def __init__(self, client: redis.Redis, size: int) -> None:
        self.client = client
        self.group = f"ob-{uuid.uuid4().hex[:8]}"
        self.queue = f"{self.group}.q"
        self.size = size
        self.dispatcher = Dispatcher(CelerySettings(broker_url=BROKER_URL), self.group)
        self.queues = KeyQueues(client, self.group)
        self.route = Route(TOPIC, "shop.x", self.queue, True, "json", f"{TOPIC}.dlt",
                           batch_size=size)  # fmt: skip

    def record(self, offset: int, key: bytes | None, value: bytes = b'{"a": 1}') -> Any:
        rec = Record(TOPIC, 0, offset, 1_700_000_000_000, key, value, (("h", b"\x00\xff"),), "json")
        return consumed(rec)

    def message(self, record: Any, size: int | None = None) -> Message:
        fifo = self.queues.fifo(TOPIC, record.key, 0)
        ordered = Ordered(fifo, 1000, 10_000, self.size if size is None else size)
        return self.dispatcher.consumed(self.route, record, ordered)

    def published(self) -> list[dict[str, Any]]:
        """The messages in the queue, oldest first, decoded."""
        raw = self.client.lrange(self.queue, 0, -1)
        self.client.delete(self.queue)
        return [decoded(m) for m in reversed(raw)]  # type: ignore[arg-type]

    def expected(self, records: list[Any]) -> dict[str, Any]:
        """What the dispatcher builds for ``records`` as one batch (or one record)."""
        return decoded(self.dispatcher.batched(self.route, records).payload or b"")

    def close(self) -> None:
        self.dispatcher.close()
        for name in self.client.scan_iter(match=f"*{self.group}*", count=1000):
            self.client.delete(name)


def decoded(message: bytes) -> dict[str, Any]:
    """A task message with its body decoded and its delivery tag left out (each is unique)."""
    data = json.loads(message)
    data["body"] = json.loads(base64.b64decode(data["body"]))
    data["properties"].pop("delivery_tag")
    return data  # type: ignore[no-any-return]


@pytest.fixture
def key() -> Iterator[Key]:
    made = Key(reachable_redis(BROKER_URL), size=3)
    yield made
    made.close()


def offsets(message: dict[str, Any]) -> list[int]:
    arg = message["body"][0][0]
    return [a["offset"] for a in arg] if isinstance(arg, list) else [arg["offset"]]


def test_an_idle_key_publishes_a_batch_of_what_came_with_its_head(key: Key) -> None:
    records = [key.record(o, b"a" if o % 2 == 0 else b"b") for o in range(9)]
    key.dispatcher.publish([key.message(r) for r in records], 50)
    got = key.published()
    assert [offsets(m) for m in got] == [[0, 2, 4], [1, 3, 5]]
    assert got == [key.expected(records[0:5:2]), key.expected(records[1:6:2])]
    headers = got[0]["headers"]
    assert headers["id"] == f"{key.group}:{TOPIC}:0:0-4"
    assert headers["argsrepr"] == f"Records({TOPIC}[0]@0..4, 3 records)"


def test_keyless_records_batch_per_partition_and_a_lone_head_goes_alone(key: Key) -> None:
    records = [key.record(0, None), key.record(1, b"k"), key.record(2, None)]
    key.dispatcher.publish([key.message(r) for r in records], 50)
    got = key.published()
    assert got == [key.expected([records[0], records[2]]), key.expected([records[1]])]
    assert got[1]["headers"]["id"] == task_id(key.group, TOPIC, 0, 1)


def test_values_of_every_length_and_escapes_join_byte_exact(key: Key) -> None:
    values = [b'{"s": "%s"}' % (b"x" * n) for n in range(6)] + [b'{"q": "\\"\\\\\\u00e9/"}']
    records = [key.record(o, b"k", v) for o, v in enumerate(values)]
    key.dispatcher.publish([key.message(r) for r in records], 50)
    assert key.published() == [key.expected(records[:3])]
    fifo = key.queues.fifo(TOPIC, b"k", 0)
    for first in (3, 6):
        ids = [task_id(key.group, TOPIC, 0, o) for o in range(first - 3, first)]
        assert key.queues.batch_done(fifo, 0, ids, 99, hold=False) == 3
        assert key.published() == [key.expected(records[first : first + 3])]


def test_done_republish_and_release_publish_the_heads_batch(key: Key) -> None:
    records = [key.record(o, b"k") for o in range(5)]
    key.dispatcher.publish([key.message(r) for r in records], 50)
    assert key.published() == [key.expected(records[:3])]
    fifo = key.queues.fifo(TOPIC, b"k", 0)
    assert key.queues.batch_done(fifo, 0, [task_id(key.group, TOPIC, 0, 0)], 99, hold=True) == 1
    assert key.published() == []  # record 1 failed: its own task goes on
    assert key.queues.republish_stalled(now_ms=100, deadline_ms=200) == [fifo]
    assert key.published() == [key.expected(records[1:4])]
    assert key.queues.done(fifo, 0, task_id(key.group, TOPIC, 0, 1), 300)
    assert key.published() == [key.expected(records[2:5])]
    key.queues.park(fifo, task_id(key.group, TOPIC, 0, 2), {"why": "test"})
    head = key.queues.head(fifo)
    assert head is not None
    key.queues.release(fifo, head, skip=False, deadline_ms=400)
    assert key.published() == [key.expected(records[2:5])]
    assert key.client.zscore(keys.ordered_heads(key.group), fifo) == 400


def test_a_batch_stops_at_a_record_of_another_shape(key: Key) -> None:
    """Records appended before the route was batched (or by a bridge with another setting)
    carry no batch part: the batch ends before the first of them."""
    records = [key.record(o, b"k") for o in range(4)]
    shapes = [None, None, 1, None]  # record 2: batch_size 1
    key.dispatcher.publish([key.message(r, s) for r, s in zip(records, shapes, strict=True)], 50)
    assert key.published() == [key.expected(records[:2])]
    fifo = key.queues.fifo(TOPIC, b"k", 0)
    ids = [task_id(key.group, TOPIC, 0, o) for o in (0, 1)]
    assert key.queues.batch_done(fifo, 0, ids, 99, hold=False) == 2
    assert key.published() == [key.expected(records[2:3])]  # a plain message, alone
    element = key.client.lindex(fifo, 0)
    assert parse_element(element).message.endswith(b"}")  # type: ignore[arg-type]
