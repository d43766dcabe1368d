"""What the hooks cost: the bridge's unordered throughput without hooks (A) against the hooks
``python -m bridge run --metrics-port`` installs (B: the status reporter and the Prometheus
metrics), on one topic, runs alternated A B B A A B. ``python -m bench.hooks``."""

from __future__ import annotations

import json
import logging
import statistics
import uuid

from kafka import KafkaAdminClient
from prometheus_client import CollectorRegistry

from bench import throughput
from bench.harness import KAFKA, create_topic, produce_orders
from bridge.consumer.members import member_reporter
from bridge.consumer.metrics import BridgeMetrics
from bridge.hooks import BridgeHooks
from bridge.settings import BridgeSettings


def no_hooks(settings: BridgeSettings) -> list[BridgeHooks]:
    return []


def run_hooks(settings: BridgeSettings) -> list[BridgeHooks]:
    """As ``run`` builds them, metrics in a registry of their own (one per run)."""
    return [member_reporter(settings), BridgeMetrics(CollectorRegistry())]


def main() -> int:
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("kafka").setLevel(logging.ERROR)
    topic = f"bench-hooks-{uuid.uuid4().hex[:8]}"
    create_topic(topic, throughput.PARTITIONS)
    produce_orders(topic, throughput.RECORDS)
    runs: dict[str, list[float]] = {"A": [], "B": []}
    for kind in "ABBAAB":
        hooks = run_hooks if kind == "B" else no_hooks
        runs[kind].append(throughput.bridge_run(topic, throughput.RECORDS, hooks=hooks))
        print(kind, round(runs[kind][-1]), flush=True)
    admin = KafkaAdminClient(bootstrap_servers=KAFKA)
    admin.delete_topics([topic])
    admin.close()
    ratio = statistics.mean(runs["B"]) / statistics.mean(runs["A"])
    print(json.dumps({
        "records": throughput.RECORDS,
        "records_per_s_without_hooks": [round(r) for r in runs["A"]],
        "records_per_s_with_hooks": [round(r) for r in runs["B"]],
        "with / without": round(ratio, 3),
    }))  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
