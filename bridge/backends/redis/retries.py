"""Delayed retries waiting in Redis for their time (Redis I/O).

Delayed retries are Celery task messages kept in a sorted set instead of a queue, so that
long delays neither outlive the broker's visibility timeout inside a worker nor sit in worker
memory. :func:`move_due` moves every due message to its queue in one Lua script (atomic: each
message is moved exactly once, however many bridges of the group run it).

The retries of batched routes wait in a set of their own, to be gathered into batches
(:mod:`bridge.backends.redis.gathered_retries`); :meth:`Scheduler.waiting` and
:meth:`Scheduler.summary` count both sets.
"""

from __future__ import annotations

from dataclasses import dataclass

import redis

from bridge import keys
from bridge.backends.redis import scripts

_SEP = "\0"

# bridge/backends/redis/lua/ documents each script.
_MOVE_DUE = scripts.script("retries_move_due")


def schedule_retry(
    client: redis.Redis, group_id: str, queue: str, message: bytes, due_ms: int
) -> None:
    """Keep a retry's task message until ``due_ms`` (ms since the epoch)."""
    member = queue.encode() + _SEP.encode() + message
    client.zadd(keys.delayed_retries(group_id), {member: due_ms})


class Scheduler:
    """The bridge's side: move due retries to their queues."""

    def __init__(self, client: redis.Redis, group_id: str) -> None:
        self._client = client
        self._key = keys.delayed_retries(group_id)
        self._sets = (self._key, keys.gathered_retries(group_id))
        self._move = client.register_script(_MOVE_DUE)

    def move_due(self, now_ms: int, limit: int = 1000) -> int:
        """Move up to ``limit`` retries due by ``now_ms`` to their queues; return how many.

        :raises redis.RedisError: Redis is unreachable.
        """
        return int(self._move(keys=[self._key], args=[now_ms, limit]))

    def waiting(self) -> int:
        """Retries waiting in Redis (delayed, and gathered for batches)."""
        with self._client.pipeline(transaction=False) as pipe:
            for key in self._sets:
                pipe.zcard(key)
            return sum(int(n) for n in pipe.execute())

    def summary(self, now_ms: int) -> RetrySummary:
        """When the next and the last waiting retry are due, and how many are overdue
        (delayed, and gathered for batches).

        :raises redis.RedisError: Redis is unreachable.
        """
        with self._client.pipeline(transaction=False) as pipe:
            for key in self._sets:
                pipe.zrange(key, 0, 0, withscores=True)
                pipe.zrange(key, -1, -1, withscores=True)
                pipe.zcount(key, "-inf", now_ms)
            replies = pipe.execute()
        firsts = [int(r[0][1]) for r in replies[0::3] if r]
        lasts = [int(r[0][1]) for r in replies[1::3] if r]
        return RetrySummary(
            next_due_ms=min(firsts) if firsts else None,
            last_due_ms=max(lasts) if lasts else None,
            overdue=sum(int(n) for n in replies[2::3]),
        )


@dataclass(frozen=True, slots=True)
class RetrySummary:
    """When delayed retries waiting in Redis are due (ms since the epoch). Overdue retries
    pile up when no bridge of the group runs: the bridge moves them to their queues."""

    next_due_ms: int | None
    last_due_ms: int | None
    overdue: int
