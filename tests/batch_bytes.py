"""Kafka record batches (format v2) as bytes, and the damage a log can carry: a codec id Kafka
does not define, compressed data that does not decompress, a CRC that does not match. A broker
refuses such a batch from a producer, so the tests write it into the log (or hand it to
kafka-python's fetcher) themselves."""

from __future__ import annotations

import struct

from kafka.record import MemoryRecordsBuilder
from kafka.record.util import calc_crc32c

# Byte positions in a v2 batch header.
_LENGTH = 8  # int32: bytes after this field
_CRC = 17  # uint32: CRC-32C of everything from the attributes on
_ATTRIBUTES = 21  # int16: codec in the low 3 bits
_RECORDS = 61  # the (compressed) records
DAMAGES = ("unknown codec", "corrupt data", "bad crc")


def batch(values: list[bytes], codec: int, base_offset: int = 0) -> bytearray:
    """One v2 batch of ``values`` compressed with ``codec`` (Kafka's id), as kafka-python's
    producer writes it."""
    builder = MemoryRecordsBuilder(magic=2, compression_type=codec, batch_size=1 << 24)
    for value in values:
        builder.append(timestamp=1_700_000_000_000, key=None, value=value)
    builder.close()
    data = bytearray(builder.buffer())
    struct.pack_into(">q", data, 0, base_offset)  # outside the CRC, as a broker assigns it
    return data


def spans(log: bytes | bytearray) -> list[tuple[int, int, int]]:
    """``(position, base offset, size)`` of each batch in ``log`` (a segment, or a fetch)."""
    found, at = [], 0
    while at + 12 <= len(log):
        base, length = struct.unpack_from(">qi", log, at)
        found.append((at, base, 12 + length))
        at += 12 + length
    return found


def codec_of(log: bytes | bytearray, at: int) -> int:
    """The codec id of the batch at ``at``."""
    return int(struct.unpack_from(">h", log, at + _ATTRIBUTES)[0]) & 7


def damage(log: bytearray, at: int, how: str) -> None:
    """Damage the batch at ``at`` in place, ``how`` one of :data:`DAMAGES`; its CRC still
    matches unless ``how`` is ``"bad crc"``."""
    end = at + 12 + struct.unpack_from(">i", log, at + _LENGTH)[0]
    if how == "unknown codec":
        attributes = struct.unpack_from(">h", log, at + _ATTRIBUTES)[0]
        struct.pack_into(">h", log, at + _ATTRIBUTES, (attributes & ~7) | 5)
    elif how == "corrupt data":
        for i in range(at + _RECORDS + 8, end):  # past the codec's magic number
            log[i] ^= 0x5A
    if how == "bad crc":
        log[end - 1] ^= 1
    else:
        struct.pack_into(">I", log, at + _CRC, calc_crc32c(bytes(log[at + _ATTRIBUTES : end])))
