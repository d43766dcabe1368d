"""Dead letters Kafka has not taken yet (pending, for the bridge's writer) or will never take
(parked, for ``replay --parked``), kept in Redis (Redis I/O). The dead-letter office
(:mod:`bridge.backends.kafka.dead_letters`) decides what goes where.
"""

from __future__ import annotations

import json
from typing import Any, cast

import redis

from bridge import keys
from bridge.backends.redis import scripts

# bridge/backends/redis/lua/ documents each script.
_UNPARK = scripts.script("dead_letter_unpark")


class DeadLetterStore:
    """Dead letters Kafka did not take yet (pending) or will never take (parked)."""

    def __init__(self, client: redis.Redis, group_id: str) -> None:
        self._client = client
        self._pending = keys.pending_dead_letters(group_id)
        self._parked = keys.parked_dead_letters(group_id)
        self._unpark = client.register_script(_UNPARK)

    def defer(
        self, dead_letter: dict[str, Any], due_ms: int, pipe: redis.client.Pipeline | None = None
    ) -> None:
        """Keep a dead letter for another write attempt at ``due_ms``; with ``pipe``, as one
        more command of that pipeline (a transaction the caller executes)."""
        client = self._client if pipe is None else pipe
        client.zadd(self._pending, {json.dumps(dead_letter, sort_keys=True): due_ms})

    def due(self, now_ms: int, limit: int = 100) -> list[dict[str, Any]]:
        """Pending dead letters whose next attempt is due."""
        members = self._client.zrangebyscore(self._pending, "-inf", now_ms, start=0, num=limit)
        return [json.loads(cast(bytes, m)) for m in members]

    def written(self, dead_letter: dict[str, Any]) -> None:
        """Forget a pending dead letter: Kafka has it now."""
        self._client.zrem(self._pending, json.dumps(dead_letter, sort_keys=True))

    def retry_later(self, old: dict[str, Any], new: dict[str, Any], due_ms: int) -> None:
        """Replace a pending dead letter by its updated state, due again at ``due_ms``."""
        with self._client.pipeline(transaction=True) as pipe:
            pipe.zrem(self._pending, json.dumps(old, sort_keys=True))
            pipe.zadd(self._pending, {json.dumps(new, sort_keys=True): due_ms})
            pipe.execute()

    def park(self, dead_letter: dict[str, Any]) -> None:
        """Move a dead letter Kafka refused for good out of the pending set."""
        with self._client.pipeline(transaction=True) as pipe:
            pipe.zrem(self._pending, json.dumps(dead_letter, sort_keys=True))
            pipe.hset(self._parked, dead_letter["task_id"], json.dumps(dead_letter))
            pipe.execute()

    def parked(self) -> list[dict[str, Any]]:
        """Every parked dead letter (for ``replay --parked``), by task id."""
        found = self._client.hgetall(self._parked)
        return [json.loads(found[k]) for k in sorted(found)]

    def unpark(self, task_id: str, enqueue: tuple[str, bytes] | None = None) -> bool:
        """Forget the parked dead letter of ``task_id``, once it was redriven; with
        ``enqueue`` (queue, task message), push that message in the same atomic step.

        :returns: False when it was not parked (any more): nothing was pushed.
        """
        queue, message = enqueue if enqueue is not None else ("", b"")
        return bool(self._unpark(keys=[self._parked, queue], args=[task_id, message]))

    def next_attempt_ms(self) -> int | None:
        """When the next pending dead letter is due for a write attempt (ms), if any."""
        first = self._client.zrange(self._pending, 0, 0, withscores=True)
        return int(first[0][1]) if first else None

    def some_parked(self, limit: int = 20) -> list[dict[str, Any]]:
        """Up to ``limit`` parked dead letters (in no particular order)."""
        found: list[dict[str, Any]] = []
        for _, value in self._client.hscan_iter(self._parked, count=limit):
            found.append(json.loads(value))
            if len(found) >= limit:
                break
        return found

    def counts(self) -> tuple[int, int]:
        """(pending, parked) dead letters."""
        with self._client.pipeline(transaction=False) as pipe:
            pipe.zcard(self._pending)
            pipe.hlen(self._parked)
            pending, parked = pipe.execute()
        return int(pending), int(parked)
