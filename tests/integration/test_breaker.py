"""The dead-letter flood breaker against a downstream outage: the route pauses instead of
draining its topic into the DLT, says so (log, status, metric), probes after its cool-down,
and resumes when a probe succeeds or when told to; nothing is lost."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

from kafka import KafkaAdminClient, KafkaProducer

from tests.conftest import wait_for
from tests.integration.conftest import REPO, Ledger, Topic, end_offsets, read_all
from tests.integration.helpers import (
    MakeTopic,
    StartBridge,
    free_port,
    original_offset,
    route_named,
    scrape,
    send_many,
    status_json,
    wait_committed_to_end,
)

RECORDS = 1000
# The bridge may run only 10 records ahead of the workers, so that the records behind the
# outage are still in Kafka when the breaker opens (as with a real backlog).
ROUTE = {"task": "tests.flaky", "max_queue_depth": 10, "resume_queue_depth": 5}
KAFKA = {"max_poll_records": 10}


def breaker(**overrides: Any) -> dict[str, dict[str, Any]]:
    policy = {"dead_letter_ratio": 0.5, "window_s": 60, "min_records": 10,
              "probe_records": 5, "check_interval_ms": 50, **overrides}  # fmt: skip
    return {"breaker": policy}


def dead_lettered(topic: Topic, group_id: str) -> int:
    return sum(end_offsets(topic.dlt(group_id)).values())


def assert_nothing_lost(
    admin: KafkaAdminClient, topic: Topic, group_id: str, ledger: Ledger, sent: list[Any]
) -> int:
    """Every record is handled or dead-lettered, not both; returns how many were dead-lettered."""
    wait_committed_to_end(admin, group_id, topic)
    wait_for(lambda: len(ledger.done()) + dead_lettered(topic, group_id) >= RECORDS,
             timeout_s=60, what="every record handled or dead-lettered")  # fmt: skip
    dlt = dead_lettered(topic, group_id)
    dead = {original_offset(r) for r in read_all(topic.dlt(group_id), dlt)}
    handled = {int(tid.rsplit(":", 1)[1]) for tid in ledger.done()}
    assert dead.isdisjoint(handled)
    assert dead | handled == {m.offset for m in sent}
    return dlt


def outage(producer: KafkaProducer, topic: Topic, ledger: Ledger) -> tuple[str, list[Any]]:
    """The downstream is down (until the returned key is deleted) for the records sent."""
    down = f"{ledger.prefix}:down"
    ledger.client.set(down, 1)
    sent = send_many(producer, topic, ledger, RECORDS, headers=[("fail-while", down.encode())])
    return down, sent


def test_an_outage_opens_the_breaker_a_failed_probe_keeps_it_open_and_a_good_one_closes_it(
    make_topic: MakeTopic, start_bridge: StartBridge, producer: KafkaProducer,
    ledger: Ledger, admin: KafkaAdminClient,
) -> None:  # fmt: skip
    topic = make_topic()
    down, sent = outage(producer, topic, ledger)
    bridge = start_bridge([{"topic": topic.name, **ROUTE}], kafka=KAFKA,
                          sections=breaker(cool_down_s=0.5))  # fmt: skip
    wait_for(lambda: bridge.log().count("probe failed") >= 3, timeout_s=60,
             what="three probes to fail while the outage lasts")  # fmt: skip
    # Workers would dead-letter every record in a few seconds; the breaker lets through what
    # was queued when it opened (~30) and, per probe, 5 records plus one poll's surplus.
    during = dead_lettered(topic, bridge.group_id)
    assert during <= 120, f"{during} of {RECORDS} dead-lettered during the outage"
    assert "dead-letter flood breaker OPEN" in bridge.log()

    ledger.client.delete(down)  # the downstream is back
    wait_for(lambda: "probe succeeded" in bridge.log(), timeout_s=60, what="a probe to succeed")
    dlt = assert_nothing_lost(admin, topic, bridge.group_id, ledger, sent)
    print(f"dead-lettered: {during} by the third failed probe, {dlt} in all")
    assert bridge.proc.poll() is None


def test_an_open_breaker_shows_in_status_and_metrics_and_resumes_on_command(
    make_topic: MakeTopic, start_bridge: StartBridge, producer: KafkaProducer,
    ledger: Ledger, admin: KafkaAdminClient,
) -> None:  # fmt: skip
    topic = make_topic()
    down, sent = outage(producer, topic, ledger)
    port = free_port()
    bridge = start_bridge([{"topic": topic.name, **ROUTE}], kafka=KAFKA,
                          sections=breaker(cool_down_s=3600),
                          args=["--metrics-port", str(port)])  # fmt: skip

    def paused() -> dict[str, Any]:
        route = route_named(status_json(bridge), topic.name)
        flooded = route["partitions"][0]["paused"] == "dead-letter-flood"
        return route if flooded and (route["breaker"] or {}).get("state") == "open" else {}

    route = wait_for(paused, timeout_s=60, what="status to show the route paused by its breaker")
    assert route["breaker"]["trips"] == 1
    assert route["breaker"]["dead_letter_ratio"] > 0.5
    assert route["lag"] > 0  # the rest waits in Kafka
    samples = {(n, labels.get("topic")): v for n, labels, v in scrape(port)}
    assert samples[("bridge_flood_breaker_state", topic.name)] == 2
    assert samples[("bridge_flood_breaker_trips_total", topic.name)] == 1

    ledger.client.delete(down)
    resume = subprocess.run(
        [sys.executable, "-m", "bridge", "resume", "--config", str(bridge.config_path),
         "--topic", topic.name],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert resume.returncode == 0, resume.stderr
    wait_for(lambda: "resumed by command" in bridge.log(), timeout_s=30, what="the resume")
    dlt = assert_nothing_lost(admin, topic, bridge.group_id, ledger, sent)
    assert dlt < RECORDS / 2
    closed = route_named(status_json(bridge), topic.name)["breaker"]
    assert closed["state"] == "closed"
