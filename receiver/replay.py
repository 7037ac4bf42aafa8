"""Replaying the spool into Kafka once the broker is back, in order, at a bounded rate.

A batch is removed from the spool only after the broker acknowledged all of it. If
the process dies in between, the batch is published again on restart; consumers
deduplicate on ``event_id``.

Replay never stops silently:

- A record the broker refuses for good (:class:`~receiver.errors.Refused`: too large,
  an invalid topic name) is published to the dead-letter topic with the reason
  (:mod:`smsrx.deadletter`). If the broker refuses that too, the same dead-letter
  document is appended to ``quarantine.jsonl`` in the spool directory, one fsynced
  line per record. Either way replay goes on past it.
- Any other failure (a checkpoint that cannot be written, a bug) is logged and the
  step retried after a pause that doubles up to 30 s. Meanwhile the replayer is
  *stalled*: :attr:`Replayer.stalled` says why, ``/readyz`` answers 503 and
  ``smsrx_receiver_spool_replay_stalled`` counts it. A published batch whose commit
  failed is only committed again, not published again.
- A broker that does not answer is not a stall (the producer's readiness shows it):
  replay pauses with the same backoff and resumes by itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import time
from pathlib import Path

import orjson

from receiver import metrics
from receiver.dedup import Dedup
from receiver.errors import Refused, Unavailable
from receiver.publisher import Publisher
from receiver.spool import Spool
from receiver.spool_frames import Entry
from smsrx.deadletter import DeadLetter, encode_dead_letter
from smsrx.privacy import Masked

__all__ = ["QUARANTINE", "Replayer"]

logger = logging.getLogger(__name__)

_BATCH = 500
_IDLE = 0.5
"""Seconds between looks at an empty spool or an unready producer."""
_BACKOFF_FIRST = 1.0
_BACKOFF_MAX = 30.0
QUARANTINE = "quarantine.jsonl"
"""File in the spool directory for records that neither their topic nor the dead-letter
topic would take: one :func:`~smsrx.deadletter.encode_dead_letter` document per line."""


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def _append_line(path: Path, line: bytes) -> None:
    """Append ``line`` and a newline to ``path``, fsynced; on failure leave no torn line."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        size = os.fstat(fd).st_size
        data = memoryview(line + b"\n")
        try:
            while data:
                data = data[os.write(fd, data) :]
            os.fsync(fd)
        except OSError:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, size)
            raise
    finally:
        os.close(fd)
    if size == 0:  # a new file: its name must be durable too
        directory = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)


class Replayer:
    """Background task draining the spool while the producer is ready."""

    def __init__(self, spool: Spool, publisher: Publisher, dedup: Dedup, *, rate: float) -> None:
        self.spool = spool
        self.publisher = publisher
        self.dedup = dedup
        self.rate = rate
        self.stalled: str | None = None
        """The last error, while one other than the broker being away stops replay."""
        self._task: asyncio.Task[None] | None = None
        self._backoff = _BACKOFF_FIRST
        self._replaying = False
        self._published: list[Entry] = []
        """A batch the broker acknowledged whose commit has not succeeded yet."""

    def start(self) -> None:
        """Start replaying in the background."""
        self._task = asyncio.create_task(self._run(), name="spool-replay")

    async def close(self) -> None:
        """Stop replaying; what is not committed stays in the spool."""
        if self._task is not None:
            self._task.cancel()
            [outcome] = await asyncio.gather(self._task, return_exceptions=True)
            if isinstance(outcome, Exception):  # _run catches everything: a bug
                logger.error("spool replay had ended: %s", _describe(outcome))
            self._task = None
        if self.stalled is not None:  # the gauge counts running replayers only
            metrics.SPOOL_REPLAY_STALLED.dec()
            self.stalled = None

    async def _run(self) -> None:
        while True:
            try:
                pause = await self._step()
            except Unavailable as exc:
                pause = self._pause()
                logger.warning("spool replay paused: %s; retrying in %.0fs", exc.detail, pause)
            except Exception as exc:
                pause = self._pause()
                self._set_stalled(_describe(exc))
                logger.exception(
                    "spool replay stalled, %d events waiting; retrying in %.0fs",
                    self.spool.pending,
                    pause,
                )
            await asyncio.sleep(pause)

    def _pause(self) -> float:
        pause, self._backoff = self._backoff, min(self._backoff * 2, _BACKOFF_MAX)
        return pause

    def _set_stalled(self, reason: str | None) -> None:
        if reason is not None and self.stalled is None:
            metrics.SPOOL_REPLAY_STALLED.inc()
        elif reason is None and self.stalled is not None:
            metrics.SPOOL_REPLAY_STALLED.dec()
            logger.info("spool replay resumed after: %s", self.stalled)
        self.stalled = reason

    async def _step(self) -> float:
        """Publish and commit one batch; return the seconds to wait before the next step."""
        started = time.monotonic()
        if not self._published:
            entries = await self._next_batch()
            if not entries:
                return _IDLE
            await self._publish(entries)
            self._published = entries
        entries = self._published
        await self.spool.commit(entries)
        self._published = []
        self._backoff = _BACKOFF_FIRST
        self._set_stalled(None)
        self._remember(entries)
        # Bounded rate: a batch of n events takes at least n / rate seconds.
        return max(0.0, len(entries) / self.rate - (time.monotonic() - started))

    async def _next_batch(self) -> list[Entry]:
        if not self.spool.pending or not self.publisher.ready:
            if self._replaying and not self.spool.pending:
                logger.info("spool replay finished")
            self._replaying = False
            return []
        if not self._replaying:
            logger.info(
                "spool replay starting events=%d rate=%.0f/s", self.spool.pending, self.rate
            )
            self._replaying = True
        return await self.spool.next_batch(min(_BATCH, max(1, int(self.rate))))

    async def _publish(self, entries: list[Entry]) -> None:
        """Publish a batch; set aside the records the broker refuses for good."""
        try:
            await self.publisher.publish_many([(e.topic, e.key, e.value) for e in entries])
        except Refused as exc:
            for index, reason in sorted(exc.reasons.items()):
                await self._set_aside(entries[index], reason)
            metrics.SPOOL_REPLAYED.inc(len(entries) - len(exc.reasons))
        else:
            metrics.SPOOL_REPLAYED.inc(len(entries))

    async def _set_aside(self, entry: Entry, reason: str) -> None:
        """Dead-letter topic first, the quarantine file if the broker refuses that too."""
        topic = self.publisher.settings.topics.dead_letter
        letter = DeadLetter(
            source="receiver-replay",
            reason=reason,
            topic=entry.topic,
            key=entry.key,
            value=entry.value,
        )
        value = encode_dead_letter(letter)
        if orjson.loads(value).get("value_omitted"):
            # Too large to carry whole, and the spool holds the only copy: keep it here.
            refusal = f"the record is too large for a dead letter ({len(entry.value)} bytes)"
        else:
            try:
                await self.publisher.publish_many([(topic, entry.key, value)])
            except Refused as exc:
                refusal = "; ".join(exc.reasons.values())
            else:
                metrics.SPOOL_DEAD_LETTERED.labels("dead_letter").inc()
                logger.warning(
                    "spool record refused for good, sent to %s: topic=%s key=%s reason=%s",
                    topic,
                    entry.topic,
                    Masked(entry.key.decode(errors="replace")),
                    Masked(reason),
                )
                return
        path = self.spool.directory / QUARANTINE
        kept = dataclasses.replace(letter, reason=f"{reason}; not on {topic}: {refusal}")
        await asyncio.to_thread(_append_line, path, encode_dead_letter(kept, max_bytes=None))
        metrics.SPOOL_DEAD_LETTERED.labels("quarantine").inc()
        logger.error(
            "spool record refused for good, by %s too; kept in %s: topic=%s key=%s reason=%s",
            topic,
            path,
            entry.topic,
            Masked(entry.key.decode(errors="replace")),
            Masked(kept.reason),
        )

    def _remember(self, entries: list[Entry]) -> None:
        for entry in entries:
            try:
                doc = orjson.loads(entry.value)
                self.dedup.published(doc["event_id"], doc["provider"], doc["message_id"])
            except (orjson.JSONDecodeError, KeyError, TypeError):
                continue  # not an event (a record set aside can be anything): nothing to remember
