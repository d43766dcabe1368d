"""``--log-format json`` / ``BRIDGE_LOG_FORMAT=json``: one JSON object per line, and each line
about a record names its topic, partition, offset and task id."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaProducer

from bridge.logs import FORMAT_ENV
from tests.conftest import wait_for
from tests.integration.conftest import Ledger, start_worker
from tests.integration.helpers import MakeTopic, StartBridge, send


def json_lines(text: str, *, only: bool = True) -> list[dict[str, Any]]:
    """The lines of a log, parsed. With ``only``, a line that is not a JSON object fails the
    test; without, such lines are left out (Celery prints a banner and Python warnings to the
    worker's output, outside logging)."""
    lines = [line for line in text.splitlines() if line.strip()]
    return [json.loads(line) for line in lines if only or line.startswith("{")]


def about(lines: list[dict[str, Any]], words: str) -> list[dict[str, Any]]:
    return [line for line in lines if words in line.get("message", "")]


def test_bridge_and_worker_log_json_lines_that_locate_each_record(
    make_topic: MakeTopic,
    start_bridge: StartBridge,
    producer: KafkaProducer,
    ledger: Ledger,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(FORMAT_ENV, "json")  # inherited by the bridge and the worker
    queue = f"json-logs-{uuid.uuid4().hex[:8]}"
    worker = start_worker(tmp_path, queue)
    try:
        topic = make_topic()
        bridge = start_bridge([{"topic": topic.name, "task": "tests.flaky", "queue": queue}])
        undecodable = send(producer, topic, ledger, value=b"not json")
        invalid = send(producer, topic, ledger, headers=[("mode", b"permanent")])

        def dead_lettered() -> list[dict[str, Any]]:
            return about(json_lines(worker.log_path.read_text(), only=False), "dead-lettered")

        wait_for(lambda: dead_lettered(), timeout_s=60, what="the worker's dead-letter line")
        [line] = dead_lettered()
        task_id = f"{bridge.group_id}:{topic.name}:0:{invalid.offset}"
        assert (line["topic"], line["partition"], line["offset"], line["task_id"]) == (
            topic.name, 0, invalid.offset, task_id)  # fmt: skip
        assert line["level"] == "ERROR"
        assert line["time"].endswith("+00:00")

        assert bridge.stop() == 0
        lines = json_lines(bridge.log())
        [undecodable_line] = about(lines, "undecodable")
        assert (undecodable_line["topic"], undecodable_line["offset"]) == (
            topic.name, undecodable.offset)  # fmt: skip
        assert undecodable_line["task_id"] == f"{bridge.group_id}:{topic.name}:0:0"
        assert about(lines, "bridge stopped"), "the bridge's own lines are JSON too"
    finally:
        worker.stop()


def test_an_unknown_log_format_fails_at_start_naming_the_variable(
    start_bridge: StartBridge, make_topic: MakeTopic, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(FORMAT_ENV, "xml")
    bridge = start_bridge([{"topic": make_topic().name, "task": "tests.flaky"}],
                          wait_assigned=False)  # fmt: skip
    assert bridge.proc.wait(timeout=30) == 2
    assert "BRIDGE_LOG_FORMAT: 'xml' is not one of text, json" in bridge.log()
