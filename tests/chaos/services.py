"""The chaos suite's own Kafka and Redis, started by ``scripts/services.sh`` on ports of their
own, so the faults it injects disturb no other test (and run in parallel with them).

``CHAOS_KAFKA_PORT`` (19092), ``CHAOS_KAFKA_CONTROLLER_PORT`` (19093), ``CHAOS_REDIS_PORT``
(16379) choose the ports; data and logs go under the directory given to :class:`Services`.

``CHAOS_TOPOLOGY=sentinel`` runs Redis as a primary (``CHAOS_REDIS_PORT``), a replica (+1) and
three Sentinels (+20000..+20002) instead (``REDIS_TOPOLOGY=sentinel``): the bridge and the
workers reach it through the Sentinels, and the suite's own reads follow the current primary.
The handlers' ledger then lives in a Redis of its own (+2), which no fault touches: a failover
drops what the primary had not replicated, and the ledger must not lose what it saw.
"""

from __future__ import annotations

import os
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

import redis
from redis.sentinel import Sentinel

REPO = Path(__file__).resolve().parents[2]
MASTER_NAME = "bridge"  # scripts/services_sentinel.sh's REDIS_MASTER_NAME
TOPOLOGIES = ("single", "sentinel")


@dataclass(frozen=True)
class Services:
    """Kafka and Redis of the suite's own, under ``folder``."""

    folder: Path
    kafka_port: int = int(os.environ.get("CHAOS_KAFKA_PORT", "19092"))
    controller_port: int = int(os.environ.get("CHAOS_KAFKA_CONTROLLER_PORT", "19093"))
    redis_port: int = int(os.environ.get("CHAOS_REDIS_PORT", "16379"))
    topology: str = os.environ.get("CHAOS_TOPOLOGY", "single")

    def __post_init__(self) -> None:
        if self.topology not in TOPOLOGIES:
            raise ValueError(f"CHAOS_TOPOLOGY must be one of {TOPOLOGIES}, not {self.topology!r}")

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.kafka_port}"

    @property
    def sentinel(self) -> bool:
        return self.topology == "sentinel"

    @property
    def data_ports(self) -> tuple[int, int]:
        """The primary's port at the start and the replica's (Sentinel topology)."""
        return self.redis_port, self.redis_port + 1

    @property
    def sentinel_ports(self) -> tuple[int, ...]:
        first = self.redis_port + 20000
        return first, first + 1, first + 2

    def broker_url(self, db: int) -> str:
        """The URL the bridge and the workers are given: through the Sentinels, if any
        (``master_name`` goes in the transport options)."""
        if not self.sentinel:
            return self.redis_url(db)
        return ";".join(f"sentinel://127.0.0.1:{port}/{db}" for port in self.sentinel_ports)

    def primary_port(self) -> int:
        """The current primary's port, as the Sentinels name it.

        :raises redis.sentinel.MasterNotFoundError: no Sentinel names one.
        """
        if not self.sentinel:
            return self.redis_port
        sentinels = Sentinel([("127.0.0.1", port) for port in self.sentinel_ports],
                             socket_timeout=1.0)  # fmt: skip
        return int(sentinels.discover_master(MASTER_NAME)[1])

    def redis_url(self, db: int) -> str:
        """A plain URL of the current primary (the suite's own reads and writes)."""
        return f"redis://127.0.0.1:{self.primary_port()}/{db}"

    @property
    def ledger_port(self) -> int:
        """The ledger's own Redis (Sentinel topology); the broker's Redis with one Redis."""
        return self.redis_port + 2 if self.sentinel else self.redis_port

    def ledger_url(self) -> str:
        """Where the handlers write their ledger (db 1)."""
        return f"redis://127.0.0.1:{self.ledger_port}/1"

    def up(self) -> None:
        """Kafka and Redis (and the ledger's Redis with Sentinels)."""
        self.run("up")
        if self.sentinel:
            self.run("start-redis", ledger=True)

    def down(self) -> None:
        """Stop everything :meth:`up` started (or a run that was interrupted left running)."""
        if self.sentinel:
            self.run("stop-redis", ledger=True)
        self.run("down")

    def run(self, command: str, *, ledger: bool = False) -> None:
        """``scripts/services.sh COMMAND`` on the suite's ports (``up``, ``down``,
        ``restart-redis``, ``stop-kafka``, ``start-kafka``…); ``ledger``: on the ledger's own
        Redis (``start-redis``, ``stop-redis``).

        :raises subprocess.CalledProcessError: the script failed.
        """
        env = {
            **os.environ,
            "SERVICES_MODE": "local",
            "SERVICES_DIR": str(self.folder),
            "KAFKA_PORT": str(self.kafka_port),
            "KAFKA_CONTROLLER_PORT": str(self.controller_port),
            "REDIS_PORT": str(self.ledger_port if ledger else self.redis_port),
            "REDIS_TOPOLOGY": "single" if ledger else self.topology,
            "KAFKA_HEAP_OPTS": "-Xmx512m -Xms128m",
        }
        subprocess.run(
            ["bash", "scripts/services.sh", command], cwd=REPO, env=env, check=True, timeout=180
        )

    def kafka_pid(self) -> int:
        """The broker's pid, from the pid file the script writes."""
        return int((self.folder / f"kafka-{self.kafka_port}" / "kafka.pid").read_text())

    def freeze_kafka(self, seconds: float) -> None:
        """``kill -STOP`` the broker, wait ``seconds``, ``kill -CONT`` it (even if interrupted)."""
        pid = self.kafka_pid()
        os.kill(pid, signal.SIGSTOP)
        try:
            subprocess.run(["sleep", str(seconds)], check=True)  # the fault's length
        finally:
            os.kill(pid, signal.SIGCONT)

    def appendfsync(self) -> dict[str, str]:
        """Redis's persistence settings (``appendonly``, ``appendfsync``), as it reports them."""
        client = redis.Redis.from_url(self.redis_url(0), decode_responses=True)
        try:
            return {
                name: str(client.config_get(name)[name]) for name in ("appendonly", "appendfsync")
            }
        finally:
            client.close()

    def node_pid(self, port: int) -> int:
        """A data node's pid (Sentinel topology), from the pid file the script writes."""
        return int((self.folder / f"redis-{port}" / "redis.pid").read_text())

    def role(self, port: int) -> str:
        """``master`` or ``slave``, as the data node on ``port`` reports itself ("down" if it
        does not answer)."""
        client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=2.0)
        try:
            kind = client.role()[0]
            return kind.decode() if isinstance(kind, bytes) else str(kind)
        except redis.RedisError:
            return "down"
        finally:
            client.close()
