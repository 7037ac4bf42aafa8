"""The spool's on-disk frame format, without I/O (:mod:`receiver.spool` writes and reads
the files).

A frame is ``<u32 size><u32 crc32><f64 spooled_at><u16 topic len><u32 key len>``
followed by topic, key and value bytes; the CRC covers everything after itself, so a
torn or corrupt frame, and everything after it, is never read back.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass

__all__ = ["HEADER", "Entry", "Position", "encode", "frames"]

HEADER = struct.Struct("<IIdHI")


@dataclass(frozen=True, slots=True)
class Position:
    """A place in the spool: segment number and byte offset in it."""

    segment: int
    offset: int


@dataclass(frozen=True, slots=True)
class Entry:
    """One spooled record, its size on disk, and the position just after it."""

    topic: str
    key: bytes
    value: bytes
    spooled_at: float
    size: int
    end: Position


def encode(topic: str, key: bytes, value: bytes, spooled_at: float) -> bytes:
    """One frame."""
    topic_bytes = topic.encode()
    body = struct.pack("<dHI", spooled_at, len(topic_bytes), len(key)) + topic_bytes + key + value
    return (
        struct.pack("<II", HEADER.size + len(topic_bytes) + len(key) + len(value), zlib.crc32(body))
        + body
    )


def frames(data: bytes, start: int) -> Iterator[tuple[int, str, bytes, bytes, float]]:
    """Valid frames from ``start``: (end offset, topic, key, value, spooled_at); stops at a torn one."""
    offset = start
    while offset + HEADER.size <= len(data):
        size, crc, spooled_at, topic_len, key_len = HEADER.unpack_from(data, offset)
        end = offset + size
        if size < HEADER.size or end > len(data) or zlib.crc32(data[offset + 8 : end]) != crc:
            return
        head = offset + HEADER.size
        topic = data[head : head + topic_len].decode()
        key = data[head + topic_len : head + topic_len + key_len]
        value = data[head + topic_len + key_len : end]
        yield end, topic, key, value, spooled_at
        offset = end
