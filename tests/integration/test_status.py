"""``python -m bridge status``: a system brought into a known state is reported exactly."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from typing import Any

from kafka import KafkaProducer

from bridge.backends.redis.dead_letter_store import DeadLetterStore
from bridge.deadletter import DeadLetter, ErrorInfo, to_dict
from bridge.failures import Reason
from bridge.record import Record
from tests.conftest import wait_for
from tests.integration.conftest import REPO, BridgeProcess, Ledger
from tests.integration.helpers import MakeTopic, StartBridge, route_named, send, status_json

LONG_S = 600  # retries asked for in the test are due long after it ends


def dead_letter(group_id: str, offset: int) -> dict[str, Any]:
    record = Record("elsewhere", 0, offset, 0, b"k", b"{}", (), "json")
    return to_dict(
        DeadLetter(
            record,
            group_id,
            "elsewhere.dlt",
            Reason.EXHAUSTED,
            ErrorInfo("builtins.TimeoutError", "slow", ""),
            4,
            "shop.x",
            f"{group_id}:elsewhere:0:{offset}",
            "2026-01-01T00:00:00.000Z",
            "2026-01-01T00:00:01.000Z",
        )
    )


def settled(doc: dict[str, Any], orders: str, held: str) -> bool:
    ordered = doc["ordered"]
    return (
        doc["retries"]["waiting"] == 3
        and route_named(doc, orders)["dlt_records"] == 1
        and route_named(doc, held)["partitions"][0]["paused"] == "backpressure"
        and [k["key"] for k in ordered["keys_waiting"]] == ["slow"]
        and [k["key"] for k in ordered["keys_parked"]] == ["bad"]
        and route_named(doc, orders)["lag"] == 0
    )


def test_status_reports_lag_pauses_retries_keys_and_dead_letters_exactly(
    make_topic: MakeTopic, start_bridge: StartBridge, producer: KafkaProducer, ledger: Ledger
) -> None:
    orders, pay, held = make_topic(), make_topic(), make_topic()
    nobody = f"nobody-{uuid.uuid4().hex[:8]}"  # no worker: what is published stays queued
    bridge = start_bridge([
        {"topic": orders.name, "task": "tests.long_retry"},
        {"topic": pay.name, "task": "tests.ordered", "ordered": True, "on_exhausted": "park",
         "retry_interval_s": LONG_S},
        {"topic": held.name, "task": "tests.flaky", "queue": nobody, "max_queue_depth": 1},
    ])  # fmt: skip
    later = [("fail", b"1"), ("countdown", str(LONG_S).encode())]
    for _ in range(2):  # two retries waiting in Redis
        send(producer, orders, ledger, headers=later)
    send(producer, orders, ledger, headers=[("mode", b"permanent")])  # one dead letter
    down = [("fail-until", str(time.time() + 3600).encode())]
    send(producer, pay, ledger, key=b"slow", headers=down)  # a head retrying: a third retry
    send(producer, pay, ledger, key=b"bad", headers=[("mode", b"permanent")])  # parks its key
    for key in (b"slow", b"slow", b"bad"):
        send(producer, pay, ledger, key=key)  # waiting behind their heads
    send(producer, held, ledger)
    wait_for(lambda: ledger.client.llen(nobody) == 1, what="the first record of the held topic")
    for _ in range(2):  # the queue is at its limit: these stay in Kafka
        send(producer, held, ledger)
    store = DeadLetterStore(ledger.client, bridge.group_id)
    store.defer(dead_letter(bridge.group_id, 1), int(time.time() * 1000) + LONG_S * 1000)
    store.park(dead_letter(bridge.group_id, 2))

    wait_for(lambda: settled(status_json(bridge), orders.name, held.name), timeout_s=60,
             what="the known state")  # fmt: skip
    doc = status_json(bridge)
    try:
        assert_known_state(doc, bridge, orders.name, pay.name, held.name, nobody)
        wide = {**os.environ, "COLUMNS": "250"}
        table = subprocess.run(
            [sys.executable, "-m", "bridge", "status", "--config", str(bridge.config_path)],
            cwd=REPO, capture_output=True, text=True, timeout=60, env=wide,
        )  # fmt: skip
        assert table.returncode == 0, table.stderr
        for shown in ("1 bridge(s) running", "paused: backpressure", "consuming", "slow", "bad",
                      "delayed retries waiting in Redis: 3", "1 pending", "1 parked"):  # fmt: skip
            assert shown in table.stdout, f"{shown!r} not in:\n{table.stdout}"

        assert bridge.stop() == 0
        stopped = status_json(bridge)
        assert stopped["bridges"] == []
        [p] = route_named(stopped, held.name)["partitions"]
        assert (p["owner"], p["paused"], p["committed"], p["lag"]) == (None, None, 1, 2)
    finally:
        ledger.client.delete(nobody)


def assert_known_state(
    doc: dict[str, Any], bridge: BridgeProcess, orders: str, pay: str, held: str, nobody: str
) -> None:
    [member] = doc["bridges"]
    assert sorted(member["partitions"]) == sorted(f"{t}[0]" for t in (orders, pay, held))
    assert doc["errors"] == []
    o, p, h = (route_named(doc, t) for t in (orders, pay, held))
    assert (o["lag"], o["dlt_records"], o["partitions"][0]["paused"]) == (0, 1, None)
    assert (p["lag"], p["dlt_records"], p["ordered"]) == (0, 0, True)
    assert (h["lag"], h["queue_depth"], h["queue"]) == (2, 1, nobody)
    assert h["partitions"] == [{"partition": 0, "committed": 1, "end": 3, "lag": 2,
                                "owner": member["member"], "paused": "backpressure",
                                "uncommitted": 0}]  # fmt: skip
    retries = doc["retries"]
    assert (retries["waiting"], retries["overdue"]) == (3, 0)
    assert 0 < retries["next_due_in_s"] <= LONG_S
    dead = doc["dead_letters"]
    assert (dead["pending"], dead["parked"]) == (1, 1)
    assert [d["task_id"] for d in dead["parked_sample"]] == [f"{bridge.group_id}:elsewhere:0:2"]
    ordered = doc["ordered"]
    assert ordered["records_waiting"] == {f"{pay}[0]": 5}
    [slow] = ordered["keys_waiting"]
    assert (slow["depth"], slow["head_task_id"]) == (3, f"{bridge.group_id}:{pay}:0:0")
    assert slow["failing_for_s"] > 0
    [bad] = ordered["keys_parked"]
    assert (bad["depth"], bad["parked"]["reason"], bad["head_task_id"]) == (
        2, "non-retryable", f"{bridge.group_id}:{pay}:0:1")  # fmt: skip
    assert bad["parked_for_s"] >= 0
