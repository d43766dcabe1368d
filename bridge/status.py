"""What the bridge's consumer group has committed, how far behind it is, what waits (I/O)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import redis
from kafka import KafkaConsumer, TopicPartition

from bridge.routing import Router
from bridge.schedule import DeadLetterStore, Scheduler
from bridge.settings import BridgeSettings
from bridge.topics import admin_client


@dataclass(frozen=True, slots=True)
class PartitionStatus:
    """One routed partition: committed offset (None before the first commit), end, lag."""

    topic: str
    partition: int
    committed: int | None
    end: int

    @property
    def lag(self) -> int:
        """Records not yet committed by the group."""
        return self.end - (self.committed or 0)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form, lag included."""
        return {**asdict(self), "lag": self.lag}


def partition_status(settings: BridgeSettings) -> list[PartitionStatus]:
    """Committed and end offsets of every partition of every routed topic that exists."""
    router = Router.from_settings(settings)
    k = settings.kafka
    admin = admin_client(k)
    consumer = KafkaConsumer(
        bootstrap_servers=k.bootstrap_servers.split(","),
        client_id=f"{k.client_id}-status",
        enable_auto_commit=False,
    )
    try:
        committed = admin.list_group_offsets(k.group_id).get(k.group_id, {})
        tps = [
            TopicPartition(topic, p)
            for topic in router.topics
            for p in sorted(consumer.partitions_for_topic(topic) or ())
        ]
        ends = consumer.end_offsets(tps) if tps else {}
    finally:
        consumer.close()
        admin.close()
    return [
        PartitionStatus(tp.topic, tp.partition, _offset(committed.get(tp)), int(ends[tp]))
        for tp in tps
    ]


@dataclass(frozen=True, slots=True)
class Waiting:
    """What waits in Redis for the group: delayed retries and dead letters not in Kafka."""

    delayed_retries: int
    dead_letters_pending: int
    dead_letters_parked: int

    def to_dict(self) -> dict[str, int]:
        """JSON-safe form."""
        return asdict(self)


def waiting(settings: BridgeSettings) -> Waiting:
    """Count what waits in Redis.

    :raises redis.RedisError: Redis is unreachable.
    """
    client = redis.Redis.from_url(settings.celery.broker_url, socket_timeout=5)
    try:
        group_id = settings.kafka.group_id
        pending, parked = DeadLetterStore(client, group_id).counts()
        return Waiting(Scheduler(client, group_id).waiting(), pending, parked)
    finally:
        client.close()


def _offset(meta: Any) -> int | None:
    return None if meta is None or meta.offset < 0 else int(meta.offset)
