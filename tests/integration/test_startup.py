"""Start-up and outages at the edges: a stop asked for while the bridge starts, Kafka
unreachable at start, a routed topic created after the start, logs that do not flood."""

from __future__ import annotations

import signal
import struct
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaAdminClient, KafkaProducer

from tests.conftest import wait_for
from tests.integration.conftest import (
    REPO,
    Ledger,
    Topic,
    config_toml,
    read_all,
    services,
)
from tests.integration.helpers import (
    MakeTopic,
    StartBridge,
    assert_each_handled_once,
    headers_of,
    original_offset,
    send,
    send_many,
    task_ids,
    wait_committed_to_end,
)


def catches(pid: int, signum: int) -> bool:
    """Whether process ``pid`` has a handler of its own for ``signum`` (Linux /proc)."""
    status = Path(f"/proc/{pid}/status").read_text()
    caught = int(
        next(line for line in status.splitlines() if line.startswith("SigCgt:")).split()[1], 16
    )
    return bool(caught >> (signum - 1) & 1)


@pytest.mark.parametrize("after_s", [0.0, 0.2, 0.5, 0.8, 1.2, 2.5])
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_during_start_up_stops_the_bridge_cleanly(
    tmp_path: Path, make_topic: MakeTopic, worker_queue: str, after_s: float, signum: int
) -> None:
    """From its first line of code on (``bridge.__main__`` catches SIGTERM; before that the
    interpreter is still starting), whatever it is doing: importing, checking Redis, joining
    the group, consuming."""
    topic = make_topic()
    config = tmp_path / "bridge.toml"
    route = {"topic": topic.name, "task": "tests.flaky", "queue": worker_queue}
    config.write_text(config_toml(group_id=f"g-{uuid.uuid4().hex[:10]}", routes=[route]))
    proc = subprocess.Popen(
        [sys.executable, "-m", "bridge", "run", "--config", str(config)],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    wait_for(lambda: catches(proc.pid, signal.SIGTERM), timeout_s=30, interval_s=0.005,
             what="the bridge's first line of code")  # fmt: skip
    started = time.monotonic()
    while time.monotonic() - started < after_s:
        time.sleep(0.01)  # the moment of the signal is the test's parameter, not a wait
    proc.send_signal(signum)
    try:
        out, _ = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
        pytest.fail(f"the bridge ignored signal {signum} at {after_s} s:\n{out.decode()}")
    text = out.decode(errors="replace")
    assert "Traceback" not in text
    assert proc.returncode in (0, 128 + signum), text
    assert "partitions assigned" not in text or "bridge stopped" in text


def test_kafka_unreachable_at_start_is_waited_for(
    make_topic: MakeTopic,
    start_bridge: StartBridge,
    producer: KafkaProducer,
    ledger: Ledger,
    admin: KafkaAdminClient,
    kafka_restarted: object,
) -> None:
    topic = make_topic()
    sent = send_many(producer, topic, ledger, 20)
    services("stop-kafka")
    bridge = start_bridge([{"topic": topic.name, "task": "tests.flaky"}], wait_assigned=False)
    wait_for(lambda: "Kafka unreachable at start (attempt 2)" in bridge.log(), timeout_s=60,
             what="the bridge to try Kafka again")  # fmt: skip
    assert bridge.proc.poll() is None
    services("start-kafka")
    assert_each_handled_once(ledger, task_ids(bridge.group_id, topic, sent))
    wait_committed_to_end(admin, bridge.group_id, topic)
    assert "Kafka reached after" in bridge.log()
    assert bridge.stop() == 0


def test_a_stop_while_kafka_is_unreachable_at_start_is_prompt(
    make_topic: MakeTopic, start_bridge: StartBridge
) -> None:
    topic = make_topic()
    kafka = {"bootstrap_servers": "127.0.0.1:1"}  # nothing listens there
    bridge = start_bridge([{"topic": topic.name, "task": "tests.flaky"}], kafka=kafka,
                          wait_assigned=False)  # fmt: skip
    wait_for(lambda: "Kafka unreachable at start (attempt 1)" in bridge.log(), timeout_s=60,
             what="the first failed attempt")  # fmt: skip
    stopping = time.monotonic()
    assert bridge.stop(timeout_s=30) == 0
    assert time.monotonic() - stopping < 15  # one attempt's bootstrap wait at most (5 s)
    assert "bridge stopped" in bridge.log()
    assert "Traceback" not in bridge.log()


def test_a_topic_created_after_the_start_gets_its_dead_letter_topic_and_no_log_flood(
    admin: KafkaAdminClient,
    start_bridge: StartBridge,
    producer: KafkaProducer,
    ledger: Ledger,
) -> None:
    topic = Topic(f"t-{uuid.uuid4().hex[:10]}", 2)
    bridge = start_bridge([{"topic": topic.name, "task": "tests.flaky"}], wait_assigned=False)
    try:
        wait_for(lambda: "bridge started" in bridge.log(), timeout_s=60, what="the start")
        time.sleep(3)  # a flood is lines over time: watch the log for 3 s, there is no event
        # kafka-python asks for the topic ten times a second and says so each time
        assert bridge.log().count("not found in cluster metadata") <= 4, bridge.log()[-3000:]

        admin.create_topics({topic.name: {"num_partitions": 2, "replication_factor": 1}})
        wait_for(lambda: "partitions assigned" in bridge.log(), timeout_s=60,
                 what="the new topic's partitions to be assigned")  # fmt: skip
        sent = [send(producer, topic, ledger, headers=[("mode", b"permanent")]) for _ in range(4)]
        sent.append(send(producer, topic, ledger, value=b"not json"))
        dlt = topic.dlt(bridge.group_id)
        dead = read_all(dlt, expected=5, timeout_s=60)
        assert {original_of(d) for d in dead} == {(m.partition, m.offset) for m in sent}
        assert f"created dead-letter topic {dlt} (2 partitions)" in bridge.log()
        assert "Celery broker unavailable" not in bridge.log()  # the undecodable one went
        assert bridge.proc.poll() is None
    finally:
        doomed = [t for t in admin.list_topics() if t.startswith(topic.name)]
        if doomed:
            admin.delete_topics(doomed)


def original_of(dead: Any) -> tuple[int, int]:
    partition = struct.unpack(">i", headers_of(dead)["kafka_dlt-original-partition"])[0]
    return int(partition), original_offset(dead)
