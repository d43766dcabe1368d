"""Helpers shared by the integration tests."""

from __future__ import annotations

import contextlib
import json
import socket
import struct
import subprocess
import sys
import urllib.request
from collections.abc import Callable
from typing import Any

from kafka import KafkaAdminClient, KafkaProducer
from kafka.consumer.fetcher import ConsumerRecord
from kafka.errors import KafkaError
from prometheus_client.parser import text_string_to_metric_families

from bridge.record import Envelope, Record, to_task_arg
from tests.conftest import wait_for, wait_progress
from tests.integration.conftest import (
    REPO,
    BridgeProcess,
    Ledger,
    Topic,
    committed_offsets,
    end_offsets,
    services,
)

__all__ = ["committed_offsets", "services"]

StartBridge = Callable[..., BridgeProcess]
Samples = list[tuple[str, dict[str, str], float]]
MakeTopic = Callable[..., Topic]


def send(
    producer: KafkaProducer,
    topic: Topic,
    ledger: Ledger,
    *,
    key: bytes | None = b"k",
    value: bytes | None = b"{}",
    headers: list[tuple[str, bytes]] | None = None,
    partition: int | None = None,
    timestamp_ms: int | None = None,
) -> Any:
    all_headers = [("ledger", ledger.prefix.encode()), *(headers or [])]
    future = producer.send(
        topic.name, key=key, value=value, headers=all_headers,
        partition=partition, timestamp_ms=timestamp_ms,
    )  # fmt: skip
    return future.get(timeout=10)


def executions(ledger: Ledger) -> list[dict[str, Any]]:
    """Every execution the test handlers wrote (success or not), in the order they started."""
    return [json.loads(e) for e in ledger.client.lrange(f"{ledger.prefix}:executions", 0, -1)]


def headers_of(record: Any) -> dict[str, bytes]:
    return dict(record.headers)


def original_offset(dead: Any) -> int:
    offset: int = struct.unpack(">q", headers_of(dead)["kafka_dlt-original-offset"])[0]
    return offset


def wait_committed_to_end(admin: KafkaAdminClient, group_id: str, topic: Topic) -> None:
    """Wait until the group has committed every partition of ``topic`` to its end; fail only
    when the commits stop advancing for 30 s (a backlog drains more slowly on a busy machine)."""
    ends = end_offsets(topic.name)

    last: dict[int, int] = {}

    def progress() -> tuple[bool, dict[int, int]]:
        nonlocal last
        # The session's admin client may still be reconnecting after a Kafka restart.
        with contextlib.suppress(KafkaError):
            last = committed_offsets(admin, group_id, topic.name)
        return last == ends, last

    wait_progress(progress, what=f"group {group_id} to commit {topic.name} up to {ends}")


def send_many(
    producer: KafkaProducer,
    topic: Topic,
    ledger: Ledger,
    count: int,
    headers: list[tuple[str, bytes]] | None = None,
) -> list[Any]:
    """Produce ``count`` keyed JSON records; return their metadata (partition, offset)."""
    all_headers = [("ledger", ledger.prefix.encode()), *(headers or [])]
    futures = [
        producer.send(topic.name, key=f"k{i}".encode(), value=b'{"n": %d}' % i, headers=all_headers)
        for i in range(count)
    ]
    producer.flush()
    return [f.get(timeout=10) for f in futures]


def task_ids(group_id: str, topic: Topic, sent: list[Any]) -> set[str]:
    return {f"{group_id}:{topic.name}:{m.partition}:{m.offset}" for m in sent}


def published_by_partition(ledger: Ledger, group_id: str, topic: Topic) -> dict[int, int]:
    """The bridge's published watermark in Redis, per partition that has one (the topic's
    only incarnation: its key ends with the topic's id)."""
    found = {}
    for p in range(topic.partitions):
        for key in ledger.client.keys(f"bridge:{group_id}:published:{topic.name}:{p}:*"):
            value = ledger.client.get(key)
            if value is not None:
                found[p] = int(value)
    return found


def published_watermarks(ledger: Ledger, group_id: str, topic: Topic) -> int:
    """Sum over partitions of the bridge's published watermark in Redis."""
    return sum(published_by_partition(ledger, group_id, topic).values())


def assert_each_handled_once(ledger: Ledger, expected: set[str]) -> None:
    wait_for(lambda: ledger.done() >= expected, timeout_s=120, what=f"{len(expected)} handled")
    attempts = ledger.attempts()
    twice = {tid: n for tid, n in attempts.items() if n != 1}
    assert not twice, f"executed more than once: {sorted(twice.items())[:10]}"
    assert set(attempts) == expected


def status_json(bridge: BridgeProcess) -> dict[str, Any]:
    """``python -m bridge status --json`` for the bridge's configuration, parsed."""
    out = subprocess.run(
        [sys.executable, "-m", "bridge", "status", "--json", "--config", str(bridge.config_path)],
        cwd=REPO, capture_output=True, check=True, timeout=60,
    )  # fmt: skip
    doc: dict[str, Any] = json.loads(out.stdout)
    return doc


def route_named(doc: dict[str, Any], topic: str) -> dict[str, Any]:
    """The route of ``topic`` in a ``status --json`` document."""
    routes: list[dict[str, Any]] = [r for r in doc["routes"] if r["topic"] == topic]
    [route] = routes
    return route


def free_port() -> int:
    """A TCP port nothing listens on right now (for a /metrics or Flower server)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def scrape(port: int) -> Samples:
    """Every sample of ``http://127.0.0.1:{port}/metrics``: (name, labels, value)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    return [
        (s.name, dict(s.labels), s.value)
        for family in text_string_to_metric_families(text)
        for s in family.samples
    ]


def real_record(ledger: Ledger, headers: tuple[tuple[str, bytes], ...] = ()) -> dict[str, object]:
    """A record envelope, as a task argument, whose handler writes to ``ledger``."""
    headers = (("ledger", ledger.prefix.encode()), *headers)
    record = Record("foreign", 0, 7, 0, b"k", b"{}", headers, "json")
    return to_task_arg(Envelope(record, "foreign-test", "foreign.foreign-test.dlt"))


def consumed(record: Record) -> ConsumerRecord:
    """``record`` as kafka-python's consumer hands it over."""
    return ConsumerRecord(
        record.topic, record.partition, -1, record.offset, record.timestamp_ms, 0, record.key,
        record.raw_value, list(record.headers), None, -1, -1, -1,
    )  # fmt: skip
