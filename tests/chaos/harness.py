"""The system under chaos: topics, bridges, a worker and the ledger on the suite's own services,
and the faults injected into it.

A :class:`System` runs one bridge (``python -m bridge run``) in the group ``chaos`` and one
Celery worker (``tests.chaos.handlers``, 2 prefork processes); each worker started gets the
next generation number, so the ledger tells which executions a killed worker ran.
"""

from __future__ import annotations

import json
import os
import re
import signal
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import redis
from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition

from bench.harness import to_toml
from tests.chaos.failover import broker_settings
from tests.chaos.handlers import EXECUTIONS, GEN_ENV, LEDGER_URL_ENV, inflight_key
from tests.chaos.services import REPO, Services
from tests.chaos.verdict import Execution, Source
from tests.chaos.workload import ORDERED_TOPIC, UNORDERED_TOPIC
from tests.conftest import wait_for

GROUP = "chaos"
QUEUE = "chaos"
PARTITIONS = 4
# bridge.worker.task's log line when a dead letter's write failed and the bridge is to write it.
HANDED_OVER = re.compile(r"kept in Redis for the bridge, task (\S+?):? ")
# Celery's log line when a worker receives a task message (the worker logs in local time).
RECEIVED = re.compile(r"^\[(\S+ \S+): INFO/MainProcess\] Task \S+\[(\S+)\] received$", re.M)
# bridge.backends.kafka.send's log line when a write timed out and the sender tries it again itself.
RETRIED_AFTER_TIMEOUT = re.compile(
    r"write to \S+ failed \(KafkaTimeoutError.*?dead letter for Record\((\S+)\[(\d+)\]@(\d+) "
)


@dataclass
class Process:
    """A process of the system under test, in a session of its own, its output in ``log``."""

    proc: subprocess.Popen[bytes]
    log: Path
    # Set once the suite stops or kills it, or has seen it exit by itself.
    done: bool = False

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def kill(self) -> None:
        """SIGKILL the process and its children at once, as a crashed machine would."""
        self.done = True
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def stop(self, timeout_s: float = 30) -> int:
        """SIGTERM, then SIGKILL after ``timeout_s``; the exit status."""
        self.done = True
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()
            return self.proc.wait()


def spawn(cmd: list[str], log: Path, env: dict[str, str]) -> Process:
    with log.open("ab") as out:
        proc = subprocess.Popen(
            cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    return Process(proc, log)


def wait_logged(process: Process, line: str, what: str, timeout_s: float = 120) -> None:
    """Wait until ``process`` logs ``line`` after now (it must keep running).

    :raises AssertionError: it exits first, or the deadline passes.
    """
    start = len(process.text())
    try:
        wait_for(
            lambda: process.proc.poll() is not None or line in process.text()[start:],
            timeout_s=timeout_s,
            interval_s=0.2,
            what=what,
        )
    except AssertionError as exc:
        raise AssertionError(f"{exc}; log {process.log}:\n{process.text()[-3000:]}") from None
    assert process.proc.poll() is None, f"{what}: exited; log {process.log}"


@dataclass
class System:
    """The bridge(s), the worker and the ledger of one chaos run, under ``folder``."""

    services: Services
    folder: Path
    bridges: list[Process] = field(default_factory=list)
    workers: list[Process] = field(default_factory=list)
    killed_gens: list[int] = field(default_factory=list)
    crashes: list[dict[str, Any]] = field(default_factory=list)
    # Held by each fault that kills or starts processes, and by the supervisor.
    lock: threading.RLock = field(default_factory=threading.RLock)

    @property
    def config(self) -> Path:
        return self.folder / "bridge.toml"

    def ledger(self) -> redis.Redis:
        return redis.Redis.from_url(self.services.ledger_url())

    def write_config(self) -> None:
        sections = self._sections()
        for name, values in broker_settings(self.services).items():
            sections[name].update(values)  # the Sentinels' URL, master_name, replicas
        self.config.write_text(to_toml(sections, self._routes()))

    def _sections(self) -> dict[str, dict[str, Any]]:
        return {
            "kafka": {
                "bootstrap_servers": self.services.bootstrap,
                "group_id": GROUP,
                "poll_timeout_ms": 50,
                "max_poll_records": 50,
                # A killed bridge's partitions move after 6 s, not the default 45 s.
                "session_timeout_ms": 6000,
                "max_poll_interval_ms": 60000,
            },
            "celery": {
                "broker_url": self.services.broker_url(0),
                "publish_retry_backoff_ms": 10,
                "publish_retry_backoff_max_ms": 500,
                # A killed worker's unacknowledged messages come back after 45 s. A task may
                # not run longer: its message would be delivered again (a dead-letter write
                # against a frozen broker takes up to ~2 x (5 + 5) s with the settings below).
                "visibility_timeout_s": 45,
            },
            # kombu sweeps unacknowledged messages every second, not every ~100 s. A worker
            # killed while it holds the sweep's lock stops every sweep until the lock expires:
            # 30 s, not kombu's 300 s. What a worker killed in fetch left in its processing
            # list is back in its queue 5 s after its last heartbeat, not 60 s.
            "celery.transport_options": {
                "unacked_restore_interval": 1,
                "unacked_restore_throttle": 1,
                "unacked_mutex_expire": 30,
                "processing_lease_s": 5,
            },
            "dead_letter": {
                "retry_backoff_ms": 10,
                "retry_backoff_max_ms": 500,
                "retries": 1,
                "delivery_timeout_ms": 5000,
            },
            "retry": {"scheduler_interval_ms": 20, "redis_schedule_min_delay_ms": 500},
            "ordering": {"stall_timeout_s": 100, "watchdog_interval_ms": 500},
        }

    @staticmethod
    def _routes() -> list[dict[str, Any]]:
        unordered = {"topic": UNORDERED_TOPIC, "task": "chaos.unordered", "queue": QUEUE}
        ordered = {"topic": ORDERED_TOPIC, "task": "chaos.ordered", "queue": QUEUE,
                   "ordered": True, "retry_interval_s": 0.01, "max_retries": 3}  # fmt: skip
        return [unordered, ordered]

    def create_topics(self) -> None:
        admin = KafkaAdminClient(bootstrap_servers=self.services.bootstrap)
        try:
            topics = {t: {"num_partitions": PARTITIONS, "replication_factor": 1}
                      for t in (UNORDERED_TOPIC, ORDERED_TOPIC)}  # fmt: skip
            admin.create_topics(topics, wait_for_metadata=True)
        finally:
            admin.close()

    def start_bridge(self) -> Process:
        """A bridge in the group, once it is assigned its partitions."""
        log = self.folder / f"bridge-{len(self.bridges)}.log"
        cmd = [sys.executable, "-m", "bridge", "run", "--config", str(self.config)]
        bridge = spawn(cmd, log, dict(os.environ))
        self.bridges.append(bridge)
        wait_logged(bridge, "partitions assigned", f"bridge {log.name} to be assigned partitions")
        return bridge

    def start_worker(self) -> Process:
        """The next worker generation, once it is ready."""
        gen = len(self.workers)
        env = {**os.environ, "BRIDGE_CONFIG": str(self.config), GEN_ENV: str(gen),
               LEDGER_URL_ENV: self.services.ledger_url()}  # fmt: skip
        cmd = [sys.executable, "-m", "celery", "-A", "tests.chaos.handlers", "worker",
               "-Q", QUEUE, "-c", "2", "-P", "prefork", "-l", "INFO", "-n", f"chaos{gen}@%h",
               "--without-gossip", "--without-mingle", "--without-heartbeat"]  # fmt: skip
        worker = spawn(cmd, self.folder / f"worker-{gen}.log", env)
        self.workers.append(worker)
        wait_logged(worker, "ready.", f"worker generation {gen} to be ready")
        return worker

    @property
    def bridge(self) -> Process:
        return next(b for b in self.bridges if b.proc.poll() is None)

    def supervise(self) -> None:
        """Restart what exited by itself, as systemd's ``Restart=always`` would, and record it
        in ``crashes``. A worker that exited leaves its messages unacknowledged, as a killed one
        does: its generation counts as killed."""
        with self.lock:
            for process in (*self.bridges, *self.workers):
                if process.done or process.proc.poll() is None:
                    continue
                process.done = True
                self.crashes.append(crash_report(process))
                if process in self.workers:
                    self.killed_gens.append(self.workers.index(process))
                    self.start_worker()
                elif not any(b.proc.poll() is None for b in self.bridges):
                    self.start_bridge()

    def stop_all(self) -> None:
        for process in (*self.bridges, *self.workers):
            process.done = True
            if process.proc.poll() is None:
                process.stop()

    def executions(self) -> list[Execution]:
        """The handlers' ledger, in the order it was written."""
        return [parse_execution(line) for line in self.ledger().lrange(EXECUTIONS, 0, -1)]

    def timed_out_writes(self) -> set[str]:
        """Records whose dead letter was written again after a write timed out: a worker
        handed it to the bridge, or a worker or a bridge tried again itself."""
        workers = "".join(w.text() for w in self.workers)
        logs = workers + "".join(b.text() for b in self.bridges)
        handed = {task_id.split(":", 1)[1] for task_id in HANDED_OVER.findall(workers)}
        return handed | {":".join(found) for found in RETRIED_AFTER_TIMEOUT.findall(logs)}

    def received_within(self, windows: Iterable[tuple[float, float]]) -> set[str]:
        """Records whose task message a worker received within one of ``windows`` (epoch s)."""
        found = set()
        for worker in self.workers:
            for stamp, task_id in RECEIVED.findall(worker.text()):
                at = datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").astimezone().timestamp()
                if any(a <= at <= b for a, b in windows):
                    found.add(task_id.split(":", 1)[1])
        return found

    def lost_acks(self) -> int:
        """How often a worker logged that it could not acknowledge a message."""
        return sum(w.text().count("Couldn't ack") for w in self.workers)

    def pending(self) -> dict[str, int]:
        """What still waits in the broker's Redis: the queue, unacknowledged messages, heads
        of ordered keys out, delayed retries."""
        client = redis.Redis.from_url(self.services.redis_url(0))
        return {
            "queue": int(client.llen(QUEUE)),
            "unacked": int(client.hlen("unacked")),
            "ordered_heads_out": int(client.zcard(f"bridge:{GROUP}:ordered:heads")),
        }

    def whereabouts(self, coords: list[str], limit: int = 10) -> list[dict[str, Any]]:
        """For each of the first ``limit`` records (``topic:partition:offset``), what is known
        of it: its ledger entries, the group's committed offset on its partition, the Redis
        keys holding its task id, and the last log lines naming it."""
        ledger = [e for e in self.executions() if e.coords in coords]
        committed = committed_offsets(self.services.bootstrap)
        holders = redis_holders(self.services.redis_url(0), [f"{GROUP}:{c}" for c in coords])
        logs = [(p.log.name, p.text()) for p in (*self.bridges, *self.workers)]
        found = []
        for coord in coords[:limit]:
            topic, partition, offset = coord.rsplit(":", 2)
            named = f"{topic}[{partition}]@{offset} "
            lines = [f"{name}: {line[:300]}" for name, text in logs for line in text.splitlines()
                     if named in line or f"{coord}]" in line]  # fmt: skip
            found.append({
                "coords": coord,
                "ledger": [(e.event, e.attempt, e.gen, round(e.at, 3)) for e in ledger
                           if e.coords == coord],
                "committed": committed.get((topic, int(partition))),
                "in_redis": holders.get(f"{GROUP}:{coord}", []),
                "log": lines[-6:],
            })  # fmt: skip
        return found

    # ------------------------------------------------------------------ faults

    def kill_bridge(self) -> dict[str, Any]:
        with self.lock:
            self.supervise()
            victim = self.bridge
            victim.kill()
            self.start_bridge()
        return {"pid": victim.proc.pid}

    def kill_worker(self) -> dict[str, Any]:
        """SIGKILL the worker while a task runs, start the next generation. The wait for a
        running task outlasts the workload producer's replacement after a stall (45 s)."""
        with self.lock:
            self.supervise()
            gen = len(self.workers) - 1
            ledger = self.ledger()
            running = wait_for(
                lambda: ledger.scard(inflight_key(gen)),
                timeout_s=90,
                interval_s=0.005,
                what=f"a task running in worker generation {gen}",
            )
            self.workers[gen].kill()
            self.killed_gens.append(gen)
            self.start_worker()
        return {"gen": gen, "tasks_running": int(running)}

    def rebalance(self, stay_s: float) -> dict[str, Any]:
        """A second bridge joins the group, stays ``stay_s`` seconds, leaves it."""
        with self.lock:
            second = self.start_bridge()
        subprocess.run(["sleep", str(stay_s)], check=True)  # how long it shares the partitions
        with self.lock:
            status = second.stop()
        assert status == 0, f"the second bridge exited {status}; log {second.log}"
        return {"stayed_s": stay_s}


def crash_report(process: Process) -> dict[str, Any]:
    """A process that exited by itself: which, its status, its last error line."""
    errors = [line for line in process.text().splitlines() if "Error" in line]
    return {
        "process": process.log.stem,
        "exit_status": process.proc.returncode,
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "last_error": errors[-1][:300] if errors else "",
    }


class Supervisor(threading.Thread):
    """Calls :meth:`System.supervise` twice a second until :meth:`stop`."""

    def __init__(self, system: System) -> None:
        super().__init__(name="chaos-supervisor", daemon=True)
        self.system = system
        self._stopping = threading.Event()

    def run(self) -> None:
        while not self._stopping.wait(0.5):
            self.system.supervise()

    def stop(self) -> None:
        self._stopping.set()
        self.join(timeout=180)


def parse_execution(line: bytes | str) -> Execution:
    entry = json.loads(line)
    return Execution(
        entry["coords"], entry["event"], int(entry["attempt"]), int(entry["gen"]), entry["at"]
    )


# ---------------------------------------------------------------------- diagnosis


def committed_offsets(bootstrap: str) -> dict[tuple[str, int], int]:
    """The chaos group's committed offsets, by (topic, partition)."""
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        offsets = admin.list_group_offsets(GROUP).get(GROUP, {})
        return {(tp.topic, tp.partition): int(meta.offset) for tp, meta in offsets.items()}
    finally:
        admin.close()


def redis_holders(url: str, task_ids: list[str]) -> dict[str, list[str]]:
    """Which keys of the broker's Redis hold each task id (lists, hashes, sorted sets, strings:
    queues, unacknowledged messages, processing lists, delayed retries, key FIFOs…)."""
    client = redis.Redis.from_url(url, decode_responses=False)
    found: dict[str, list[str]] = {}
    try:
        for name in client.scan_iter(count=1000):
            kind, text = redis_text(client, name)
            for task_id in task_ids:
                if task_id.encode() in text:
                    found.setdefault(task_id, []).append(f"{kind} {name.decode()}")
    finally:
        client.close()
    return found


def redis_text(client: redis.Redis, name: bytes) -> tuple[str, bytes]:
    """A key's type and its values, joined (empty for the types a task id is not kept in)."""
    kind = cast(bytes, client.type(name)).decode()
    values: list[Any]
    if kind == "list":
        values = client.lrange(name, 0, -1)
    elif kind == "hash":
        values = client.hvals(name)
    elif kind == "zset":
        values = client.zrange(name, 0, -1)
    elif kind == "string":
        values = [client.get(name)]
    else:
        values = []
    return kind, b"\n".join(v for v in values if isinstance(v, bytes))


# ---------------------------------------------------------------------- reading Kafka


def read_topics(bootstrap: str, topics: Iterable[str], timeout_s: float = 120) -> list[Any]:
    """Every record of ``topics`` (those that exist), from the beginning to their end now."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    try:
        existing = consumer.topics()
        parts = [TopicPartition(t, p) for t in topics if t in existing
                 for p in consumer.partitions_for_topic(t) or ()]  # fmt: skip
        if not parts:
            return []
        consumer.assign(parts)
        consumer.seek_to_beginning()
        ends = consumer.end_offsets(parts)
        records: list[Any] = []

        def at_end() -> bool:
            for batch in consumer.poll(timeout_ms=200).values():
                records.extend(batch)
            return all(consumer.position(tp) >= ends[tp] for tp in parts)

        wait_for(at_end, timeout_s=timeout_s, interval_s=0, what=f"reading {sorted(topics)}")
        return records
    finally:
        consumer.close()


def sources(records: Iterable[Any]) -> list[Source]:
    return [
        Source(
            coords=f"{r.topic}:{r.partition}:{r.offset}",
            id=dict(r.headers)["id"].decode(),
            key=r.key.decode(),
            ordered=r.topic == ORDERED_TOPIC,
        )
        for r in records
    ]


def dead_letter_coords(records: Iterable[Any]) -> list[str]:
    """The original coordinates of each dead letter, from its Spring Kafka headers."""
    coords = []
    for record in records:
        headers = dict(record.headers)
        topic = headers["kafka_dlt-original-topic"].decode()
        (partition,) = struct.unpack(">i", headers["kafka_dlt-original-partition"])
        (offset,) = struct.unpack(">q", headers["kafka_dlt-original-offset"])
        coords.append(f"{topic}:{partition}:{offset}")
    return coords


def dlt_topics() -> list[str]:
    return [f"{t}.{GROUP}.dlt" for t in (UNORDERED_TOPIC, ORDERED_TOPIC)]


# ---------------------------------------------------------------------- the fault log


@dataclass
class FaultLog:
    """When each fault was injected, how long it took, and what it found."""

    started: float = field(default_factory=time.monotonic)
    entries: list[dict[str, Any]] = field(default_factory=list)

    def inject(self, fault: str, action: Callable[[], dict[str, Any] | None]) -> None:
        at = datetime.now(UTC).isoformat(timespec="milliseconds")
        began, epoch = time.monotonic(), time.time()
        detail = action() or {}
        self.entries.append({"fault": fault, "at": at, "t_s": round(began - self.started, 1),
                             "took_s": round(time.monotonic() - began, 1),
                             "epoch": [epoch, time.time()], **detail})  # fmt: skip

    def windows(self, fault: str, slack_s: float, lead_s: float = 0.0) -> list[tuple[float, float]]:
        """When each ``fault`` was in progress (epoch seconds), from ``lead_s`` before it to
        ``slack_s`` after it."""
        return [(e["epoch"][0] - lead_s, e["epoch"][1] + slack_s) for e in self.entries
                if e["fault"] == fault]  # fmt: skip

    def counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for entry in self.entries:
            counts[entry["fault"]] = counts.get(entry["fault"], 0) + 1
        return counts
