"""Security against the real services: a bridge and a worker on Kafka's SASL (SCRAM, PLAIN)
and SASL_SSL listeners, on a Redis that requires a password, and a pickle message refused.

The secured listeners are those ``scripts/services.sh`` adds to the local broker
(``KAFKA_SASL_PORT``/``KAFKA_SSL_PORT``, user ``KAFKA_SASL_USER``). A Redis requiring auth is
started by a fixture of this module on a free port. Secrets must never show in a log, in
``status --json`` or in an error.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
from celery import Celery
from kafka import KafkaProducer
from kombu import Connection, Exchange, Producer

from tests.conftest import BOOTSTRAP, KAFKA_PORT, wait_for
from tests.integration.conftest import (
    BROKER_URL,
    REPO,
    BridgeProcess,
    Ledger,
    Topic,
    read_all,
    start_worker,
)
from tests.integration.helpers import MakeTopic, StartBridge, free_port, send, status_json

SASL_PORT = int(os.environ.get("KAFKA_SASL_PORT", KAFKA_PORT + 2))
SSL_PORT = int(os.environ.get("KAFKA_SSL_PORT", KAFKA_PORT + 3))
SASL_USER = os.environ.get("KAFKA_SASL_USER", "bridge")
SASL_PASSWORD = os.environ.get("KAFKA_SASL_PASSWORD", "bridge-secret")
SERVICES_DIR = Path(os.environ.get("SERVICES_DIR", REPO / ".services"))
CA_FILE = SERVICES_DIR / f"kafka-{KAFKA_PORT}" / "tls" / "ca.pem"


@pytest.fixture(scope="module")
def secured_listeners() -> None:
    """The SASL and SASL_SSL listeners of the local broker (the compose broker has none)."""
    for port in (SASL_PORT, SSL_PORT):
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                continue
        if not CA_FILE.parent.parent.exists():
            pytest.skip(f"no broker of scripts/services.sh (local mode) on port {KAFKA_PORT}")
        pytest.fail(
            f"no secured Kafka listener on 127.0.0.1:{port}: restart the broker with "
            f"`bash scripts/services.sh stop-kafka && bash scripts/services.sh up`"
        )


def secret_file(folder: Path, secret: str) -> Path:
    path = folder / f"secret-{uuid.uuid4().hex[:8]}"
    path.write_text(secret + "\n")
    path.chmod(0o600)
    return path


def secured_kafka(
    protocol: str, mechanism: str, password_file: Path | None = None
) -> dict[str, Any]:
    """The ``[kafka]`` keys of a client of the secured listener (password from a file, or
    from ``BRIDGE_KAFKA__SASL_PASSWORD`` when ``password_file`` is None)."""
    port = SSL_PORT if protocol == "SASL_SSL" else SASL_PORT
    kafka: dict[str, Any] = {
        "bootstrap_servers": f"127.0.0.1:{port}",
        "security_protocol": protocol,
        "sasl_mechanism": mechanism,
        "sasl_username": SASL_USER,
    }
    if password_file is not None:
        kafka["sasl_password_file"] = str(password_file)
    if protocol == "SASL_SSL":
        kafka["ssl_cafile"] = str(CA_FILE)
    return kafka


def assert_secret_absent(secret: str, *texts: str) -> None:
    for text in texts:
        assert secret not in text


@dataclass
class SecureCase:
    protocol: str
    mechanism: str
    password_from: str  # "file" or "env"


CASES = [
    SecureCase("SASL_PLAINTEXT", "SCRAM-SHA-512", "file"),
    SecureCase("SASL_SSL", "SCRAM-SHA-256", "env"),
    SecureCase("SASL_PLAINTEXT", "PLAIN", "file"),
]


@pytest.mark.usefixtures("secured_listeners")
@pytest.mark.parametrize(
    "case", CASES, ids=lambda c: f"{c.protocol}-{c.mechanism}-{c.password_from}"
)
def test_bridge_and_worker_consume_dead_letter_and_produce_over_sasl(
    case: SecureCase,
    make_topic: MakeTopic,
    start_bridge: StartBridge,
    producer: KafkaProducer,
    ledger: Ledger,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if case.password_from == "env":
        monkeypatch.setenv("BRIDGE_KAFKA__SASL_PASSWORD", SASL_PASSWORD)
        kafka = secured_kafka(case.protocol, case.mechanism)
    else:
        kafka = secured_kafka(case.protocol, case.mechanism, secret_file(tmp_path, SASL_PASSWORD))
    queue = f"sec-{uuid.uuid4().hex[:8]}"
    worker = start_worker(tmp_path, queue, sections={"kafka": kafka})
    try:
        topic, out = make_topic(), make_topic()
        bridge = start_bridge([{"topic": topic.name, "task": "tests.flaky", "queue": queue}],
                              kafka=kafka, args=["--log-level", "DEBUG"])  # fmt: skip
        good = send(producer, topic, ledger, key=b"ok")
        send(producer, topic, ledger, key=b"bad", headers=[("mode", b"permanent")])

        task_id = f"{bridge.group_id}:{topic.name}:0:{good.offset}"
        wait_for(lambda: task_id in ledger.done(), timeout_s=60, what="the good record handled")
        [dead] = read_all(topic.dlt(bridge.group_id), expected=1, timeout_s=60)
        assert dead.key == b"bad"
        assert dict(dead.headers)["bridge-reason"] == b"non-retryable"

        produced = produce_through(queue, out)
        assert (produced.key, produced.value) == (b"k", b"through-sasl")

        status = wait_for(lambda: committed(bridge, 2), timeout_s=60, what="offset 2 committed")
        assert_secret_absent(SASL_PASSWORD, bridge.log(), worker.log_path.read_text(), str(status))
    finally:
        worker.stop()


def committed(bridge: BridgeProcess, offset: int) -> dict[str, Any] | None:
    """``status --json`` (which exits 1 on any error) once it shows ``offset`` committed."""
    doc = status_json(bridge)
    [partition] = doc["routes"][0]["partitions"]
    return doc if partition["committed"] == offset else None


def produce_through(queue: str, topic: Topic) -> Any:
    """Ask the worker on ``queue`` to write one record with ``bridge.produce``; read it back."""
    client = Celery("client", broker=BROKER_URL)
    client.conf.update(task_serializer="json", accept_content=["json"])
    client.send_task("bridge.produce", args=[topic.name, "through-sasl"], kwargs={"key": "k"},
                     queue=queue)  # fmt: skip
    [record] = read_all(topic.name, expected=1, timeout_s=60)
    return record


@pytest.mark.usefixtures("secured_listeners")
def test_a_wrong_kafka_password_is_reported_without_the_password(
    make_topic: MakeTopic, start_bridge: StartBridge, tmp_path: Path
) -> None:
    wrong = f"wrong-{uuid.uuid4().hex}"
    kafka = {
        **secured_kafka("SASL_PLAINTEXT", "SCRAM-SHA-512", secret_file(tmp_path, wrong)),
        "request_timeout_ms": 5000,
    }
    refusals_before = broker_log().count(FAILED_SCRAM_512)
    topic = make_topic()
    bridge = start_bridge([{"topic": topic.name, "task": "tests.flaky"}], kafka=kafka,
                          wait_assigned=False)  # fmt: skip
    where = f"127.0.0.1:{SASL_PORT} over SASL_PLAINTEXT (SCRAM-SHA-512 as user '{SASL_USER}')"
    # The broker drops the connection as one that is down would: the bridge waits, saying so.
    wait_for(lambda: f"cannot reach Kafka at {where}" in bridge.log(), timeout_s=60,
             what="the bridge to say where it cannot reach Kafka")  # fmt: skip
    assert bridge.proc.poll() is None
    assert bridge.stop() == 0
    assert broker_log().count(FAILED_SCRAM_512) > refusals_before  # the broker said why
    assert_secret_absent(wrong, bridge.log())


FAILED_SCRAM_512 = "invalid credentials with SASL mechanism SCRAM-SHA-512"


def broker_log() -> str:
    return (CA_FILE.parents[1] / "logs" / "server.log").read_text(errors="replace")


# -- Redis requiring auth ----------------------------------------------------------------


@dataclass
class AuthRedis:
    port: int
    username: str
    password: str

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"


@pytest.fixture(scope="module")
def auth_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AuthRedis]:
    """A redis-server of its own that refuses clients without the password of ``app``."""
    server = shutil.which("redis-server")
    assert server, "redis-server is not installed: run `bash scripts/services.sh up`"
    folder = tmp_path_factory.mktemp("auth-redis")
    auth = AuthRedis(free_port(), "app", f"rp-{uuid.uuid4().hex}")
    admin_password = f"ap-{uuid.uuid4().hex}"
    cmd = [
        server, "--port", str(auth.port), "--bind", "127.0.0.1", "--save", "",
        "--appendonly", "no", "--dir", str(folder), "--requirepass", admin_password,
        "--user", auth.username, "on", f">{auth.password}", "~*", "&*", "+@all",
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = redis.Redis(port=auth.port, username=auth.username, password=auth.password)

    def answers() -> bool:
        try:
            return bool(client.ping())
        except redis.ConnectionError:
            return False

    try:
        wait_for(answers, timeout_s=30, what="the Redis requiring auth to answer")
        yield auth
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def redis_section(auth: AuthRedis, password_file: Path) -> dict[str, Any]:
    return {
        "broker_url": auth.url(),
        "broker_username": auth.username,
        "broker_password_file": str(password_file),
    }


def test_bridge_and_worker_use_a_redis_requiring_a_password(
    auth_redis: AuthRedis,
    make_topic: MakeTopic,
    start_bridge: StartBridge,
    producer: KafkaProducer,
    ledger: Ledger,
    tmp_path: Path,
) -> None:
    celery = redis_section(auth_redis, secret_file(tmp_path, auth_redis.password))
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(port=auth_redis.port).set("anonymous", 1)  # the server really needs auth
    queue = f"sec-redis-{uuid.uuid4().hex[:8]}"
    worker = start_worker(tmp_path, queue, sections={"celery": celery})
    try:
        topic = make_topic()
        bridge = start_bridge([{"topic": topic.name, "task": "tests.flaky", "queue": queue}],
                              sections={"celery": celery})  # fmt: skip
        sent = [send(producer, topic, ledger, key=f"k{n}".encode()) for n in range(3)]
        expected = {f"{bridge.group_id}:{topic.name}:0:{m.offset}" for m in sent}
        wait_for(lambda: ledger.done() >= expected, timeout_s=60, what="3 records handled")

        status = wait_for(lambda: committed(bridge, 3), timeout_s=60, what="offset 3 committed")
        logs = (bridge.log(), worker.log_path.read_text(), str(status))
        assert_secret_absent(auth_redis.password, *logs)
        assert f"://app:**@127.0.0.1:{auth_redis.port}/0" in logs[1]  # Celery's banner masks
    finally:
        worker.stop()


@pytest.mark.parametrize("command", ["run", "status"])
def test_a_wrong_redis_password_is_reported_without_the_password(
    command: str, auth_redis: AuthRedis, tmp_path: Path
) -> None:
    wrong = f"wrong-{uuid.uuid4().hex}"
    config = tmp_path / "wrong-redis.toml"
    config.write_text(
        f'[kafka]\nbootstrap_servers = "{BOOTSTRAP}"\ngroup_id = "g-{uuid.uuid4().hex[:8]}"\n'
        f'[celery]\nbroker_url = "{auth_redis.url()}"\nbroker_username = "app"\n'
        f'broker_password_file = "{secret_file(tmp_path, wrong)}"\n'
        '[[routes]]\ntopic = "t"\ntask = "x"\n'
    )
    result = subprocess.run(
        [sys.executable, "-m", "bridge", command, "--config", str(config)],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    output = result.stdout + result.stderr
    masked = f"redis://app:***@127.0.0.1:{auth_redis.port}/0"
    expected = {
        "run": f"celery.broker_url {masked}: Redis refuses the credentials (invalid username",
        "status": f"Redis unreachable at {masked}",
    }
    assert expected[command] in output, output
    assert result.returncode == (2 if command == "run" else 1)
    assert_secret_absent(wrong, output)


# -- JSON only ---------------------------------------------------------------------------


def publish_pickle(queue: str, task_id: str) -> None:
    """A complete Celery (protocol 2) message for ``tests.flaky``, serialized with pickle."""
    body = ((), {"record": {"topic": "t"}}, {"callbacks": None, "errbacks": None})
    headers = {"lang": "py", "task": "tests.flaky", "id": task_id, "root_id": task_id,
               "retries": 0, "argsrepr": "()", "kwargsrepr": "{}"}  # fmt: skip
    with Connection(BROKER_URL) as conn:
        Producer(conn).publish(
            body, serializer="pickle", exchange=Exchange(queue, type="direct"),
            routing_key=queue, declare=[], headers=headers,
        )  # fmt: skip


def test_a_worker_refuses_a_pickle_message_and_goes_on_with_json(
    make_topic: MakeTopic,
    start_bridge: StartBridge,
    producer: KafkaProducer,
    ledger: Ledger,
    tmp_path: Path,
) -> None:
    queue = f"sec-pickle-{uuid.uuid4().hex[:8]}"
    worker = start_worker(tmp_path, queue)
    try:
        task_id = f"pickle-{uuid.uuid4().hex[:8]}"
        publish_pickle(queue, task_id)
        wait_for(
            lambda: "untrusted content of type pickle" in worker.log_path.read_text(),
            timeout_s=60,
            what="the worker to refuse the pickle message",
        )
        assert f"tests.flaky[{task_id}]" not in worker.log_path.read_text()
        assert redis.Redis.from_url(BROKER_URL).llen(queue) == 0  # refused, not left to retry

        topic = make_topic()
        bridge = start_bridge([{"topic": topic.name, "task": "tests.flaky", "queue": queue}])
        sent = send(producer, topic, ledger)
        task = f"{bridge.group_id}:{topic.name}:0:{sent.offset}"
        wait_for(lambda: task in ledger.done(), timeout_s=60, what="the next JSON record handled")
        assert worker.proc.poll() is None
    finally:
        worker.stop()


def test_the_bridge_publishes_json_task_messages(
    make_topic: MakeTopic, start_bridge: StartBridge, producer: KafkaProducer, ledger: Ledger
) -> None:
    queue = f"unconsumed-{uuid.uuid4().hex[:8]}"
    topic = make_topic()
    start_bridge([{"topic": topic.name, "task": "tests.flaky", "queue": queue}])
    send(producer, topic, ledger)
    client = redis.Redis.from_url(BROKER_URL)
    try:
        [raw] = wait_for(lambda: client.lrange(queue, 0, -1), timeout_s=60, what="a message")
        message = json.loads(raw)
        assert message["content-type"] == "application/json"
        assert message["content-encoding"] == "utf-8"
        body = json.loads(base64.b64decode(message["body"]))  # the body itself is JSON too
        assert topic.name in json.dumps(body)
    finally:
        client.delete(queue)
