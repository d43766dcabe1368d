"""The bridge and a worker on a Sentinel-managed Redis (a primary, a replica, three Sentinels of
the test's own): they publish and run through the primary the Sentinels name, keep going across
a failover without a restart, and ``status`` names the new primary.

Redis replicates asynchronously: what the primary accepted in the instant before it died may
never reach the replica (issue 19, part 2, makes the bridge wait for it). So the primary is
killed once what it holds is on the replica (``WAIT``), and the stream goes on from there: the
records sent while it is down, and after, are published to the new primary.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

from celery import Celery
from kafka import KafkaAdminClient, KafkaProducer

from tests.conftest import wait_for
from tests.integration.conftest import REPO, Ledger, Topic, config_toml, start_worker
from tests.integration.helpers import (
    MakeTopic,
    StartBridge,
    assert_each_handled_once,
    real_record,
    route_named,
    send,
    send_many,
    status_json,
    task_ids,
    wait_committed_to_end,
)
from tests.integration.sentinel import PASSWORD, SENTINEL_PASSWORD, Topology
from tests.integration.test_ordered import ORDERED, by_key, succeeded

MASTER = "test-primary"


def sentinel_celery(topology: Topology) -> dict[str, Any]:
    """The ``[celery]`` keys of a bridge (or worker) on the topology's Sentinels."""
    return {
        "broker_url": topology.run("redis-url").stdout.strip(),
        "sentinel_password": SENTINEL_PASSWORD,
        "transport_options": {"master_name": MASTER},
    }


def replicated(topology: Topology, primary: int) -> None:
    """Wait until the replica has everything the primary holds (a write, then ``WAIT``)."""
    client = topology.node(primary)
    client.set("test:replicated", "yes")
    assert client.wait(1, 10_000) == 1, "the replica did not acknowledge"


def quiet(topology: Topology, primary: int, queue: str) -> bool:
    """Nothing queued or unacknowledged on the primary: every task ran and was acknowledged."""
    client = topology.node(primary)
    return client.llen(queue) == 0 and client.hlen("unacked") == 0


def test_the_bridge_and_a_worker_keep_going_across_a_failover(
    sentinel_topology: Topology,
    make_topic: MakeTopic,
    start_bridge: StartBridge,
    producer: KafkaProducer,
    ledger: Ledger,
    admin: KafkaAdminClient,
    tmp_path: Path,
) -> None:
    topology = sentinel_topology
    first, second = topology.data_ports
    celery = sentinel_celery(topology)
    queue = f"sentinel-{uuid.uuid4().hex[:8]}"
    plain, keyed = make_topic(partitions=2), make_topic(partitions=2)
    worker = start_worker(tmp_path, queue, sections={"celery": celery})
    try:
        bridge = start_bridge(
            [{"topic": plain.name, "task": "tests.flaky", "queue": queue},
             {"topic": keyed.name, **ORDERED, "queue": queue}],
            sections={"celery": celery},
        )  # fmt: skip
        assert status_json(bridge)["redis_primary"] == f"127.0.0.1:{first}"
        before = send_many(producer, plain, ledger, 100)
        keyed_before = send_keyed(producer, keyed, ledger, 100)
        assert_each_handled_once(
            ledger,
            task_ids(bridge.group_id, plain, before)
            | task_ids(bridge.group_id, keyed, keyed_before),
        )
        for topic in (plain, keyed):
            wait_committed_to_end(admin, bridge.group_id, topic)
        wait_for(lambda: quiet(topology, first, queue), what="the queue drained and acknowledged")
        replicated(topology, first)

        os.kill(topology.pid(first), signal.SIGKILL)
        during = send_many(producer, plain, ledger, 100)  # while the Sentinels fail over
        keyed_during = send_keyed(producer, keyed, ledger, 100)
        wait_for(lambda: topology.primary() == second, timeout_s=60, what="the failover")

        assert_each_handled_once(
            ledger,
            task_ids(bridge.group_id, plain, before + during)
            | task_ids(bridge.group_id, keyed, keyed_before + keyed_during),
        )
        for topic in (plain, keyed):
            wait_committed_to_end(admin, bridge.group_id, topic)
        ordered = {k: v for k, v in by_key(succeeded(ledger)).items() if k.startswith("ordered-")}
        assert (len(ordered), sum(len(offsets) for offsets in ordered.values())) == (5, 200)
        assert all(offsets == sorted(offsets) for offsets in ordered.values()), ordered
        doc = status_json(bridge)
        assert doc["redis_primary"] == f"127.0.0.1:{second}"
        # The worker fetches through the bridge's transport (its heartbeat), on the new primary
        # (the channel of its lost connection counts too until processing_lease_s is over).
        assert route_named(doc, plain.name)["consumers"] >= 1, doc
        assert bridge.proc.poll() is None, bridge.log()[-3000:]
        assert "Celery broker available again" in bridge.log()
        assert worker.proc.poll() is None, worker.log_path.read_text()[-3000:]
        for log in (bridge.log(), worker.log_path.read_text()):
            assert PASSWORD not in log
            assert SENTINEL_PASSWORD not in log
    finally:
        worker.stop()


def test_a_worker_with_a_task_in_hand_survives_a_failover(
    sentinel_topology: Topology, ledger: Ledger, tmp_path: Path
) -> None:
    topology = sentinel_topology
    first, second = topology.data_ports
    celery = sentinel_celery(topology)
    queue = f"in-hand-{uuid.uuid4().hex[:8]}"
    worker = start_worker(tmp_path, queue, concurrency=1, sections={"celery": celery})
    sender = Celery("sentinel-sender", broker=celery["broker_url"], set_as_current=False)
    sender.conf.update(
        task_serializer="json",
        broker_transport_options={
            "master_name": MASTER,
            "sentinel_kwargs": {"password": SENTINEL_PASSWORD},
        },
    )
    slow = real_record(ledger, headers=(("sleep-ms", b"4000"),))
    try:
        task_id = sender.send_task("tests.flaky", args=[slow], queue=queue).id
        wait_for(lambda: task_id in ledger.attempts(), what="the task started")
        replicated(topology, first)  # its message, unacknowledged while it runs, is there too
        os.kill(topology.pid(first), signal.SIGKILL)
        wait_for(lambda: topology.primary() == second, timeout_s=60, what="the failover")
        wait_for(lambda: task_id in ledger.done(), timeout_s=60, what="the task done")
        # It acknowledged that task on the channel of its lost connection, and goes on.
        after = sender.send_task("tests.flaky", args=[real_record(ledger)], queue=queue).id
        wait_for(lambda: after in ledger.done(), timeout_s=60, what="a task after the failover")
        log = worker.log_path.read_text()
        assert worker.proc.poll() is None, log[-3000:]
        assert "Unrecoverable error" not in log
        assert ledger.attempts() == {task_id: 1, after: 1}
    finally:
        worker.stop()
        sender.close()


def send_keyed(producer: KafkaProducer, topic: Topic, ledger: Ledger, count: int) -> list[Any]:
    """``count`` records over five keys (``ordered-0`` …), in this order; their metadata."""
    return [send(producer, topic, ledger, key=f"ordered-{i % 5}".encode()) for i in range(count)]


def test_a_wrong_sentinel_password_stops_run_naming_the_key(
    sentinel_topology: Topology, tmp_path: Path
) -> None:
    wrong = f"wrong-{uuid.uuid4().hex}"
    celery = {**sentinel_celery(sentinel_topology), "sentinel_password": wrong}
    config = tmp_path / "wrong-sentinel.toml"
    routes = [{"topic": "t", "task": "x"}]
    config.write_text(config_toml(group_id="g-wrong", routes=routes, sections={"celery": celery}))
    result = subprocess.run(
        [sys.executable, "-m", "bridge", "run", "--config", str(config)],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    output = result.stdout + result.stderr
    port = sentinel_topology.sentinel_ports[0]
    assert f"celery.sentinel_password: the Sentinel at 127.0.0.1:{port} refuses it" in output
    assert result.returncode == 2
    assert wrong not in output
