"""``python -m bridge replay``: dead letters redriven to their source topic or their task."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis
from kafka import KafkaAdminClient, KafkaProducer

from bridge.backends.redis.dead_letter_store import DeadLetterStore
from bridge.deadletter import DeadLetter, ErrorInfo, dead_letter_headers, to_dict
from bridge.failures import Reason
from bridge.record import Headers, Record
from tests.conftest import wait_for
from tests.integration.conftest import (
    REPO,
    BridgeProcess,
    Ledger,
    Topic,
    committed_offsets,
    config_toml,
    end_offsets,
    read_all,
    text,
)
from tests.integration.helpers import (
    MakeTopic,
    StartBridge,
    executions,
    headers_of,
    original_offset,
    send,
)

FLAKY = "tests.flaky"


def replay(bridge: BridgeProcess, *args: str, expect_rc: int = 0) -> dict[str, Any]:
    """Run ``python -m bridge replay --json`` as a user would; return its summary."""
    out = subprocess.run(
        [sys.executable, "-m", "bridge", "replay", "--config", str(bridge.config_path),
         "--json", "--no-progress", *args],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == expect_rc, f"rc {out.returncode}:\n{out.stdout}\n{out.stderr}"
    return json.loads(out.stdout) if expect_rc == 0 else {"stderr": out.stderr}


def dead_letters(bridge: BridgeProcess, topic: Topic, count: int) -> list[Any]:
    return read_all(topic.dlt(bridge.group_id), expected=count)


def has_records(topic: str, count: int) -> Callable[[], bool]:
    return lambda: sum(end_offsets(topic).values()) == count


def succeeded_keys(ledger: Ledger) -> list[str]:
    rows = ledger.client.lrange(f"{ledger.prefix}:succeeded", 0, -1)
    return sorted(json.loads(r)["key"] for r in rows)


def test_round_trip_to_source_handles_each_record_once_then_a_rerun_replays_nothing(
    make_topic: MakeTopic,
    start_bridge: StartBridge,
    producer: KafkaProducer,
    ledger: Ledger,
    admin: KafkaAdminClient,
) -> None:
    topic = make_topic(partitions=2)
    bridge = start_bridge([{"topic": topic.name, "task": FLAKY, "value_format": "bytes"}])
    flag = f"{ledger.prefix}:down"
    ledger.client.set(flag, 1)
    original = [("fail-while", flag.encode()), ("bin", b"\x00\xff"), ("e", b"")]
    keys = [f"k{i}" for i in range(4)]
    for k in keys:
        send(producer, topic, ledger, key=k.encode(), value=b"\xfe" + k.encode(), headers=original)
    dead = dead_letters(bridge, topic, 4)
    ledger.client.delete(flag)  # the outage is over
    source_ends = end_offsets(topic.name)

    summary = replay(bridge, "--topic", topic.name)

    assert summary["read"] == summary["matched"] == summary["replayed"] == 4
    wait_for(lambda: len(ledger.done()) == 4, what="the 4 replayed records handled")
    assert succeeded_keys(ledger) == keys  # each once, no duplicates
    assert sorted(ledger.attempts().values()) == [1] * 8  # 4 failed, 4 replayed
    replayed = [r for r in read_all(topic.name, expected=8) if r.offset >= source_ends[r.partition]]
    assert sorted(r.key for r in replayed) == [k.encode() for k in keys]
    assert sum(end_offsets(topic.name).values()) == sum(source_ends.values()) + 4
    for record in replayed:
        assert record.value == b"\xfe" + record.key
        assert record.headers == [
            ("ledger", ledger.prefix.encode()),
            *original,
            ("bridge-replays", b"1"),
        ]
    group = f"{bridge.group_id}.replay"
    dlt = topic.dlt(bridge.group_id)
    assert committed_offsets(admin, group, dlt) == end_offsets(dlt)
    assert len(dead) == 4

    again = replay(bridge, "--topic", topic.name)
    assert (again["read"], again["replayed"]) == (0, 0)
    assert sum(end_offsets(topic.name).values()) == sum(source_ends.values()) + 4


def test_filters_and_dry_run_select_exactly_and_change_nothing(
    make_topic: MakeTopic,
    start_bridge: StartBridge,
    producer: KafkaProducer,
    ledger: Ledger,
    admin: KafkaAdminClient,
) -> None:
    topic = make_topic()
    bridge = start_bridge([{"topic": topic.name, "task": FLAKY}])
    send(producer, topic, ledger, key=b"permanent", headers=[("mode", b"permanent")])
    send(producer, topic, ledger, key=b"value", headers=[("mode", b"value-error")])
    send(producer, topic, ledger, key=b"timeout", headers=[("fail", b"99")])
    send(producer, topic, ledger, key=b"bad-json", value=b"\xff{")
    dead = dead_letters(bridge, topic, 4)
    attempts = ledger.attempts()

    def listed(*args: str) -> set[str]:
        summary = replay(bridge, "--topic", topic.name, "--dry-run", *args)
        assert summary["dry_run"] is True
        assert summary["read"] == 4
        return {line["key"] for line in summary["would_replay"]}

    assert listed() == {"permanent", "value", "timeout", "bad-json"}
    assert listed("--reason", "exhausted") == {"timeout"}
    assert listed("--reason", "undecodable", "--reason", "exhausted") == {"bad-json", "timeout"}
    assert listed("--exception", "ValueError") == {"value"}
    assert listed("--exception", "bridge.errors.PermanentError") == {"permanent"}
    assert listed("--key", "value") == {"value"}
    assert listed("--key-b64", "dGltZW91dA==") == {"timeout"}
    stamps = {r.key.decode(): headers_of(r)["bridge-dead-lettered-at"].decode() for r in dead}
    distinct = sorted(set(stamps.values()))
    assert len(distinct) >= 3, f"dead-lettered too close together to tell apart: {stamps}"
    since, until = distinct[1], distinct[-1]  # inclusive, exclusive
    expected = {k for k, at in stamps.items() if since <= at < until}
    assert listed("--since", since, "--until", until) == expected

    dlt = topic.dlt(bridge.group_id)
    assert committed_offsets(admin, f"{bridge.group_id}.replay", dlt) == {}
    assert sum(end_offsets(topic.name).values()) == 4  # nothing produced
    assert ledger.attempts() == attempts


def test_the_replay_limit_stops_a_record_that_always_fails(
    make_topic: MakeTopic, start_bridge: StartBridge, producer: KafkaProducer, ledger: Ledger
) -> None:
    topic = make_topic()
    bridge = start_bridge([{"topic": topic.name, "task": FLAKY}])
    send(producer, topic, ledger, headers=[("mode", b"permanent")])
    dlt = topic.dlt(bridge.group_id)
    dead_letters(bridge, topic, 1)

    for n in (1, 2):
        summary = replay(bridge, "--topic", topic.name, "--max-replays", "2")
        assert (summary["replayed"], summary["skipped_by_limit"]) == (1, 0)
        wait_for(has_records(dlt, n + 1), what=f"dead letter {n + 1}")

    limited = replay(bridge, "--topic", topic.name, "--max-replays", "2")
    assert (limited["read"], limited["replayed"], limited["skipped_by_limit"]) == (1, 0, 1)
    assert replay(bridge, "--topic", topic.name, "--max-replays", "2")["read"] == 0
    dead = dead_letters(bridge, topic, 3)
    assert [headers_of(d).get("bridge-replays") for d in dead] == [None, b"1", b"2"]
    assert sum(end_offsets(topic.name).values()) == 3
    assert len(executions(ledger)) == 3


def test_a_rerun_continues_where_the_last_run_stopped_and_from_beginning_resets(
    make_topic: MakeTopic, start_bridge: StartBridge, producer: KafkaProducer, ledger: Ledger
) -> None:
    topic = make_topic()
    bridge = start_bridge([{"topic": topic.name, "task": FLAKY}])
    for i in range(2):
        send(producer, topic, ledger, key=f"a{i}".encode(), headers=[("mode", b"value-error")])
    dead_letters(bridge, topic, 2)
    assert replay(bridge, "--topic", topic.name, "--key", "nothing")["skipped_by_filter"] == 2
    for i in range(2):
        send(producer, topic, ledger, key=f"b{i}".encode(), headers=[("mode", b"value-error")])
    dead_letters(bridge, topic, 4)

    summary = replay(bridge, "--topic", topic.name, "--dry-run")
    assert {line["key"] for line in summary["would_replay"]} == {"b0", "b1"}
    everything = replay(bridge, "--topic", topic.name, "--dry-run", "--from-beginning")
    assert {line["key"] for line in everything["would_replay"]} == {"a0", "a1", "b0", "b1"}


def test_round_trip_to_task_with_fresh_task_ids_and_nothing_produced(
    make_topic: MakeTopic,
    start_bridge: StartBridge,
    producer: KafkaProducer,
    ledger: Ledger,
    ledger_redis: redis.Redis,
) -> None:
    topic = make_topic()
    bridge = start_bridge([{"topic": topic.name, "task": FLAKY}])
    flag = f"{ledger.prefix}:down"
    ledger.client.set(flag, 1)
    sent = [
        send(producer, topic, ledger, key=f"k{i}".encode(), headers=[("fail-while", flag.encode())])
        for i in range(3)
    ]
    dead = dead_letters(bridge, topic, 3)
    ledger.client.delete(flag)
    originals = {f"{bridge.group_id}:{topic.name}:0:{m.offset}" for m in sent}
    replays = {f"{tid}:replay:1" for tid in originals}

    summary = replay(bridge, "--topic", topic.name, "--to", "task")

    assert summary["replayed"] == 3
    wait_for(lambda: ledger.done() == replays, what="the 3 records run in their task again")
    assert ledger.attempts() == dict.fromkeys(originals | replays, 1)
    seen = {e["task_id"]: e["offset"] for e in executions(ledger) if e["task_id"] in replays}
    assert seen == {f"{tid}:replay:1": int(tid.rsplit(":", 1)[1]) for tid in originals}
    assert sum(end_offsets(topic.name).values()) == 3  # nothing produced to the source
    assert sorted(original_offset(d) for d in dead) == [m.offset for m in sent]
    assert replay(bridge, "--topic", topic.name, "--to", "task")["replayed"] == 0
    replay_group = f"{bridge.group_id}.replay"
    watermark = (
        f"bridge:{bridge.group_id}:replay:{replay_group}:published:{topic.dlt(bridge.group_id)}:0"
    )
    assert ledger_redis.get(watermark) == b"3"


def dead_letter(
    group_id: str, topic: Topic, key: bytes, offset: int, headers: Headers
) -> DeadLetter:
    """A realistic dead letter of ``topic[0]@offset``, as a worker makes it."""
    record = Record(topic.name, 0, offset, 1_700_000_000_000, key, b"{}", headers, "json")
    return DeadLetter(
        record=record, group_id=group_id, dlt_topic=topic.dlt(group_id),
        reason=Reason.NON_RETRYABLE, error=ErrorInfo("builtins.ValueError", "bad", "Traceback"),
        attempts=1, task=FLAKY, task_id=f"{group_id}:{topic.name}:0:{offset}",
        first_failure_at="2026-11-22T10:00:00.000Z", dead_lettered_at="2026-11-22T10:00:00.000Z",
    )  # fmt: skip


def park(
    client: redis.Redis, bridge: BridgeProcess, topic: Topic, ledger: Ledger, key: bytes
) -> str:
    """Park a dead letter of ``topic`` in Redis, as a worker does when Kafka refuses it for
    good; return its task id."""
    headers = (("ledger", ledger.prefix.encode()),)
    dl = dead_letter(bridge.group_id, topic, key, 1000 + len(key), headers)
    DeadLetterStore(client, bridge.group_id).park(to_dict(dl))
    return dl.task_id


def test_an_interrupted_run_commits_what_it_wrote_and_a_rerun_writes_the_rest_once(
    make_topic: MakeTopic, producer: KafkaProducer, admin: KafkaAdminClient, tmp_path: Path
) -> None:
    topic = make_topic()
    group_id = f"g-{uuid.uuid4().hex[:10]}"
    dlt = topic.dlt(group_id)
    admin.create_topics({dlt: {"num_partitions": 1, "replication_factor": 1}})
    count = 5000
    for n in range(count):
        dl = dead_letter(group_id, topic, b"k", n, (("n", str(n).encode()),))
        producer.send(dlt, key=b"k", value=b"{}", headers=dead_letter_headers(dl))
    producer.flush()
    config = tmp_path / "replay.toml"
    config.write_text(config_toml(group_id=group_id, routes=[{"topic": topic.name, "task": FLAKY}]))
    args = [sys.executable, "-m", "bridge", "replay", "--config", str(config), "--topic",
            topic.name, "--json", "--no-progress"]  # fmt: skip
    proc = subprocess.Popen(args, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    wait_for(lambda: sum(end_offsets(topic.name).values()) > 0, what="the first replayed records")
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err.decode()
    first = json.loads(out)["replayed"]
    assert 0 < first < count, "the run was not interrupted"
    assert committed_offsets(admin, f"{group_id}.replay", dlt) == {0: first}

    rest = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=120, check=True)
    assert json.loads(rest.stdout)["replayed"] == count - first
    written = read_all(topic.name, expected=count)
    assert sorted(int(dict(r.headers)["n"]) for r in written) == list(range(count))


def test_parked_dead_letters_are_redriven_and_removed(
    make_topic: MakeTopic,
    start_bridge: StartBridge,
    ledger: Ledger,
    ledger_redis: redis.Redis,
) -> None:
    topic = make_topic()
    bridge = start_bridge([{"topic": topic.name, "task": FLAKY}])
    to_task = park(ledger_redis, bridge, topic, ledger, b"p1")
    to_source = park(ledger_redis, bridge, topic, ledger, b"p22")
    parked_key = f"bridge:{bridge.group_id}:dead-letters:parked"

    dry = replay(bridge, "--parked", "--dry-run")
    assert {line["key"] for line in dry["would_replay"]} == {"p1", "p22"}
    assert ledger_redis.hlen(parked_key) == 2

    by_task = replay(bridge, "--parked", "--to", "task", "--key", "p1")
    assert (by_task["parked_redriven"], by_task["skipped_by_filter"]) == (1, 1)
    wait_for(lambda: f"{to_task}:replay:1" in ledger.done(), what="p1 run in its task")
    assert {text(k) for k in ledger_redis.hkeys(parked_key)} == {to_source}

    by_source = replay(bridge, "--parked", "--topic", topic.name)
    assert by_source["parked_redriven"] == 1
    [record] = read_all(topic.name, expected=1)
    assert record.key == b"p22"
    assert record.headers == [("ledger", ledger.prefix.encode()), ("bridge-replays", b"1")]
    handled = f"{bridge.group_id}:{topic.name}:0:{record.offset}"
    wait_for(lambda: handled in ledger.done(), what="p22 handled from its source topic")
    assert ledger_redis.hlen(parked_key) == 0
    assert sorted(ledger.attempts().values()) == [1, 1]


def test_bad_input_exits_2_naming_the_flag_and_commits_nothing(
    make_topic: MakeTopic, start_bridge: StartBridge, admin: KafkaAdminClient
) -> None:
    topic = make_topic()
    bridge = start_bridge([{"topic": topic.name, "task": FLAKY}])
    missing = f"nope-{uuid.uuid4().hex[:6]}"
    cases = {
        ("--topic", "elsewhere"): "--topic: 'elsewhere' is not a routed topic",
        ("--dlt-topic", missing): f"the dead-letter topic '{missing}' does not exist",
        ("--topic", topic.name, "--since", "noon"): "--since: 'noon' is not an ISO 8601 time",
    }
    for args, message in cases.items():
        assert message in replay(bridge, *args, expect_rc=2)["stderr"]
    assert missing not in admin.list_topics()
    assert committed_offsets(admin, f"{bridge.group_id}.replay", topic.dlt(bridge.group_id)) == {}
