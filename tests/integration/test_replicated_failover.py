"""Replicated acceptance (``celery.min_replicas_to_accept``) against a real primary, replica and
three Sentinels of the test's own: what the primary accepted but its replica never got is lost
in a failover; with the setting, the bridge never commits the offsets of such records, and
publishes them again to the new primary.

The scenario (one per setting): the replica is cut off (frozen, its link closed: a partition
that keeps its memory), records arrive and the primary alone takes them, the primary dies, the
replica wakes up and the Sentinels promote it, the old primary comes back as its replica; only
then does a worker start. (Killing the replica and starting it again from disk would add a loss
of its own: a replica persists its dataset only once the AOF rewrite after a full sync ends.)
"""

from __future__ import annotations

import os
import signal
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaAdminClient, KafkaProducer

from tests.conftest import wait_for
from tests.integration.conftest import (
    BridgeProcess,
    Ledger,
    Topic,
    committed_offsets,
    start_worker,
)
from tests.integration.helpers import (
    MakeTopic,
    StartBridge,
    assert_each_handled_once,
    send_many,
    status_json,
    task_ids,
    wait_committed_to_end,
)
from tests.integration.sentinel import Topology, running_topology
from tests.integration.test_sentinel_failover import quiet, replicated, sentinel_celery

FAST = {"publish_retry_backoff_ms": 20, "publish_retry_backoff_max_ms": 300}


def replicated_celery(topology: Topology, min_replicas: int) -> dict[str, Any]:
    return {
        **sentinel_celery(topology),
        **FAST,
        "min_replicas_to_accept": min_replicas,
        "replica_ack_timeout_ms": 200,
    }


def ends(sent: list[Any]) -> dict[int, int]:
    """The offset after the last record sent to each partition."""
    found: dict[int, int] = {}
    for m in sent:
        found[m.partition] = max(found.get(m.partition, 0), m.offset + 1)
    return found


def cut_off(topology: Topology, primary: int, replica: int) -> None:
    """The replica stops getting the primary's writes, and keeps what it has: frozen (SIGSTOP),
    and its link closed by the primary, so that nothing more reaches even its socket."""
    os.kill(topology.pid(replica), signal.SIGSTOP)
    client = topology.node(primary)
    client.client_kill_filter(_type="replica")
    wait_for(lambda: client.info("replication")["connected_slaves"] == 0, what="the link cut")


def lose_the_primary(topology: Topology, primary: int, replica: int) -> None:
    """The primary dies with what it alone holds; the cut-off replica wakes up and is promoted."""
    os.kill(topology.pid(primary), signal.SIGKILL)
    os.kill(topology.pid(replica), signal.SIGCONT)
    wait_for(lambda: topology.primary() == replica, timeout_s=90, what="the failover")


def old_primary_back(topology: Topology, primary: int) -> None:
    """The old primary comes back as a replica of the new one, its own data replaced."""
    topology.run("start-redis")
    wait_for(lambda: topology.node(primary).info("replication").get("master_link_status") == "up",
             timeout_s=60, what="the old primary back as a synced replica")  # fmt: skip


@pytest.fixture
def patient_topology(tmp_path: Path) -> Iterator[Topology]:
    """Sentinels that take 2 s of silence for down: with 500 ms, on a loaded machine, they took
    the new primary for down 0.6 s after the failover and promoted the old one back, restarted
    0.5 s before and not yet synced, with its own data (seen here)."""
    yield from running_topology(tmp_path / "services", down_after_ms=2000)


@dataclass
class CutOff:
    """A bridge (its ``[celery]`` keys, queue and topic) that committed ``before`` with the
    replica in sync, then got ``during`` while the replica was cut off."""

    celery: dict[str, Any]
    queue: str
    topic: Topic
    bridge: BridgeProcess
    before: list[Any]
    during: list[Any]


def records_while_cut_off(
    topology: Topology, min_replicas: int, make_topic: MakeTopic, start_bridge: StartBridge,
    producer: KafkaProducer, ledger: Ledger, admin: KafkaAdminClient,
) -> CutOff:  # fmt: skip
    first, second = topology.data_ports
    celery = replicated_celery(topology, min_replicas)
    queue, topic = f"replicated-{uuid.uuid4().hex[:8]}", make_topic(partitions=2)
    bridge = start_bridge([{"topic": topic.name, "task": "tests.flaky", "queue": queue}],
                          sections={"celery": celery})  # fmt: skip
    assert "min_replicas_to_accept is 1 but" not in bridge.log(), bridge.log()
    before = send_many(producer, topic, ledger, 20)
    wait_committed_to_end(admin, bridge.group_id, topic)  # with 1: WAIT, the replica in sync
    replicated(topology, first)
    cut_off(topology, first, second)
    during = send_many(producer, topic, ledger, 30)
    return CutOff(celery, queue, topic, bridge, before, during)


def test_offsets_wait_for_the_replica_and_nothing_is_lost_in_the_failover(
    patient_topology: Topology, make_topic: MakeTopic, start_bridge: StartBridge,
    producer: KafkaProducer, ledger: Ledger, admin: KafkaAdminClient, tmp_path: Path,
) -> None:  # fmt: skip
    topology = patient_topology
    first, second = topology.data_ports
    run = records_while_cut_off(topology, 1, make_topic, start_bridge, producer, ledger, admin)
    group, topic = run.bridge.group_id, run.topic
    wait_for(lambda: "not replicated: celery.min_replicas_to_accept is 1" in run.bridge.log(),
             what="a batch the replica did not acknowledge")  # fmt: skip
    assert committed_offsets(admin, group, topic.name) == ends(run.before)
    doc = status_json(run.bridge)
    assert doc["redis_replicas"] == {"connected": 0, "required": 1}
    assert any("min_replicas_to_accept is 1 but the primary has 0" in w for w in doc["warnings"])

    lose_the_primary(topology, first, second)
    old_primary_back(topology, first)  # a replica again: WAIT can be satisfied
    worker = start_worker(tmp_path, run.queue, sections={"celery": run.celery})
    try:
        assert_each_handled_once(ledger, task_ids(group, topic, run.before + run.during))
        wait_committed_to_end(admin, group, topic)
        assert run.bridge.proc.poll() is None, run.bridge.log()[-3000:]
    finally:
        worker.stop()


def test_without_it_the_failover_loses_what_the_replica_never_got(
    patient_topology: Topology, make_topic: MakeTopic, start_bridge: StartBridge,
    producer: KafkaProducer, ledger: Ledger, admin: KafkaAdminClient, tmp_path: Path,
) -> None:  # fmt: skip
    """The loss the setting prevents, shown with it at 0 (today's default on a single Redis)."""
    topology = patient_topology
    first, second = topology.data_ports
    run = records_while_cut_off(topology, 0, make_topic, start_bridge, producer, ledger, admin)
    group, topic = run.bridge.group_id, run.topic
    wait_committed_to_end(admin, group, topic)  # committed, on the primary alone

    lose_the_primary(topology, first, second)
    worker = start_worker(tmp_path, run.queue, sections={"celery": run.celery})
    try:
        after = send_many(producer, topic, ledger, 10)
        expected = task_ids(group, topic, run.before + after)
        wait_for(lambda: ledger.done() >= expected, timeout_s=120, what="before and after")
        wait_for(lambda: quiet(topology, second, run.queue), what="nothing left to run")
        assert set(ledger.attempts()) == expected
        assert not task_ids(group, topic, run.during) & set(ledger.attempts())
    finally:
        worker.stop()


def test_a_bridge_asking_for_more_replicas_than_there_are_warns_and_commits_nothing(
    sentinel_topology: Topology,
    make_topic: MakeTopic,
    start_bridge: StartBridge,
    producer: KafkaProducer,
    ledger: Ledger,
    admin: KafkaAdminClient,
) -> None:
    topic = make_topic(partitions=1)
    bridge = start_bridge([{"topic": topic.name, "task": "tests.flaky"}],
                          sections={"celery": replicated_celery(sentinel_topology, 2)})  # fmt: skip
    assert ("warning: celery.min_replicas_to_accept is 2 but the primary has 1 connected "
            "replica(s)") in bridge.log()  # fmt: skip
    send_many(producer, topic, ledger, 5)
    wait_for(lambda: "only 1 replica(s) acknowledged the enqueue" in bridge.log(),
             what="the shortfall named")  # fmt: skip
    assert committed_offsets(admin, bridge.group_id, topic.name) in ({}, {0: 0})
    assert bridge.proc.poll() is None
