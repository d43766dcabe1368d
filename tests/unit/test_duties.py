"""The bridge's background duties without Redis or Kafka: what each round does, and the ordered
key transitions the dead-letter writer drives (the real office, a fake producer and store)."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from bridge import keys
from bridge.backends.kafka.dead_letters import DeadLetterOffice
from bridge.consumer.duties import (
    MOVE_BATCH,
    WRITE_BATCH,
    DeadLetterWriter,
    Duties,
    HeadRepublisher,
    RetryMover,
)
from bridge.deadletter import to_dict
from bridge.errors import DeadLetterError
from bridge.hooks import BridgeHooks
from bridge.routing import Router
from bridge.settings import BridgeSettings
from tests.conftest import bridge_records
from tests.unit.test_dead_letter_office import REFUSED, UNREACHABLE, Producer, Store
from tests.unit.test_deadletter_headers import dead_letter

NOW_S = 1_800_000_000.0
NOW_MS = 1_800_000_000_000
STALL_MS = 30_000


class Pending(Store):
    """A dead-letter store holding ``letters``, all due."""

    def __init__(self, letters: list[dict[str, Any]]) -> None:
        super().__init__()
        self.letters = letters

    def due(self, now_ms: int, limit: int = 100) -> list[dict[str, Any]]:
        self.calls.append(("due", now_ms, limit))
        return self.letters[:limit]


class KeyQueues:
    """Records the key transitions asked for."""

    def __init__(self, stalled: list[str] | None = None) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.stalled = stalled or []

    def fifo(self, topic: str, key: bytes | None, partition: int) -> str:
        return keys.ordered_queue("shop", topic, key, partition)

    def done(self, fifo: str, partition: int, task_id: str, deadline_ms: int) -> bool:
        self.calls.append(("done", fifo, partition, task_id, deadline_ms))
        return True

    def park(self, fifo: str, task_id: str, why: dict[str, Any] | None) -> bool:
        self.calls.append(("park", fifo, task_id, why))
        return True

    def republish_stalled(self, now_ms: int, deadline_ms: int, limit: int = 100) -> list[str]:
        self.calls.append(("republish", now_ms, deadline_ms))
        return self.stalled


class Hooks(BridgeHooks):
    def __init__(self) -> None:
        self.dead_letters: list[tuple[str, str, bool]] = []

    def after_dead_letter(self, topic: str, reason: str, deferred: bool) -> None:
        self.dead_letters.append((topic, reason, deferred))


def writer(
    letters: list[dict[str, Any]], producer: Producer
) -> tuple[DeadLetterWriter, Pending, KeyQueues, Hooks]:
    store, queues, hooks = Pending(letters), KeyQueues(), Hooks()
    office = DeadLetterOffice(producer, store, clock=lambda: NOW_S)  # type: ignore[arg-type]
    duty = DeadLetterWriter(office, store, queues, hooks, STALL_MS, clock=lambda: NOW_S)  # type: ignore[arg-type]
    return duty, store, queues, hooks


FIFO = keys.ordered_queue("shop", "orders", b"k", 7)


def test_a_written_ordered_dead_letter_lets_its_key_go_on() -> None:
    data = to_dict(dead_letter(ordered=True))
    duty, store, queues, hooks = writer([data], Producer())
    duty.write_due()
    assert store.calls == [("due", NOW_MS, WRITE_BATCH), ("written", data)]
    assert queues.calls == [("done", FIFO, 7, data["task_id"], NOW_MS + STALL_MS)]
    assert hooks.dead_letters == [("orders", "exhausted", True)]


def test_a_written_unordered_dead_letter_touches_no_key() -> None:
    duty, _, queues, hooks = writer([to_dict(dead_letter())], Producer())
    duty.write_due()
    assert queues.calls == []
    assert hooks.dead_letters == [("orders", "exhausted", True)]


def test_a_refused_ordered_dead_letter_parks_its_key_as_dead_letter_refused() -> None:
    data = to_dict(dead_letter(ordered=True))
    duty, store, queues, hooks = writer([data], Producer(REFUSED))
    duty.write_due()
    assert store.calls[1:] == [("park", data)]
    [(step, fifo, task_id, why)] = queues.calls
    assert (step, fifo, task_id) == ("park", FIFO, data["task_id"])
    assert (why["reason"], why["attempts"]) == ("dead-letter-refused", 4)
    assert why["error"]["fqcn"] == "bridge.errors.DeadLetterRefusedError"
    assert hooks.dead_letters == []


def test_a_failed_write_ends_the_round_and_the_letters_after_it_wait() -> None:
    first, second = (to_dict(dead_letter(task_id=f"t{n}", ordered=True)) for n in (1, 2))
    duty, store, queues, hooks = writer([first, second], Producer(UNREACHABLE))
    duty.write_due()
    assert [call[0] for call in store.calls] == ["due", "retry_later"]
    assert store.calls[1][1] == first
    assert queues.calls == []  # the key keeps waiting for its head's dead letter
    assert hooks.dead_letters == []


def test_the_writer_logs_what_it_did_with_each_letter(caplog: pytest.LogCaptureFixture) -> None:
    letters = [to_dict(dead_letter(task_id="t1"))]
    with caplog.at_level(logging.WARNING, logger="bridge.consumer.duties"):
        writer(letters, Producer())[0].write_due()
        writer(letters, Producer(REFUSED))[0].write_due()
        writer(letters, Producer(DeadLetterError("down")))[0].write_due()
    assert [r.levelname for r in bridge_records(caplog)] == ["WARNING", "CRITICAL", "ERROR"]
    assert "pending dead letter (exhausted) written to orders.shop.dlt, task t1" in caplog.text
    assert "Kafka refuses its dead letter, parked: MessageSizeTooLargeError" in caplog.text
    assert "dead letter still not written (attempt 1), next in 1000 ms: down" in caplog.text
    assert all(r.offset == 2**40 for r in bridge_records(caplog))  # type: ignore[attr-defined]


class Scheduler:
    def __init__(self, moved: list[int]) -> None:
        self.moved, self.asked = moved, []  # type: ignore[var-annotated]

    def move_due(self, now_ms: int, limit: int = 1000) -> int:
        self.asked.append((now_ms, limit))
        return self.moved.pop(0)


def test_the_mover_moves_until_a_batch_is_not_full() -> None:
    scheduler = Scheduler([MOVE_BATCH, MOVE_BATCH, 3, MOVE_BATCH])
    RetryMover(scheduler, clock=lambda: NOW_S).move_due()  # type: ignore[arg-type]
    assert scheduler.asked == [(NOW_MS, MOVE_BATCH)] * 3


def test_the_watchdog_republishes_stalled_heads_with_a_new_deadline(
    caplog: pytest.LogCaptureFixture,
) -> None:
    queues = KeyQueues(stalled=[FIFO])
    with caplog.at_level(logging.WARNING, logger="bridge.consumer.duties"):
        HeadRepublisher(queues, STALL_MS, clock=lambda: NOW_S).republish_stalled()  # type: ignore[arg-type]
    assert queues.calls == [("republish", NOW_MS, NOW_MS + STALL_MS)]
    assert f"ordered key {FIFO}: no sign of its head for 30000 ms" in caplog.text
    assert bridge_records(caplog)[0].topic == "orders"  # type: ignore[attr-defined]


def settings(*, ordered: bool) -> BridgeSettings:
    return BridgeSettings.model_validate(
        {
            "kafka": {"bootstrap_servers": "127.0.0.1:1", "group_id": "shop"},
            "celery": {"broker_url": "redis://127.0.0.1:1/0"},
            "routes": [{"topic": "orders", "task": "shop.handle", "ordered": ordered}],
        }
    )


@pytest.mark.parametrize("ordered", [False, True])
def test_the_watchdog_runs_only_for_ordered_routes(ordered: bool) -> None:
    conf = settings(ordered=ordered)
    duties = Duties(conf, Router.from_settings(conf).routes, Producer(), Hooks())
    watchdog = ["ordered-key watchdog"] if ordered else []
    assert duties.names == [
        "delayed-retry mover", "dead-letter writer", "queue consumer watch", *watchdog,
    ]  # fmt: skip
    duties.stop(timeout_s=1)  # never started: returns at once
