"""The Celery task message the bridge enqueues for a record, pinned as literals (issue 17, step
1): its headers, properties and body, as they land in the queue's Redis list. Workers of any
Celery 5 app and Flower read it; moving modules must change none of it.

Kombu builds the message on a Redis channel (one template per task and queue), hence real
Redis. Masked: the delivery tag (a random prefix per dispatcher, then a counter); the group id
is the test's own (isolation), spelled into the expected values.
"""

from __future__ import annotations

import base64
import json
import re
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from bridge import keys
from bridge.backends.redis import ordering
from bridge.backends.redis.dispatch import Dispatcher
from bridge.backends.redis.enqueue import Ordered
from bridge.record import Envelope, Record
from bridge.routing import Route
from bridge.settings import CelerySettings
from tests.integration.conftest import BROKER_URL
from tests.integration.helpers import consumed

RECORD = Record("orders", 7, 5, 1_700_000_000_123, b"k", b'{"id": 1}', (("trace", b"t"),), "json")
TAG = re.compile(r"[0-9a-f]{32}-[0-9]+")


def expected_message(group: str, queue: str) -> dict[str, Any]:
    """The message of RECORD for task ``shop.handle_order``, body decoded, delivery tag out."""
    task_id = f"{group}:orders:7:5"
    return {
        "body": [
            [{
                "v": 1, "group_id": group, "dlt_topic": f"orders.{group}.dlt",
                "topic": "orders", "partition": 7, "offset": 5,
                "timestamp_ms": 1700000000123, "timestamp_type": 0,
                "key": "aw==", "value": "eyJpZCI6IDF9", "headers": [["trace", "dA=="]],
                "value_format": "json",
            }],
            {},
            {"callbacks": None, "errbacks": None, "chain": None, "chord": None},
        ],
        "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": {
            "lang": "py",
            "task": "shop.handle_order",
            "id": task_id,
            "shadow": None,
            "eta": None,
            "expires": None,
            "group": None,
            "group_index": None,
            "retries": 0,
            "timelimit": [None, None],
            "root_id": task_id,
            "parent_id": None,
            "argsrepr": "Record(orders[7]@5 key=b'k' value=b'{\"id\": 1}')",
            "kwargsrepr": "{}",
            "origin": f"kafka-celery-bridge@{group}",
            "ignore_result": False,
            "replaced_task_nesting": 0,
            "stamped_headers": None,
            "stamps": {},
        },
        "properties": {
            "correlation_id": task_id,
            "reply_to": "",
            "delivery_mode": 2,
            "delivery_info": {"exchange": "", "routing_key": queue},
            "priority": 0,
            "body_encoding": "base64",
            "delivery_tag": "<masked>",
        },
    }  # fmt: skip


def readable(payload: bytes) -> dict[str, Any]:
    """A task message with its body decoded and its delivery tag masked (checked first)."""
    message: dict[str, Any] = json.loads(payload)
    assert TAG.fullmatch(message["properties"]["delivery_tag"]), message["properties"]
    message["properties"]["delivery_tag"] = "<masked>"
    message["body"] = json.loads(base64.b64decode(message["body"]))
    return message


@pytest.fixture
def dispatcher(ledger_redis: redis.Redis) -> Iterator[tuple[Dispatcher, str, str]]:
    group, queue = f"pin-{uuid.uuid4().hex[:8]}", f"q-{uuid.uuid4().hex[:8]}"
    found = Dispatcher(CelerySettings(broker_url=BROKER_URL), group)
    yield found, group, queue
    found.close()
    ledger_redis.delete(queue, *ledger_redis.keys(f"{keys.group_prefix(group)}*"))


@pytest.mark.parametrize("built_by", ["envelope", "consumed record"])
def test_the_task_message_in_the_queue(
    dispatcher: tuple[Dispatcher, str, str], ledger_redis: redis.Redis, built_by: str
) -> None:
    publisher, group, queue = dispatcher
    if built_by == "envelope":  # replay, release, the worker's retries
        envelope = Envelope(RECORD, group, f"orders.{group}.dlt")
        message = publisher.message("shop.handle_order", queue, envelope)
    else:  # the poll loop, from what kafka-python hands it
        route = Route("orders", "shop.handle_order", queue, False, "json", f"orders.{group}.dlt")
        message = publisher.consumed(route, consumed(RECORD))
    assert (message.topic, message.partition, message.offset, message.queue) == (
        "orders", 7, 5, queue,
    )  # fmt: skip
    assert publisher.publish([message]).enqueued == 1
    [queued] = ledger_redis.lrange(queue, 0, -1)  # a Celery queue is a list named as the queue
    assert queued == message.payload
    assert readable(queued) == expected_message(group, queue)


def test_an_ordered_records_fifo_element_holds_the_same_message(
    dispatcher: tuple[Dispatcher, str, str],
) -> None:
    publisher, group, queue = dispatcher
    fifo = keys.ordered_queue(group, "orders", b"k", 7)
    envelope = Envelope(RECORD, group, f"orders.{group}.dlt")
    message = publisher.message("shop.handle_order", queue, envelope, Ordered(fifo, 10, 100))
    assert message.payload is not None
    head = ordering.parse_element(message.payload)
    assert (head.task_id, head.queue) == (f"{group}:orders:7:5", queue)
    assert readable(head.message) == expected_message(group, queue)
