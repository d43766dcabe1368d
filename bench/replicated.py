"""``make bench`` (replicated): what replicated acceptance costs, side by side.

The unordered bridge of the throughput part over ``BENCH_RECORDS`` records (8 partitions), with
``celery.min_replicas_to_accept`` 0 (A: a batch is accepted once the primary ran it) and 1 (B:
after each batch's enqueue, Redis ``WAIT`` until a replica has it), runs alternated A B B A.
For the part, the bench's Redis gets a replica of its own (a ``redis-server`` on a free port,
``replicaof`` it, no persistence), stopped at the end. Target: B / A >= 0.8.
"""

from __future__ import annotations

import os
import shutil
import socket
import statistics
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit

import redis

from bench.harness import REDIS, create_topic, delete_topics, produce_orders, wait
from bench.report import Row, Target, ratio
from bench.throughput import PARTITIONS, RECORDS, bridge_run

PART = "replicated"
RUNS = ("A", "B", "B", "A")
SETTING = {"A": 0, "B": 1}


def run() -> tuple[list[Row], dict[str, Any]]:
    topic = f"bench-replicated-{uuid.uuid4().hex[:8]}"
    create_topic(topic, PARTITIONS)
    produce_orders(topic, RECORDS)
    rates: dict[str, list[float]] = {"A": [], "B": []}
    with replica() as lag:
        for name in RUNS:
            celery = {"min_replicas_to_accept": SETTING[name], "replica_ack_timeout_ms": 5000}
            rates[name].append(bridge_run(topic, RECORDS, celery=celery))
        replica_lag = lag()
    delete_topics(topic)
    a, b = statistics.mean(rates["A"]), statistics.mean(rates["B"])
    n = f"{RECORDS // 1000}k records, mean of 2"
    rows = [
        Row(PART, "bridge, unordered, min_replicas_to_accept 0", round(a), "records/s", note=n),
        Row(PART, "bridge, unordered, min_replicas_to_accept 1", round(b), "records/s", note=n),
        Row(PART, "min_replicas 1 / 0", ratio(b, a), "", Target(">=", 0.8)),
    ]
    detail = {"records": RECORDS, "partitions": PARTITIONS, "order": list(RUNS),
              "runs": {k: [round(r) for r in v] for k, v in rates.items()},
              "replica_lag_bytes_at_end": replica_lag}  # fmt: skip
    return rows, detail


@contextmanager
def replica() -> Iterator[Any]:
    """A replica of the bench's Redis for the part; yields a function giving its lag (bytes of
    the primary's stream it has not acknowledged)."""
    url = urlsplit(REDIS)
    host, port_of_primary = url.hostname or "127.0.0.1", url.port or 6379
    primary = redis.Redis(host=host, port=port_of_primary)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    folder = tempfile.mkdtemp(prefix="bench-replica-")
    proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", folder,
         "--save", "", "--appendonly", "no", "--replicaof", host, str(port_of_primary)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        node = redis.Redis(host="127.0.0.1", port=port)
        wait(lambda: _synced(node), 120, "the bench's replica to sync")

        def lag() -> int:
            info = primary.info("replication")
            acked = max((int(v["offset"]) for k, v in info.items() if k.startswith("slave")
                         and isinstance(v, dict)), default=0)  # fmt: skip
            return int(info["master_repl_offset"]) - acked

        yield lag
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        shutil.rmtree(folder, ignore_errors=True)


def _synced(node: redis.Redis) -> bool:
    try:
        return node.info("replication").get("master_link_status") == "up"
    except redis.ConnectionError:
        return False


if __name__ == "__main__":
    from bench.__main__ import main

    os.environ.setdefault("BENCH_PARTS", PART)
    raise SystemExit(main())
