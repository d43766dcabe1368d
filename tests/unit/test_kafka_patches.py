"""The kafka-python 3.0 workarounds (no services)."""

from __future__ import annotations

import inspect
from types import SimpleNamespace

from kafka.coordinator.base import BaseCoordinator

from bridge.backends.kafka.patches import await_pending_joins


def test_a_join_in_flight_counts_as_a_rejoin_needed() -> None:
    snapshots_equal = SimpleNamespace(need_rejoin=lambda: False, _join_task=None)
    consumer = SimpleNamespace(_coordinator=snapshots_equal)
    assert await_pending_joins(consumer)
    assert snapshots_equal.need_rejoin() is False
    snapshots_equal._join_task = object()  # the poll's timeout ended during the join
    assert snapshots_equal.need_rejoin() is True


def test_kafka_python_still_has_what_the_workaround_relies_on() -> None:
    # The loop the workaround feeds, and the task it looks at (kafka-python 3.0).
    join = inspect.getsource(BaseCoordinator.join_group_async)
    assert "while self.need_rejoin():" in join
    assert "self._join_task" in join


def test_a_consumer_unlike_kafka_python_3_0_is_left_alone() -> None:
    assert not await_pending_joins(SimpleNamespace(_coordinator=SimpleNamespace()))
