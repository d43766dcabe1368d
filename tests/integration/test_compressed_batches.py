"""Compressed record batches from producers in other languages, and batches Kafka's client
cannot decode.

Every codec Kafka defines is written by librdkafka (the C client behind Go's, .NET's and
Python's confluent-kafka) and by the broker's own Java compression (a topic with
``compression.type`` recompresses what it is sent, with the code of Java's producer: xerial
framing for snappy, zstd frames without a content size). A batch the bridge cannot decode (its
codec library missing, a log damaged on disk) is dead-lettered, record by record, with reason
``undecodable``, and the bridge goes on.
"""

from __future__ import annotations

import base64
import json
import struct
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer
from kafka import KafkaAdminClient, KafkaProducer

from tests.batch_bytes import DAMAGES, codec_of, damage, spans
from tests.conftest import BOOTSTRAP, wait_for
from tests.integration.conftest import BridgeProcess, Ledger, Topic, end_offsets, read_all, text
from tests.integration.helpers import MakeTopic, StartBridge, original_offset
from tests.integration.test_hostile_input import assert_bridge_alive, wait_all_committed

CODECS = {"none": 0, "gzip": 1, "snappy": 2, "lz4": 3, "zstd": 4}
TOPIC_CODECS = {"none": "uncompressed"}  # a topic's compression.type, where it differs
# Records per batch: small JSON values, then 20 KB ones: 1.2 MB a batch once decompressed
# (kafka-python's zstd has a 1 MB constant; the broker takes at most 1 MB uncompressed).
SMALL, BIG, BIG_UNCOMPRESSED = 40, 60, 40


def librdkafka_batches(
    topic: Topic, ledger: Ledger, codec: str, batches: list[list[bytes]]
) -> None:
    """Write each list of values as one batch (flushed before the next), with librdkafka."""
    producer = Producer({
        "bootstrap.servers": BOOTSTRAP, "compression.codec": codec, "linger.ms": 1000,
        "batch.size": 8_000_000, "message.max.bytes": 8_000_000, "enable.idempotence": True,
    })  # fmt: skip
    errors: list[Any] = []

    def delivered(err: Any, _msg: Any) -> None:
        if err is not None:
            errors.append(err)

    for values in batches:
        for value in values:
            mark: list[tuple[str, str | bytes | None]] = [("ledger", ledger.prefix.encode())]
            producer.produce(topic.name, value=value, headers=mark, on_delivery=delivered)
        assert producer.flush(30) == 0, "librdkafka did not deliver every record in time"
    assert not errors, f"librdkafka could not write them: {errors[:3]}"


def values(count: int, size: int = 0) -> list[bytes]:
    """``count`` distinct JSON values, padded to about ``size`` bytes (compressible)."""
    tag = uuid.uuid4().hex[:6]
    return [json.dumps({"n": i, "tag": tag, "pad": "p" * size}).encode() for i in range(count)]


def segment(admin: KafkaAdminClient, topic: Topic, partition: int = 0) -> Path | None:
    """The broker's log segment of the partition, if the broker runs on this machine."""
    for broker in admin.describe_log_dirs():
        for log_dir in broker["log_dirs"]:
            found = sorted(Path(log_dir["log_dir"], f"{topic.name}-{partition}").glob("*.log"))
            if found:
                return found[0]
    return None


def echoed(ledger: Ledger) -> dict[str, bytes]:
    """The values the echo handler got, by task id."""
    raw = ledger.client.hgetall(f"{ledger.prefix}:echo")
    return {text(k): base64.b64decode(json.loads(v)["value"]) for k, v in raw.items()}


@pytest.fixture
def echo_ledger(ledger: Ledger) -> Iterator[Ledger]:
    yield ledger
    ledger.client.delete(f"{ledger.prefix}:echo")


@pytest.mark.parametrize("codec", list(CODECS))
def test_every_codec_from_librdkafka_and_java_is_handled(
    codec: str,
    make_topic: MakeTopic,
    admin: KafkaAdminClient,
    start_bridge: StartBridge,
    echo_ledger: Ledger,
) -> None:
    ledger = echo_ledger
    c_topic = make_topic()
    java_topic = make_topic(configs={"compression.type": TOPIC_CODECS.get(codec, codec)})
    bridge = start_bridge([
        {"topic": t.name, "task": "tests.echo", "value_format": "bytes"}
        for t in (c_topic, java_topic)
    ])  # fmt: skip
    small = values(SMALL)
    big = values(BIG_UNCOMPRESSED if codec == "none" else BIG, size=20_000)
    librdkafka_batches(c_topic, ledger, codec, [small, big])
    # Sent uncompressed; the broker compresses each batch as Java's producer does.
    java = KafkaProducer(bootstrap_servers=BOOTSTRAP, linger_ms=50, max_request_size=8_000_000)
    for value in small + big:
        java.send(java_topic.name, value=value, headers=[("ledger", ledger.prefix.encode())])
    java.flush()
    java.close()
    assert_handled_byte_exact(bridge, ledger, {t.name: small + big for t in (c_topic, java_topic)})
    for topic in (c_topic, java_topic):
        assert_compressed_with(admin, topic, CODECS[codec])
        wait_all_committed(admin, bridge.group_id, topic)
        assert sum(end_offsets(topic.dlt(bridge.group_id)).values()) == 0, "dead letters"
    assert_bridge_alive(bridge)


def assert_handled_byte_exact(
    bridge: BridgeProcess, ledger: Ledger, sent: dict[str, list[bytes]]
) -> None:
    expected = {
        f"{bridge.group_id}:{topic}:0:{offset}": value
        for topic, values in sent.items()
        for offset, value in enumerate(values)
    }
    wait_for(lambda: echoed(ledger).keys() >= expected.keys() or bridge.proc.poll() is not None,
             timeout_s=120, what=f"{len(expected)} records handled")  # fmt: skip
    assert_bridge_alive(bridge)
    assert echoed(ledger) == expected


def assert_compressed_with(admin: KafkaAdminClient, topic: Topic, codec: int) -> None:
    """Every batch of the topic's log carries ``codec`` (where the log can be read here)."""
    path = segment(admin, topic)
    if path is not None:
        log = path.read_bytes()
        assert {codec_of(log, at) for at, _, _ in spans(log)} == {codec}


# -- batches the bridge cannot decode ---------------------------------------------------------


def test_a_batch_whose_codec_library_is_missing_is_dead_lettered(
    make_topic: MakeTopic,
    admin: KafkaAdminClient,
    start_bridge: StartBridge,
    ledger: Ledger,
    tmp_path: Path,
) -> None:
    topic = make_topic()
    librdkafka_batches(topic, ledger, "gzip", [values(5)])
    librdkafka_batches(topic, ledger, "zstd", [values(10)])  # offsets 5..14
    librdkafka_batches(topic, ledger, "gzip", [values(5)])
    blocked = tmp_path / "blocked" / "zstandard"
    blocked.mkdir(parents=True)
    (blocked / "__init__.py").write_text("raise ImportError('zstandard blocked by the test')\n")
    bridge = start_bridge(
        [{"topic": topic.name, "task": "tests.flaky"}],
        kafka={"max_poll_records": 4},  # the bad batch takes three rounds
        env={"PYTHONPATH": str(blocked.parent)},
    )
    assert_dead_lettered_around(bridge, admin, ledger, topic, bad=range(5, 15), end=20)
    assert b"Libraries for zstd compression codec not found" in dead_letters(bridge, topic)[0][1]
    assert "no zstd library (pip install zstandard)" in bridge.log()


@pytest.mark.parametrize("how", DAMAGES)
def test_a_batch_damaged_in_the_log_is_dead_lettered(
    how: str,
    make_topic: MakeTopic,
    admin: KafkaAdminClient,
    start_bridge: StartBridge,
    ledger: Ledger,
) -> None:
    topic = make_topic()
    for _ in range(3):
        librdkafka_batches(topic, ledger, "zstd", [values(10)])
    path = segment(admin, topic)
    if path is None:
        pytest.skip("the broker's log is not on this machine (Kafka in a container)")
    with path.open("r+b") as log:
        data = bytearray(log.read())
        [_, (at, base, _), _] = spans(data)
        assert base == 10
        damage(data, at, how)  # what the broker reads from now on: it checks nothing
        log.seek(0)
        log.write(data)
    bridge = start_bridge([{"topic": topic.name, "task": "tests.flaky"}])
    assert_dead_lettered_around(bridge, admin, ledger, topic, bad=range(10, 20), end=30)


def assert_dead_lettered_around(
    bridge: BridgeProcess,
    admin: KafkaAdminClient,
    ledger: Ledger,
    topic: Topic,
    *,
    bad: range,
    end: int,
) -> None:
    """The ledger: the records of ``bad`` dead-lettered (reason ``undecodable``, their
    coordinates), every other record up to ``end`` handled, all committed, the bridge on."""
    handled = {f"{bridge.group_id}:{topic.name}:0:{o}" for o in range(end) if o not in bad}
    wait_for(lambda: ledger.done() >= handled or bridge.proc.poll() is not None, timeout_s=90,
             what=f"{len(handled)} records handled")  # fmt: skip
    assert_bridge_alive(bridge)
    assert ledger.done() == handled
    dead = dead_letters(bridge, topic, len(bad))
    assert [offset for offset, _ in dead] == list(bad)
    wait_all_committed(admin, bridge.group_id, topic)
    assert_bridge_alive(bridge)


def dead_letters(bridge: BridgeProcess, topic: Topic, count: int = 1) -> list[tuple[int, bytes]]:
    """``(original offset, exception message)`` of the first ``count`` dead letters, each
    checked: reason ``undecodable``, nothing of the record but where it is."""
    found = []
    for dead in read_all(topic.dlt(bridge.group_id), count)[:count]:
        headers = dict(dead.headers)
        assert headers["bridge-reason"] == b"undecodable"
        assert headers["kafka_dlt-exception-fqcn"] == b"bridge.errors.UndecodableBatchError"
        assert struct.unpack(">i", headers["kafka_dlt-original-partition"]) == (0,)
        assert (dead.key, dead.value) == (None, b"")
        found.append((original_offset(dead), headers["kafka_dlt-exception-message"]))
    return sorted(found)
