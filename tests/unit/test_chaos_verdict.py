"""The chaos suite's pure parts: its verdict, its fault plan, its workload and its table."""

from __future__ import annotations

import itertools
from collections import Counter

import pytest

from tests.chaos.failover import lag_bytes, not_replicated
from tests.chaos.plan import FAULTS, PROFILES, SENTINEL_FAULTS, faults_of, plan, profile_named
from tests.chaos.report import markdown, stem
from tests.chaos.verdict import (
    DLT_TIMEOUT,
    FAILOVER,
    REDIS_RESTART,
    UNEXPLAINED,
    WORKER_KILL,
    Execution,
    Source,
    judge,
    lost_by_fault,
)
from tests.chaos.workload import ORDERED_TOPIC, UNORDERED_TOPIC, nth


def src(offset: int, key: str = "k", ordered: bool = True) -> Source:
    return Source(f"t:0:{offset}", f"r{offset}", key, ordered)


def run(
    offset: int, event: str = "ok", attempt: int = 0, gen: int = 0, at: float = 0.0
) -> list[Execution]:
    """A start, then ``event`` unless it is ``start`` (a task killed in the middle)."""
    start = Execution(f"t:0:{offset}", "start", attempt, gen, at)
    if event == "start":
        return [start]
    return [start, Execution(f"t:0:{offset}", event, attempt, gen, at + 0.02)]


def test_a_record_neither_handled_nor_dead_lettered_is_lost() -> None:
    verdict = judge([src(0), src(1), src(2)], [*run(0), *run(1, "retry")], ["t:0:2"], [])
    assert verdict.lost == ["t:0:1"]
    assert (verdict.produced, verdict.handled, verdict.dead_lettered) == (3, 1, 1)
    assert not verdict.passed


def test_a_record_kafka_acknowledged_but_missing_from_its_topic_is_lost() -> None:
    verdict = judge([src(0)], run(0), [], [], acked_ids=["r0", "r9"])
    assert verdict.lost_in_kafka == ["r9"]
    assert verdict.to_dict()["lost"] == 1
    assert not verdict.passed


def test_every_record_handled_or_dead_lettered_passes() -> None:
    verdict = judge([src(0), src(1)], [*run(0), *run(1, "dead")], ["t:0:1"], [], ["r0", "r1"])
    assert verdict.passed
    assert verdict.to_dict()["lost"] == 0


def test_an_ordered_key_succeeding_out_of_offset_order_is_a_violation() -> None:
    sources = [src(0, "a"), src(1, "b"), src(2, "a")]
    verdict = judge(sources, [*run(2), *run(1), *run(0)], [], [])
    assert verdict.order_violations == ["t:0 key a: 0 after 2"]
    assert not verdict.passed


def test_order_counts_first_successes_and_ignores_unordered_routes() -> None:
    ordered = [src(0), src(1)]
    unordered = [src(2, ordered=False), src(3, ordered=False)]
    runs = [*run(0), *run(1), *run(0), *run(3), *run(2)]  # 0 again: a repeat in place
    assert judge(ordered + unordered, runs, [], [0]).order_violations == []


def test_a_rerun_after_a_killed_worker_is_an_explained_duplicate() -> None:
    runs = [*run(0, "start", gen=0), *run(0, gen=1)]
    verdict = judge([src(0)], runs, [], killed_gens=[0])
    assert verdict.duplicates == {WORKER_KILL: 1, REDIS_RESTART: 0, FAILOVER: 0, UNEXPLAINED: 0}
    assert verdict.passed


@pytest.mark.parametrize("killed", [[], [0]])
def test_a_rerun_without_a_crash_before_it_is_unexplained(killed: list[int]) -> None:
    # Both runs in generation 0: killing it later does not explain the second.
    verdict = judge([src(0)], [*run(0, gen=0), *run(0, gen=0)], [], killed_gens=killed)
    assert verdict.duplicates == {WORKER_KILL: 0, REDIS_RESTART: 0, FAILOVER: 0, UNEXPLAINED: 1}
    assert verdict.examples["duplicates-unexplained"] == ["t:0:0#0"]
    assert not verdict.passed


def test_retries_are_not_duplicates_but_a_repeated_later_attempt_after_a_kill_is() -> None:
    # Killed after attempt 0 had scheduled its retry: attempt 0 runs again, and its retry
    # makes attempt 1 run twice, both caused by the kill.
    runs = [*run(0, "retry", 0, gen=0), *run(0, "retry", 0, gen=1), *run(0, "ok", 1, gen=1),
            *run(0, "ok", 1, gen=1)]  # fmt: skip
    verdict = judge([src(0)], runs, [], killed_gens=[0])
    assert verdict.duplicates == {WORKER_KILL: 2, REDIS_RESTART: 0, FAILOVER: 0, UNEXPLAINED: 0}


def test_a_rerun_of_an_execution_whose_ack_a_redis_restart_lost_is_explained() -> None:
    restarts = [(100.0, 106.0)]
    runs = [*run(0, at=103.0), *run(1, at=90.0), *run(0, at=150.0), *run(1, at=160.0)]
    verdict = judge([src(0), src(1)], runs, [], [], ack_loss=restarts)
    assert verdict.duplicates == {WORKER_KILL: 0, REDIS_RESTART: 1, FAILOVER: 0, UNEXPLAINED: 1}
    assert verdict.examples["duplicates-redis-restart"] == ["t:0:0#0"]


def test_a_rerun_of_a_message_a_worker_received_while_redis_restarted_is_explained() -> None:
    # Received in the restart, run once 45 s later and again later still: both copies came
    # from Redis's bookkeeping of a delivery the restart cut.
    restarts = [(100.0, 106.0)]
    runs = [*run(0, at=150.0), *run(0, at=175.0), *run(1, at=150.0), *run(1, at=175.0)]
    verdict = judge(
        [src(0), src(1)], runs, [], [], ack_loss=restarts, received_in_restart=["t:0:0"]
    )
    assert verdict.duplicates == {WORKER_KILL: 0, REDIS_RESTART: 1, FAILOVER: 0, UNEXPLAINED: 1}
    assert verdict.examples["duplicates-redis-restart"] == ["t:0:0#0"]


def test_a_rerun_of_an_execution_in_a_failover_is_explained_by_it() -> None:
    # Record 0 ran while the primary failed over (its ack was in the suffix the new primary
    # never got); record 1 ran long before, record 2's message was received in the failover.
    failovers = [(100.0, 112.0)]
    runs = [*run(0, at=104.0), *run(1, at=90.0), *run(2, at=95.0),
            *run(0, at=113.0), *run(1, at=114.0), *run(2, at=115.0)]  # fmt: skip
    verdict = judge([src(0), src(1), src(2)], runs, [], [], failover=failovers,
                    received_in_failover=["t:0:2"])  # fmt: skip
    assert verdict.duplicates == {WORKER_KILL: 0, REDIS_RESTART: 0, FAILOVER: 2, UNEXPLAINED: 1}
    assert verdict.examples["duplicates-redis-failover"] == ["t:0:0#0", "t:0:2#0"]
    assert verdict.enqueue_duplicates == 1
    assert verdict.to_dict()["enqueue_duplicates"] == 1
    assert not verdict.passed


def test_an_unexplained_rerun_of_a_retry_is_no_enqueue_duplicate() -> None:
    runs = [*run(0, "retry"), *run(0, attempt=1), *run(0, attempt=1)]
    verdict = judge([src(0)], runs, [], [])
    assert verdict.duplicates[UNEXPLAINED] == 1
    assert verdict.enqueue_duplicates == 0


def test_dead_letters_written_twice_are_counted_and_classified() -> None:
    runs = [*run(0, "dead", gen=0), *run(0, "dead", gen=1), *run(1, "dead", gen=0),
            *run(1, "dead", gen=0)]  # fmt: skip
    verdict = judge([src(0), src(1)], runs, ["t:0:0", "t:0:0", "t:0:1", "t:0:1"], [0])
    assert verdict.dlt_duplicates == {
        WORKER_KILL: 1,
        REDIS_RESTART: 0,
        FAILOVER: 0,
        DLT_TIMEOUT: 0,
        UNEXPLAINED: 1,
    }
    assert not verdict.passed


def test_a_dead_letter_handed_to_the_bridge_after_a_timeout_may_be_written_twice() -> None:
    runs = [*run(0, "dead"), *run(1, "dead")]
    dead = ["t:0:0", "t:0:0", "t:0:1"]
    verdict = judge([src(0), src(1)], runs, dead, [], timed_out=["t:0:0"])
    assert verdict.dlt_duplicates[DLT_TIMEOUT] == 1
    assert verdict.passed


def test_a_record_both_handled_and_dead_lettered_fails() -> None:
    verdict = judge([src(0)], run(0), ["t:0:0"], [])
    assert verdict.handled_and_dead == ["t:0:0"]
    assert not verdict.passed


@pytest.mark.parametrize("name", sorted(PROFILES))
def test_the_plan_injects_every_fault_as_often_as_the_profile_says(name: str) -> None:
    profile = profile_named(name)
    steps = plan(profile, seed=42)
    assert Counter(s.fault for s in steps) == {f: profile.repeats for f in FAULTS}
    assert all(a.fault != b.fault for a, b in itertools.pairwise(steps))
    assert all(profile.pause_s[0] <= s.pause_s <= profile.pause_s[1] for s in steps)


@pytest.mark.parametrize("name", sorted(PROFILES))
def test_the_sentinel_plan_alternates_its_faults(name: str) -> None:
    profile = profile_named(name)
    steps = plan(profile, seed=42, faults=faults_of("sentinel"))
    assert Counter(s.fault for s in steps) == {f: profile.repeats for f in SENTINEL_FAULTS}
    assert all(a.fault != b.fault for a, b in itertools.pairwise(steps))
    assert faults_of("single") == FAULTS


def test_the_plan_is_repeated_by_its_seed_and_varies_with_it() -> None:
    full = profile_named("full")
    assert plan(full, 7) == plan(full, 7)
    assert plan(full, 7) != plan(full, 8)


def test_an_unknown_profile_is_named_in_the_error() -> None:
    with pytest.raises(ValueError, match=r"CHAOS_PROFILE must be one of .* not 'huge'"):
        profile_named("huge")


def test_the_workload_mixes_routes_and_failures_deterministically() -> None:
    records = [nth(n) for n in range(1000)]
    assert Counter(r.topic for r in records) == {ORDERED_TOPIC: 500, UNORDERED_TOPIC: 500}
    for topic in (ORDERED_TOPIC, UNORDERED_TOPIC):
        modes = Counter(
            dict(r.headers).get("mode", dict(r.headers).get("fail"))
            for r in records
            if r.topic == topic
        )
        assert modes == {None: 405, b"permanent": 20, b"1": 50, b"2": 25}
    assert len({dict(r.headers)["id"] for r in records}) == 1000
    assert len({r.key for r in records if r.topic == ORDERED_TOPIC}) == 300
    assert nth(17) == nth(17)


def test_the_table_lists_every_fault_and_the_totals() -> None:
    verdict = judge([src(0)], run(0), [], []).to_dict()
    doc = {"profile": "full", "seed": 3, "seconds": {"total": 600}, "at": "2026-11-22T21:00:00",
           "fault_counts": {"bridge-kill": 3}, "verdict": verdict,
           "exited_by_themselves": [{"process": "worker-3"}]}  # fmt: skip
    table = markdown(doc)
    assert "| bridge-kill | 3 |" in table
    assert "| kafka-freeze | 0 |" in table
    assert "| **lost** | **0** |" in table
    assert "| bridges / workers that exited by themselves (restarted) | 0 / 1 |" in table
    assert "Profile `full`, seed 3, 600 s" in table


def test_the_sentinel_table_lists_its_faults_and_the_failovers() -> None:
    verdict = judge([src(0)], run(0), [], []).to_dict()
    failover = {"fault": "primary-kill", "new_primary": 6380, "promoted_after_s": 4.1,
                "rejoined_after_s": 9.0, "acted_as_primary_until_s": None,
                "dropped_bytes": 0}  # fmt: skip
    doc = {"profile": "full", "topology": "sentinel", "min_replicas_to_accept": 1, "seed": 3,
           "seconds": {"total": 600}, "at": "2026-12-04T17:00:00",
           "fault_counts": {"primary-kill": 1}, "faults": [failover], "verdict": verdict,
           "not_replicated": {"batches": 2, "task_messages": 30},
           "exited_by_themselves": []}  # fmt: skip
    table = markdown(doc)
    assert "| primary-kill | 1 |" in table
    assert "| primary-partition | 0 |" in table
    assert "kafka-freeze" not in table
    assert "| failovers (replica promoted, old primary back as a replica) | 1 |" in table
    assert "| replica promoted after (s, min-max) | 4.1-4.1 |" in table
    assert "not accepted (task messages) | 2 (30) |" in table
    assert "`celery.min_replicas_to_accept = 1`" in table
    assert "by the fault they were produced in" not in table
    lost = markdown({**doc, "lost_by_fault": {"1 primary-partition": 66, "none": 1}})
    assert (
        "| lost, by the fault they were produced in (its place in the run) | "
        "1 primary-partition: 66, none: 1 |" in lost
    )
    assert stem(doc) == "chaos-sentinel"
    assert stem({**doc, "min_replicas_to_accept": 0, "profile": "reduced"}) == (
        "chaos-sentinel-min0-reduced"
    )
    assert stem({"profile": "reduced"}) == "chaos-reduced"


def test_the_bridge_logs_tell_the_batches_too_few_replicas_acknowledged() -> None:
    logs = [
        "ERROR Celery broker unavailable (attempt 1): all partitions paused, retry in 10 ms: "
        "12 task messages enqueued, not replicated: celery.min_replicas_to_accept is 1: only 0",
        "ERROR ... 3 task messages enqueued, not replicated: ...\nINFO partitions assigned",
    ]
    assert not_replicated(logs) == {"batches": 2, "task_messages": 15}
    assert not_replicated([]) == {"batches": 0, "task_messages": 0}


def test_the_replica_lag_is_the_primary_offset_past_the_least_advanced_replica() -> None:
    info = {"role": "master", "master_repl_offset": 1000,
            "slave0": {"ip": "127.0.0.1", "port": 6380, "offset": 900, "lag": 0},
            "slave1": {"ip": "127.0.0.1", "port": 6381, "offset": 990, "lag": 0}}  # fmt: skip
    assert lag_bytes(info) == 100
    assert lag_bytes({"role": "master", "master_repl_offset": 5}) is None


def test_lost_records_are_counted_by_the_fault_they_were_produced_in() -> None:
    faults = [{"fault": "primary-kill", "epoch": [100.0, 110.0]},
              {"fault": "primary-partition", "epoch": [130.0, 150.0]}]  # fmt: skip
    produced_at = {"t:0:1": 99.0, "t:0:2": 149.0, "t:0:3": 154.0, "t:0:4": 120.0}
    lost = ["t:0:1", "t:0:2", "t:0:3", "t:0:4", "t:0:9"]
    assert lost_by_fault(lost, produced_at, faults) == {
        "0 primary-kill": 1,
        "1 primary-partition": 2,
        "none": 2,
    }
    assert lost_by_fault([], produced_at, faults) == {}
    # 151 s: 5 s after the partition ended and 2 s before the next fault: the next one's.
    later = [*faults, {"fault": "primary-kill", "epoch": [153.0, 160.0]}]
    assert lost_by_fault(["t:0:5"], {"t:0:5": 151.0}, later) == {"2 primary-kill": 1}
