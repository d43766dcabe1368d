"""The routes an operator paused (Redis I/O): a hash per consumer group
(:func:`bridge.keys.paused_routes`), topic -> ``{"by", "at", "why"}`` as JSON. ``pause`` and the
console write it, ``resume`` clears it, and every bridge of the group reads it
(:mod:`bridge.consumer.operator_pauses`) and pauses those topics' partitions."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import redis

from bridge import keys


def pause(
    client: redis.Redis, group_id: str, topics: Iterable[str], *, by: str, why: str, at: str
) -> list[str]:
    """Pause ``topics`` for every bridge of ``group_id``; those not paused before (the others
    keep who paused them first).

    :raises redis.RedisError: Redis is unreachable.
    """
    asked = list(topics)
    entry = json.dumps({"by": by, "at": at, "why": why}, sort_keys=True)
    with client.pipeline(transaction=True) as pipe:
        for topic in asked:
            pipe.hsetnx(keys.paused_routes(group_id), topic, entry)
        added = pipe.execute()
    return [topic for topic, new in zip(asked, added, strict=True) if new]


def unpause(client: redis.Redis, group_id: str, topics: Iterable[str]) -> list[str]:
    """Lift the pauses of ``topics``; those that were paused.

    :raises redis.RedisError: Redis is unreachable.
    """
    asked = list(topics)
    with client.pipeline(transaction=True) as pipe:
        for topic in asked:
            pipe.hdel(keys.paused_routes(group_id), topic)
        removed = pipe.execute()
    return [topic for topic, gone in zip(asked, removed, strict=True) if gone]


def paused(client: redis.Redis, group_id: str) -> dict[str, dict[str, Any]]:
    """The paused topics, each with who paused it, when and why.

    :raises redis.RedisError: Redis is unreachable.
    """
    found = {}
    for topic, raw in client.hgetall(keys.paused_routes(group_id)).items():
        try:
            entry = json.loads(raw)
        except ValueError:
            entry = {}
        found[topic.decode() if isinstance(topic, bytes) else topic] = (
            entry if isinstance(entry, dict) else {}
        )
    return found
