"""``make bench`` (fetch): what the workers' reliable fetch costs against kombu's ``BRPOP``.

A kombu consumer (no Celery: the transport alone) takes ``BENCH_FETCH_MESSAGES`` (20 000)
Celery-sized messages off a Redis queue and acknowledges each, as a worker's connection does:
(A) through kombu's own Redis transport, which pops with ``BRPOP``; (B) through
``bridge.worker.transport``, which moves each message into a processing list and takes it out
when it records it as unacknowledged (``bridge.backends.redis.fetch``). Messages/s from the first
message to
the last. The runs alternate (A B B A…, ``BENCH_FETCH_ROUNDS`` rounds, default 3), each on a
queue of its own. Target: B / A >= 0.8. For reference, the same with the messages spread over
two queues, which B serves with a script instead of one blocking move.
"""

from __future__ import annotations

import os
import statistics
import time
import uuid
from typing import Any

from kombu import Connection, Consumer, Exchange, Message, Producer, Queue
from kombu.transport import redis as kombu_redis

from bench.harness import REDIS
from bench.report import Row, Target, ratio
from bridge.worker import transport as worker_transport

MESSAGES = int(os.environ.get("BENCH_FETCH_MESSAGES", "20000"))
ROUNDS = int(os.environ.get("BENCH_FETCH_ROUNDS", "3"))
TARGET = 0.8
PART = "fetch"
_BODY = {"record": "x" * 1000}  # about a bridge task's size once kombu wraps it
TRANSPORTS: dict[str, Any] = {"A": kombu_redis.Transport, "B": worker_transport.Transport}


def consume_rate(transport: Any, queues: int) -> float:
    """Messages/s one connection of ``transport`` takes off ``queues`` fresh queues."""
    names = [f"bench-fetch-{uuid.uuid4().hex[:8]}" for _ in range(queues)]
    exchange = Exchange("bench-fetch", type="direct")
    declared = [Queue(name, exchange, routing_key=name) for name in names]
    with Connection(REDIS) as publisher:
        producer = Producer(publisher, exchange=exchange, serializer="json")
        for queue in declared:
            producer.declare()
            queue(publisher.default_channel).declare()
        for index in range(MESSAGES):
            producer.publish(_BODY, routing_key=names[index % queues])
    seen: list[float] = []

    def on_message(body: Any, message: Message) -> None:
        message.ack()
        seen.append(time.monotonic())

    with Connection(REDIS, transport=transport, transport_options={"priority_steps": [0]}) as conn:
        with Consumer(conn, declared, callbacks=[on_message], accept=["json"]):
            while len(seen) < MESSAGES:
                conn.drain_events(timeout=10)
        for queue in declared:
            queue(conn.default_channel).delete()
    return (MESSAGES - 1) / (seen[-1] - seen[0])


def run() -> tuple[list[Row], dict[str, Any]]:
    detail: dict[str, Any] = {}
    rows: list[Row] = []
    for queues in (1, 2):
        rates: dict[str, list[float]] = {"A": [], "B": []}
        for round_ in range(ROUNDS):
            for name in "AB" if round_ % 2 == 0 else "BA":
                rates[name].append(consume_rate(TRANSPORTS[name], queues))
        a, b = statistics.mean(rates["A"]), statistics.mean(rates["B"])
        detail[f"{queues}-queue"] = {"A": rates["A"], "B": rates["B"]}
        what = "one queue" if queues == 1 else "two queues"
        note = f"{MESSAGES} messages, consume + ack, mean of {ROUNDS}"
        rows += [
            Row(PART, f"kombu BRPOP (A), {what}", round(a), "messages/s", note=note),
            Row(PART, f"processing lists (B), {what}", round(b), "messages/s", note=note),
            Row(PART, f"B / A, {what}", ratio(b, a), "",
                Target(">=", TARGET) if queues == 1 else None),
        ]  # fmt: skip
    return rows, detail


if __name__ == "__main__":
    from bench.__main__ import main

    raise SystemExit(main())
