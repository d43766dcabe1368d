"""Each record's failed attempts in Redis (see :mod:`bridge.attempt_log`): a list per task id
(:func:`bridge.keys.attempts`), the newest ``retry.attempt_history`` entries kept, the whole list
expiring ``retry.attempt_history_ttl_s`` after its last attempt."""

from __future__ import annotations

import redis

from bridge import keys
from bridge.attempt_log import Attempt


def note(
    client: redis.Redis, group_id: str, task_id: str, attempt: Attempt, keep: int, ttl_s: int
) -> None:
    """Append ``attempt`` to the record's list (one round trip).

    :raises redis.RedisError: Redis did not take it.
    """
    key = keys.attempts(group_id, task_id)
    with client.pipeline(transaction=True) as pipe:
        pipe.rpush(key, attempt.to_json())
        pipe.ltrim(key, -keep, -1)
        pipe.expire(key, ttl_s)
        pipe.execute()


def attempts_of(client: redis.Redis, group_id: str, task_id: str) -> list[Attempt]:
    """The record's kept attempts, oldest first."""
    found = (
        Attempt.from_json(raw) for raw in client.lrange(keys.attempts(group_id, task_id), 0, -1)
    )
    return [a for a in found if a is not None]
