"""The durable local spool: events the broker could not take in time, kept on disk.

When the broker is down or slower than the send timeout, the receiver appends the
event here and fsyncs before answering 200. :mod:`receiver.replay` later publishes
the spool in order. Files::

    <spool dir>/000000000001.seg   append-only segments of frames
    <spool dir>/checkpoint         "<segment> <offset>": everything before is published
    <spool dir>/lock               held (flock) by the one process that owns the spool

A frame is ``<u32 size><u32 crc32><f64 spooled_at><u16 topic len><u32 key len>``
followed by topic, key and value bytes. Appends are group-committed: concurrent
requests share one write and one fsync. A crash can leave a torn last frame, which
was never acknowledged; recovery truncates it. A crash during replay only means
some events are published again, and consumers deduplicate them by ``event_id``.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import struct
import time
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from receiver import metrics
from receiver.errors import Unavailable

__all__ = ["Entry", "Position", "Spool", "SpoolLocked"]

logger = logging.getLogger(__name__)

_HEADER = struct.Struct("<IIdHI")
_SEGMENT_BYTES = 16 * 1024 * 1024
_SUFFIX = ".seg"


class SpoolLocked(RuntimeError):
    """Another process owns this spool directory."""


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


def _encode(topic: str, key: bytes, value: bytes, spooled_at: float) -> bytes:
    topic_bytes = topic.encode()
    body = struct.pack("<dHI", spooled_at, len(topic_bytes), len(key)) + topic_bytes + key + value
    return (
        struct.pack(
            "<II", _HEADER.size + len(topic_bytes) + len(key) + len(value), zlib.crc32(body)
        )
        + body
    )


def _frames(data: bytes, start: int) -> Iterator[tuple[int, str, bytes, bytes, float]]:
    """Valid frames from ``start``: (end offset, topic, key, value, spooled_at); stops at a torn one."""
    offset = start
    while offset + _HEADER.size <= len(data):
        size, crc, spooled_at, topic_len, key_len = _HEADER.unpack_from(data, offset)
        end = offset + size
        if size < _HEADER.size or end > len(data) or zlib.crc32(data[offset + 8 : end]) != crc:
            return
        head = offset + _HEADER.size
        topic = data[head : head + topic_len].decode()
        key = data[head + topic_len : head + topic_len + key_len]
        value = data[head + topic_len + key_len : end]
        yield end, topic, key, value, spooled_at
        offset = end


class Spool:
    """A bounded, crash-safe, append-only queue of records on local disk."""

    def __init__(self, directory: Path, *, max_bytes: int) -> None:
        # Every file operation runs on this one thread, so they never interleave.
        self._io = ThreadPoolExecutor(max_workers=1, thread_name_prefix="spool")
        self._cache: tuple[int, bytes] = (0, b"")
        self.directory = directory
        self.max_bytes = max_bytes
        self._lock_file: int | None = None
        self._active: int = 1
        self._active_file: int | None = None
        self._active_size = 0
        self._checkpoint = Position(1, 0)
        self._pending_events = 0
        self._pending_bytes = 0
        self._oldest: float | None = None
        self._queue: list[tuple[bytes, asyncio.Future[None]]] = []
        self._flushing = False

    # -- lifecycle -------------------------------------------------------------------

    def open(self) -> None:
        """Lock the directory, recover from a crash, and count what is pending."""
        self.directory.mkdir(parents=True, exist_ok=True)
        self._lock_file = os.open(self.directory / "lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock_file)
            self._lock_file = None
            raise SpoolLocked(f"spool {self.directory} is used by another process") from None
        self._checkpoint = self._read_checkpoint()
        segments = self._segments()
        for number in segments:
            if number < self._checkpoint.segment:
                (self.directory / self._name(number)).unlink()
        segments = [n for n in segments if n >= self._checkpoint.segment]
        self._active = max(segments, default=self._checkpoint.segment)
        for number in segments:
            data = (self.directory / self._name(number)).read_bytes()
            start = self._checkpoint.offset if number == self._checkpoint.segment else 0
            valid = start
            for end, _topic, _key, _value, spooled_at in _frames(data, start):
                self._pending_events += 1
                self._pending_bytes += end - valid
                self._oldest = spooled_at if self._oldest is None else self._oldest
                valid = end
            if valid < len(data):
                logger.warning(
                    "spool segment %d: truncating a torn tail of %d bytes",
                    number,
                    len(data) - valid,
                )
                os.truncate(self.directory / self._name(number), valid)
        self._open_active()
        self._publish_metrics()
        if self._pending_events:
            logger.info(
                "spool recovered events=%d bytes=%d dir=%s",
                self._pending_events,
                self._pending_bytes,
                self.directory,
            )

    def close(self) -> None:
        """Close files and release the directory lock."""
        self._io.shutdown(wait=True)
        if self._active_file is not None:
            os.close(self._active_file)
            self._active_file = None
        if self._lock_file is not None:
            os.close(self._lock_file)
            self._lock_file = None

    # -- appending -------------------------------------------------------------------

    @property
    def pending(self) -> int:
        """Events appended and not yet published."""
        return self._pending_events

    async def append(self, topic: str, key: bytes, value: bytes) -> None:
        """Append one record and return once it is on disk (fsynced); Unavailable when full."""
        frame = _encode(topic, key, value, time.time())
        queued = sum(len(f) for f, _ in self._queue)
        if self._pending_bytes + queued + len(frame) > self.max_bytes:
            metrics.SPOOL_FULL.inc()
            raise Unavailable(
                "the event broker is unreachable and the local spool is full; retry later"
            )
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.append((frame, future))
        if not self._flushing:
            self._flushing = True
            asyncio.get_running_loop().call_soon(lambda: asyncio.ensure_future(self._flush()))
        await future

    async def _flush(self) -> None:
        try:
            while self._queue:
                batch, self._queue = self._queue, []
                frames = [frame for frame, _ in batch]
                try:
                    await asyncio.get_running_loop().run_in_executor(self._io, self._write, frames)
                except OSError:
                    logger.exception("spool write failed")
                    for _, future in batch:
                        future.set_exception(
                            Unavailable("the local spool cannot be written; retry later")
                        )
                    continue
                now = time.time()
                self._pending_events += len(frames)
                self._pending_bytes += sum(map(len, frames))
                if self._oldest is None:
                    self._oldest = now
                self._publish_metrics()
                for _, future in batch:
                    future.set_result(None)
        finally:
            self._flushing = False

    def _write(self, frames: list[bytes]) -> None:
        assert self._active_file is not None
        if self._active_size >= _SEGMENT_BYTES:
            self._roll()
        data = b"".join(frames)
        os.write(self._active_file, data)
        os.fsync(self._active_file)
        self._active_size += len(data)

    # -- replaying -------------------------------------------------------------------

    async def next_batch(self, limit: int) -> list[Entry]:
        """Up to ``limit`` records after the checkpoint, in order."""
        return await asyncio.get_running_loop().run_in_executor(self._io, self._read, limit)

    async def commit(self, entries: list[Entry]) -> None:
        """Everything up to the last of ``entries`` is published: move the checkpoint."""
        await asyncio.get_running_loop().run_in_executor(self._io, self._acknowledge, entries)

    def _segment_bytes(self, number: int) -> bytes:
        cached_number, cached = self._cache
        path = self.directory / self._name(number)
        size = path.stat().st_size if path.exists() else 0
        if cached_number != number or len(cached) != size:
            cached = path.read_bytes() if size else b""
            self._cache = (number, cached)
        return cached

    def _read(self, limit: int) -> list[Entry]:
        entries: list[Entry] = []
        position = self._checkpoint
        while len(entries) < limit and position.segment <= self._active:
            data = self._segment_bytes(position.segment)
            start = position.offset
            for end, topic, key, value, spooled_at in _frames(data, position.offset):
                entries.append(
                    Entry(
                        topic, key, value, spooled_at, end - start, Position(position.segment, end)
                    )
                )
                start = end
                if len(entries) >= limit:
                    break
            if len(entries) < limit and position.segment < self._active:
                position = Position(position.segment + 1, 0)
            else:
                break
        return entries

    def _acknowledge(self, entries: list[Entry]) -> None:
        if not entries:
            return
        end = entries[-1].end
        if (
            end.segment == self._active
            and end.offset >= self._active_size
            and self._active_size >= _SEGMENT_BYTES // 4
        ):
            self._roll()  # let the finished segment be deleted
        self._write_checkpoint(end)
        for number in range(self._checkpoint.segment, end.segment):
            with contextlib.suppress(FileNotFoundError):
                (self.directory / self._name(number)).unlink()
        self._checkpoint = end
        self._pending_events -= len(entries)
        self._pending_bytes = max(0, self._pending_bytes - sum(e.size for e in entries))
        following = self._read(1)
        self._oldest = following[0].spooled_at if following else None
        self._publish_metrics()

    # -- files -----------------------------------------------------------------------

    @staticmethod
    def _name(number: int) -> str:
        return f"{number:012d}{_SUFFIX}"

    def _segments(self) -> list[int]:
        return sorted(int(p.stem) for p in self.directory.glob(f"*{_SUFFIX}") if p.stem.isdigit())

    def _open_active(self) -> None:
        path = self.directory / self._name(self._active)
        self._active_file = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self._active_size = os.fstat(self._active_file).st_size
        self._fsync_directory()

    def _roll(self) -> None:
        if self._active_file is not None:
            os.close(self._active_file)
        self._active += 1
        self._open_active()

    def _read_checkpoint(self) -> Position:
        try:
            segment, offset = (self.directory / "checkpoint").read_text().split()
            return Position(int(segment), int(offset))
        except (FileNotFoundError, ValueError):
            return Position(min(self._segments(), default=1), 0)

    def _write_checkpoint(self, position: Position) -> None:
        tmp = self.directory / "checkpoint.tmp"
        with tmp.open("w") as handle:
            handle.write(f"{position.segment} {position.offset}\n")
            handle.flush()
            os.fsync(handle.fileno())
        tmp.replace(self.directory / "checkpoint")
        self._fsync_directory()

    def _fsync_directory(self) -> None:
        fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def _publish_metrics(self) -> None:
        metrics.SPOOL_EVENTS.set(self._pending_events)
        metrics.SPOOL_BYTES.set(self._pending_bytes)
        metrics.SPOOL_OLDEST.set(self._oldest or 0)
