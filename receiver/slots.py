"""Which spool directories a receiver process writes, and which it only replays.

``smsrx receiver --workers N`` runs N processes, slots 0 to N-1. Each slot owns one
spool, stable across restarts, under ``SMSRX_SPOOL_DIR``::

    <spool dir>/worker-0/   slot 0: the only slot of a single-process receiver
    <spool dir>/worker-1/   slot 1, and so on
    <spool dir>/*.seg, checkpoint, lock
                            the layout before slots existed (files directly in the
                            spool dir): adopted by slot 0

A slot also adopts the spools that no slot of the current N owns: ``worker-j`` for
every ``j >= N`` with ``j % N`` equal to its own index, and slot 0 the old layout. An
adopted spool is only replayed, by the same :class:`Replayer` and publisher; once it is
empty its files are removed, so lowering N or upgrading strands no event.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from receiver.dedup import Dedup
from receiver.publisher import Publisher
from receiver.replay import Replayer
from receiver.spool import Spool
from smsrx.settings import Settings

__all__ = ["Adopted", "Slot", "assign", "current"]

logger = logging.getLogger(__name__)

_PREFIX = "worker-"
# What a spool writes in its directory. A directory holding anything else is left alone.
_SPOOL_FILES = ("lock", "checkpoint", "checkpoint.tmp")
_SEGMENT_SUFFIX = ".seg"
_CHECK_EVERY = 1.0


def _spool_file(path: Path) -> bool:
    return path.is_file() and (path.name in _SPOOL_FILES or path.suffix == _SEGMENT_SUFFIX)


@dataclass(frozen=True, slots=True)
class Slot:
    """This process's place among the receiver's worker processes."""

    index: int = 0
    """0 to count-1; also the offset of its metrics port."""
    count: int = 1
    """How many worker processes the receiver runs (``--workers``)."""

    def spool_dir(self, base: Path) -> Path:
        """The spool this slot appends to."""
        return base / f"{_PREFIX}{self.index}"

    def adopted_dirs(self, base: Path) -> list[Path]:
        """Spools left by a larger worker count (or the old layout) that this slot replays."""
        numbered: list[tuple[int, Path]] = []
        with contextlib.suppress(FileNotFoundError):
            for path in base.iterdir():
                number = path.name.removeprefix(_PREFIX)
                if path.name.startswith(_PREFIX) and number.isdigit() and path.is_dir():
                    numbered.append((int(number), path))
        adopted = [
            path
            for number, path in sorted(numbered)
            if number >= self.count and number % self.count == self.index
        ]
        if self.index == 0 and base.is_dir() and any(map(_spool_file, base.iterdir())):
            adopted.insert(0, base)
        return adopted


_current = Slot()


def assign(slot: Slot) -> None:
    """Set this process's slot, once, before the application is built."""
    global _current
    _current = slot


def current() -> Slot:
    """This process's slot (slot 0 of 1 unless :func:`assign` said otherwise)."""
    return _current


class Adopted:
    """The spools a slot replays but never appends to; each is removed once empty."""

    def __init__(self, slot: Slot, settings: Settings, publisher: Publisher, dedup: Dedup) -> None:
        self.slot = slot
        self.settings = settings
        self.publisher = publisher
        self.dedup = dedup
        self._replaying: list[tuple[Spool, Replayer]] = []
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Lock and recover each adopted spool (SpoolLocked if another process holds one),
        then replay them all in the background."""
        settings = self.settings
        try:
            for directory in self.slot.adopted_dirs(settings.spool_dir):
                spool = Spool(directory, max_bytes=settings.spool_max_bytes)
                spool.open()
                replayer = Replayer(
                    spool, self.publisher, self.dedup, rate=settings.spool_replay_rate
                )
                self._replaying.append((spool, replayer))
                logger.info("spool adopted dir=%s events=%d", directory, spool.pending)
        except BaseException:
            for spool, _ in self._replaying:
                spool.close()
            self._replaying.clear()
            raise
        for _, replayer in self._replaying:
            replayer.start()
        if self._replaying:
            self._task = asyncio.create_task(self._retire_empty(), name="spool-adopted")

    async def close(self) -> None:
        """Stop replaying; what is not published stays in its spool for the next start."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        for spool, replayer in self._replaying:
            await replayer.close()
            spool.close()
        self._replaying.clear()

    async def _retire_empty(self) -> None:
        while self._replaying:
            await asyncio.sleep(_CHECK_EVERY)
            for spool, replayer in list(self._replaying):
                if spool.pending:
                    continue
                await replayer.close()
                self._replaying.remove((spool, replayer))
                self._remove(spool)

    def _remove(self, spool: Spool) -> None:
        """Delete an empty adopted spool's files, unless something unexpected is in there."""
        directory = spool.directory
        entries = list(directory.iterdir())
        if directory == self.settings.spool_dir:  # the old layout, beside the slots' directories
            entries = [p for p in entries if not p.name.startswith(_PREFIX)]
        if not all(map(_spool_file, entries)):
            spool.close()
            logger.info(
                "spool adopted dir=%s is empty; other files in it, left in place", directory
            )
            return
        if directory == self.settings.spool_dir:
            spool.close()  # no other process adopts it: only slot 0, which holds worker-0
            for path in entries:
                path.unlink(missing_ok=True)
        else:
            # Renamed while still locked: no process can open it under its old name again.
            retired = directory.with_name(f".{directory.name}.retired-{os.getpid()}")
            directory.rename(retired)
            spool.close()
            shutil.rmtree(retired, ignore_errors=True)
        logger.info("spool adopted dir=%s replayed and removed", directory)
