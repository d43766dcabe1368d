"""The bridge's ``KafkaConsumer``: how it is made and started, and how rebalances reach the loop.

At start Kafka may not be reachable yet: :func:`connect` tries again with a backoff until it is,
or until the bridge is asked to stop. The consumer never commits by itself (the loop commits
what was accepted: :mod:`bridge.consumer.commits`). kafka-python runs rebalance listeners on its
IO thread; :class:`Rebalances` hands them to the loop's callbacks, which take the loop's lock.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Sequence

from kafka import ConsumerRebalanceListener, KafkaConsumer, TopicPartition
from kafka.errors import KafkaError

from bridge.backends.kafka.auth import security_configs
from bridge.backends.kafka.patches import await_pending_joins
from bridge.backoff import exponential_ms
from bridge.settings import KafkaSettings

log = logging.getLogger(__name__)

ConsumerFactory = Callable[[KafkaSettings], KafkaConsumer]
START_BOOTSTRAP_MS = 5_000  # one start-up attempt's wait for a broker (a stop waits for it)


def make_consumer(k: KafkaSettings) -> KafkaConsumer:
    """The bridge's Kafka consumer: no auto-commit, kafka-python 3.0's join workaround applied.

    :raises KafkaError: Kafka cannot be reached (retriable) or refuses the settings.
    """
    consumer = KafkaConsumer(
        bootstrap_servers=k.bootstrap_servers.split(","),
        bootstrap_timeout_ms=START_BOOTSTRAP_MS,
        group_id=k.group_id,
        group_instance_id=k.group_instance_id,
        client_id=k.client_id,
        enable_auto_commit=False,
        auto_offset_reset=k.auto_offset_reset,
        max_poll_records=k.max_poll_records,
        session_timeout_ms=k.session_timeout_ms,
        max_poll_interval_ms=k.max_poll_interval_ms,
        request_timeout_ms=k.request_timeout_ms,
        **security_configs(k),
    )
    await_pending_joins(consumer)
    return consumer


def connect(make: Callable[[], KafkaConsumer], stopping: threading.Event) -> KafkaConsumer | None:
    """``make()`` the consumer; while Kafka cannot be reached, try again with a backoff (1 s
    doubling up to 30 s).

    :returns: the consumer; ``None`` if ``stopping`` was set first.
    :raises KafkaError: a Kafka error that is not retriable.
    """
    attempt = 0
    while not stopping.is_set():
        try:
            consumer = make()
        except KafkaError as exc:
            if not exc.retriable:
                raise
            attempt += 1
            delay_ms = exponential_ms(attempt, initial_ms=1000, max_ms=30_000)
            log.error("Kafka unreachable at start (attempt %d), trying again in %.1f s: %s",
                      attempt, delay_ms / 1000, exc)  # fmt: skip
            stopping.wait(delay_ms / 1000)
            continue
        if attempt:
            log.warning("Kafka reached after %d failed attempt(s)", attempt)
        return consumer
    return None


def await_topic_metadata(consumer: KafkaConsumer, topics: Iterable[str]) -> None:
    """Warn of each of ``topics`` Kafka does not know (yet)."""
    # Like librdkafka, join the group only once the routed topics' partitions are known:
    # kafka-python 3.0 may otherwise lead a first assignment with no partitions and then
    # miss the metadata change that should trigger a rebalance.
    for topic in topics:
        if not consumer.partitions_for_topic(topic):
            log.warning("topic %s does not exist (yet): nothing to consume from it", topic)


Partitions = Callable[[Sequence[TopicPartition]], None]


class Rebalances(ConsumerRebalanceListener):  # type: ignore[misc]
    """kafka-python's rebalance listener, handing each change to a callback."""

    def __init__(self, assigned: Partitions, revoked: Partitions) -> None:
        self._assigned, self._revoked = assigned, revoked

    def on_partitions_revoked(self, revoked: Sequence[TopicPartition]) -> None:
        self._revoked(revoked)

    def on_partitions_assigned(self, assigned: Sequence[TopicPartition]) -> None:
        self._assigned(assigned)
