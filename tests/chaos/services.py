"""The chaos suite's own Kafka and Redis, started by ``scripts/services.sh`` on ports of their
own, so the faults it injects disturb no other test (and run in parallel with them).

``CHAOS_KAFKA_PORT`` (19092), ``CHAOS_KAFKA_CONTROLLER_PORT`` (19093), ``CHAOS_REDIS_PORT``
(16379) choose the ports; data and logs go under the directory given to :class:`Services`.
"""

from __future__ import annotations

import os
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

import redis

REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Services:
    """Kafka and Redis of the suite's own, under ``folder``."""

    folder: Path
    kafka_port: int = int(os.environ.get("CHAOS_KAFKA_PORT", "19092"))
    controller_port: int = int(os.environ.get("CHAOS_KAFKA_CONTROLLER_PORT", "19093"))
    redis_port: int = int(os.environ.get("CHAOS_REDIS_PORT", "16379"))

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.kafka_port}"

    def redis_url(self, db: int) -> str:
        return f"redis://127.0.0.1:{self.redis_port}/{db}"

    def run(self, command: str) -> None:
        """``scripts/services.sh COMMAND`` on the suite's ports (``up``, ``down``,
        ``restart-redis``, ``stop-kafka``, ``start-kafka``…).

        :raises subprocess.CalledProcessError: the script failed.
        """
        env = {
            **os.environ,
            "SERVICES_MODE": "local",
            "SERVICES_DIR": str(self.folder),
            "KAFKA_PORT": str(self.kafka_port),
            "KAFKA_CONTROLLER_PORT": str(self.controller_port),
            "REDIS_PORT": str(self.redis_port),
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
