"""The workers' transport loses nothing between fetch and acknowledgement: a worker SIGKILLed
after it took a message from its queue, and before kombu recorded it as unacknowledged, leaves
it in its processing list, and a live worker puts it back and runs it
(bridge.backends.redis.fetch)."""

from __future__ import annotations

import contextlib
import socket
import uuid
from pathlib import Path

import pytest
import redis
from celery import Celery
from kombu import Connection, Consumer, Producer, Queue
from kombu.message import Message

from bridge.backends.redis.fetch import PROCESSING_INDEX, PROCESSING_PREFIX
from bridge.consumer.queue_consumers import read_consumers
from bridge.worker import transport as worker_transport
from tests.conftest import wait_for
from tests.integration.conftest import BROKER_URL, Ledger, services, start_worker, text
from tests.integration.helpers import real_record

# Fast heartbeats and a short lease, so that a dead worker's list is restored within seconds.
LEASE = {"celery": {"transport_options": {"unacked_restore_interval": 0.5,
                                          "processing_lease_s": 2}}}  # fmt: skip


def processing_lists(client: redis.Redis, queue: str) -> dict[str, int]:
    """Non-empty processing lists that take from ``queue``, with their lengths."""
    names = [text(name) for name in client.keys(f"{PROCESSING_PREFIX}*.{queue}")]
    return {name: client.llen(name) for name in names}


@pytest.mark.parametrize("queues", [1, 2], ids=["one-queue", "two-queues"])
def test_a_worker_killed_between_fetch_and_acknowledgement_loses_nothing(
    tmp_path: Path, ledger: Ledger, sender: Celery, queues: int
) -> None:
    names = [f"fetch-{uuid.uuid4().hex[:8]}" for _ in range(queues)]
    queue = names[-1]  # the message goes to the last queue the workers consume
    client = redis.Redis.from_url(BROKER_URL)

    killer = start_worker(tmp_path, ",".join(names), concurrency=1,
                          app="tests.integration.fetch_killer")  # fmt: skip
    task_id = sender.send_task("tests.echo", args=[real_record(ledger)], queue=queue).id
    wait_for(lambda: killer.proc.poll() is not None, what="the worker to kill itself in fetch")
    killer.kill()  # its pool processes too

    held = processing_lists(client, queue)
    assert list(held.values()) == [1], held
    assert client.llen(queue) == 0
    assert not any(task_id in text(entry) for entry in client.hvals("unacked"))
    dead_list = next(iter(held))
    assert client.zscore(PROCESSING_INDEX, dead_list) is not None

    survivor = start_worker(tmp_path, ",".join(reversed(names)), concurrency=1, sections=LEASE)
    try:
        wait_for(
            lambda: task_id in ledger.done(), timeout_s=30, what="the message restored and run"
        )
        assert "restored 1 message(s) to the front of queue" in survivor.log_path.read_text()
        assert client.zscore(PROCESSING_INDEX, dead_list) is None
        assert processing_lists(client, queue) == {}
    finally:
        survivor.stop()
    assert ledger.done() == {task_id}


def test_a_worker_with_a_task_in_hand_survives_a_redis_restart(
    tmp_path: Path, ledger: Ledger, sender: Celery, redis_restarted: object
) -> None:
    queue = f"restart-{uuid.uuid4().hex[:8]}"
    worker = start_worker(tmp_path, queue, concurrency=1, sections=LEASE)
    record = real_record(ledger, headers=(("sleep-ms", b"4000"),))
    try:
        task_id = sender.send_task("tests.flaky", args=[record], queue=queue).id
        wait_for(lambda: task_id in ledger.attempts(), what="the task started")
        services("stop-redis")  # its message is unacknowledged (acks late) while it runs
        services("start-redis")
        wait_for(lambda: task_id in ledger.done(), timeout_s=60, what="the task done")
        # It acknowledged that task on the channel of its lost connection, and goes on.
        after = sender.send_task("tests.flaky", args=[real_record(ledger)], queue=queue).id
        wait_for(lambda: after in ledger.done(), timeout_s=60, what="a task after the restart")
        log = worker.log_path.read_text()
        assert worker.proc.poll() is None, log[-3000:]
        assert "Unrecoverable error" not in log
    finally:
        worker.stop()


@pytest.mark.parametrize("beside", [False, True], ids=["alone", "beside-an-acked-queue"])
def test_a_no_ack_consumer_whose_callback_raises_does_not_get_the_message_again(
    beside: bool,
) -> None:
    """At most once, as kombu's BRPOP: the message left Redis before its callback ran, alone
    (the channel pops) or on a channel that also consumes a queue with acknowledgements (the
    message leaves its processing list first)."""
    name = f"no-ack-{uuid.uuid4().hex[:8]}"
    client = redis.Redis.from_url(BROKER_URL)
    calls: list[object] = []

    def failing(body: object, message: Message) -> None:
        calls.append(body)
        raise RuntimeError("callback failed")

    with Connection(BROKER_URL, transport=worker_transport.Transport) as conn:
        channel = conn.channel()
        if beside:
            Consumer(channel, [Queue(f"{name}-acked")], callbacks=[lambda b, m: None]).consume()
        Consumer(channel, [Queue(name)], no_ack=True, callbacks=[failing]).consume()
        Producer(conn).publish({"n": 1}, routing_key=name, serializer="json")
        with pytest.raises(RuntimeError, match="callback failed"):
            conn.drain_events(timeout=5)
        with pytest.raises(socket.timeout):
            conn.drain_events(timeout=1)  # fetches again: nothing
        assert processing_lists(client, name) == {}
    assert calls == [{"n": 1}]
    assert client.llen(name) == 0
    client.delete(name, f"{name}-acked")


def test_a_cancelled_queue_leaves_the_heartbeat_the_others_keep_it() -> None:
    """The bridge counts a queue's consumers by their heartbeat (bridge.consumer.queue_consumers): a
    consumer cancelled on a queue (celery control cancel_consumer) stops counting for it."""
    kept, cancelled = (f"hb-{uuid.uuid4().hex[:8]}" for _ in range(2))
    client = redis.Redis.from_url(BROKER_URL)
    options = {"unacked_restore_interval": 0.2, "polling_interval": 0.1}
    lease_s = 1.0
    with Connection(BROKER_URL, transport=worker_transport.Transport,
                    transport_options=options) as conn:  # fmt: skip
        channel = conn.channel()
        consumers = {
            name: Consumer(channel, [Queue(name)], callbacks=[lambda b, m: None])
            for name in (kept, cancelled)
        }
        for consumer in consumers.values():
            consumer.consume()

        def live() -> dict[str, int]:
            with contextlib.suppress(socket.timeout):
                conn.drain_events(timeout=0.1)  # fetches, and beats every 0.2 s
            return read_consumers(client, [kept, cancelled], lease_s)

        wait_for(lambda: live() == {kept: 1, cancelled: 1}, what="both queues consumed")
        consumers[cancelled].cancel()
        wait_for(lambda: live() == {kept: 1, cancelled: 0}, what="the cancelled queue to age out")
