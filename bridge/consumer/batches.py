"""Record batches Kafka's client cannot decode, and the compression codecs it can.

kafka-python decodes a fetched record batch only when ``poll`` hands out its records. A batch
it cannot decode makes ``poll`` raise, and the exception does not say where:

- a codec it has no library for, or a codec id Kafka does not define: ``UnsupportedCodecError``;
- compressed data that does not decompress: the codec library's own error (``ZstdError``,
  ``snappy.UncompressError``, lz4's ``RuntimeError``, gzip's ``OSError`` or ``EOFError``);
- a batch whose CRC does not match, or a record it cannot parse: ``CorruptRecordError``.

Its traceback does: the frame of the fetcher's record iterator (``_unpack_records``) holds the
partition's parsed records and the batch being decoded, whose header (base offset, last offset
delta, codec) is read without decompressing it. :func:`find` reads them there.

kafka-python 3.0 keeps the partition's spent iterator after such an error, and a later poll at
the same position never returns (it takes nothing from it, forever): :meth:`BadBatch.discard`
drains it, so that the next fetch of the partition starts afresh.

A broker validates every batch a producer sends, so such a batch is rare: a consumer without
a codec's library, or a log damaged on disk. The bridge dead-letters what it can say of each
of its offsets (:func:`offsets_to_skip`) and goes on after it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from kafka import codec as kafka_codec

log = logging.getLogger(__name__)

# Kafka's codec ids (the low 3 bits of a batch's attributes) and the library kafka-python
# decodes each with.
CODECS = {0: "none", 1: "gzip", 2: "snappy", 3: "lz4", 4: "zstd"}
_LIBRARIES = {"snappy": "python-snappy", "lz4": "lz4", "zstd": "zstandard"}


@dataclass(frozen=True, slots=True)
class BadBatch:
    """A batch kafka-python could not decode: its partition, and what its header says
    (``None`` where kafka-python did not get that far)."""

    tp: Any  # kafka-python's TopicPartition
    base_offset: int | None
    last_offset: int | None
    codec: str | None
    records: Any  # kafka-python's PartitionRecords of the partition, spent

    def discard(self) -> None:
        """Drop kafka-python's spent records of the partition: its next poll fetches it again
        from the consumer's position (without this, that poll never returns)."""
        self.records.drain()

    def describe(self) -> str:
        """``topic[partition]@base..last (codec)``, as far as it is known."""
        where = f"{self.tp.topic}[{self.tp.partition}]"
        if self.base_offset is not None:
            where += f"@{self.base_offset}..{self.last_offset}"
        return where if self.codec is None else f"{where} ({self.codec})"


def find(exc: BaseException) -> BadBatch | None:
    """The batch whose decoding raised ``exc`` in ``KafkaConsumer.poll``, from the frames of
    its traceback; ``None`` if ``exc`` was not raised decoding a batch (or kafka-python no
    longer looks as 3.0 does)."""
    tb = exc.__traceback__
    while tb is not None:
        frame = tb.tb_frame
        if frame.f_code.co_name == "_unpack_records":
            records = frame.f_locals.get("self")
            if hasattr(records, "topic_partition") and hasattr(records, "drain"):
                return _bad_batch(records, frame.f_locals.get("batch"))
        tb = tb.tb_next
    return None


def _bad_batch(records: Any, batch: Any) -> BadBatch:
    base, last = getattr(batch, "base_offset", None), getattr(batch, "last_offset", None)
    if not (isinstance(base, int) and isinstance(last, int) and base <= last):
        base = last = None  # not a v2 batch header: only the consumer's position is known
    codec_id = getattr(batch, "compression_type", None)
    codec = CODECS.get(codec_id, f"codec id {codec_id}") if isinstance(codec_id, int) else None
    return BadBatch(records.topic_partition, base, last, codec, records)


def offsets_to_skip(position: int, batch: BadBatch, limit: int) -> range:
    """The offsets to dead-letter now, from ``position`` (the consumer's, where decoding
    failed): the rest of the batch, at most ``limit`` of them (the loop polls again in
    between). Offsets before the batch's base hold no record (compacted or transaction
    markers) and are passed over; without a batch header, only ``position``."""
    if batch.base_offset is None or batch.last_offset is None or batch.last_offset < position:
        return range(position, position + 1)
    first = max(position, batch.base_offset)
    return range(first, min(batch.last_offset, first + limit - 1) + 1)


def missing_codecs() -> list[str]:
    """The codecs Kafka defines that kafka-python has no library for in this process."""
    present = {
        "snappy": kafka_codec.has_snappy(),
        "lz4": kafka_codec.has_lz4(),
        "zstd": kafka_codec.has_zstd(),
    }
    return [name for name, ok in present.items() if not ok]


def check_codecs() -> None:
    """Log an error for each codec kafka-python cannot decode here (a broken install: they are
    dependencies of the bridge); its batches will be dead-lettered as undecodable."""
    for name in missing_codecs():
        log.error(
            "no %s library (pip install %s): record batches compressed with %s will be "
            "dead-lettered as undecodable", name, _LIBRARIES[name], name,
        )  # fmt: skip
