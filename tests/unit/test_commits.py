"""Commits to Kafka (bridge/consumer/commits.py) against a fake consumer: one asynchronous
commit at a time, what a failure and a recovery log and report, the commit on stopping."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from typing import Any

import pytest
from kafka import TopicPartition
from kafka.errors import KafkaTimeoutError, RebalanceInProgressError
from kafka.structs import OffsetAndMetadata

from bridge.consumer.assignment import Assignment
from bridge.consumer.commits import Commits, request
from bridge.hooks import BridgeHooks
from bridge.offsets import Partition
from tests.conftest import bridge_messages

A0, A1 = Partition("a", 0), Partition("a", 1)
LOGGER = "bridge.consumer.commits"


class Future:
    def __init__(self) -> None:
        self.is_done = False


class Consumer:
    """kafka-python's commit calls: async ones answered by :meth:`answer`, sync ones at once."""

    def __init__(self) -> None:
        self.sent: list[dict[TopicPartition, OffsetAndMetadata]] = []
        self._waiting: list[tuple[Future, Callable[..., None], Any]] = []
        self.error: Exception | None = None
        self.timeouts: list[int | None] = []

    def commit_async(self, offsets: Any, callback: Callable[..., None]) -> Future:
        self.sent.append(offsets)
        self._waiting.append((Future(), callback, offsets))
        return self._waiting[-1][0]

    def answer(self, response: Any = None) -> None:
        future, callback, offsets = self._waiting.pop(0)
        future.is_done = True
        callback(offsets, response)

    def commit(self, offsets: Any, timeout_ms: int | None = None) -> None:
        self.sent.append(offsets)
        self.timeouts.append(timeout_ms)
        if self.error is not None:
            raise self.error


class Seen(BridgeHooks):
    def __init__(self) -> None:
        self.commits: list[Mapping[Partition, int]] = []
        self.took_s: list[float] = []
        self.failures: list[BaseException] = []

    def after_commit(self, offsets: Mapping[Partition, int], took_s: float) -> None:
        self.commits.append(dict(offsets))
        self.took_s.append(took_s)

    def after_commit_failed(self, error: BaseException) -> None:
        self.failures.append(error)


def accepted(**next_offsets: int) -> Assignment:
    assignment = Assignment()
    assignment.assign([A0, A1])
    for name, offset in next_offsets.items():
        assignment.accept(A0 if name == "a0" else A1, offset - 1)
    return assignment


def test_one_asynchronous_commit_at_a_time_and_the_next_takes_what_came_meanwhile() -> None:
    assignment, consumer, seen = accepted(a0=3), Consumer(), Seen()
    commits = Commits(assignment, threading.Lock(), seen)
    commits.commit_async(consumer)
    assignment.accept(A0, 5)
    assignment.accept(A1, 0)
    commits.commit_async(consumer)
    assert consumer.sent == [{TopicPartition("a", 0): OffsetAndMetadata(3, "", -1)}]
    consumer.answer()
    assert seen.commits == [{A0: 3}]
    commits.commit_async(consumer)
    assert consumer.sent[1:] == [request({A0: 6, A1: 1})]
    consumer.answer()
    assert assignment.to_commit() == {}
    commits.commit_async(consumer)
    assert len(consumer.sent) == 2  # nothing pending: nothing sent
    assert all(0 <= took_s < 5 for took_s in seen.took_s)


def test_a_failed_commit_is_logged_once_retried_and_its_recovery_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    assignment, consumer, seen = accepted(a0=3), Consumer(), Seen()
    commits = Commits(assignment, threading.Lock(), seen)
    error = RebalanceInProgressError()
    with caplog.at_level(logging.WARNING, LOGGER):
        for answer in (error, error, None, error):
            commits.commit_async(consumer)
            consumer.answer(answer)
            assignment.accept(A0, 3 + len(consumer.sent))
    assert consumer.sent == [request({A0: 3}), request({A0: 5}), request({A0: 6}), request({A0: 7})]
    assert seen.failures == [error, error, error]
    assert bridge_messages(caplog) == [
        f"commit to Kafka failed, retrying after each poll: {error!r}",
        "commits to Kafka succeed again",
        f"commit to Kafka failed, retrying after each poll: {error!r}",
    ]
    assert assignment.to_commit() == {A0: 8}


def test_the_commit_on_stopping_waits_and_keeps_what_failed_pending() -> None:
    assignment, consumer, seen = accepted(a0=3, a1=2), Consumer(), Seen()
    commits = Commits(assignment, threading.Lock(), seen)
    consumer.error = KafkaTimeoutError()
    commits.commit(consumer, timeout_ms=10)
    assert (seen.commits, assignment.to_commit()) == ([], {A0: 3, A1: 2})
    assert seen.failures == [consumer.error]
    consumer.error = None
    commits.commit(consumer, timeout_ms=20)
    assert seen.commits == [{A0: 3, A1: 2}]
    assert consumer.timeouts == [10, 20]
    assert 0 <= seen.took_s[0] < 5
    assert assignment.to_commit() == {}
    commits.commit(consumer)
    assert len(consumer.sent) == 2  # nothing pending: nothing sent


def test_a_commit_request_carries_next_offsets_without_metadata() -> None:
    assert request({A0: 7}) == {TopicPartition("a", 0): OffsetAndMetadata(7, "", -1)}
    assert all(type(tp) is TopicPartition for tp in request({A0: 7, A1: 1}))
