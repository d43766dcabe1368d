"""Chaos: a steady mixed workload under repeated faults loses nothing and keeps every key's order.

``CHAOS_PROFILE=full`` (``make chaos``) injects each fault 3 times, the default ``reduced``
profile (plain ``pytest``, CI) twice; ``CHAOS_SEED`` repeats a run. Kafka and Redis are the
suite's own (:mod:`tests.chaos.services`), started here and stopped at the end.
``CHAOS_TOPOLOGY=sentinel`` (``make chaos-sentinel``) runs Redis as a primary, a replica and
three Sentinels and injects the failover faults of :mod:`tests.chaos.failover` instead, with
``celery.min_replicas_to_accept`` from ``CHAOS_MIN_REPLICAS`` (1 by default).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import random
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from bench.harness import machine
from tests.chaos import failover, report
from tests.chaos.harness import (
    FaultLog,
    Supervisor,
    System,
    dead_letter_coords,
    dlt_topics,
    read_topics,
    sources,
)
from tests.chaos.plan import SENTINEL_FAULTS, faults_of, plan, profile_named
from tests.chaos.services import REPO, Services
from tests.chaos.verdict import Source, Verdict, judge, lost_by_fault
from tests.chaos.workload import ORDERED_TOPIC, UNORDERED_TOPIC, Producer
from tests.conftest import wait_for

PROFILE = profile_named(os.environ.get("CHAOS_PROFILE", "reduced"))
SEED = int(os.environ.get("CHAOS_SEED") or random.SystemRandom().randrange(1_000_000))
TIMEOUT_S = {"full": 2400, "reduced": 900}[PROFILE.name]
DRAIN_TIMEOUT_S = 360
CHAOS_DIR = REPO / ".services" / "chaos"  # git ignores .services/
REDIS_RECONNECT_S = 5
# A failover undoes what the old primary wrote in the last instant before the fault, and
# workers reconnect to the new primary within seconds of it.
FAILOVER_LEAD_S = 2


@pytest.fixture
def services() -> Iterator[Services]:
    """The suite's own Kafka and Redis, fresh (the last run's data is deleted first) and always
    stopped at the end. Their data and logs, and the run's, stay in ``CHAOS_DIR``."""
    own = Services(CHAOS_DIR)
    own.down()  # a run that was interrupted may have left them running
    shutil.rmtree(CHAOS_DIR, ignore_errors=True)
    try:
        own.up()
        yield own
    finally:
        own.down()


@pytest.fixture
def run_dir() -> Path:
    """Where the bridges' and workers' logs of this run go."""
    folder = CHAOS_DIR / "run"
    folder.mkdir(parents=True)
    return folder


@pytest.mark.chaos
@pytest.mark.timeout(TIMEOUT_S)
def test_under_repeated_faults_no_record_is_lost_and_ordered_keys_keep_their_order(
    services: Services, run_dir: Path
) -> None:
    persistence = services.appendfsync()
    system = System(services, run_dir)
    system.write_config()
    system.create_topics()
    system.start_worker()
    system.start_bridge()
    producer = Producer(services.bootstrap, PROFILE.rate_per_s)
    supervisor = Supervisor(system)
    seconds: dict[str, float] = {}
    began = time.monotonic()
    try:
        producer.start()
        supervisor.start()
        faults = inject_faults(system, services)
        seconds["faults"] = round(time.monotonic() - began)
        producer.stop()
        records = read_topics(services.bootstrap, [UNORDERED_TOPIC, ORDERED_TOPIC])
        produced = sources(records)
        drain_began = time.monotonic()
        verdict = drain(system, services, produced, producer.acked, faults)
        seconds["drain"] = round(time.monotonic() - drain_began)
        pending = system.pending()
        lost = whereabouts(system, verdict.lost)
    finally:
        producer.stop()  # at once if it has stopped already
        supervisor.stop()
        system.stop_all()
    seconds["total"] = round(time.monotonic() - began)
    doc = results(faults, verdict, producer, system, pending, seconds, persistence)
    doc["lost_whereabouts"] = lost
    produced_at = {f"{r.topic}:{r.partition}:{r.offset}": r.timestamp / 1000 for r in records}
    doc["lost_by_fault"] = lost_by_fault(verdict.lost, produced_at, faults.entries)
    path = report.write(doc)

    assert verdict.passed, (
        f"{verdict.to_dict()}\nlogs: {run_dir}, report: {path}\nseed {SEED}, faults:\n"
        + "\n".join(f"  {e['at']} {e['fault']} ({e['took_s']} s)" for e in faults.entries)
        + "\nlost records:\n"
        + "\n".join(f"  {json.dumps(w)}" for w in lost)
    )
    assert pending["queue"] == 0, f"tasks left in the queue: {pending}"
    assert all(n >= PROFILE.repeats for n in faults.counts().values())
    # A worker that exits by itself is restarted and reported (kombu's own failure on a Redis
    # restart, see docs/reports/past-runs.md); a bridge must survive every fault that is not its
    # own SIGKILL.
    bridges = [c for c in system.crashes if c["process"].startswith("bridge")]
    assert not bridges, f"a bridge exited by itself: {bridges}; logs: {run_dir}"


def inject_faults(system: System, services: Services) -> FaultLog:
    """Every fault of the seeded plan, each after its pause, while the producer produces."""
    rng = random.Random(SEED)
    short_partitions = itertools.cycle((True, False))  # a short partition first, then a long
    actions: dict[str, Callable[[], dict[str, Any] | None]] = {
        "bridge-kill": system.kill_bridge,
        "worker-kill": system.kill_worker,
        "redis-restart": lambda: services.run("restart-redis"),
        "kafka-restart": lambda: restart_kafka(services),
        "kafka-freeze": lambda: services.freeze_kafka(PROFILE.freeze_s),
        "rebalance": lambda: system.rebalance(round(rng.uniform(2, 5), 1)),
        "primary-kill": lambda: failover.kill_primary(services, rng),
        "primary-partition": lambda: failover.partition_primary(
            services, rng, next(short_partitions)
        ),
    }
    log = FaultLog()
    pause = threading.Event()
    for step in plan(PROFILE, SEED, faults_of(services.topology)):
        pause.wait(step.pause_s)  # a random moment for the next fault, not a wait for results
        log.inject(step.fault, actions[step.fault])
    pause.wait(PROFILE.pause_s[1])  # some records produced after the last fault too
    return log


def restart_kafka(services: Services) -> None:
    services.run("stop-kafka")
    services.run("start-kafka")


def whereabouts(system: System, lost: list[str]) -> list[dict[str, Any]]:
    """What is known of each lost record; a failure to find out is reported, not raised (the
    verdict must still be written and asserted)."""
    if not lost:
        return []
    try:
        return system.whereabouts(lost)
    except Exception as exc:  # a diagnosis must not hide the failure it explains
        return [{"whereabouts_failed": repr(exc)}]


def drain(
    system: System,
    services: Services,
    produced: list[Source],
    acked: set[str],
    faults: FaultLog,
) -> Verdict:
    """Wait until every produced record is handled or dead-lettered; the verdict then."""
    # An acknowledgement sent while Redis restarts, or before the worker has reconnected
    # (Celery's first reconnection comes ~2 s later), is lost.
    ack_loss = faults.windows("redis-restart", slack_s=REDIS_RECONNECT_S)
    received_in_restart = system.received_within(ack_loss)
    failovers = [
        window
        for fault in SENTINEL_FAULTS
        for window in faults.windows(fault, REDIS_RECONNECT_S, lead_s=FAILOVER_LEAD_S)
    ]
    received_in_failover = system.received_within(failovers)

    def verdict() -> Verdict:
        dead = dead_letter_coords(read_topics(services.bootstrap, dlt_topics()))
        return judge(
            produced,
            system.executions(),
            dead,
            system.killed_gens,
            acked,
            ack_loss,
            system.timed_out_writes(),
            received_in_restart,
            failovers,
            received_in_failover,
        )

    def settled() -> bool:
        return not verdict().lost

    with contextlib.suppress(AssertionError):  # the verdict names what is lost
        wait_for(settled, timeout_s=DRAIN_TIMEOUT_S, interval_s=2, what="every record settled")
    return verdict()


def results(
    faults: FaultLog,
    verdict: Verdict,
    producer: Producer,
    system: System,
    pending: dict[str, int],
    seconds: dict[str, float],
    redis_persistence: dict[str, str],
) -> dict[str, Any]:
    return {
        "profile": PROFILE.name,
        "topology": system.services.topology,
        "seed": SEED,
        "command": command(system.services),
        "min_replicas_to_accept": failover.min_replicas(system.services),
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "seconds": seconds,
        "rate_per_s": PROFILE.rate_per_s,
        "fault_counts": faults.counts(),
        "faults": faults.entries,
        "producer": {
            "sent": producer.sent,
            "acked": len(producer.acked),
            "failed_sends": producer.failed,
            "replaced_after_a_stall": producer.restarts,
        },
        "verdict": verdict.to_dict(),
        "pending_at_end": pending,
        "exited_by_themselves": system.crashes,
        "worker_log_lines": {"couldn't ack": system.lost_acks()},
        "not_replicated": failover.not_replicated(b.text() for b in system.bridges),
        "redis_persistence": redis_persistence,
        "machine": machine(),
    }


def command(services: Services) -> str:
    """How the run was started."""
    if not services.sentinel:
        return "make chaos" if PROFILE.name == "full" else "pytest -m chaos"
    if PROFILE.name == "full":
        return "make chaos-sentinel"
    return "CHAOS_TOPOLOGY=sentinel pytest -m chaos"
