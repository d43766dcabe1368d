"""``make demo``: a real worker, bridge and Flower on a sample workload, then a summary.

Each run uses a topic and consumer group of its own, so the numbers always describe this run.
The workload (orders): most succeed at once, some fail transiently and succeed on a retry,
some are invalid (dead-lettered at once), some keep timing out (dead-lettered after
``max_retries + 1`` attempts) and some are not JSON at all (dead-lettered by the bridge).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition

from bridge.ops.status import partition_status
from bridge.settings import load_settings

REPO = Path(__file__).resolve().parents[1]
WORK = REPO / ".services" / "demo"
KAFKA = f"127.0.0.1:{os.environ.get('KAFKA_PORT', '9092')}"
REDIS = f"redis://127.0.0.1:{os.environ.get('REDIS_PORT', '6379')}/0"
FLOWER_PORT = int(os.environ.get("FLOWER_PORT", "5555"))
MAX_RETRIES = 3  # tasks/shop.py: shop.handle_order

WORKLOAD = {"ok": 40, "transient": 12, "invalid": 5, "exhausted": 3, "undecodable": 2}


@dataclass(frozen=True)
class Order:
    """One record of the workload and what should become of it."""

    kind: str
    key: bytes
    value: bytes
    retries: int  # task re-runs it should cause


def workload() -> list[Order]:
    """Every record of the workload, kinds interleaved, in a fixed order."""
    kinds = [kind for kind, n in WORKLOAD.items() for _ in range(n)]
    records = []
    for i, kind in enumerate(kinds[::2] + kinds[1::2]):
        order: dict[str, Any] = {"id": f"o-{i:03d}", "amount": 10 + i}
        retries = 0
        if kind == "transient":
            order["fail_times"] = retries = 1 + i % 2
        elif kind == "invalid":
            order["invalid"] = True
        elif kind == "exhausted":
            order["fail_times"] = MAX_RETRIES + 5
            retries = MAX_RETRIES
        value = b"\xff not json" if kind == "undecodable" else json.dumps(order).encode()
        records.append(Order(kind, f"customer-{i % 7}".encode(), value, retries))
    return records


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--keep", action="store_true", help="leave worker, bridge, Flower running")
    args = parser.parse_args()
    run_id = time.strftime("%Y%m%d%H%M%S")
    topic, group = f"demo-orders-{run_id}", f"demo-{run_id}"
    WORK.mkdir(parents=True, exist_ok=True)
    config = write_config(topic, group)
    create_topic(topic, partitions=3)
    password = os.environ.get("FLOWER_PASSWORD") or secrets.token_urlsafe(9)
    procs = start_processes(config, password)
    try:
        produce(topic)
        summary = wait_for_outcome(topic, group)
    except Exception:
        stop(procs)
        raise
    ok = print_summary(topic, group, summary, password)
    if args.keep:
        print(f"\nStill running (--keep): pids {' '.join(str(p.pid) for p in procs.values())}")
        print(f"Stop them with: kill {' '.join(str(p.pid) for p in procs.values())}")
    else:
        stop(procs)
        print("\nWorker, bridge and Flower stopped; Kafka and Redis stay up (make down).")
    return 0 if ok else 1


def write_config(topic: str, group: str) -> Path:
    config = WORK / "bridge.toml"
    config.write_text(
        "[kafka]\n"
        f'bootstrap_servers = "{KAFKA}"\n'
        f'group_id = "{group}"\n\n'
        "[celery]\n"
        f'broker_url = "{REDIS}"\n\n'
        "[[routes]]\n"
        f'topic = "{topic}"\n'
        'task = "shop.handle_order"\n'
        'value_format = "json"\n'
    )
    return config


def create_topic(topic: str, partitions: int) -> None:
    admin = KafkaAdminClient(bootstrap_servers=KAFKA)
    try:
        admin.create_topics(
            {topic: {"num_partitions": partitions, "replication_factor": 1}},
            wait_for_metadata=True,
        )
    finally:
        admin.close()


def start_processes(config: Path, password: str) -> dict[str, subprocess.Popen[bytes]]:
    env = {**os.environ, "BRIDGE_CONFIG": str(config)}
    commands = {
        "worker": ["-m", "celery", "-A", "tasks", "worker", "-l", "INFO", "-c", "2",
                   "-n", f"demo-{os.getpid()}@%h"],
        "flower": ["-m", "celery", "-A", "tasks", "flower", f"--port={FLOWER_PORT}",
                   "--address=127.0.0.1", f"--basic-auth=admin:{password}"],
        "bridge": ["-m", "bridge", "run"],
    }  # fmt: skip
    procs = {}
    for name, cmd in commands.items():
        with (WORK / f"{name}.log").open("wb") as log:
            procs[name] = subprocess.Popen(
                [sys.executable, *cmd], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT
            )
        print(f"started {name:<6} pid {procs[name].pid}, log {WORK / f'{name}.log'}")
    wait(lambda: b"ready." in (WORK / "worker.log").read_bytes(), 60, "the worker")
    wait(lambda: b"partitions assigned" in (WORK / "bridge.log").read_bytes(), 60, "the bridge")
    wait(lambda: flower_answers(password), 60, "Flower")
    return procs


def flower_answers(password: str) -> bool:
    token = base64.b64encode(f"admin:{password}".encode()).decode()
    request = urllib.request.Request(
        f"http://127.0.0.1:{FLOWER_PORT}/api/workers", headers={"Authorization": f"Basic {token}"}
    )
    try:
        with urllib.request.urlopen(request, timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def produce(topic: str) -> None:
    producer = KafkaProducer(bootstrap_servers=KAFKA)
    for order in workload():
        producer.send(topic, key=order.key, value=order.value)
    producer.flush()
    producer.close()
    print(f"produced {len(workload())} orders to {topic}: {WORKLOAD}")


def wait_for_outcome(topic: str, group: str) -> dict[str, Any]:
    r = redis.Redis.from_url(REDIS)
    want_handled = WORKLOAD["ok"] + WORKLOAD["transient"]
    want_dead = WORKLOAD["invalid"] + WORKLOAD["exhausted"] + WORKLOAD["undecodable"]
    reasons: Counter[str] = Counter()

    def done() -> bool:
        reasons.clear()
        reasons.update(dead_letter_reasons(f"{topic}.{group}.dlt"))
        return r.scard(f"demo:{group}:handled") >= want_handled and reasons.total() >= want_dead

    print("waiting for handlers, retries (exponential backoff: 1 s, 2 s, 4 s) and dead letters…")
    wait(done, 90, "the workload to finish")
    attempts = {text(k): int(v) for k, v in r.hgetall(f"demo:{group}:attempts").items()}
    handled = {text(m) for m in r.smembers(f"demo:{group}:handled")}
    settings = load_settings(WORK / "bridge.toml")
    wait(lambda: sum(p.lag for p in partition_status(settings)) == 0, 30, "the final commit")
    return {
        "handled": len(handled),
        "handled_after_retries": sum(1 for order_id in handled if attempts[order_id] > 1),
        "executions": sum(attempts.values()),
        "records_run": len(attempts),
        "reasons": dict(reasons),
        "committed": sum(p.committed or 0 for p in partition_status(settings)),
    }


def text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def dead_letter_reasons(dlt: str) -> Counter[str]:
    consumer = KafkaConsumer(bootstrap_servers=KAFKA, enable_auto_commit=False)
    try:
        parts = consumer.partitions_for_topic(dlt) or set()
        tps = [TopicPartition(dlt, p) for p in parts]
        if not tps:
            return Counter()
        consumer.assign(tps)
        consumer.seek_to_beginning()
        ends = consumer.end_offsets(tps)
        reasons: Counter[str] = Counter()
        deadline = time.monotonic() + 10
        while any(consumer.position(tp) < ends[tp] for tp in tps) and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=200).values():
                for rec in batch:
                    reasons[dict(rec.headers)["bridge-reason"].decode()] += 1
        return reasons
    finally:
        consumer.close()


def print_summary(topic: str, group: str, s: dict[str, Any], password: str) -> bool:
    expected = {
        "offsets committed": (s["committed"], len(workload())),
        "handled": (s["handled"], WORKLOAD["ok"] + WORKLOAD["transient"]),
        "  of which after retries": (s["handled_after_retries"], WORKLOAD["transient"]),
        "retries (task re-runs)": (
            s["executions"] - s["records_run"],
            sum(order.retries for order in workload()),
        ),
        "dead-lettered non-retryable": (s["reasons"].get("non-retryable", 0), WORKLOAD["invalid"]),
        "dead-lettered exhausted": (s["reasons"].get("exhausted", 0), WORKLOAD["exhausted"]),
        "dead-lettered undecodable": (s["reasons"].get("undecodable", 0), WORKLOAD["undecodable"]),
    }
    ok = True
    print(f"\n=== kafka-celery-bridge demo: topic {topic}, consumer group {group} ===")
    print(f"{'':<30} {'observed':>9} {'expected':>9}")
    for label, (seen, want) in expected.items():
        seen_text = "" if seen is None else str(seen)
        mark = "" if seen is None or seen == want else "  MISMATCH"
        ok = ok and not mark
        print(f"{label:<30} {seen_text:>9} {want:>9}{mark}")
    print(f"\nDead letters: {topic}.{group}.dlt")
    print(f"Flower: http://127.0.0.1:{FLOWER_PORT}  (user admin, password {password})")
    print("Status: BRIDGE_CONFIG=.services/demo/bridge.toml .venv/bin/python -m bridge status")
    print("All numbers match the workload." if ok else "Some numbers do NOT match the workload.")
    return ok


def stop(procs: dict[str, subprocess.Popen[bytes]]) -> None:
    for proc in procs.values():
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in procs.values():
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


def wait(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit(f"demo: timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.2)


if __name__ == "__main__":
    raise SystemExit(main())
