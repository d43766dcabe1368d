"""Which incarnation of a topic a published watermark belongs to.

A published watermark (:func:`bridge.keys.published_watermark`) says up to which offset a
partition's records were enqueued; a record below it is skipped as already enqueued. Offsets
start again when a topic is deleted and created again, when a cluster is rebuilt, or after a
failover to a cluster whose offsets are its own: a watermark of the old topic would skip the
new records, and their offsets would be committed. Kafka (2.8 and later, KIP-516) gives each
topic a unique id, which the consumer's metadata carries; a watermark is kept per topic id, so
a new incarnation starts with none, and its records are enqueued. Where no topic id is known
(an older broker), the bridge cannot tell: a record below the id-less watermark stops its
partition (paused, ``watermark-unverified`` in ``status``) instead of being skipped, until the
watermark expires or is deleted.

Kafka's consumer fetches by topic name (kafka-python 3.0: Fetch v12), so records of a topic
created again can, for one fetch, come before the metadata shows its new id; its records
below the old incarnation's watermark are then still skipped. kafka-python refreshes the
metadata on the fetch errors that a deletion causes, which closes that window unless the
topic is deleted, created and written to between two fetches.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


def topic_ids(consumer: Any, topics: Iterable[str]) -> dict[str, str | None]:
    """Each topic's id as the consumer's cluster metadata knows it now (``None``: unknown).

    kafka-python 3.0 keeps it in ``KafkaConsumer._cluster`` (from Metadata v10+), with no
    public accessor; a consumer without it is a consumer whose topics' ids are unknown.
    """
    cluster = getattr(consumer, "_cluster", None)
    lookup = getattr(cluster, "topic_id", None)
    if lookup is None:
        return dict.fromkeys(topics)
    return {topic: _text(lookup(topic)) for topic in topics}


def _text(topic_id: Any) -> str | None:
    """A topic id as text; ``None`` for none, or for Kafka's all-zero id (no id)."""
    if topic_id is None or int(getattr(topic_id, "int", 1)) == 0:
        return None
    return str(topic_id)


def stopped_why(topic: str, partition: int, offset: int, watermark: str) -> str:
    """The log line of a partition stopped because its watermark cannot be verified."""
    return (
        f"{topic}[{partition}]@{offset}: below its published watermark, but Kafka gives no "
        f"topic id to tell whether the watermark is this topic's or a deleted one's: partition "
        f"stopped, nothing skipped (delete {watermark} to enqueue from here)"
    )
