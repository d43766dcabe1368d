"""Malformed and foreign messages on a worker's Celery queue: the worker refuses each (and says
so in its log) without crashing, and handles a real record afterwards."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from celery import Celery

from bridge.backends.redis.fetch import PROCESSING_PREFIX
from tests.conftest import wait_for
from tests.integration.conftest import BROKER_URL, Ledger, WorkerProcess, start_worker
from tests.integration.helpers import real_record


@pytest.fixture
def own_worker(tmp_path: Path) -> Iterator[tuple[WorkerProcess, str]]:
    """A worker of this test's own (it may be the one to crash), on a queue of its own."""
    queue = f"foreign-{uuid.uuid4().hex[:8]}"
    process = start_worker(tmp_path, queue, concurrency=1)
    yield process, queue
    process.stop()


def kombu_message(sender: Celery, queue: str, task: str, args: list[object]) -> dict[str, object]:
    """The Redis list element Celery would push for ``task(*args)``: built, not sent."""
    client = redis.Redis.from_url(BROKER_URL)
    scratch = f"{queue}-scratch"
    sender.send_task(task, args=args, queue=scratch)
    raw = client.rpop(scratch)
    assert isinstance(raw, bytes)
    message: dict[str, object] = json.loads(raw)
    return message


def test_a_worker_refuses_foreign_messages_and_goes_on(
    own_worker: tuple[WorkerProcess, str], sender: Celery, ledger: Ledger
) -> None:
    worker, queue = own_worker
    client = redis.Redis.from_url(BROKER_URL)
    no_headers = kombu_message(sender, queue, "tests.echo", [real_record(ledger)])
    no_headers["headers"] = {}
    bad_body = kombu_message(sender, queue, "tests.echo", [real_record(ledger)])
    bad_body["body"] = base64.b64encode(b"\xff not json").decode()
    foreign = {
        "garbage": b"\xff\x00\x13garbage",
        "not a kombu message": json.dumps({"x": 1}).encode(),
        "no headers": json.dumps(no_headers).encode(),
        "body not JSON": json.dumps(bad_body).encode(),
    }
    for raw in foreign.values():
        client.lpush(queue, raw)
    ids = {
        "unknown task": sender.send_task("tests.no-such-task", args=[{}], queue=queue).id,
        "object argument": sender.send_task("tests.echo", args=[{"x": 1}], queue=queue).id,
        "string argument": sender.send_task("tests.echo", args=["a string"], queue=queue).id,
        "no argument": sender.send_task("tests.echo", queue=queue).id,
        "spoiled envelope": sender.send_task(
            "tests.echo", args=[{**real_record(ledger), "topic": 5}], queue=queue
        ).id,
    }
    good = sender.send_task("tests.echo", args=[real_record(ledger)], queue=queue).id
    wait_for(lambda: good in ledger.done(), timeout_s=60, what="the real record handled")

    def log() -> str:
        return worker.log_path.read_text(errors="replace")

    assert worker.proc.poll() is None, f"the worker stopped:\n{log()[-4000:]}"
    said = [
        *(f"task {ids[name]} (tests.echo): rejected: not a bridge record envelope"
          for name in ("object argument", "string argument", "no argument", "spoiled envelope")),
        "dropped a queue element kombu cannot decode",  # garbage
        "not a kombu message (no properties.delivery_tag): {'x': 1}",
        "Received and deleted unknown message",  # no headers: Celery's own refusal
        "Can't decode message body",  # body not JSON: Celery's own
        "Received unregistered task of type 'tests.no-such-task'",
    ]  # fmt: skip
    wait_for(lambda: all(line in log() for line in said),
             what=f"the worker to log {[line for line in said if line not in log()]}")  # fmt: skip
    wait_for(lambda: client.llen(queue) == 0, what=f"{queue} drained")
    # Dropped elements leave the worker's processing list too (bridge.backends.redis.fetch).
    assert client.keys(f"{PROCESSING_PREFIX}*.{queue}") == []
    assert ledger.done() == {good}
