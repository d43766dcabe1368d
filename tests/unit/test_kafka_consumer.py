"""Starting the bridge's consumer (bridge/consumer/kafka_consumer.py) without Kafka: a stop
asked for while Kafka is unreachable ends the start, a non-retriable error is raised."""

from __future__ import annotations

import logging
import threading

import pytest
from kafka import TopicPartition
from kafka.errors import KafkaConnectionError, SaslAuthenticationFailedError

from bridge.consumer.kafka_consumer import Rebalances, await_topic_metadata, connect
from tests.conftest import bridge_messages
from tests.unit.fakes import FakeConsumer

LOGGER = "bridge.consumer.kafka_consumer"


def test_a_consumer_made_at_once_is_returned(caplog: pytest.LogCaptureFixture) -> None:
    consumer = FakeConsumer({})
    with caplog.at_level(logging.INFO, LOGGER):
        assert connect(lambda: consumer, threading.Event()) is consumer
    assert bridge_messages(caplog) == []


def test_a_stop_while_kafka_is_unreachable_ends_the_start(caplog: pytest.LogCaptureFixture) -> None:
    stopping = threading.Event()

    def unreachable() -> FakeConsumer:
        stopping.set()  # asked to stop during the first attempt: its backoff is not waited
        raise KafkaConnectionError("111 ECONNREFUSED")

    with caplog.at_level(logging.ERROR, LOGGER):
        assert connect(unreachable, stopping) is None
    assert bridge_messages(caplog) == [
        "Kafka unreachable at start (attempt 1), trying again in 1.0 s: "
        "KafkaConnectionError: 111 ECONNREFUSED"
    ]
    stopped = threading.Event()
    stopped.set()
    assert connect(unreachable, stopped) is None  # stopped before: never tried


def test_an_error_that_is_not_retriable_is_raised() -> None:
    def refused() -> FakeConsumer:
        raise SaslAuthenticationFailedError("bad password")

    with pytest.raises(SaslAuthenticationFailedError):
        connect(refused, threading.Event())


def test_topics_kafka_does_not_know_are_warned_of(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, LOGGER):
        await_topic_metadata(FakeConsumer({TopicPartition("a", 0): 1}), ["a", "b"])
    assert bridge_messages(caplog) == ["topic b does not exist (yet): nothing to consume from it"]


def test_rebalances_reach_their_callbacks() -> None:
    seen: list[tuple[str, list[TopicPartition]]] = []
    listener = Rebalances(lambda tps: seen.append(("assigned", list(tps))),
                          lambda tps: seen.append(("revoked", list(tps))))  # fmt: skip
    listener.on_partitions_revoked([TopicPartition("a", 0)])
    listener.on_partitions_assigned([TopicPartition("a", 1)])
    assert seen == [("revoked", [TopicPartition("a", 0)]), ("assigned", [TopicPartition("a", 1)])]
