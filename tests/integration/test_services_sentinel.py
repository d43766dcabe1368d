"""``REDIS_TOPOLOGY=sentinel scripts/services.sh`` against the real processes: roles, passwords,
a failover and a returning node (tests/integration/sentinel.py starts them)."""

from __future__ import annotations

import functools
import os
import signal
import subprocess
from pathlib import Path

import pytest
import redis

from tests.conftest import wait_for
from tests.integration.sentinel import PASSWORD, REPO, Topology

MASTER = "test-primary"


def _knows_the_other_two(sentinel: redis.Redis) -> bool:
    others = sentinel.sentinel_sentinels(MASTER)
    return isinstance(others, list) and len(others) == 2


def test_up_starts_a_primary_a_replica_and_three_sentinels_that_agree(
    sentinel_topology: Topology,
) -> None:
    topology = sentinel_topology
    first, second = topology.data_ports
    assert (topology.role(first), topology.role(second)) == ("master", "slave")
    status = topology.run("status", check=False).stdout
    assert status.count("sentinel  up") == 3, status
    assert f"primary   127.0.0.1:{first}" in status
    for port in topology.sentinel_ports:
        sentinel = topology.sentinel(port)
        assert sentinel.sentinel_get_master_addr_by_name("test-primary") == ("127.0.0.1", first)
        wait_for(
            functools.partial(_knows_the_other_two, sentinel),
            timeout_s=30,
            what="each Sentinel to know the other two",
        )
    topology.node(first).set("written", "on the primary")
    wait_for(
        lambda: topology.node(second).get("written") == b"on the primary",
        what="the replica to have the primary's write",
    )
    url = topology.run("redis-url").stdout.strip()
    assert url == ";".join(
        f"sentinel://:{PASSWORD}@127.0.0.1:{port}/0" for port in topology.sentinel_ports
    )


def test_passwords_are_required_and_kept_off_the_command_line(sentinel_topology: Topology) -> None:
    topology = sentinel_topology
    first = topology.data_ports[0]
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(host="127.0.0.1", port=first, socket_timeout=5).ping()
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(host="127.0.0.1", port=topology.sentinel_ports[0], socket_timeout=5).ping()
    cmdline = Path(f"/proc/{topology.pid(first)}/cmdline").read_bytes()
    assert PASSWORD.encode() not in cmdline


def test_a_killed_primary_is_replaced_and_returns_as_a_replica(sentinel_topology: Topology) -> None:
    topology = sentinel_topology
    first, second = topology.data_ports
    topology.node(first).set("before", "the failover")
    wait_for(lambda: topology.node(second).get("before"), what="replication to the replica")
    os.kill(topology.pid(first), signal.SIGKILL)
    wait_for(lambda: topology.primary() == second, timeout_s=60, what="the Sentinels' failover")
    assert topology.role(second) == "master"
    assert topology.node(second).get("before") == b"the failover"

    topology.run("start-redis")  # the old primary comes back as the new one's replica
    assert topology.role(first) == "slave"
    wait_for(
        lambda: topology.node(first).get("before") == b"the failover",
        what="the returned node to sync from the new primary",
    )

    topology.run("stop-redis")
    topology.run("start-redis")  # a promoted node keeps its role across down and up
    assert (topology.role(first), topology.role(second)) == ("slave", "master")
    assert topology.primary() == second


def test_an_unknown_topology_is_refused_by_name() -> None:
    result = subprocess.run(
        ["bash", "scripts/services.sh", "status"],
        cwd=REPO,
        env={**os.environ, "REDIS_TOPOLOGY": "cluster"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "REDIS_TOPOLOGY must be single or sentinel (got 'cluster')" in result.stderr
