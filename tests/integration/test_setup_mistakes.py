"""Setup mistakes on the workers' side, made as a new user makes them: their own Celery app in a
directory of their own (not this project's ``tasks``, ``celeryconfig.py`` or test handlers),
the installed ``bridge`` package, a worker started with ``celery -A``.

Each record ends handled, dead-lettered with a reason, or still waiting (offset not
committed): produced = handled + dead-lettered + waiting, and the bridge keeps running.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaAdminClient, KafkaProducer

from tests.conftest import wait_for
from tests.integration.conftest import (
    BROKER_URL,
    REPO,
    BridgeProcess,
    Ledger,
    WorkerProcess,
    config_toml,
    read_all,
    start_worker,
    worker_command,
)
from tests.integration.helpers import (
    MakeTopic,
    StartBridge,
    headers_of,
    route_named,
    send,
    send_many,
    status_json,
    wait_committed_to_end,
)

# The user's app: their broker, JSON, the bridge's transport (the worker refuses to start
# without it, and says so), one RecordTask handler, and one handler without base=RecordTask.
USER_APP = """
import os

import redis
from celery import Celery

import bridge.worker.transport
from bridge import PermanentError, Record, RecordTask

bridge.worker.transport.install()
app = Celery("shop_app", broker=os.environ["SHOP_BROKER_URL"])
app.conf.update(task_serializer="json", accept_content=["json"])
ledger = redis.Redis.from_url(os.environ["SHOP_BROKER_URL"])


@app.task(base=RecordTask, name="shop.handle_order", autoretry_for=(TimeoutError,),
          max_retries=1, retry_kwargs={"countdown": 0.01})
def handle_order(record: Record) -> None:
    mode = record.header("mode")
    if mode == b"invalid":
        raise PermanentError("order is invalid")
    if mode == b"timeout":
        raise TimeoutError("payment service timed out")
    ledger.sadd(record.header("ledger").decode() + ":handled", record.offset)


@app.task(name="shop.audit")  # the mistake: no base=RecordTask
def audit(record) -> None:
    ledger.sadd(record.header("ledger").decode() + ":handled", record.offset)
"""


@dataclass
class UserApp:
    """The user's app directory, its queue, and the workers started from it."""

    folder: Path
    queue: str
    workers: list[WorkerProcess] = field(default_factory=list)

    def config(self, routes: list[dict[str, Any]], group_id: str = "shop-workers") -> Path:
        """A bridge configuration file for ``routes`` (on this app's queue)."""
        path = self.folder / f"{group_id}.toml"
        routes = [{"queue": self.queue, **route} for route in routes]
        path.write_text(config_toml(group_id=group_id, routes=routes))
        return path

    def start_worker(self, config: Path) -> WorkerProcess:
        """``celery -A shop_app worker`` in the app's directory, with ``BRIDGE_CONFIG``."""
        worker = start_worker(
            self.folder, self.queue, concurrency=1, app="shop_app", cwd=self.folder,
            bridge_config=config,
        )  # fmt: skip
        self.workers.append(worker)
        return worker

    def refused_worker(self, config: Path | None) -> tuple[int | None, str]:
        """Start a worker that should refuse to start: its exit status (``None``: it started,
        and was stopped) and its output."""
        env = {k: v for k, v in os.environ.items() if k != "BRIDGE_CONFIG"}
        if config is not None:
            env["BRIDGE_CONFIG"] = str(config)
        log = self.folder / f"refused-{uuid.uuid4().hex[:6]}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                worker_command("shop_app", self.queue, 1), cwd=self.folder, env=env,
                stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        wait_for(lambda: proc.poll() is not None or b"ready." in log.read_bytes(),
                 timeout_s=60, what="the worker to stop or be ready")  # fmt: skip
        exited = proc.poll()
        WorkerProcess(proc, log).stop()
        return exited, log.read_text()


@pytest.fixture
def user_app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[UserApp]:
    folder = tmp_path / "shop"
    folder.mkdir()
    (folder / "shop_app.py").write_text(USER_APP)
    monkeypatch.setenv("SHOP_BROKER_URL", BROKER_URL)
    app = UserApp(folder, f"shop-{uuid.uuid4().hex[:8]}")
    yield app
    for worker in app.workers:
        worker.stop()


def handled(ledger: Ledger) -> set[int]:
    return {int(m) for m in ledger.client.smembers(f"{ledger.prefix}:handled")}


def reasons(records: list[Any]) -> list[str]:
    return [headers_of(r)["bridge-reason"].decode() for r in records]


def assert_running(bridge: BridgeProcess) -> None:
    assert bridge.proc.poll() is None, f"the bridge stopped:\n{bridge.log()[-3000:]}"


def test_records_of_a_task_no_worker_registers_are_dead_lettered_as_unroutable(
    user_app: UserApp,
    make_topic: MakeTopic,
    start_bridge: StartBridge,
    producer: KafkaProducer,
    ledger: Ledger,
    admin: KafkaAdminClient,
) -> None:
    """A typo in a route's ``task``: Celery discards such a message (3 of 3 lost before)."""
    topic = make_topic()
    typo = {"topic": topic.name, "task": "shop.handle_ordr", "queue": user_app.queue}
    user_app.start_worker(user_app.config([typo]))
    bridge = start_bridge([typo])
    for n in range(3):
        send(producer, topic, ledger, key=f"k{n}".encode(), value=b'{"id": 1}')

    dead = read_all(topic.dlt(bridge.group_id), 3)
    wait_committed_to_end(admin, bridge.group_id, topic)
    assert (len(dead), len(handled(ledger))) == (3, 0)  # produced 3 = 0 handled + 3 dead
    assert reasons(dead) == ["unroutable"] * 3
    first = headers_of(dead[0])
    assert first["bridge-task"] == b"shop.handle_ordr"
    assert first["kafka_dlt-exception-fqcn"] == b"bridge.errors.UnroutableError"
    assert first["kafka_dlt-exception-cause-fqcn"] == b"bridge.errors.UnroutableError"  # Spring's
    assert b"celery.exceptions.NotRegistered" in first["kafka_dlt-exception-stacktrace"]
    assert b"'shop.handle_ordr' is not registered" in first["kafka_dlt-exception-message"]
    route = route_named(status_json(bridge), topic.name)
    assert route["unroutable"]["records"] == 3
    assert route["unroutable"]["last"]["task"] == "shop.handle_ordr"
    assert route["workers"]["consuming"] == 1
    assert route["workers"]["registered"] == 0
    assert "registered by none of the 1 live worker(s)" in route["workers"]["problem"]
    wait_for(lambda: "task shop.handle_ordr is registered by none" in bridge.log(),
             what="the bridge's warning about the route")  # fmt: skip
    table = subprocess.run(
        [sys.executable, "-m", "bridge", "status", "--config", str(bridge.config_path)],
        cwd=REPO, capture_output=True, text=True, timeout=60, env={**os.environ, "COLUMNS": "300"},
    ).stdout  # fmt: skip
    assert f"route {topic.name}: 3 record(s) dead-lettered as unroutable" in table
    assert_running(bridge)


def test_an_unroutable_head_of_an_ordered_key_lets_the_key_go_on(
    user_app: UserApp,
    make_topic: MakeTopic,
    start_bridge: StartBridge,
    producer: KafkaProducer,
    ledger: Ledger,
    admin: KafkaAdminClient,
) -> None:
    """Each head is dead-lettered like any other dead letter, and the key's next record goes."""
    topic = make_topic()
    typo = {"topic": topic.name, "task": "shop.handle_ordr", "queue": user_app.queue,
            "ordered": True}  # fmt: skip
    user_app.start_worker(user_app.config([typo]))
    bridge = start_bridge([typo])
    for n in range(6):
        send(producer, topic, ledger, key=f"k{n % 2}".encode(), value=b"{}")

    dead = read_all(topic.dlt(bridge.group_id), 6)
    wait_committed_to_end(admin, bridge.group_id, topic)
    assert reasons(dead) == ["unroutable"] * 6
    by_key = {k: [r.offset for r in dead if r.key == k] for k in (b"k0", b"k1")}
    offsets = {k: [int.from_bytes(headers_of(r)["kafka_dlt-original-offset"], "big")
                   for r in dead if r.key == k] for k in by_key}  # fmt: skip
    assert offsets == {b"k0": [0, 2, 4], b"k1": [1, 3, 5]}  # in order, each key went on
    ordered = wait_for(
        lambda: (doc := status_json(bridge)["ordered"])["keys_out"] == 0 and doc,
        what="no key with a head out",
    )
    assert sum(ordered["records_waiting"].values()) == 0
    assert ordered["keys_parked"] == []
    assert len(handled(ledger)) == 0
    assert_running(bridge)


def test_a_flood_breaker_holds_a_route_whose_records_are_all_unroutable(
    user_app: UserApp,
    make_topic: MakeTopic,
    start_bridge: StartBridge,
    producer: KafkaProducer,
    ledger: Ledger,
    admin: KafkaAdminClient,
) -> None:
    """Unroutable records count as dead letters for the breaker: the rest waits in Kafka."""
    topic = make_topic()
    typo = {"topic": topic.name, "task": "shop.handle_ordr", "queue": user_app.queue,
            "max_queue_depth": 10, "resume_queue_depth": 5}  # fmt: skip
    user_app.start_worker(user_app.config([typo]))
    sent = send_many(producer, topic, ledger, 200)
    policy = {"dead_letter_ratio": 0.5, "min_records": 10, "cool_down_s": 3600,
              "check_interval_ms": 50}  # fmt: skip
    bridge = start_bridge([typo], kafka={"max_poll_records": 10}, sections={"breaker": policy})

    def held() -> dict[str, Any] | None:
        route = route_named(status_json(bridge), topic.name)
        [part] = route["partitions"]
        settled = route["queue_depth"] == 0 and part["uncommitted"] == 0
        return part if settled and part["paused"] == "dead-letter-flood" else None

    part = wait_for(held, timeout_s=60, what="the breaker to hold the route, its queue empty")
    assert part is not None
    dead = read_all(topic.dlt(bridge.group_id), part["committed"])
    dead_offsets = sorted(int.from_bytes(headers_of(r)["kafka_dlt-original-offset"], "big")
                          for r in dead)  # fmt: skip
    waiting = list(range(part["committed"], part["end"]))
    assert dead_offsets + waiting == [m.offset for m in sent]  # 200 = dead + waiting in Kafka
    assert waiting, "the breaker held nothing back"
    assert reasons(dead) == ["unroutable"] * len(dead)
    assert_running(bridge)


def test_records_of_a_handler_without_record_task_are_dead_lettered_as_unroutable(
    user_app: UserApp,
    make_topic: MakeTopic,
    start_bridge: StartBridge,
    producer: KafkaProducer,
    ledger: Ledger,
    admin: KafkaAdminClient,
) -> None:
    """The handler would get the envelope as a dict and fail (2 of 2 lost before). This
    worker serves the routes of another configuration, so it cannot refuse at start."""
    topic = make_topic()
    elsewhere = user_app.config([{"topic": "orders", "task": "shop.handle_order"}])
    user_app.start_worker(elsewhere)
    bridge = start_bridge([{"topic": topic.name, "task": "shop.audit", "queue": user_app.queue}])
    for n in range(2):
        send(producer, topic, ledger, key=f"k{n}".encode(), value=b'{"id": 1}')

    dead = read_all(topic.dlt(bridge.group_id), 2)
    wait_committed_to_end(admin, bridge.group_id, topic)
    assert (len(dead), len(handled(ledger))) == (2, 0)
    assert reasons(dead) == ["unroutable"] * 2
    message = headers_of(dead[0])["kafka_dlt-exception-message"].decode()
    assert "'shop.audit'" in message
    assert "is not a RecordTask" in message
    assert "base=RecordTask" in message
    route = route_named(status_json(bridge), topic.name)
    assert route["unroutable"]["records"] == 2
    assert route["workers"]["not_record_task"] == [f"{user_app.queue}@{socket.gethostname()}"]
    assert "is not a RecordTask" in route["workers"]["problem"]
    assert_running(bridge)


def test_a_worker_routed_to_a_handler_without_record_task_refuses_to_start(
    user_app: UserApp,
) -> None:
    config = user_app.config([{"topic": "audit", "task": "shop.audit"}])
    exited, output = user_app.refused_worker(config)
    assert exited not in (None, 0), output
    assert "kafka-celery-bridge refuses this worker" in output
    assert "route audit: task shop.audit is registered here but is not a RecordTask" in output


def test_a_worker_without_the_bridge_configuration_refuses_to_start_and_loses_nothing(
    user_app: UserApp,
    make_topic: MakeTopic,
    start_bridge: StartBridge,
    producer: KafkaProducer,
    ledger: Ledger,
    admin: KafkaAdminClient,
) -> None:
    """Without ``BRIDGE_CONFIG`` a worker could neither retry nor dead-letter (2 of 4 lost
    before): it refuses to start; the records wait in their queue for a worker that can."""
    exited, output = user_app.refused_worker(None)
    assert exited not in (None, 0), output
    assert "BRIDGE_CONFIG is not set" in output
    assert "RecordTask handlers (shop.handle_order)" in output

    topic = make_topic()
    route = {"topic": topic.name, "task": "shop.handle_order", "queue": user_app.queue}
    bridge = start_bridge([route])
    for mode in (b"ok", b"ok", b"invalid", b"timeout"):
        send(producer, topic, ledger, headers=[("mode", mode)])
    wait_committed_to_end(admin, bridge.group_id, topic)
    assert route_named(status_json(bridge), topic.name)["queue_depth"] == 4  # waiting, not lost

    user_app.start_worker(user_app.config([route], group_id=bridge.group_id))
    dead = read_all(topic.dlt(bridge.group_id), 2)
    wait_for(lambda: handled(ledger) == {0, 1}, what="the two good records handled")
    assert sorted(reasons(dead)) == ["exhausted", "non-retryable"]  # 4 = 2 handled + 2 dead
    assert_running(bridge)
