"""The durable local spool: events the broker could not take in time, kept on disk.

When the broker is down or slower than the send timeout, the receiver appends the
event here and fsyncs before answering 200. :mod:`receiver.replay` later publishes
the spool in order. Files::

    <spool dir>/000000000001.seg   append-only segments of frames
    <spool dir>/checkpoint         "<segment> <offset>": everything before is published
    <spool dir>/lock               held (flock) by the one process that owns the spool

Frames are :mod:`receiver.spool_frames`. Appends are group-committed: concurrent
requests share one write and one fsync, and all of them are acknowledged, or none.
A group is refused (503) when the filesystem would keep less than a reserve free
(:func:`_reserve`), and when a write fails or is cut short (disk full, I/O error,
file size limit); the segment is then cut back to its last good size, or, if even
that fails, the next group starts a new segment. So no acknowledged frame ever
follows a torn one. A crash can leave a torn last frame, which was never
acknowledged; recovery truncates it. A crash during replay only means some events
are published again, and consumers deduplicate them by ``event_id``.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from receiver import metrics
from receiver.errors import Unavailable
from receiver.spool_frames import Entry, Position, encode, frames
from smsrx.batching import Batcher
from smsrx.errors import EXIT_CANNOT_START, SmsrxError

__all__ = ["Entry", "Position", "Spool", "SpoolLocked"]

logger = logging.getLogger(__name__)

_SEGMENT_BYTES = 16 * 1024 * 1024
_SUFFIX = ".seg"
_RESERVE_MIN = 64 * 1024
_RESERVE_MAX = 64 * 1024 * 1024


def _reserve(filesystem_bytes: int) -> int:
    """Bytes of the spool's filesystem never filled: room for the checkpoint, a new
    segment and whoever else writes there. 1 % of it, between 64 KiB and 64 MiB."""
    return min(_RESERVE_MAX, max(_RESERVE_MIN, filesystem_bytes // 100))


_OPEN: set[Spool] = set()
"""The spools this process has open, for the gauges."""


class SpoolLocked(SmsrxError, RuntimeError):
    """Another process owns this spool directory."""

    exit_code = EXIT_CANNOT_START


class _NoRoom(OSError):
    """The spool's filesystem lacks room for a group beyond its reserve; nothing was written."""


def _refusal(count: int, exc: Exception) -> Unavailable:
    """The 503 for every append of a group that was not written, logged once with why."""
    if isinstance(exc, _NoRoom):
        metrics.SPOOL_FULL.inc(count)
        logger.warning("spool full, %d events refused: %s", count, exc)
        why = "the event broker is unreachable and the local spool's disk is full"
    else:
        metrics.SPOOL_WRITE_FAILURES.inc()
        logger.error(
            "spool write failed, %d events refused: %r",
            count,
            exc,
            exc_info=None if isinstance(exc, OSError) else exc,  # a bug: keep its traceback
        )
        why = "the local spool cannot be written"
    return Unavailable(f"{why}; retry later")


def _write_all(fd: int, data: memoryview) -> None:
    """Write every byte; a short write is continued, so the cause of a stop is raised."""
    written = 0
    while written < len(data):
        count = os.write(fd, data[written:])
        if count <= 0:
            raise OSError(errno.EIO, "the spool segment took no bytes")
        written += count


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
        self._roll_due = False
        self._checkpoint = Position(1, 0)
        self._pending_events = 0
        self._pending_bytes = 0
        self._oldest: float | None = None
        self._queued_bytes = 0
        self._appends: Batcher[bytes, None] = Batcher(self._write_group, name="spool-append")

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
            for end, _topic, _key, _value, spooled_at in frames(data, start):
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
        _OPEN.add(self)
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
        _OPEN.discard(self)
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
        frame = encode(topic, key, value, time.time())
        if self._pending_bytes + self._queued_bytes + len(frame) > self.max_bytes:
            metrics.SPOOL_FULL.inc()
            raise Unavailable(
                "the event broker is unreachable and the local spool is full; retry later"
            )
        self._queued_bytes += len(frame)
        await self._appends.submit(frame)

    async def _write_group(self, frames: list[bytes]) -> list[None]:
        """Write and fsync the frames appended together, on the spool's I/O thread."""
        size = sum(map(len, frames))
        try:
            await asyncio.get_running_loop().run_in_executor(self._io, self._write, frames)
        except Exception as exc:  # noqa: BLE001 - logged; every caller gets its 503
            raise _refusal(len(frames), exc) from None
        finally:
            self._queued_bytes -= size
        self._pending_events += len(frames)
        self._pending_bytes += size
        if self._oldest is None:
            self._oldest = time.time()
        self._publish_metrics()
        return [None] * len(frames)

    def _write(self, frames: list[bytes]) -> None:
        """Write and fsync one group whole, or raise OSError having written none of it."""
        if self._roll_due or self._active_size >= _SEGMENT_BYTES:
            self._roll()
        fd = self._active_file
        assert fd is not None
        data = memoryview(b"".join(frames))
        self._check_room(len(data))
        good = self._active_size
        try:
            _write_all(fd, data)
            os.fsync(fd)
        except OSError:
            self._cut_back(fd, good)
            raise
        self._active_size = good + len(data)

    def _check_room(self, size: int) -> None:
        stat = os.statvfs(self.directory)
        free = stat.f_bavail * stat.f_frsize
        reserve = _reserve(stat.f_blocks * stat.f_frsize)
        if free - size < reserve:
            raise _NoRoom(
                errno.ENOSPC, f"{free} bytes free, {size} to write, {reserve} kept in reserve"
            )

    def _cut_back(self, fd: int, good: int) -> None:
        """Remove what a failed write left after the last acknowledged frame."""
        try:
            os.ftruncate(fd, good)
            os.fsync(fd)
        except OSError as exc:
            failure = exc
        else:
            return
        # Never append after a torn frame: recovery would truncate what follows it.
        self._roll_due = True
        logger.error(
            "spool segment %d: cannot cut a failed write back to %d bytes (%r); "
            "the next write starts a new segment",
            self._active,
            good,
            failure,
        )

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
            for end, topic, key, value, spooled_at in frames(data, position.offset):
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
        # Due until the new segment is open and its name durable: if any step fails, the
        # next write rolls again (an empty segment left behind is harmless).
        self._roll_due = True
        number = self._active + 1
        path = self.directory / self._name(number)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        previous, self._active_file, self._active = self._active_file, fd, number
        self._active_size = os.fstat(fd).st_size
        if previous is not None:
            os.close(previous)
        self._fsync_directory()
        self._roll_due = False

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
        # A process may hold several spools (its own, and those adopted from a larger
        # --workers N): the gauges show them all together.
        spools = _OPEN | {self}
        metrics.SPOOL_EVENTS.set(sum(spool._pending_events for spool in spools))
        metrics.SPOOL_BYTES.set(sum(spool._pending_bytes for spool in spools))
        oldest = [spool._oldest for spool in spools if spool._oldest is not None]
        metrics.SPOOL_OLDEST.set(min(oldest, default=0))
