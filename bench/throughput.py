"""``make bench`` (throughput): records/s from Kafka to accepted-and-committed, side by side.

``BENCH_RECORDS`` (200 000) ~200-byte JSON records on 8 partitions are produced once; then, on
the same machine, one after the other:

- **ceilings**: kafka-python alone, reading the records (raw consume), and Redis alone taking
  messages of the bridge's size by pipelined ``LPUSH`` (500 per round trip);
- **naive loop**: poll, ``send_task`` per record, commit per batch: what a hand-written
  bridge does (``BENCH_NAIVE_RECORDS``, 20 000: it is slow, and a rate is a rate);
- **bridge, unordered**: ``bridge.consumer.loop.Bridge`` with its defaults;
- **bridge, ordered**: the same on an ordered route with the ~1000 keys the records have: each
  record is appended to its key's FIFO in Redis (the key's head published at once). No worker
  runs, so the FIFOs only grow: the limits on waiting records are set above the record count.

Raw consume and the unordered bridge run twice, alternated (A B A B), and their mean counts,
since runs here differ by ~10%. Each run has its own consumer group and Celery queue (no
worker: this measures handing records to Celery, not handling them). Targets: bridge / naive
>= 5, bridge / raw consume >= 0.5, ordered / unordered >= 0.5.
"""

from __future__ import annotations

import os
import statistics
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any

import redis
from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition
from kafka.structs import OffsetAndMetadata

from bench.harness import KAFKA, REDIS, create_topic, delete_topics, produce_orders
from bench.report import Row, Target, ratio
from bridge.backends.redis.dispatch import Dispatcher, publisher_app
from bridge.consumer.loop import Bridge
from bridge.hooks import BridgeHooks
from bridge.offsets import Partition
from bridge.routing import Route
from bridge.settings import BridgeSettings, CelerySettings

HooksFor = Callable[[BridgeSettings], list[BridgeHooks]]

PARTITIONS = 8
RECORDS = int(os.environ.get("BENCH_RECORDS", "200000"))
NAIVE_RECORDS = int(os.environ.get("BENCH_NAIVE_RECORDS", "20000"))
KEYS = 997  # distinct record keys: c-0 .. c-996
PART = "throughput"


def raw_consume(topic: str, count: int) -> float:
    """Records/s kafka-python reads, from its first poll that brought records (as the bridge's
    rate is timed) to the last record."""
    consumer = KafkaConsumer(bootstrap_servers=KAFKA, enable_auto_commit=False)
    consumer.assign([TopicPartition(topic, p) for p in range(PARTITIONS)])
    consumer.seek_to_beginning()
    seen, start = 0, 0.0
    while seen < count:
        seen += sum(len(b) for b in consumer.poll(timeout_ms=200, max_records=500).values())
        start = start or (time.perf_counter() if seen else 0.0)
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
    done, start = 0, 0.0
    while done < count:
        batch = consumer.poll(timeout_ms=200)
        start = start or (time.perf_counter() if batch else 0.0)  # timed as the bridge is
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


class Clock(BridgeHooks):
    """When the bridge's first poll brought records, and when its commits covered ``count``
    records (offsets start at 0), as the bridge's own hooks see them: no watcher polls Kafka
    and takes the GIL meanwhile, and the group join before the first poll is not counted."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.first_poll = self.end = 0.0
        self.done = threading.Event()
        self._committed: dict[Partition, int] = {}

    def after_poll(self, counts: Mapping[Partition, int]) -> None:
        if not self.first_poll:
            self.first_poll = time.perf_counter()

    def after_commit(self, offsets: Mapping[Partition, int], took_s: float) -> None:
        self._committed.update(offsets)
        if sum(self._committed.values()) >= self.count and not self.done.is_set():
            self.end = time.perf_counter()
            self.done.set()

    def rate(self) -> float:
        """Records/s from the first poll to the commit that covered them all."""
        return self.count / (self.end - self.first_poll)


def bridge_run(
    topic: str,
    count: int,
    *,
    ordered: bool = False,
    hooks: HooksFor = lambda settings: [],
    celery: Mapping[str, Any] | None = None,
) -> float:
    """Records/s of one bridge (in this process) over ``count`` records of ``topic``;
    ``celery``: more keys of its ``[celery]`` section."""
    group = f"bench-bridge-{'ordered-' if ordered else ''}{uuid.uuid4().hex[:6]}"
    queue = group
    # No worker: the queue only grows. A limit well above the record count never pauses the
    # run, yet the bridge checks the depth before every poll, as with the default limit. (At
    # count + 1, a batch counted in flight as its enqueue ends can hold the route one batch
    # short of the end, for ever without a worker: seen once, in the replicated part.)
    route: dict[str, Any] = {"topic": topic, "task": "bench.handle", "queue": queue,
                             "max_queue_depth": 2 * count}  # fmt: skip
    if ordered:  # no worker: every key's FIFO only grows, so no limit may pause a partition
        route |= {"ordered": True, "max_waiting_per_key": count,
                  "max_waiting_per_partition": count}  # fmt: skip
    settings = BridgeSettings.model_validate(
        {
            "kafka": {"bootstrap_servers": KAFKA, "group_id": group, "poll_timeout_ms": 50},
            "celery": {"broker_url": REDIS, **(celery or {})},
            "routes": [route],
        }
    )
    clock = Clock(count)
    bridge = Bridge(settings, hooks=[*hooks(settings), clock])
    thread = threading.Thread(target=bridge.run, daemon=True)
    thread.start()
    if not clock.done.wait(timeout=600):
        raise SystemExit(f"bench: {count} records not committed in 600 s")
    bridge.stop()
    thread.join(timeout=30)
    client = redis.Redis.from_url(REDIS)
    client.delete(queue, *client.keys(f"bridge:{group}:*"))
    return clock.rate()


def committed(admin: KafkaAdminClient, group: str, topic: str) -> int:
    offsets = admin.list_group_offsets(group).get(group, {})
    return sum(m.offset for tp, m in offsets.items() if tp.topic == topic and m.offset > 0)


def wait(condition: Callable[[], bool], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit(f"bench: timed out after {timeout_s} s")
        time.sleep(0.1)  # the watcher shares the bridge's GIL: look rarely


def lpush_ceiling(count: int, size: int) -> float:
    """Messages/s Redis takes by pipelined ``LPUSH`` of ``size``-byte messages, 500 a trip."""
    client, queue = redis.Redis.from_url(REDIS), f"bench-lpush-{uuid.uuid4().hex[:6]}"
    message, batch = b"x" * size, 500
    start = time.perf_counter()
    for _ in range(count // batch):
        with client.pipeline(transaction=False) as pipe:
            for _ in range(batch):
                pipe.lpush(queue, message)
            pipe.execute()
    elapsed = time.perf_counter() - start
    client.delete(queue)
    return count // batch * batch / elapsed


def message_size(topic: str) -> int:
    """Bytes of one task message the bridge builds for a record of ``topic``."""
    consumer = KafkaConsumer(bootstrap_servers=KAFKA, enable_auto_commit=False)
    consumer.assign([TopicPartition(topic, 0)])
    consumer.seek_to_beginning()
    records: list[Any] = []
    while not records:
        records = [r for batch in consumer.poll(timeout_ms=500).values() for r in batch]
    consumer.close()
    dispatcher = Dispatcher(CelerySettings(broker_url=REDIS), "bench-size")
    route = Route(topic, "bench.handle", "bench-size", False, "json", f"{topic}.dlt")
    size = len(dispatcher.consumed(route, records[0]).payload or b"")
    dispatcher.close()
    return size


def run() -> tuple[list[Row], dict[str, Any]]:
    """The part's rows: the ceilings, each consumer's rate, and the three target ratios."""
    topic = f"bench-{uuid.uuid4().hex[:8]}"
    create_topic(topic, PARTITIONS)
    produce_s = produce_orders(topic, RECORDS, KEYS)
    size = message_size(topic)
    raw, unordered = [], []
    for _ in range(2):
        raw.append(raw_consume(topic, RECORDS))
        unordered.append(bridge_run(topic, RECORDS))
    rates = {
        "raw_consume": statistics.mean(raw),
        "redis_lpush": lpush_ceiling(RECORDS, size),
        "naive_loop": naive_loop(topic, NAIVE_RECORDS),
        "bridge_unordered": statistics.mean(unordered),
        "bridge_ordered": bridge_run(topic, RECORDS, ordered=True),
    }
    delete_topics(topic)
    detail = {"records": RECORDS, "naive_records": NAIVE_RECORDS, "partitions": PARTITIONS,
              "keys": KEYS, "message_bytes": size, "produce_s": round(produce_s, 1),
              "records_per_s": {k: round(v) for k, v in rates.items()},
              "raw_consume_runs": [round(r) for r in raw],
              "bridge_unordered_runs": [round(r) for r in unordered]}  # fmt: skip
    return rows(rates, size), detail


def rows(rates: dict[str, float], size: int) -> list[Row]:
    """The rows of :func:`run` from its rates (records/s by run)."""
    n, u = f"{RECORDS // 1000}k records", rates["bridge_unordered"]
    rate = "records/s"
    return [
        Row(PART, "raw kafka-python consume (ceiling)", round(rates["raw_consume"]), rate,
            note=f"{n}, mean of 2"),
        Row(PART, "pipelined Redis LPUSH (ceiling)", round(rates["redis_lpush"]), "messages/s",
            note=f"{size}-byte messages, 500 a trip"),
        Row(PART, "(a) naive loop: send_task per record", round(rates["naive_loop"]), rate,
            note=f"{NAIVE_RECORDS // 1000}k records"),
        Row(PART, "(b) bridge, unordered", round(u), rate, note=f"{n}, mean of 2"),
        Row(PART, f"(c) bridge, ordered, {KEYS} keys", round(rates["bridge_ordered"]), rate,
            note=n),
        Row(PART, "(b) / (a)", ratio(u, rates["naive_loop"]), "", Target(">=", 5)),
        Row(PART, "(b) / raw consume", ratio(u, rates["raw_consume"]), "", Target(">=", 0.5)),
        Row(PART, "(c) / (b)", ratio(rates["bridge_ordered"], u), "", Target(">=", 0.5)),
    ]  # fmt: skip


if __name__ == "__main__":
    from bench.__main__ import main

    os.environ.setdefault("BENCH_PARTS", PART)
    raise SystemExit(main())
