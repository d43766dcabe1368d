"""A retried record shows in Flower as one task with its retries."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaProducer

from tests.conftest import wait_for
from tests.integration.conftest import REPO, Ledger, config_toml
from tests.integration.helpers import MakeTopic, StartBridge, free_port, send

AUTH = "tester:secret"


def get_json(url: str) -> Any:
    token = base64.b64encode(AUTH.encode()).decode()
    request = urllib.request.Request(url, headers={"Authorization": f"Basic {token}"})
    try:
        with urllib.request.urlopen(request, timeout=2) as response:
            return json.loads(response.read())
    except (OSError, ValueError):
        return None


@pytest.fixture
def flower(tmp_path: Path, worker: Path) -> Iterator[str]:
    """Flower on a free port, watching the test broker (started before the task runs)."""
    config = tmp_path / "flower.toml"
    config.write_text(config_toml(group_id="flower", routes=[{"topic": "x", "task": "x"}]))
    port = free_port()
    log = tmp_path / "flower.log"
    cmd = [
        sys.executable, "-m", "celery", "-A", "tests.integration.handlers", "flower",
        f"--port={port}", "--address=127.0.0.1", f"--basic-auth={AUTH}",
    ]  # fmt: skip
    env = {**os.environ, "BRIDGE_CONFIG": str(config)}
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: get_json(f"{url}/api/workers") is not None, what="Flower's API")
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_flower_shows_a_retried_record_as_one_task_with_its_retries(
    flower: str,
    make_topic: MakeTopic,
    start_bridge: StartBridge,
    producer: KafkaProducer,
    ledger: Ledger,
) -> None:
    topic = make_topic()
    # A 1 s backoff (through the Redis schedule): with a 10 ms countdown the retry's events
    # can reach Flower before the failed attempt's, and Flower may then end on RETRY.
    bridge = start_bridge([{"topic": topic.name, "task": "tests.exponential"}])
    meta = send(producer, topic, ledger, headers=[("fail", b"1")])
    task_id = f"{bridge.group_id}:{topic.name}:0:{meta.offset}"

    last: list[Any] = [None]

    def succeeded() -> Any:
        last[0] = info = get_json(f"{flower}/api/task/info/{task_id}")
        return info if info and info.get("state") == "SUCCESS" else None

    try:
        info = wait_for(succeeded, what="Flower to report the task's success")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; Flower's last answer: {last[0]}") from None
    assert info["name"] == "tests.exponential"
    assert info["retries"] == 1
    assert info["retried"] is not None  # the retry event, on the same task
    # The record, readable (its argsrepr), not the envelope's repr with base64 key and value.
    assert info["args"].startswith(f"Record({topic.name}[0]@{meta.offset} key="), info["args"]
    assert " value=b'" in info["args"], info["args"]
    tasks = get_json(f"{flower}/api/tasks?limit=1000")
    assert [tid for tid in tasks if tid.startswith(f"{bridge.group_id}:")] == [task_id]
