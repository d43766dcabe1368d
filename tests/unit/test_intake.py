"""What one poll becomes (bridge/consumer/intake.py): the records a probing flood breaker lets
through, each record's task message, undecodable records set aside."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import redis
from kafka import TopicPartition

from bridge import keys
from bridge.backends.redis.enqueue import Message
from bridge.backends.redis.ordering import KeyQueues
from bridge.breaker import Outcomes
from bridge.consumer.flood import Breakers
from bridge.consumer.intake import Intake
from bridge.errors import UndecodableRecordError
from bridge.offsets import Partition
from bridge.record import Record, TimestampType
from bridge.routing import Router
from bridge.settings import BridgeSettings
from tests.unit.fakes import FakeConsumer, FakeDispatcher

A0, B0 = Partition("a", 0), Partition("b", 0)
NOWHERE = redis.Redis.from_url("redis://127.0.0.1:9/0")  # names keys only: never connects


class Flood:
    """Outcome counts that say every record of ``a`` was dead-lettered."""

    def read(self, since_s: Mapping[str, float], keep_s: float) -> dict[str, Outcomes]:
        return {t: Outcomes(dead_lettered=5) if t == "a" else Outcomes() for t in since_s}

    def resumes(self) -> dict[str, float]:
        return {}


def settings(**breaker: Any) -> BridgeSettings:
    return BridgeSettings.model_validate(
        {
            "kafka": {"bootstrap_servers": "127.0.0.1:9", "group_id": "g"},
            "celery": {"broker_url": "redis://127.0.0.1:9/0"},
            "routes": [{"topic": "a", "task": "t"},
                       {"topic": "b", "task": "t", "ordered": True, "value_format": "json"}],
            "breaker": breaker,
        }
    )  # fmt: skip


def polled(counts: Mapping[Partition, int]) -> dict[Partition, list[Any]]:
    consumer = FakeConsumer({TopicPartition(*tp): n for tp, n in counts.items()})
    return {tp: consumer.logs[TopicPartition(*tp)] for tp in counts}


def intake_of(
    conf: BridgeSettings, breakers: Breakers, seeks: list[tuple[Partition, int]]
) -> Intake:
    return Intake(Router.from_settings(conf), FakeDispatcher(conf), KeyQueues(NOWHERE, "g"),
                  breakers, lambda tp, offset: seeks.append((tp, offset)))  # fmt: skip


def test_a_probe_takes_only_so_many_records_and_rewinds_to_the_first_it_did_not() -> None:
    conf = settings(dead_letter_ratio=0.5, min_records=2, cool_down_s=1, probe_records=3,
                    check_interval_ms=10)  # fmt: skip
    breakers = Breakers(Flood(), ["a", "b"], conf.breaker)  # type: ignore[arg-type]
    breakers.check(100.0)  # open
    breakers.check(101.0)  # half-open: a probe of 3
    seeks: list[tuple[Partition, int]] = []
    intake = intake_of(conf, breakers, seeks)
    batch = intake.batch(polled({A0: 2, B0: 4}), generation=7, topic_ids={"a": None})
    assert ({tp: len(r) for tp, r in batch.records.items()}, seeks) == ({A0: 2, B0: 4}, [])
    assert (batch.assignment, batch.topic_ids) == (7, {"a": None})
    batch = intake.batch(polled({A0: 5}), generation=7, topic_ids=None)
    assert [r.offset for r in batch.records[A0]] == [0]  # 2 + 1 = the probe's 3
    assert seeks == [(A0, 1)]
    assert intake.batch(polled({A0: 5}), generation=7, topic_ids=None).records == {}
    assert seeks[-1] == (A0, 0)
    breakers.check(105.0)  # the probe failed: open; half-open again a second later
    breakers.check(106.0)
    batch = intake.batch(polled({A0: 3}), generation=8, topic_ids=None)
    assert (len(batch.records[A0]), seeks[2:]) == (3, [])  # just the probe's 3: no rewind


def test_each_record_gets_its_task_message_and_an_undecodable_one_is_set_aside() -> None:
    conf = settings()
    intake = intake_of(conf, Breakers(Flood(), [], conf.breaker), [])  # type: ignore[arg-type]
    records = polled({A0: 2, B0: 4})
    bad = records[B0][1]._replace(value=b"{not json", headers=None, timestamp_type=1)
    records[B0][1] = bad
    records[B0][0] = records[B0][0]._replace(key=None)  # its partition's FIFO
    records[B0][2] = records[B0][2]._replace(value=b"[", headers=[("h", b"v")])
    batch = intake.batch(records, generation=1, topic_ids=None)
    intake.build(batch)
    assert [(m.topic, m.partition, m.offset, m.payload) for m in batch.messages] == [
        ("a", 0, 0, b"task"), ("a", 0, 1, b"task"), ("b", 0, 0, b"task"), ("b", 0, 1, None),
        ("b", 0, 2, None), ("b", 0, 3, b"task"),
    ]  # fmt: skip
    assert batch.messages[3] == Message("b", 0, 1, None, None)
    ordered = batch.messages[2].ordered
    assert ordered is not None
    assert (ordered.fifo, ordered.max_per_key, ordered.max_per_partition) == (
        keys.ordered_queue("g", "b", None, 0), 10_000, 100_000
    )  # fmt: skip
    keyed = batch.messages[5].ordered
    assert keyed is not None
    assert keyed.fifo == keys.ordered_queue("g", "b", b"k", 0) != ordered.fifo
    assert batch.messages[0].ordered is None
    undecodable, with_headers = batch.undecodable
    assert with_headers.record.headers == (("h", b"v"),)
    assert undecodable.tp == B0
    assert undecodable.record == Record(
        "b", 0, 1, bad.timestamp, b"k", b"{not json", (), "json",
        timestamp_type=TimestampType.LOG_APPEND_TIME,
    )  # fmt: skip
    assert undecodable.record.timestamp_type is TimestampType.LOG_APPEND_TIME
    assert isinstance(undecodable.error, UndecodableRecordError)
