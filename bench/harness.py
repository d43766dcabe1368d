"""What the end-to-end benchmarks share: a run with a topic, a worker and a bridge of its own.

A :class:`Run` writes the bridge's TOML configuration (the worker reads the same file), creates
its topic, starts a Celery worker on ``bench.handlers`` (2 processes) and a bridge process, and
on :meth:`Run.stop` stops both and deletes its topic, its queue and every Redis key named after
it (``{name}``, ``{name}:*``, ``bridge:{name}:*``).
"""

from __future__ import annotations

import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis
from kafka import KafkaAdminClient, KafkaProducer

REPO = Path(__file__).resolve().parents[1]
KAFKA = f"127.0.0.1:{os.environ.get('KAFKA_PORT', '9092')}"
REDIS = f"redis://127.0.0.1:{os.environ.get('REDIS_PORT', '6379')}/2"
RESULTS = REPO / "bench" / "results"


class Run:
    """A topic, a worker and a bridge of their own; topic, group id and queue are ``name``.

    :param route: the route's options besides ``topic`` and ``queue`` (``task`` at least).
    :param sections: more configuration, by section (``{"retry": {...}}``).
    """

    def __init__(
        self,
        name: str,
        route: dict[str, Any],
        sections: dict[str, dict[str, Any]] | None = None,
        partitions: int = 4,
    ) -> None:
        self.name = f"{name}-{uuid.uuid4().hex[:6]}"
        self.partitions = partitions
        self.folder = Path(tempfile.mkdtemp(prefix=f"bench-{name}-"))
        self.config = self.folder / "bridge.toml"
        config = {
            "kafka": {"bootstrap_servers": KAFKA, "group_id": self.name},
            "celery": {"broker_url": REDIS},
        }
        for section, values in (sections or {}).items():
            config[section] = {**config.get(section, {}), **values}
        routes = [{"topic": self.name, "queue": self.name, **route}]
        self.config.write_text(to_toml(config, routes))
        self.redis = redis.Redis.from_url(REDIS)
        self.procs: list[subprocess.Popen[bytes]] = []

    worker_options: tuple[str, ...] = ()  # more ``celery worker`` options

    def start(self, *, worker: bool = True) -> None:
        """Create the topic, start the worker (unless ``worker`` is false) and the bridge."""
        create_topic(self.name, self.partitions)
        env = {**os.environ, "BRIDGE_CONFIG": str(self.config), "BENCH_REDIS_URL": REDIS}
        celery = [sys.executable, "-m", "celery", "-A", "bench.handlers", "worker", "-Q",
                  self.name, "-c", "2", "-l", "WARNING", "-n", f"{self.name}@%h",
                  "--without-gossip", "--without-mingle", "--without-heartbeat",
                  *self.worker_options]  # fmt: skip
        bridge = [sys.executable, "-m", "bridge", "run", "--log-level", "WARNING"]
        commands = [(celery, "worker.log")] if worker else []
        for cmd, log in [*commands, (bridge, "bridge.log")]:
            with (self.folder / log).open("wb") as out:
                self.procs.append(
                    subprocess.Popen(cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
                )
        if worker:
            self._wait_for_worker()

    def _wait_for_worker(self) -> None:
        wait(lambda: b"ready" in (self.folder / "worker.log").read_bytes() or self.worker_rss() > 0,
             60, "the worker")  # fmt: skip

    def worker_rss(self) -> int:
        """RSS in bytes of the worker's main process and its pool processes."""
        pid = self.procs[0].pid
        children = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True)
        return sum(rss(int(p)) for p in [pid, *map(int, children.stdout.split())])

    def stop(self) -> None:
        for proc in reversed(self.procs):
            proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        owned = [*self.redis.keys(f"{self.name}:*"), *self.redis.keys(f"bridge:{self.name}:*")]
        bindings = [f"_kombu.binding.{self.name}", f"_kombu.binding_permanent.{self.name}"]
        self.redis.delete(self.name, *bindings, *owned)
        delete_topics(self.name)


def to_toml(sections: dict[str, dict[str, Any]], routes: list[dict[str, Any]]) -> str:
    """The bridge's TOML file: plain sections of strings, numbers and booleans, then routes."""

    def lines(values: dict[str, Any]) -> list[str]:
        return [f"{key} = {_toml_value(value)}" for key, value in values.items()]

    out: list[str] = []
    for section, values in sections.items():
        out += [f"[{section}]", *lines(values)]
    for route in routes:
        out += ["[[routes]]", *lines(route)]
    return "\n".join(out) + "\n"


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return json.dumps(str(value))  # a TOML basic string


def rss(pid: int) -> int:
    """RSS in bytes of process ``pid`` (0 once it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def wait(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit(f"bench: timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.2)


def machine() -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "kafka": "4.4.0 (scripts/services.sh, single node)",
    }


def produce_orders(topic: str, count: int, keys: int = 997) -> float:
    """Produce ``count`` ~200-byte JSON orders (keys ``c-0`` … ``c-{keys-1}``) to ``topic``, as
    fast as kafka-python goes (~45 000 records/s here); return the seconds it took."""
    start = time.perf_counter()
    producer = KafkaProducer(bootstrap_servers=KAFKA, linger_ms=50, batch_size=1024 * 1024,
                             max_request_size=8 * 1024 * 1024)  # fmt: skip
    for i in range(count):
        order = {"id": f"order-{i:09d}", "customer": f"c-{i % 997:05d}", "amount_cents": i % 10_000,
                 "currency": "EUR", "items": [{"sku": f"sku-{i % 113}", "qty": 1 + i % 3}],
                 "note": "x" * 40}  # fmt: skip
        producer.send(topic, key=f"c-{i % keys}".encode(), value=json.dumps(order).encode())
    producer.flush()
    producer.close()
    return time.perf_counter() - start


def create_topic(topic: str, partitions: int) -> None:
    """Create ``topic`` with ``partitions`` partitions (replication 1)."""
    admin = KafkaAdminClient(bootstrap_servers=KAFKA)
    admin.create_topics(
        {topic: {"num_partitions": partitions, "replication_factor": 1}}, wait_for_metadata=True
    )
    admin.close()


def delete_topics(prefix: str) -> None:
    """Delete every topic whose name starts with ``prefix``."""
    admin = KafkaAdminClient(bootstrap_servers=KAFKA)
    admin.delete_topics([t for t in admin.list_topics() if t.startswith(prefix)])
    admin.close()
