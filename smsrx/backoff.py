"""Exponential backoff, without I/O: the waits between tries of something that is down.

Each wait is twice the one before, up to a ceiling. A sequence starts over from the
first wait only when the caller starts a new one (after a success, say).
"""

from __future__ import annotations

from collections.abc import Iterator

__all__ = ["delays", "next_delay"]


def next_delay(delay: float, cap: float) -> float:
    """The wait after ``delay``: twice as long, but at most ``cap``."""
    return min(delay * 2, cap)


def delays(first: float, cap: float) -> Iterator[float]:
    """``first``, then each wait twice the one before, at most ``cap``; never ends."""
    if not 0 < first <= cap:
        raise ValueError(f"backoff needs 0 < first <= cap, not first={first} cap={cap}")
    return _doubling(first, cap)


def _doubling(delay: float, cap: float) -> Iterator[float]:
    while True:
        yield delay
        delay = next_delay(delay, cap)
