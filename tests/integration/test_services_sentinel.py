"""``REDIS_TOPOLOGY=sentinel scripts/services.sh``: a real primary, replica and three Sentinels
(Debian's ``redis-sentinel``), each test on ports and in a services directory of its own.

Only the Redis side is started (``start-redis``/``stop-redis``); the suite's Kafka and Redis
are not touched.
"""

from __future__ import annotations

import functools
import os
import signal
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.conftest import wait_for
from tests.integration.helpers import free_port

REPO = Path(__file__).resolve().parents[2]
PASSWORD = "local-redis-pw"  # a throwaway credential of this test's own Redis
SENTINEL_PASSWORD = "local-sentinel-pw"


def _free_run(count: int) -> int:
    """The first of ``count`` consecutive free ports (the Sentinels take SENTINEL_PORT+0..+2)."""
    for _ in range(50):
        base = free_port()
        if all(_free(base + i) for i in range(count)):
            return base
    raise AssertionError(f"no {count} consecutive free ports found")


def _free(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


class Topology:
    """One test's primary/replica/Sentinels, driven through ``scripts/services.sh``."""

    def __init__(self, services_dir: Path) -> None:
        self.data_ports = (free_port(), free_port())
        first_sentinel = _free_run(3)
        self.sentinel_ports = (first_sentinel, first_sentinel + 1, first_sentinel + 2)
        self.env = {
            **os.environ,
            "REDIS_TOPOLOGY": "sentinel",
            "SERVICES_MODE": "local",
            "SERVICES_DIR": str(services_dir),
            "REDIS_PORT": str(self.data_ports[0]),
            "REDIS_REPLICA_PORT": str(self.data_ports[1]),
            "SENTINEL_PORT": str(self.sentinel_ports[0]),
            "REDIS_MASTER_NAME": "test-primary",
            "REDIS_PASSWORD": PASSWORD,
            "SENTINEL_PASSWORD": SENTINEL_PASSWORD,
            "SENTINEL_DOWN_AFTER_MS": "500",
            "SENTINEL_FAILOVER_TIMEOUT_MS": "5000",
        }
        self.services_dir = services_dir

    def run(self, command: str, *, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["bash", "scripts/services.sh", command],
            cwd=REPO,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
            check=check,
        )

    def node(self, port: int) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=port, password=PASSWORD, socket_timeout=5)

    def sentinel(self, port: int) -> redis.Redis:
        return redis.Redis(
            host="127.0.0.1",
            port=port,
            password=SENTINEL_PASSWORD,
            socket_timeout=5,
            decode_responses=True,
        )

    def primary(self) -> int:
        """The primary's port, as ``services.sh redis-primary`` names it."""
        return int(self.run("redis-primary").stdout.strip().rpartition(":")[2])

    def role(self, port: int) -> str:
        try:
            return str(self.node(port).info("replication")["role"])
        except redis.RedisError:
            return "down"

    def pid(self, port: int) -> int:
        return int((self.services_dir / f"redis-{port}" / "redis.pid").read_text())


def _knows_the_other_two(sentinel: redis.Redis) -> bool:
    others = sentinel.sentinel_sentinels("test-primary")
    return isinstance(others, list) and len(others) == 2


@pytest.fixture
def topology(tmp_path: Path) -> Iterator[Topology]:
    topology = Topology(tmp_path / "services")
    try:
        topology.run("start-redis")
        yield topology
    finally:
        topology.run("stop-redis", check=False)


def test_up_starts_a_primary_a_replica_and_three_sentinels_that_agree(topology: Topology) -> None:
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


def test_passwords_are_required_and_kept_off_the_command_line(topology: Topology) -> None:
    first = topology.data_ports[0]
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(host="127.0.0.1", port=first, socket_timeout=5).ping()
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(host="127.0.0.1", port=topology.sentinel_ports[0], socket_timeout=5).ping()
    cmdline = Path(f"/proc/{topology.pid(first)}/cmdline").read_bytes()
    assert PASSWORD.encode() not in cmdline


def test_a_killed_primary_is_replaced_and_returns_as_a_replica(topology: Topology) -> None:
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
