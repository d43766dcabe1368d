"""An operator pauses a route (``python -m bridge pause``): every bridge of the group stops
consuming it within a second, status says who paused it and why, and ``resume`` lets the
records that waited in Kafka through; nothing is lost."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

from kafka import KafkaAdminClient, KafkaProducer

from tests.conftest import wait_for
from tests.integration.conftest import REPO, BridgeProcess, Ledger
from tests.integration.helpers import (
    MakeTopic,
    StartBridge,
    route_named,
    send,
    status_json,
    task_ids,
    wait_committed_to_end,
)


def command(bridge: BridgeProcess, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "bridge", *args, "--config", str(bridge.config_path)],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_a_paused_route_waits_in_kafka_until_resumed(
    make_topic: MakeTopic, start_bridge: StartBridge, producer: KafkaProducer,
    ledger: Ledger, admin: KafkaAdminClient,
) -> None:  # fmt: skip
    topic = make_topic()
    bridge = start_bridge([{"topic": topic.name, "task": "tests.echo"}])
    first = send(producer, topic, ledger)
    wait_committed_to_end(admin, bridge.group_id, topic)
    said = command(bridge, "pause", "--topic", topic.name, "--reason", "incident 7")
    assert f"paused {topic.name}" in said

    def paused() -> dict[str, Any]:
        route = route_named(status_json(bridge), topic.name)
        return route if route["partitions"][0]["paused"] == "operator" else {}

    route = wait_for(paused, timeout_s=30, what="status to show the route paused by an operator")
    assert route["paused_by_operator"]["why"] == "incident 7"
    assert any("paused by" in w and "incident 7" in w for w in status_json(bridge)["warnings"])
    assert "already paused" in command(bridge, "pause", "--topic", topic.name)
    held = [send(producer, topic, ledger) for _ in range(3)]
    # The bridge reports its state every loop; two reports after the sends, they still wait.
    wait_for(lambda: route_named(status_json(bridge), topic.name)["lag"] == 3, timeout_s=30,
             what="the records to wait in Kafka")  # fmt: skip
    assert ledger.done() == task_ids(bridge.group_id, topic, [first])
    assert "pause lifted" in command(bridge, "resume", "--topic", topic.name)
    wait_for(lambda: ledger.done() == task_ids(bridge.group_id, topic, [first, *held]),
             timeout_s=60, what="the held records handled after the resume")  # fmt: skip
    wait_committed_to_end(admin, bridge.group_id, topic)
    assert f"route {topic.name} resumed by an operator" in bridge.log()
