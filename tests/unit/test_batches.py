"""Record batches kafka-python cannot decode: which partition and batch, and what to skip."""

from __future__ import annotations

from typing import Any, NamedTuple

import pytest
from kafka import TopicPartition
from kafka.consumer.fetcher import Fetcher
from kafka.errors import CorruptRecordError, UnsupportedCodecError
from kafka.record import MemoryRecords

from bridge.consumer import batches
from bridge.consumer.batches import BadBatch, find, offsets_to_skip
from tests.batch_bytes import DAMAGES, batch, damage
from tests.conftest import bridge_messages

TP = TopicPartition("orders", 3)
ZSTD = 4


def fetched(log: bytes | bytearray, fetch_offset: int = 0) -> Any:
    """kafka-python's parsed records of one fetch response holding ``log``."""
    return Fetcher.PartitionRecords(fetch_offset, TP, MemoryRecords(bytes(log)))


def three_batches(how: str) -> bytearray:
    """Batches at offsets 0..9, 10..19, 20..29; the middle one damaged ``how``."""
    values = [b'{"n": %d}' % i for i in range(10)]
    middle = batch(values, ZSTD, base_offset=10)
    damage(middle, 0, how)
    return batch(values, ZSTD, base_offset=0) + middle + batch(values, ZSTD, base_offset=20)


def failure(records: Any) -> Exception:
    """What taking ``records`` raises (what ``KafkaConsumer.poll`` raises)."""
    while True:
        try:
            records.take(100)
        except Exception as exc:
            return exc


@pytest.mark.parametrize("how", DAMAGES)
def test_the_damaged_batch_and_its_partition_are_found(how: str) -> None:
    records = fetched(three_batches(how))
    taken = records.take(100)
    assert [r.offset for r in taken] == list(range(10))  # the batch before it comes out
    exc = failure(records)
    expected = {"unknown codec": UnsupportedCodecError, "bad crc": CorruptRecordError}
    assert isinstance(exc, expected.get(how, Exception))
    bad = find(exc)
    assert bad is not None
    assert (bad.tp, bad.base_offset, bad.last_offset) == (TP, 10, 19)
    assert bad.codec == ("codec id 5" if how == "unknown codec" else "zstd")
    assert bad.describe() == f"orders[3]@10..19 ({bad.codec})"


def test_a_spent_partition_is_discarded() -> None:
    records = fetched(three_batches("corrupt data"))
    records.take(100)
    bad = find(failure(records))
    assert bad is not None
    assert records  # kafka-python keeps its spent iterator...
    bad.discard()
    assert not records  # ...until it is drained: then the fetcher fetches the partition again


def test_an_error_not_raised_decoding_a_batch_is_not_a_bad_batch() -> None:
    with pytest.raises(RuntimeError) as raised:
        raise RuntimeError("elsewhere")
    assert find(raised.value) is None


def bad(base: int | None, last: int | None) -> BadBatch:
    return BadBatch(TP, base, last, "zstd", None)


@pytest.mark.parametrize(
    ("position", "base", "last", "limit", "expected"),
    [
        (10, 10, 19, 500, range(10, 20)),  # the whole batch
        (14, 10, 19, 500, range(14, 20)),  # from where the consumer is: the rest of it
        (10, 10, 19, 4, range(10, 14)),  # no more than a poll's worth at once
        (7, 10, 19, 500, range(10, 20)),  # 7..9 hold no record: passed over
        (10, None, None, 500, range(10, 11)),  # no batch header: that offset only
        (25, 10, 19, 500, range(25, 26)),  # a header that does not fit: that offset only
        (10, None, 19, 500, range(10, 11)),  # half a header is no header
        (10, 10, None, 500, range(10, 11)),
    ],
)
def test_offsets_to_skip(
    position: int, base: int | None, last: int | None, limit: int, expected: range
) -> None:
    assert offsets_to_skip(position, bad(base, last), limit) == expected


def test_a_missing_codec_library_is_named(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    assert batches.missing_codecs() == []  # every codec Kafka defines, out of the box
    monkeypatch.setattr("kafka.codec.has_zstd", lambda: False)
    batches.check_codecs()
    assert bridge_messages(caplog) == [
        "no zstd library (pip install zstandard): record batches compressed with zstd will be "
        "dead-lettered as undecodable"
    ]
    monkeypatch.setattr("kafka.codec.has_snappy", lambda: False)
    monkeypatch.setattr("kafka.codec.has_lz4", lambda: False)
    assert batches.missing_codecs() == ["snappy", "lz4", "zstd"]


def test_a_batch_is_described_as_far_as_it_is_known() -> None:
    assert BadBatch(TP, None, None, None, None).describe() == "orders[3]"
    assert BadBatch(TP, 10, 19, None, None).describe() == "orders[3]@10..19"
    assert BadBatch(TP, None, None, "lz4", None).describe() == "orders[3] (lz4)"


class Spent:
    topic_partition = TP

    def drain(self) -> None:
        pass


class Header(NamedTuple):
    base_offset: int | None
    last_offset: int | None
    compression_type: int | None = None


@pytest.mark.parametrize(
    ("header", "known"),
    [
        (None, (None, None, None)),  # kafka-python failed before it read a batch
        (Header(10, None), (None, None, None)),  # half a header is no header
        (Header(10, 9), (None, None, None)),  # nor one that ends before it starts
        (Header(10, 10, 3), (10, 10, "lz4")),  # a batch of one record
        (Header(10, 19, 9), (10, 19, "codec id 9")),
    ],
)
def test_what_a_batch_header_tells(header: Header | None, known: tuple[object, ...]) -> None:
    bad = batches._bad_batch(Spent(), header)
    assert (bad.tp, bad.base_offset, bad.last_offset, bad.codec) == (TP, *known)


class Lookalike:
    """Raises in a method named as kafka-python's, but is not its records (no ``drain``)."""

    topic_partition = TP

    def _unpack_records(self) -> None:
        raise ValueError("elsewhere")


def test_a_lookalike_frame_is_not_a_bad_batch() -> None:
    with pytest.raises(ValueError, match="elsewhere") as raised:
        Lookalike()._unpack_records()
    assert find(raised.value) is None
