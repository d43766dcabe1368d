"""Every Redis key the bridge owns, in one place: all under ``bridge:{group_id}:``."""

from __future__ import annotations

PREFIX = "bridge"


def group_prefix(group_id: str) -> str:
    """``bridge:{group_id}:``: the namespace of one consumer group's state."""
    return f"{PREFIX}:{group_id}:"


def published_watermark(group_id: str, topic: str, partition: int) -> str:
    """The next offset of ``topic[partition]`` not yet enqueued for ``group_id``.

    Written in the same Lua script that enqueues the records, so a record consumed twice
    (after a crash between publish and commit, or a rebalance) is never enqueued twice.
    """
    return f"{group_prefix(group_id)}published:{topic}:{partition}"


def delayed_retries(group_id: str) -> str:
    """Sorted set of retries waiting for their due time (score: due, ms since the epoch).

    Each member is ``{queue}\\0{task message}``; the bridge moves due members to their queue.
    """
    return f"{group_prefix(group_id)}retries:delayed"


def pending_dead_letters(group_id: str) -> str:
    """Sorted set of dead letters whose write to Kafka failed (score: next attempt, ms)."""
    return f"{group_prefix(group_id)}dead-letters:pending"


def parked_dead_letters(group_id: str) -> str:
    """Hash of dead letters Kafka refused for good (task id -> dead letter JSON)."""
    return f"{group_prefix(group_id)}dead-letters:parked"
