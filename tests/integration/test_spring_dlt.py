"""A real Spring Kafka consumer reads the bridge's dead letters (``tests/spring``).

Its ``@KafkaListener`` requires every ``kafka_dlt-*`` header that Spring's
``DeadLetterPublishingRecoverer`` writes for a listener failure, and the records' own
``ledger`` header. The same JVM produces, with the Java client, a record with a null header
value for the bridge, and lets Spring dead-letter two records of its own: the reference our
header names and meanings are compared with.

The Maven project is built once per session: offline from ``~/.m2`` when everything is there,
otherwise from Maven Central into ``~/.m2`` (51 MB, 18 s on this machine; 4 s offline after).
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import uuid
from dataclasses import dataclass
from typing import Any

import pytest
from kafka import KafkaAdminClient, KafkaProducer

from tests.conftest import BOOTSTRAP
from tests.integration.conftest import REPO, Ledger, Topic, read_all
from tests.integration.helpers import (
    MakeTopic,
    StartBridge,
    executions,
    send,
    wait_committed_to_end,
)

SPRING = REPO / "tests" / "spring"
BUILD = [
    "mvn", "-q", "-B", "compile", "dependency:build-classpath",
    "-Dmdep.outputFile=target/classpath.txt",
]  # fmt: skip
RUN_TIMEOUT_S = 90
Line = dict[str, Any]


@pytest.fixture(scope="session")
def dlt_check() -> list[str]:
    """The command that runs ``dltcheck.DltCheck`` (system properties go after ``java``)."""
    for tool in ("mvn", "java"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is not installed: the Spring dead-letter test needs Java 17+")
    if subprocess.run([*BUILD, "-o"], cwd=SPRING, capture_output=True).returncode != 0:
        built = subprocess.run(BUILD, cwd=SPRING, capture_output=True, text=True, timeout=600)
        assert built.returncode == 0, f"mvn failed:\n{built.stdout}\n{built.stderr}"
    classpath = (SPRING / "target" / "classpath.txt").read_text().strip()
    # Spring starts faster with the client compiler only: the JVM runs a few seconds.
    return [
        "java", "-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC",
        "-cp", f"{SPRING / 'target' / 'classes'}{os.pathsep}{classpath}", "dltcheck.DltCheck",
    ]  # fmt: skip


def run(command: list[str], **props: str) -> list[Line]:
    """Run the Spring consumer until it has read ``dlt.expected`` dead letters; its lines."""
    defines = [f"-D{name.replace('_', '.')}={value}" for name, value in props.items()]
    args = [command[0], *defines, f"-Dbootstrap={BOOTSTRAP}", f"-Dtimeout.s={RUN_TIMEOUT_S}"]
    done = subprocess.run(
        [*args, *command[1:]], capture_output=True, text=True, timeout=RUN_TIMEOUT_S + 60
    )
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert done.returncode == 0, done.stderr[-5000:]
    assert lines[-1:] == [{"done": True}], (done.stdout, done.stderr[-5000:])
    return lines


def headers(line: Line) -> list[tuple[str, bytes | None]]:
    return [(n, None if v is None else base64.b64decode(v)) for n, v in line["headers"]]


def dlt_names(line: Line) -> list[str]:
    return sorted(name for name, _ in headers(line) if name.startswith("kafka_dlt-"))


@dataclass
class Received:
    """What the Spring consumer printed, by kind."""

    ours: dict[int, Line]  # the bridge's dead letters of the CreateTime topic, by offset
    appended: Line  # the bridge's dead letter of the LogAppendTime topic
    spring: list[Line]  # Spring's own dead letters
    java: Line  # where the Java producer's record went

    @classmethod
    def of(cls, lines: list[Line], ours: str, appended: str) -> Received:
        assert [line for line in lines if "error" in line] == []  # no header was missing
        dead = [line for line in lines if "dead" in line]
        [appended_line] = [line for line in dead if line["dead"] == appended]
        [java] = [line for line in lines if line.get("produced") == "java"]
        return cls(
            {line["decoded"]["offset"]: line for line in dead if line["dead"] == ours},
            appended_line,
            [line for line in dead if line["dead"] not in (ours, appended)],
            java,
        )


# What the test handler raises for each record (tests/integration/handlers.py), and its message.
FAILURES = {
    "cause": ([("mode", b"wrapped-permanent")], "builtins.RuntimeError", "handler gave up"),
    "no-cause": ([("mode", b"permanent")], "bridge.errors.PermanentError", "record {} is invalid"),
    "exhausted": ([("fail", b"99")], "builtins.TimeoutError", "downstream timed out on attempt 4"),
    "undecodable": ([], "bridge.errors.UndecodableRecordError", None),
}


def send_failures(producer: KafkaProducer, topic: Topic, ledger: Ledger) -> dict[str, Any]:
    """One record per kind of :data:`FAILURES`, each with a timestamp of its own."""
    return {
        what: send(
            producer,
            topic,
            ledger,
            headers=extra,
            timestamp_ms=1_700_000_000_000 + n,
            value=b"\xff{not json" if what == "undecodable" else b"{}",
        )
        for n, (what, (extra, _, _)) in enumerate(FAILURES.items())
    }


def assert_as_spring_writes_them(got: Received) -> None:
    """The same kafka_dlt-* headers as Spring's dead letters, once each; and Spring's cause
    header names what the listener threw (not its cause), with or without a cause."""
    names = dlt_names(got.spring[0])
    assert len(names) == 10
    for line in [*got.ours.values(), got.appended, *got.spring]:
        assert dlt_names(line) == names
    assert {line["decoded"]["cause_fqcn"] for line in got.spring} == {
        "java.lang.IllegalStateException"
    }


def assert_failures(got: Received, sent: dict[str, Any], topic: Topic, group_id: str) -> None:
    """Coordinates, timestamp, group and exception of each failure, as Spring decodes them."""
    for what, meta in sent.items():
        line = got.ours[meta.offset]["decoded"]
        assert (line["topic"], line["partition"], line["offset"]) == (topic.name, 0, meta.offset)
        assert (line["timestamp"], line["timestamp_type"]) == (meta.timestamp, "CreateTime")
        assert line["group"] == group_id
        _, fqcn, message = FAILURES[what]
        assert (line["fqcn"], line["cause_fqcn"]) == (fqcn, fqcn), what
        assert message is None or line["message"] == message.format(meta.offset), what
    trace = dict(headers(got.ours[sent["cause"].offset]))["kafka_dlt-exception-stacktrace"]
    assert b"PermanentError: record" in (trace or b"")  # the cause is in the stack trace


def test_a_spring_listener_requiring_every_dlt_header_reads_our_dead_letters(
    make_topic: MakeTopic,
    start_bridge: StartBridge,
    producer: KafkaProducer,
    ledger: Ledger,
    admin: KafkaAdminClient,
    dlt_check: list[str],
) -> None:
    create_time = make_topic()
    log_append = make_topic(configs={"message.timestamp.type": "LogAppendTime"})
    reference = make_topic()
    admin.create_topics({f"{reference.name}.DLT": {"num_partitions": 1}}, wait_for_metadata=True)
    routes = [{"topic": t.name, "task": "tests.flaky"} for t in (create_time, log_append)]
    bridge = start_bridge(routes)
    sent = send_failures(producer, create_time, ledger)
    send(producer, log_append, ledger, headers=[("mode", b"permanent")])
    dlts = [create_time.dlt(bridge.group_id), log_append.dlt(bridge.group_id)]

    lines = run(
        dlt_check, group=f"spring-{uuid.uuid4().hex[:8]}", ledger=ledger.prefix,
        dlt_topics=",".join([*dlts, f"{reference.name}.DLT"]), dlt_expected="8",
        produce_topic=create_time.name, reference_topic=reference.name,
        reference_dlt=f"{reference.name}.DLT",
    )  # fmt: skip

    got = Received.of(lines, *dlts)
    assert (len(got.ours), len(got.spring)) == (5, 2)
    assert_as_spring_writes_them(got)
    assert_failures(got, sent, create_time, bridge.group_id)
    assert {line["decoded"]["ledger"] for line in got.ours.values()} == {ledger.prefix}
    [source] = read_all(log_append.name, expected=1)
    appended = got.appended["decoded"]
    assert (appended["timestamp"], appended["timestamp_type"]) == (
        source.timestamp,
        "LogAppendTime",
    )

    # The Java producer's null header value: kafka-python consumes it as None and the handler
    # gets None, but its producer cannot write a null value, so the dead letter has it empty.
    [handled] = [e for e in executions(ledger) if e["offset"] == got.java["offset"]]
    assert handled["null_headers"] == ["null-valued"]
    from_java = got.ours[got.java["offset"]]
    assert from_java["decoded"]["timestamp"] == got.java["timestamp"]
    assert headers(from_java)[:4] == [
        ("ledger", ledger.prefix.encode()), ("mode", b"permanent"), ("null-valued", b""),
        ("empty", b""),
    ]  # fmt: skip

    # The ledger: 6 records produced for the bridge, 6 dead-lettered, none handled or lost.
    assert ledger.done() == set()
    for topic in (create_time, log_append):
        wait_committed_to_end(admin, bridge.group_id, topic)
    assert bridge.proc.poll() is None
