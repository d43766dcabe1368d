"""``make bench`` (scaling): records/s with 1, 2 and 4 bridge processes in one consumer group.

``BENCH_SCALING_RECORDS`` (200 000) ~200-byte JSON records on 8 partitions are produced once;
then, for 1, 2 and 4 processes in turn, that many ``python -m bridge run`` processes are started
at once in a new consumer group, on an unordered route with no worker (this measures taking
records from Kafka to accepted-and-committed, not handling them).

Joining is not counted: the bridges start held by backpressure (the route's
``max_queue_depth`` is one above the record count, and the queue is filled with that many
placeholders), so none takes a record while the group forms. The clock starts when the group
is *stable* with all its members (Kafka's DescribeGroups) and the placeholders are deleted,
which releases every bridge; it stops when the group's committed offsets add up to the record
count (the run never reaches the limit again: it publishes at most the record count).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import redis
from kafka import KafkaAdminClient

from bench.harness import (
    KAFKA,
    REDIS,
    REPO,
    create_topic,
    delete_topics,
    produce_orders,
    to_toml,
    wait,
)
from bench.report import Row, ratio
from bench.throughput import committed

RECORDS = int(os.environ.get("BENCH_SCALING_RECORDS", "200000"))
PARTITIONS = 8
PROCESSES = (1, 2, 4)
HOLD = RECORDS + 1  # the route's max_queue_depth: the run itself never reaches it


def start_bridges(topic: str, group: str, count: int) -> list[subprocess.Popen[bytes]]:
    """Start ``count`` bridge processes of ``group`` on ``topic`` (queue: ``group``)."""
    folder = Path(tempfile.mkdtemp(prefix=f"bench-{group}-"))
    config = folder / "bridge.toml"
    sections = {"kafka": {"bootstrap_servers": KAFKA, "group_id": group},
                "celery": {"broker_url": REDIS}}  # fmt: skip
    route = {"topic": topic, "task": "bench.handle", "queue": group, "max_queue_depth": HOLD}
    config.write_text(to_toml(sections, [route]))
    env = {**os.environ, "BRIDGE_CONFIG": str(config)}
    bridges = []
    for i in range(count):
        with (folder / f"bridge-{i}.log").open("wb") as out:
            bridges.append(
                subprocess.Popen([sys.executable, "-m", "bridge", "run", "--log-level", "WARNING"],
                                 cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
            )  # fmt: skip
    return bridges


def stable(admin: KafkaAdminClient, group: str, members: int) -> bool:
    """Whether ``group`` is stable with ``members`` members."""
    info = admin.describe_groups([group]).get(group, {})
    return info.get("group_state") == "Stable" and len(info.get("members", [])) == members


def rate(topic: str, processes: int) -> dict[str, Any]:
    """Records/s of ``processes`` bridges in a new group, from stable to all committed."""
    group = f"bench-scale{processes}-{uuid.uuid4().hex[:6]}"
    admin = KafkaAdminClient(bootstrap_servers=KAFKA)
    client = redis.Redis.from_url(REDIS)
    for i in range(0, HOLD, 10_000):  # placeholders: every bridge is held until they go
        client.lpush(group, *[b"-"] * min(10_000, HOLD - i))
    bridges = start_bridges(topic, group, processes)
    try:
        wait(lambda: stable(admin, group, processes), 120, f"{processes} bridges to join")
        before = committed(admin, group, topic)
        start = time.perf_counter()
        client.delete(group)
        wait(lambda: committed(admin, group, topic) >= RECORDS, 600, f"{RECORDS} commits")
        elapsed = time.perf_counter() - start
    finally:
        for bridge in bridges:
            bridge.send_signal(signal.SIGTERM)
        for bridge in bridges:
            bridge.wait(timeout=60)
        admin.close()
        client.delete(group, *client.keys(f"bridge:{group}:*"),
                      f"_kombu.binding.{group}", f"_kombu.binding_permanent.{group}")  # fmt: skip
    return {"records_per_s": round((RECORDS - before) / elapsed),
            "committed_before_start": before, "seconds": round(elapsed, 2)}  # fmt: skip


def run() -> tuple[list[Row], dict[str, Any]]:
    """The scaling rows, and their detail."""
    topic = f"bench-scaling-{uuid.uuid4().hex[:6]}"
    create_topic(topic, PARTITIONS)
    try:
        produce_orders(topic, RECORDS)
        runs = {n: rate(topic, n) for n in PROCESSES}
    finally:
        delete_topics(topic)
    per_s = {n: r["records_per_s"] for n, r in runs.items()}
    rows = [
        Row("scaling", f"{n} bridge process{'es' if n > 1 else ''}, one group", per_s[n],
            "records/s", None, "from a stable group to all committed, no worker")
        for n in PROCESSES
    ]  # fmt: skip
    rows += [Row("scaling", f"{n} processes / 1", ratio(per_s[n], per_s[1]), "x") for n in (2, 4)]
    detail = {"records": RECORDS, "partitions": PARTITIONS, "cpus": os.cpu_count(),
              "runs": {str(n): r for n, r in runs.items()}}  # fmt: skip
    return rows, detail
