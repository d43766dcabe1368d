"""What the bridge's consumer group has committed, how far behind it is, what waits (I/O)."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

import redis
from kafka import KafkaConsumer, TopicPartition

from bridge.ordering import KeyQueues, KeyState
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
    """What waits in Redis for the group: delayed retries, dead letters not in Kafka, and the
    records of ordered routes waiting behind their keys' heads."""

    delayed_retries: int
    dead_letters_pending: int
    dead_letters_parked: int
    ordered_records_waiting: dict[str, int] = field(default_factory=dict)
    ordered_keys_out: int = 0
    ordered_keys_waiting: list[KeyState] = field(default_factory=list)
    ordered_keys_parked: list[KeyState] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form."""
        return {
            "delayed_retries": self.delayed_retries,
            "dead_letters_pending": self.dead_letters_pending,
            "dead_letters_parked": self.dead_letters_parked,
            "ordered": {
                "records_waiting": self.ordered_records_waiting,
                "keys_out": self.ordered_keys_out,
                "keys_waiting": [k.to_dict() for k in self.ordered_keys_waiting],
                "keys_parked": [k.to_dict() for k in self.ordered_keys_parked],
            },
        }


def waiting(settings: BridgeSettings) -> Waiting:
    """Count what waits in Redis.

    :raises redis.RedisError: Redis is unreachable.
    """
    client = redis.Redis.from_url(settings.celery.broker_url, socket_timeout=5)
    try:
        group_id = settings.kafka.group_id
        pending, parked = DeadLetterStore(client, group_id).counts()
        queues = KeyQueues(client, group_id)
        now_ms = int(time.time() * 1000)
        return Waiting(
            delayed_retries=Scheduler(client, group_id).waiting(),
            dead_letters_pending=pending,
            dead_letters_parked=parked,
            ordered_records_waiting={
                f"{topic}[{p}]": n for (topic, p), n in queues.waiting_per_partition().items()
            },
            ordered_keys_out=queues.heads_out(),
            ordered_keys_waiting=queues.waiting_keys(now_ms),
            ordered_keys_parked=queues.parked_keys(now_ms),
        )
    finally:
        client.close()


def _offset(meta: Any) -> int | None:
    return None if meta is None or meta.offset < 0 else int(meta.offset)
