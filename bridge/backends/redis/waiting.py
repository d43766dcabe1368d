"""What waits in Redis for one consumer group, counted: delayed retries, dead letters not in
Kafka, and ordered keys with their waiting records (Redis I/O). Read by ``status`` and by the
bridge's metrics."""

from __future__ import annotations

from dataclasses import dataclass, field

import redis

from bridge.backends.redis.dead_letter_store import DeadLetterStore
from bridge.backends.redis.ordering import KeyQueues
from bridge.backends.redis.retries import Scheduler


@dataclass(frozen=True, slots=True)
class RedisCounts:
    """What waits in Redis for one consumer group (one reading)."""

    delayed_retries: int
    dead_letters_pending: int
    dead_letters_parked: int
    keys_out: int = 0
    keys_retrying: int = 0
    keys_parked: int = 0
    records_waiting: dict[tuple[str, int], int] = field(default_factory=dict)


def read_counts(client: redis.Redis, group_id: str, *, ordered: bool = True) -> RedisCounts:
    """Count what waits for ``group_id``; with ``ordered=False`` the key FIFOs are not looked
    at (no route is ordered) and their counts stay 0.

    :raises redis.RedisError: Redis is unreachable.
    """
    pending, parked = DeadLetterStore(client, group_id).counts()
    delayed = Scheduler(client, group_id).waiting()
    if not ordered:
        return RedisCounts(delayed, pending, parked)
    keys = KeyQueues(client, group_id)
    retrying, keys_parked = keys.counts()
    return RedisCounts(
        delayed, pending, parked,
        keys_out=keys.heads_out(), keys_retrying=retrying, keys_parked=keys_parked,
        records_waiting=keys.waiting_per_partition(),
    )  # fmt: skip
