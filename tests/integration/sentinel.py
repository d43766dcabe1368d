"""A real Redis with Sentinels for a test: ``REDIS_TOPOLOGY=sentinel scripts/services.sh``
(a primary, a replica and three Sentinels, Debian's ``redis-sentinel``) on ports and in a
services directory of the test's own.

Only the Redis side is started (``start-redis``/``stop-redis``); the suite's Kafka and Redis
are not touched. Use the ``sentinel_topology`` fixture (``tests/integration/conftest.py``).
"""

from __future__ import annotations

import os
import random
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import redis

REPO = Path(__file__).resolve().parents[2]
PASSWORD = "local-redis-pw"  # a throwaway credential of this test's own Redis
SENTINEL_PASSWORD = "local-sentinel-pw"


# Below the kernel's ephemeral range (32768-60999 here): a port chosen there can be taken, before
# the server binds it, as the local port of some client's connection (seen in CI: a Sentinel
# could not bind the port chosen for it, "Address already in use").
_PORTS = range(20000, 32000)


def _free_run(count: int) -> int:
    """The first of ``count`` consecutive free ports outside the ephemeral range."""
    for _ in range(200):
        base = random.choice(_PORTS)
        if all(_free(base + i) for i in range(count)):
            return base
    raise AssertionError(f"no {count} consecutive free ports found")


def _free(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


class Topology:
    """One test's primary/replica/Sentinels, driven through ``scripts/services.sh``."""

    def __init__(self, services_dir: Path, down_after_ms: int = 500) -> None:
        first = _free_run(5)  # the two data nodes, then the three Sentinels
        self.data_ports = (first, first + 1)
        self.sentinel_ports = (first + 2, first + 3, first + 4)
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
            "SENTINEL_DOWN_AFTER_MS": str(down_after_ms),
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


def running_topology(services_dir: Path, down_after_ms: int = 500) -> Iterator[Topology]:
    """Start a topology in ``services_dir``, yield it, stop it whatever happened.

    ``down_after_ms``: the Sentinels' ``down-after-milliseconds``. 500 makes a failover quick;
    on a loaded machine it can also take a healthy primary for down."""
    topology = Topology(services_dir, down_after_ms)
    try:
        topology.run("start-redis")
        yield topology
    finally:
        topology.run("stop-redis", check=False)
