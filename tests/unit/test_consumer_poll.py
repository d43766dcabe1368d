"""The bridge's poll outlives a broker that is unreachable (kafka-python 3.0 raises then), and
lets other errors through unless they come from a batch it cannot decode (test_batches.py)."""

from __future__ import annotations

import functools
import threading
from types import SimpleNamespace
from typing import Any

import pytest
from kafka.errors import KafkaConnectionError, TopicAuthorizationFailedError

from bridge.consumer import loop as consumer
from bridge.consumer.loop import Bridge

SETTINGS = SimpleNamespace(kafka=SimpleNamespace(poll_timeout_ms=5, max_poll_records=10))


class Failing:
    """A consumer whose poll raises ``error``."""

    def __init__(self, error: Exception) -> None:
        self.error = error

    def poll(self, **_: Any) -> Any:
        raise self.error


def test_a_poll_that_finds_the_broker_unreachable_brings_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(consumer, "_POLL_RETRY_S", 0)
    bridge: Any = SimpleNamespace(settings=SETTINGS, _stopping=threading.Event())
    assert Bridge._poll(bridge, Failing(KafkaConnectionError("111 ECONNREFUSED"))) == {}


@pytest.mark.parametrize("error", [TopicAuthorizationFailedError(), RuntimeError("a bug")])
def test_an_error_that_is_neither_retriable_nor_a_bad_batch_still_stops_the_bridge(
    error: Exception,
) -> None:
    bridge: Any = SimpleNamespace(settings=SETTINGS)
    bridge._skip_undecodable = functools.partial(Bridge._skip_undecodable, bridge)
    with pytest.raises(type(error)):
        Bridge._poll(bridge, Failing(error))
