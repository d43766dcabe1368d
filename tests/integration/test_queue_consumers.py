"""A route whose queue no worker consumes: the bridge warns (log and status), pauses the route
at the default max_queue_depth (Kafka stays the buffer), and once a worker starts every record
is handled and the warning ends."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

from kafka import KafkaAdminClient, KafkaProducer

from bridge.settings import MAX_QUEUE_DEPTH
from tests.conftest import wait_for
from tests.integration.conftest import Ledger, start_worker
from tests.integration.helpers import (
    MakeTopic,
    StartBridge,
    committed_offsets,
    send_many,
    status_json,
    task_ids,
    wait_committed_to_end,
)

BATCH = 100  # max_poll_records: the queue exceeds its limit by at most about one poll batch


def route_of(doc: dict[str, Any], topic: str) -> dict[str, Any]:
    return next(r for r in doc["routes"] if r["topic"] == topic)


def test_a_queue_no_worker_consumes_is_warned_held_at_the_default_depth_and_loses_nothing(
    tmp_path: Path,
    admin: KafkaAdminClient,
    make_topic: MakeTopic,
    start_bridge: StartBridge,
    producer: KafkaProducer,
    ledger: Ledger,
) -> None:
    topic = make_topic(partitions=2)
    queue = f"unconsumed-{uuid.uuid4().hex[:8]}"
    warning = f"no worker on the bridge's transport consumes queue {queue}"
    bridge = start_bridge([{"topic": topic.name, "task": "tests.echo", "queue": queue}],
                          kafka={"max_poll_records": BATCH})  # fmt: skip
    produced = task_ids(bridge.group_id, topic, send_many(producer, topic, ledger,
                                                          MAX_QUEUE_DEPTH + 3 * BATCH))  # fmt: skip
    try:
        wait_for(lambda: warning in bridge.log(), timeout_s=60, what="the warning in the log")

        def held() -> dict[str, Any] | None:
            doc = status_json(bridge)
            route = route_of(doc, topic.name)
            paused = {p["paused"] for p in route["partitions"]}
            return doc if paused == {"backpressure"} and route["lag"] > 0 else None

        doc = wait_for(held, timeout_s=120, what="the route paused by backpressure")
        assert doc is not None
        route = route_of(doc, topic.name)
        assert route["consumers"] == 0
        assert next(w for w in doc["warnings"] if queue in w).startswith(warning)
        # paused at the default depth: the bridge counts a batch in flight as queued already,
        # so the queue may hold up to a batch less (9990 seen), or a batch more
        assert MAX_QUEUE_DEPTH - BATCH <= route["queue_depth"] < MAX_QUEUE_DEPTH + 2 * BATCH
        committed = sum(committed_offsets(admin, bridge.group_id, topic.name).values())
        assert committed <= route["queue_depth"] < len(produced)  # the rest waits in Kafka

        worker = start_worker(tmp_path, queue)
        try:
            wait_for(lambda: ledger.done() >= produced, timeout_s=300,
                     what=f"{len(produced)} records handled")  # fmt: skip
            wait_committed_to_end(admin, bridge.group_id, topic)
            wait_for(lambda: f"consumes queue {queue} again" in bridge.log(), timeout_s=30,
                     what="the end of the warning in the log")  # fmt: skip
            after = status_json(bridge)
        finally:
            worker.stop()
        assert ledger.done() == produced  # produced = handled, 0 lost
        assert route_of(after, topic.name)["consumers"] == 1
        assert not [w for w in after["warnings"] if queue in w]
        log = bridge.log()
        assert log.count(warning) - log.count(f"still: {warning}") == 1  # not once per check
        assert bridge.proc.poll() is None
    finally:
        ledger.client.delete(queue, f"{ledger.prefix}:echo")
