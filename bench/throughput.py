"""``make bench``: records/s from Kafka to accepted-and-committed, measured side by side.

One topic of ~200-byte JSON records on 8 partitions is produced once; then, in this order:

- **raw consume**: kafka-python alone, reading the records (the ceiling);
- **naive loop**: poll, ``send_task`` per record, commit per batch: what a hand-written
  bridge does;
- **bridge**: ``bridge.consumer.Bridge`` (one Lua script per poll batch, exactly-once);
- **bridge, ordered**: the same on an ordered route, with the ~1000 keys the records have: each
  record is appended to its key's FIFO in Redis (the key's head published at once). No worker
  runs, so the FIFOs only grow: the limits on waiting records are set above the record count,
  so that no partition is paused. Target: ordered / unordered >= 0.5.

Each run uses its own consumer group and Celery queue (no worker: this measures handing
records to Celery, not handling them). Results go to ``bench/results/latest.json`` and
``latest.md``. Sizes: ``BENCH_RECORDS`` (default 100 000) and ``BENCH_NAIVE_RECORDS``
(default 20 000: the naive loop is slow, and a rate is a rate).
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import redis
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.structs import OffsetAndMetadata

from bench.harness import KAFKA, REDIS, machine, save
from bridge.consumer import Bridge
from bridge.dispatch import publisher_app
from bridge.hooks import BridgeHooks
from bridge.settings import BridgeSettings, CelerySettings

HooksFor = Callable[[BridgeSettings], list[BridgeHooks]]

PARTITIONS = 8
RECORDS = int(os.environ.get("BENCH_RECORDS", "100000"))
NAIVE_RECORDS = int(os.environ.get("BENCH_NAIVE_RECORDS", "20000"))
KEYS = 997  # distinct record keys: c-0 .. c-996
ORDERED_TARGET = 0.5  # bridge ordered / bridge unordered


def produce(topic: str, count: int) -> None:
    admin = KafkaAdminClient(bootstrap_servers=KAFKA)
    admin.create_topics(
        {topic: {"num_partitions": PARTITIONS, "replication_factor": 1}}, wait_for_metadata=True
    )
    admin.close()
    producer = KafkaProducer(bootstrap_servers=KAFKA, linger_ms=20, batch_size=256 * 1024)
    for i in range(count):
        order = {"id": f"order-{i:09d}", "customer": f"c-{i % 997:05d}", "amount_cents": i % 10_000,
                 "currency": "EUR", "items": [{"sku": f"sku-{i % 113}", "qty": 1 + i % 3}],
                 "note": "x" * 40}  # fmt: skip
        producer.send(topic, key=f"c-{i % KEYS}".encode(), value=json.dumps(order).encode())
    producer.flush()
    producer.close()


def raw_consume(topic: str, count: int) -> float:
    consumer = KafkaConsumer(bootstrap_servers=KAFKA, enable_auto_commit=False)
    consumer.assign([TopicPartition(topic, p) for p in range(PARTITIONS)])
    consumer.seek_to_beginning()
    seen, start = 0, time.perf_counter()
    while seen < count:
        seen += sum(len(b) for b in consumer.poll(timeout_ms=200, max_records=500).values())
    elapsed = time.perf_counter() - start
    consumer.close()
    return count / elapsed


def naive_loop(topic: str, count: int) -> float:
    """The loop people write by hand: poll, send_task per record, commit per batch."""
    app = publisher_app(CelerySettings(broker_url=REDIS))
    group, queue = f"bench-naive-{uuid.uuid4().hex[:6]}", f"bench-naive-{uuid.uuid4().hex[:6]}"
    consumer = KafkaConsumer(
        topic, bootstrap_servers=KAFKA, group_id=group, enable_auto_commit=False,
        auto_offset_reset="earliest", max_poll_records=500,
    )  # fmt: skip
    done, start = 0, time.perf_counter()
    while done < count:
        batch = consumer.poll(timeout_ms=200)
        for tp, records in batch.items():
            for r in records:
                app.send_task(
                    "bench.handle", args=[r.value.decode()], queue=queue,
                    task_id=f"{group}:{r.topic}:{r.partition}:{r.offset}",
                )  # fmt: skip
            consumer.commit({tp: OffsetAndMetadata(records[-1].offset + 1, "", -1)})
            done += len(records)
    elapsed = time.perf_counter() - start
    consumer.close()
    bindings = [f"_kombu.binding.{queue}", f"_kombu.binding_permanent.{queue}"]
    redis.Redis.from_url(REDIS).delete(queue, *bindings)
    return done / elapsed


def bridge_run(
    topic: str, count: int, *, ordered: bool = False, hooks: HooksFor = lambda settings: []
) -> float:
    group = f"bench-bridge-{'ordered-' if ordered else ''}{uuid.uuid4().hex[:6]}"
    queue = group
    route: dict[str, Any] = {"topic": topic, "task": "bench.handle", "queue": queue}
    if ordered:  # no worker: every key's FIFO only grows, so no limit may pause a partition
        route |= {"ordered": True, "max_waiting_per_key": count,
                  "max_waiting_per_partition": count}  # fmt: skip
    settings = BridgeSettings.model_validate(
        {
            "kafka": {"bootstrap_servers": KAFKA, "group_id": group, "poll_timeout_ms": 50},
            "celery": {"broker_url": REDIS},
            "routes": [route],
        }
    )
    bridge = Bridge(settings, hooks=hooks(settings))
    thread = threading.Thread(target=bridge.run, daemon=True)
    admin = KafkaAdminClient(bootstrap_servers=KAFKA)
    start = time.perf_counter()
    thread.start()
    wait(lambda: committed(admin, group, topic) >= count, 600)
    elapsed = time.perf_counter() - start
    admin.close()
    bridge.stop()
    thread.join(timeout=30)
    client = redis.Redis.from_url(REDIS)
    client.delete(queue, *client.keys(f"bridge:{group}:*"))
    return count / elapsed


def committed(admin: KafkaAdminClient, group: str, topic: str) -> int:
    offsets = admin.list_group_offsets(group).get(group, {})
    return sum(m.offset for tp, m in offsets.items() if tp.topic == topic and m.offset > 0)


def wait(condition: Callable[[], bool], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit(f"bench: timed out after {timeout_s} s")
        time.sleep(0.1)  # the watcher shares the bridge's GIL: look rarely


def main() -> int:
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("kafka").setLevel(logging.ERROR)
    topic = f"bench-{uuid.uuid4().hex[:8]}"
    print(f"producing {RECORDS} records to {topic} ({PARTITIONS} partitions)…", flush=True)
    produce(topic, RECORDS)
    rates = {
        "raw_consume": raw_consume(topic, RECORDS),
        "naive_loop": naive_loop(topic, NAIVE_RECORDS),
        "bridge_unordered": bridge_run(topic, RECORDS),
        "bridge_ordered": bridge_run(topic, RECORDS, ordered=True),
    }
    admin = KafkaAdminClient(bootstrap_servers=KAFKA)
    admin.delete_topics([t for t in admin.list_topics() if t.startswith(topic)])
    admin.close()
    ratios = {
        "bridge_vs_naive": rates["bridge_unordered"] / rates["naive_loop"],
        "bridge_vs_raw_consume": rates["bridge_unordered"] / rates["raw_consume"],
        "ordered_vs_unordered": rates["bridge_ordered"] / rates["bridge_unordered"],
    }
    report = {
        "records": RECORDS, "naive_records": NAIVE_RECORDS, "partitions": PARTITIONS,
        "keys": KEYS, "ordered_target": ORDERED_TARGET,
        "ordered_target_met": ratios["ordered_vs_unordered"] >= ORDERED_TARGET,
        "records_per_s": {k: round(v) for k, v in rates.items()},
        "ratios": {k: round(v, 2) for k, v in ratios.items()},
        "machine": machine(), "command": "make bench",
    }  # fmt: skip
    save("latest", report, markdown(report))
    return 0


def markdown(report: dict[str, Any]) -> str:
    r, q = report["records_per_s"], report["ratios"]
    m = report["machine"]
    met = "met" if report["ordered_target_met"] else "NOT met"
    return "\n".join(
        [
            f"Kafka -> accepted and committed, ~200-byte JSON, {report['partitions']} partitions, "
            f"{m['cpus']} CPUs, Python {m['python']}, Kafka {m['kafka']}:",
            "",
            "| run | records | records/s | vs unordered |",
            "|---|---:|---:|---|",
            f"| raw kafka-python consume (ceiling) | {report['records']} | {r['raw_consume']} | |",
            f"| naive loop (send_task per record) | {report['naive_records']} "
            f"| {r['naive_loop']} | |",
            f"| bridge, unordered route | {report['records']} | {r['bridge_unordered']} | 1 |",
            f"| bridge, ordered route, {report['keys']} keys | {report['records']} "
            f"| {r['bridge_ordered']} | {q['ordered_vs_unordered']} (target >= "
            f"{report['ordered_target']}: {met}) |",
            "",
            f"bridge / naive = **{q['bridge_vs_naive']}**, "
            f"bridge / raw consume = **{q['bridge_vs_raw_consume']}**, "
            f"ordered / unordered = **{q['ordered_vs_unordered']}**",
            "",
        ]
    )


if __name__ == "__main__":
    raise SystemExit(main())
