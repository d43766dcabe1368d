"""Hooks into the bridge loop, and why partitions are paused (pure)."""

from __future__ import annotations

import logging

import pytest

from bridge.consumer.backpressure import pause_reasons, to_pause
from bridge.hooks import BridgeHooks, HookChain, PartitionState


class Boom(BridgeHooks):
    def after_commit_failed(self, error: BaseException) -> None:
        raise RuntimeError("hook bug")


class Seen(BridgeHooks):
    def __init__(self) -> None:
        self.errors: list[BaseException] = []

    def after_commit_failed(self, error: BaseException) -> None:
        self.errors.append(error)


def test_a_failing_hook_is_logged_and_the_next_hook_still_runs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    seen = Seen()
    error = TimeoutError("commit")
    with caplog.at_level(logging.ERROR, logger="bridge.hooks"):
        HookChain([Boom(), seen]).after_commit_failed(error)
    assert seen.errors == [error]
    assert "hook Boom.after_commit_failed failed" in caplog.text


def test_pause_reasons_name_the_cause_of_each_paused_partition() -> None:
    assigned = [("a", 0), ("a", 1), ("b", 0), ("c", 0)]
    held = {("b", 0): "key", ("a", 1): "partition"}
    reasons = pause_reasons(assigned, broker_down=False, held_topics={"a"}, held_partitions=held)
    assert reasons == {("a", 0): "backpressure", ("a", 1): "backpressure", ("b", 0): "key-full"}
    down = pause_reasons(assigned, broker_down=True, held_topics=(), held_partitions=held)
    assert set(down.values()) == {"broker-down"}
    assert set(down) == set(assigned)
    assert to_pause(assigned, broker_down=False, held_topics=(), held_partitions=[("c", 0)]) == {
        ("c", 0)
    }


def test_partition_state_lag_and_uncommitted() -> None:
    state = PartitionState("t", 0, accepted=40, committed=30, highwater=100)
    assert (state.lag, state.uncommitted) == (60, 10)
    unknown = PartitionState("t", 0, accepted=None, committed=None, highwater=None)
    assert (unknown.lag, unknown.uncommitted) == (None, 0)
