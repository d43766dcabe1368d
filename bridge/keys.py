"""Every Redis key the bridge owns, in one place: all under ``bridge:{group_id}:``, except
what workers say about themselves (they serve every group): under ``bridge-workers:``."""

from __future__ import annotations

from base64 import urlsafe_b64decode, urlsafe_b64encode

PREFIX = "bridge"
WORKERS_PREFIX = "bridge-workers:"  # outside every group's namespace


def group_prefix(group_id: str) -> str:
    """``bridge:{group_id}:``: the namespace of one consumer group's state."""
    return f"{PREFIX}:{group_id}:"


def published_watermark(
    group_id: str, topic: str, partition: int, topic_id: str | None = None
) -> str:
    """The next offset of ``topic[partition]`` not yet enqueued for ``group_id``.

    Written in the same Lua script that enqueues the records, so a record consumed twice
    (after a crash between publish and commit, or a rebalance) is never enqueued twice.
    ``topic_id`` (Kafka's, see :mod:`bridge.consumer.incarnations`) ties it to one incarnation of
    the topic: a topic created again, or another cluster's, has other offsets and another key.
    """
    key = f"{group_prefix(group_id)}published:{topic}:{partition}"
    return key if topic_id is None else f"{key}:{topic_id}"


def delayed_retries(group_id: str) -> str:
    """Sorted set of retries waiting for their due time (score: due, ms since the epoch).

    Each member is ``{queue}\\0{task message}``; the bridge moves due members to their queue.
    """
    return f"{group_prefix(group_id)}retries:delayed"


def attempts(group_id: str, task_id: str) -> str:
    """List of a record's failed attempts (:mod:`bridge.attempt_log`), by its task id."""
    return f"{group_prefix(group_id)}attempts:{task_id}"


def gathered_retries(group_id: str) -> str:
    """Sorted set of the retries of batched routes' records (score: due, ms since the epoch).

    Each member names one retry of one record (:mod:`bridge.retry_batches`); its envelope is
    in :func:`gathered_retry_envelopes`. The bridge gathers due members into batch messages.
    """
    return f"{group_prefix(group_id)}retries:gathered"


def gathered_retry_envelopes(group_id: str) -> str:
    """Hash of the envelopes of :func:`gathered_retries`' members (field: the member)."""
    return f"{group_prefix(group_id)}retries:gathered:envelopes"


def pending_dead_letters(group_id: str) -> str:
    """Sorted set of dead letters whose write to Kafka failed (score: next attempt, ms)."""
    return f"{group_prefix(group_id)}dead-letters:pending"


def parked_dead_letters(group_id: str) -> str:
    """Hash of dead letters Kafka refused for good (task id -> dead letter JSON)."""
    return f"{group_prefix(group_id)}dead-letters:parked"


def outcomes(group_id: str, topic: str) -> str:
    """Hash of the route's finished records per second: ``h:{epoch s}`` handled and
    ``d:{epoch s}`` dead-lettered counts (read by the dead-letter flood breaker)."""
    return f"{group_prefix(group_id)}outcomes:{topic}"


def unroutable(group_id: str) -> str:
    """Hash of records no worker could route to a ``RecordTask``, per topic: ``{topic}`` their
    count, ``{topic}:last`` the last one (JSON: task, task id, worker, error, when)."""
    return f"{group_prefix(group_id)}unroutable"


def worker_registration(node: str) -> str:
    """A live worker's queues and registered tasks (JSON, expiring), by its node name."""
    return f"{WORKERS_PREFIX}{node}"


def worker_registrations_pattern() -> str:
    """A ``SCAN`` pattern matching every :func:`worker_registration` key."""
    return f"{WORKERS_PREFIX}*"


def breaker_resumes(group_id: str) -> str:
    """Hash of ``resume`` commands: topic -> when it was asked for (ms since the epoch)."""
    return f"{group_prefix(group_id)}breaker:resume"


def paused_routes(group_id: str) -> str:
    """Hash of the routes an operator paused (``pause``): topic -> JSON ``{by, at, why}``."""
    return f"{group_prefix(group_id)}routes:paused"


def console_audit(group_id: str) -> str:
    """List of the console's audit log: one JSON object per action, newest first."""
    return f"{group_prefix(group_id)}console:audit"


def console_replayed(group_id: str) -> str:
    """Set of the dead letters the console replayed (``{dlt}:{partition}:{offset}``): each is
    replayed from the console once."""
    return f"{group_prefix(group_id)}console:replayed"


def ordered_queue(group_id: str, topic: str, key: bytes | None, partition: int) -> str:
    """The FIFO of one key of an ordered route: its records' task messages, head first.

    Keyed by (topic, key), base64url-encoded so binary keys stay readable; a record without
    a key is serialized with the other keyless records of its partition.
    """
    name = f"p:{partition}" if key is None else "k:" + urlsafe_b64encode(key).decode("ascii")
    return f"{group_prefix(group_id)}ordered:q:{topic}:{name}"


def ordered_key_of(queue_key: str) -> tuple[str, bytes | None, int | None]:
    """``(topic, key, partition)`` back from :func:`ordered_queue` (partition: keyless only)."""
    topic, name = queue_key.rsplit(":ordered:q:", 1)[1].split(":", 1)  # the group id may hold it
    kind, _, value = name.partition(":")
    if kind == "p":
        return topic, None, int(value)
    return topic, urlsafe_b64decode(value), None


def ordered_waiting(group_id: str, topic: str, partition: int) -> str:
    """Counter of the records of ``topic[partition]`` waiting in key FIFOs (heads included)."""
    return f"{group_prefix(group_id)}ordered:waiting:{topic}:{partition}"


def ordered_waiting_pattern(group_id: str) -> str:
    """A ``SCAN`` pattern matching every :func:`ordered_waiting` counter of ``group_id``."""
    return f"{group_prefix(group_id)}ordered:waiting:*"


def ordered_heads(group_id: str) -> str:
    """Sorted set of the key FIFOs whose head is out (score: when it is presumed lost, ms)."""
    return f"{group_prefix(group_id)}ordered:heads"


def ordered_failing(group_id: str) -> str:
    """Hash: key FIFO -> when its head first failed (ms), while the head retries."""
    return f"{group_prefix(group_id)}ordered:failing"


def ordered_parked(group_id: str) -> str:
    """Hash: key FIFO -> why and since when it is parked (JSON); released by an operator."""
    return f"{group_prefix(group_id)}ordered:parked"


def member(group_id: str, member: str) -> str:
    """A running bridge's latest state (JSON, expiring): its partitions, offsets and pauses."""
    return f"{group_prefix(group_id)}members:{member}"


def members_pattern(group_id: str) -> str:
    """A ``SCAN`` pattern matching every :func:`member` key of ``group_id``."""
    return f"{group_prefix(group_id)}members:*"


def replay_namespace(group_id: str, replay_group: str) -> str:
    """The group id under which ``replay --to task`` of ``replay_group`` keeps its enqueue
    watermarks: ``bridge:{group_id}:replay:{replay_group}:published:{dlt}:{partition}``, inside
    the group's own namespace."""
    return f"{group_id}:replay:{replay_group}"
