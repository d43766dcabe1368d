"""Real Kafka, real Redis, a real Celery worker and real bridge processes.

Isolation: every test gets its own topics, its own consumer group and its own ledger key
prefix; the session's worker consumes a queue of its own in Redis db 1 (``make demo`` uses 0).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis
from celery import Celery
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import KafkaError

from tests.conftest import BOOTSTRAP, REDIS_PORT, wait_for
from tests.integration.handlers import LEDGER_URL_ENV
from tests.integration.sentinel import Topology, running_topology

REPO = Path(__file__).resolve().parents[2]
BROKER_URL = f"redis://127.0.0.1:{REDIS_PORT}/1"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "integration" in item.nodeid:
            item.add_marker(pytest.mark.integration)


def config_toml(
    *,
    group_id: str,
    routes: list[dict[str, Any]],
    kafka: dict[str, Any] | None = None,
    sections: dict[str, dict[str, Any]] | None = None,
) -> str:
    """A bridge configuration for the tests: millisecond backoffs, the test broker db."""
    config: dict[str, dict[str, Any]] = {
        "kafka": {"bootstrap_servers": BOOTSTRAP, "group_id": group_id, "poll_timeout_ms": 50},
        "celery": {
            "broker_url": BROKER_URL,
            "publish_retry_backoff_ms": 10,
            "publish_retry_backoff_max_ms": 200,
        },
        "dead_letter": {"retry_backoff_ms": 10, "retry_backoff_max_ms": 50},
        "retry": {"scheduler_interval_ms": 20},
    }
    config["kafka"].update(kafka or {})
    for name, values in (sections or {}).items():
        config.setdefault(name, {}).update(values)
    lines: list[str] = []
    for name, values in config.items():
        lines += [f"[{name}]", *(f"{k} = {_toml(v)}" for k, v in values.items()), ""]
    for route in routes:
        lines += ["[[routes]]", *(f"{k} = {_toml(v)}" for k, v in route.items()), ""]
    return "\n".join(lines)


def _toml(value: Any) -> str:
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + " }"
    if isinstance(value, bool):
        return "true" if value else "false"
    return f'"{value}"' if isinstance(value, str) else str(value)


@pytest.fixture(scope="session")
def admin() -> Iterator[KafkaAdminClient]:
    try:
        client = KafkaAdminClient(bootstrap_servers=BOOTSTRAP, request_timeout_ms=5000)
    except Exception as exc:  # pragma: no cover - environment problem
        pytest.fail(f"Kafka not reachable on {BOOTSTRAP} ({exc}): run `make services`")
    yield client
    client.close()


@pytest.fixture(scope="session")
def ledger_redis() -> redis.Redis:
    return reachable_redis(BROKER_URL)


def reachable_redis(url: str) -> redis.Redis:
    """A client of the test Redis at ``url``; the test fails at once if Redis is down."""
    client = redis.Redis.from_url(url)
    try:
        client.ping()
    except redis.ConnectionError as exc:  # pragma: no cover - environment problem
        pytest.fail(f"Redis not reachable on port {REDIS_PORT} ({exc}): run `make services`")
    return client


@pytest.fixture(scope="session")
def producer() -> Iterator[KafkaProducer]:
    client = KafkaProducer(bootstrap_servers=BOOTSTRAP)
    yield client
    client.close()


@pytest.fixture(scope="session")
def worker_queue() -> str:
    return f"test-{uuid.uuid4().hex[:8]}"


@dataclass
class WorkerProcess:
    proc: subprocess.Popen[bytes]
    log_path: Path

    def kill(self) -> None:
        """SIGKILL the worker and its pool processes at once, as a crashed machine would."""
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def start_worker(
    folder: Path,
    queue: str,
    concurrency: int = 2,
    sections: dict[str, dict[str, Any]] | None = None,
    app: str = "tests.integration.handlers",
    cwd: Path = REPO,
    bridge_config: Path | None = None,
) -> WorkerProcess:
    """A real Celery worker (prefork) of ``app`` consuming ``queue`` (comma-separated names for
    several), run in ``cwd``; its ``BRIDGE_CONFIG`` is ``bridge_config``, else a file of its own
    (with ``sections``) routing nothing it has."""
    name = queue.replace(",", "+")
    if bridge_config is None:
        bridge_config = folder / f"worker-{name}.toml"
        bridge_config.write_text(
            config_toml(
                group_id="tests-worker",
                routes=[{"topic": "unused", "task": "unused"}],
                sections=sections,
            )
        )
    log = folder / f"worker-{name}.log"
    env = {**os.environ, "BRIDGE_CONFIG": str(bridge_config), LEDGER_URL_ENV: BROKER_URL}
    with log.open("wb") as out:
        # A session of its own, so that a test can kill the worker with all its children.
        proc = subprocess.Popen(
            worker_command(app, queue, concurrency), cwd=cwd, env=env, stdout=out,
            stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    worker = WorkerProcess(proc, log)
    try:
        wait_for(
            lambda: proc.poll() is not None or b"ready." in log.read_bytes(),
            timeout_s=60,
            what=f"the Celery worker on {queue} to be ready",
        )
    except AssertionError:
        worker.stop()
        raise
    assert proc.poll() is None, f"worker exited:\n{log.read_text()}"
    return worker


def worker_command(app: str, queue: str, concurrency: int = 2) -> list[str]:
    """``celery worker`` of ``app`` on ``queue``, without the cluster chatter tests do not need."""
    name = queue.replace(",", "+")
    return [
        sys.executable, "-m", "celery", "-A", app, "worker",
        "-Q", queue, "-c", str(concurrency), "-P", "prefork", "-l", "INFO",
        "-n", f"{name}@%h", "--without-gossip", "--without-mingle", "--without-heartbeat",
    ]  # fmt: skip


@pytest.fixture(scope="session")
def worker(
    tmp_path_factory: pytest.TempPathFactory, worker_queue: str, ledger_redis: redis.Redis
) -> Iterator[Path]:
    """The session's worker: 2 processes on the session's own queue."""
    process = start_worker(tmp_path_factory.mktemp("worker"), worker_queue)
    yield process.log_path
    process.stop()


def services(command: str) -> None:
    """``scripts/services.sh COMMAND``: stop or start Kafka or Redis under a test."""
    subprocess.run(["bash", "scripts/services.sh", command], cwd=REPO, check=True, timeout=120)


@pytest.fixture
def redis_restarted() -> Iterator[None]:
    """Guarantee Redis is running again after the test, whatever happens in it."""
    yield None
    services("start-redis")


@pytest.fixture
def sentinel_topology(tmp_path: Path) -> Iterator[Topology]:
    """A primary, a replica and three Sentinels of the test's own (integration/sentinel.py)."""
    yield from running_topology(tmp_path / "services")


@pytest.fixture
def kafka_restarted() -> Iterator[None]:
    """Guarantee Kafka is running again after the test, whatever happens in it."""
    yield None
    services("start-kafka")


@dataclass
class Topic:
    name: str
    partitions: int

    def dlt(self, group_id: str) -> str:
        return f"{self.name}.{group_id}.dlt"


@pytest.fixture
def make_topic(admin: KafkaAdminClient) -> Iterator[Callable[..., Topic]]:
    created: list[str] = []

    def make(partitions: int = 1, configs: dict[str, str] | None = None) -> Topic:
        """A new topic (``configs``: its topic configs); deleted after the test, with every
        topic named ``{name}.…`` (its dead-letter topics)."""
        name = f"t-{uuid.uuid4().hex[:10]}"
        spec = {"num_partitions": partitions, "replication_factor": 1, "configs": configs or {}}
        admin.create_topics({name: spec}, wait_for_metadata=True)
        created.append(name)
        return Topic(name, partitions)

    yield make

    def delete_created() -> bool:
        try:  # the admin client may still be reconnecting after a test restarted Kafka
            existing = set(admin.list_topics())
            doomed = [t for t in existing if any(t == c or t.startswith(f"{c}.") for c in created)]
            if doomed:
                admin.delete_topics(doomed)
        except KafkaError:
            return False
        return True

    wait_for(delete_created, timeout_s=60, interval_s=0.5, what=f"deleting topics {created}")


@dataclass
class BridgeProcess:
    proc: subprocess.Popen[bytes]
    log_path: Path
    config_path: Path
    group_id: str

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout_s: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=timeout_s)


def text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


@dataclass
class Ledger:
    """What the test handlers wrote to Redis under one test's key prefix."""

    client: redis.Redis
    prefix: str = field(default_factory=lambda: f"ledger-{uuid.uuid4().hex[:10]}")

    def attempts(self) -> dict[str, int]:
        raw = self.client.hgetall(f"{self.prefix}:attempts")
        return {text(k): int(v) for k, v in raw.items()}

    def done(self) -> set[str]:
        return {text(m) for m in self.client.smembers(f"{self.prefix}:done")}

    def clear(self) -> None:
        for suffix in ("attempts", "done", "executions", "succeeded", "batches"):
            self.client.delete(f"{self.prefix}:{suffix}")


@pytest.fixture
def sender() -> Iterator[Celery]:
    """A Celery app that only sends tasks, by name, to the test broker db (JSON only)."""
    app = Celery("test-sender", broker=BROKER_URL, set_as_current=False)
    app.conf.update(task_serializer="json", accept_content=["json"])
    yield app
    app.close()


@pytest.fixture
def ledger(ledger_redis: redis.Redis) -> Iterator[Ledger]:
    book = Ledger(ledger_redis)
    yield book
    book.clear()


@pytest.fixture
def start_bridge(
    tmp_path: Path, worker: Path, worker_queue: str
) -> Iterator[Callable[..., BridgeProcess]]:
    """Start ``python -m bridge run`` for some routes, in a consumer group of its own."""
    started: list[BridgeProcess] = []

    def start(
        routes: list[dict[str, Any]],
        group_id: str | None = None,
        kafka: dict[str, Any] | None = None,
        wait_assigned: bool = True,
        sections: dict[str, dict[str, Any]] | None = None,
        args: list[str] | None = None,
        env: dict[str, str] | None = None,
    ) -> BridgeProcess:
        """``args``: more options of ``run`` (e.g. ``--metrics-port``); ``env``: more
        environment variables."""
        group_id = group_id or f"g-{uuid.uuid4().hex[:10]}"
        config = tmp_path / f"{group_id}.toml"
        routes = [{"queue": worker_queue, **route} for route in routes]
        config.write_text(
            config_toml(group_id=group_id, routes=routes, kafka=kafka, sections=sections)
        )
        log = tmp_path / f"{group_id}-{len(started)}.log"
        cmd = [sys.executable, "-m", "bridge", "run", "--config", str(config), *(args or [])]
        with log.open("wb") as out:
            proc = subprocess.Popen(cmd, cwd=REPO, stdout=out, stderr=subprocess.STDOUT,
                                    env={**os.environ, **(env or {})})  # fmt: skip
        bridge = BridgeProcess(proc, log, config, group_id)
        started.append(bridge)
        if not wait_assigned:
            return bridge
        try:
            wait_for(
                lambda: proc.poll() is not None or "partitions assigned" in bridge.log(),
                timeout_s=60,
                what="the bridge to be assigned its partitions",
            )
        except AssertionError as exc:
            raise AssertionError(f"{exc}; bridge log:\n{bridge.log()[-4000:]}") from None
        assert proc.poll() is None, f"bridge exited:\n{bridge.log()}"
        return bridge

    yield start
    for bridge in started:
        if bridge.proc.poll() is None:
            bridge.proc.kill()
            bridge.proc.wait()


def read_all(topic: str, expected: int, timeout_s: float = 30) -> list[Any]:
    """Read ``expected`` records of ``topic`` from the beginning (no consumer group)."""
    consumer = KafkaConsumer(bootstrap_servers=BOOTSTRAP, enable_auto_commit=False)
    try:
        parts = wait_for(
            lambda: consumer.partitions_for_topic(topic), timeout_s=timeout_s, what=f"{topic}"
        )
        consumer.assign([TopicPartition(topic, p) for p in parts])
        consumer.seek_to_beginning()
        records: list[Any] = []

        def enough() -> bool:
            for batch in consumer.poll(timeout_ms=100).values():
                records.extend(batch)
            return len(records) >= expected

        wait_for(enough, timeout_s=timeout_s, what=f"{expected} records in {topic}")
        return records
    finally:
        consumer.close()


def end_offsets(topic: str) -> dict[int, int]:
    consumer = KafkaConsumer(bootstrap_servers=BOOTSTRAP, enable_auto_commit=False)
    try:
        parts = consumer.partitions_for_topic(topic) or set()
        ends = consumer.end_offsets([TopicPartition(topic, p) for p in parts])
        return {tp.partition: int(offset) for tp, offset in ends.items()}
    finally:
        consumer.close()


def committed_offsets(admin: KafkaAdminClient, group_id: str, topic: str) -> dict[int, int]:
    offsets = admin.list_group_offsets(group_id).get(group_id, {})
    return {tp.partition: int(m.offset) for tp, m in offsets.items() if tp.topic == topic}
