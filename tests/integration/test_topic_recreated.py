"""Published watermarks belong to one incarnation of a topic: the records of a topic deleted
and created again are enqueued, and where Kafka gives no topic id the bridge stops the
partition rather than skip what it cannot tell apart."""

from __future__ import annotations

from pathlib import Path

from kafka import KafkaAdminClient, KafkaProducer

from bridge import keys
from tests.conftest import wait_for
from tests.integration.conftest import BridgeProcess, Ledger
from tests.integration.helpers import (
    MakeTopic,
    StartBridge,
    assert_each_handled_once,
    committed_offsets,
    send_many,
    status_json,
    task_ids,
    wait_committed_to_end,
)


def test_records_of_a_recreated_topic_are_handled(
    make_topic: MakeTopic,
    start_bridge: StartBridge,
    producer: KafkaProducer,
    ledger: Ledger,
    admin: KafkaAdminClient,
) -> None:
    topic = make_topic()
    bridge = start_bridge([{"topic": topic.name, "task": "tests.flaky"}])
    first = send_many(producer, topic, ledger, 30)
    assert_each_handled_once(ledger, task_ids(bridge.group_id, topic, first))
    wait_committed_to_end(admin, bridge.group_id, topic)

    admin.delete_topics([topic.name])
    wait_for(lambda: topic.name not in admin.list_topics(), what=f"{topic.name} deleted")
    admin.create_topics(
        {topic.name: {"num_partitions": 1, "replication_factor": 1}}, wait_for_metadata=True
    )
    ledger.clear()
    again = send_many(producer, topic, ledger, 30)  # offsets 0..29 again
    assert_each_handled_once(ledger, task_ids(bridge.group_id, topic, again))
    wait_committed_to_end(admin, bridge.group_id, topic)
    assert bridge.proc.poll() is None
    assert "already enqueued: skipped" not in bridge.log()


NO_TOPIC_IDS = """\
# Test-only: the bridge's Kafka client sees no topic ids, as with a broker older than 2.8.
import kafka.cluster

kafka.cluster.ClusterMetadata.topic_id = lambda self, topic: None
"""


def test_without_topic_ids_a_watermark_it_cannot_verify_stops_the_partition(
    make_topic: MakeTopic,
    start_bridge: StartBridge,
    producer: KafkaProducer,
    ledger: Ledger,
    admin: KafkaAdminClient,
    tmp_path: Path,
) -> None:
    topic = make_topic()
    sent = send_many(producer, topic, ledger, 10)
    group_id = f"g-{topic.name}"
    # What a bridge of this group left of an older topic of the same name: offsets 0..19 enqueued.
    watermark = keys.published_watermark(group_id, topic.name, 0)
    ledger.client.set(watermark, 20)
    (tmp_path / "sitecustomize.py").write_text(NO_TOPIC_IDS)
    bridge = start_bridge(
        [{"topic": topic.name, "task": "tests.flaky"}],
        group_id=group_id,
        env={"PYTHONPATH": str(tmp_path)},
    )
    try:
        wait_for(lambda: "watermark-unverified" in paused(bridge), what="the partition stopped")
        assert f"delete {watermark} to enqueue from here" in bridge.log()
        assert ledger.done() == set()
        assert committed_offsets(admin, group_id, topic.name) == {}
        ledger.client.delete(watermark)  # the operator's word: these records are new
        assert_each_handled_once(ledger, task_ids(group_id, topic, sent))
        wait_committed_to_end(admin, group_id, topic)
        assert bridge.proc.poll() is None
    finally:
        ledger.client.delete(watermark)


def paused(bridge: BridgeProcess) -> list[str | None]:
    """Why each partition of the bridge's routes is paused, as ``status --json`` shows it."""
    doc = status_json(bridge)
    return [p["paused"] for route in doc["routes"] for p in route["partitions"]]
