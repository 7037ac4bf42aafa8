"""At most one log line per source and minute, however often the source misbehaves.

Anyone can send refused requests (or open connections past the cap) as fast as the
network allows; a WARNING for each would let them fill the disk and bury everything
else. :class:`LogThrottle` writes the first event of a source at once, counts the
ones that follow, and writes one summary line with their count when the minute is
up. A source that keeps going gets one summary a minute; one that stops is
forgotten after a quiet minute. Metrics count every event exactly: this bounds the
log, not what is measured.

The sources tracked are capped too (an attacker can come from many addresses):
past the cap, new sources share one entry, ``other sources``.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from dataclasses import dataclass, field

__all__ = ["OTHER_SOURCES", "LogThrottle"]

OTHER_SOURCES = "other sources"
"""The shared entry of the sources beyond the cap."""


@dataclass(slots=True)
class _Window:
    started: float
    """Loop time the window opened."""
    counts: Counter[str] = field(default_factory=Counter)
    """Events not logged in this window, by reason."""


class LogThrottle:
    """Rate-limited WARNINGs for one kind of event, keyed by source.

    ``summary`` is a %-format with the mapping keys ``count``, ``source``,
    ``seconds`` and ``reasons``, e.g. ``"refused %(count)d more requests from
    %(source)s in the last %(seconds).0f s: %(reasons)s"``. Call :meth:`event` from
    the event loop (or :meth:`admit`, when the caller writes the first line itself).
    """

    def __init__(
        self,
        logger: logging.Logger,
        summary: str,
        *,
        interval: float = 60.0,
        max_sources: int = 1024,
    ) -> None:
        self.logger = logger
        self.summary = summary
        self.interval = interval
        self.max_sources = max_sources
        # Insertion order is window-opening order, so expired windows are at the front.
        self._windows: dict[str, _Window] = {}
        self._timer: asyncio.TimerHandle | None = None

    def __len__(self) -> int:
        """Sources tracked now."""
        return len(self._windows)

    def event(self, source: str, reason: str, msg: str, *args: object) -> None:
        """Log ``msg % args`` if ``source`` has no open window, else count ``reason``."""
        if self.admit(source, reason):
            self.logger.warning(msg, *args)

    def admit(self, source: str, reason: str) -> bool:
        """Whether an event of ``source`` is to be logged now (it opens a window); if not,
        it is counted under ``reason``, for the window's summary."""
        window = self._windows.get(source)
        if window is None and len(self._windows) >= self.max_sources:
            source = OTHER_SOURCES
            window = self._windows.get(source)
        if window is not None:
            window.counts[reason] += 1
            return False
        loop = asyncio.get_running_loop()
        self._windows[source] = _Window(loop.time())
        if self._timer is None:
            self._timer = loop.call_at(loop.time() + self.interval, self._expire)
        return True

    def _expire(self) -> None:
        self._timer = None
        loop = asyncio.get_running_loop()
        now = loop.time()
        while self._windows:
            source, window = next(iter(self._windows.items()))
            if window.started + self.interval > now:
                self._timer = loop.call_at(window.started + self.interval, self._expire)
                return
            del self._windows[source]
            if window.counts:
                self._log_summary(source, window, now)
                # Still active: stay quiet for another window rather than log its next event.
                self._windows[source] = _Window(now)

    def _log_summary(self, source: str, window: _Window, now: float) -> None:
        reasons = ", ".join(f"{reason}={n}" for reason, n in window.counts.most_common())
        self.logger.warning(
            self.summary,
            {
                "count": window.counts.total(),
                "source": source,
                "seconds": now - window.started,
                "reasons": reasons,
            },
        )

    def close(self) -> None:
        """Log what is still counted and forget every source."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._windows:
            now = asyncio.get_running_loop().time()
            for source, window in self._windows.items():
                if window.counts:
                    self._log_summary(source, window, now)
        self._windows.clear()
