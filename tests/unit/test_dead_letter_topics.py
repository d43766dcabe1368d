"""The DLTs of topics assigned after the start (bridge/backends/kafka/topics.py), without Kafka:
which are created, and how soon after a failure the bridge tries again (its creation faked)."""

from __future__ import annotations

import logging
from collections.abc import Iterable

import pytest
from kafka.errors import KafkaTimeoutError

from bridge.backends.kafka import topics
from bridge.backends.kafka.topics import RETRY_S, DeadLetterTopics
from bridge.routing import Route
from bridge.settings import KafkaSettings

LOGGER = "bridge.backends.kafka.topics"
ROUTES = [Route(t, "t", "celery", False, "json", f"{t}.g.dlt") for t in ("a", "b", "c")]


class Topics(DeadLetterTopics):
    """Creates the DLTs it is asked for, or fails while ``failing``; time stands still."""

    def __init__(self) -> None:
        kafka = KafkaSettings(bootstrap_servers="127.0.0.1:9", group_id="g")
        super().__init__(kafka, ROUTES, bootstrap_timeout_ms=0, clock=lambda: self.now_s)
        self.now_s = 100.0
        self.asked: list[set[str]] = []
        self.failing = False

    def ensure(self, topics: Iterable[str] | None = None) -> None:
        wanted = set(topics or ())
        self.asked.append(wanted)
        if self.failing:
            raise KafkaTimeoutError("no broker")
        self._ready |= wanted


def test_the_dlts_of_assigned_topics_not_known_to_exist_are_created() -> None:
    made = Topics()
    made.ensure_assigned(["a", "unrouted"])
    assert made.asked == [{"a"}]
    made.ensure_assigned(["a", "b"])
    assert made.asked[1:] == [{"b"}]
    assert (made.complete, made.missing(["a", "b", "c"])) == (False, {"c"})
    made.ensure_assigned(["a", "b", "c"])
    assert made.complete
    made.ensure_assigned(["a", "b", "c"])
    assert len(made.asked) == 3


def test_after_a_failure_it_tries_again_in_retry_s(caplog: pytest.LogCaptureFixture) -> None:
    made = Topics()
    made.failing = True
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        made.ensure_assigned(["b", "a"])
    [line] = [r for r in caplog.records if r.name == LOGGER]
    assert line.levelno == logging.WARNING
    assert line.getMessage() == (
        "dead-letter topics of a, b not created yet, trying again in 5 s: "
        "KafkaTimeoutError('no broker')"
    )
    made.failing = False
    made.now_s += RETRY_S - 0.001
    made.ensure_assigned(["a", "b"])
    assert made.asked == [{"a", "b"}]
    made.now_s += 0.001
    made.ensure_assigned(["a", "b"])
    assert made.asked == [{"a", "b"}, {"a", "b"}]
    assert made.complete is False  # "c" is not assigned here


def test_nothing_missing_asks_nothing_even_after_a_failure() -> None:
    made = Topics()
    made.ensure_assigned(["a"])
    made.failing = True
    made.ensure_assigned(["b"])
    made.ensure_assigned(["a"])
    assert made.asked == [{"a"}, {"b"}]


def test_retry_s_is_five_seconds() -> None:
    assert topics.RETRY_S == 5
