"""A per-provider rate limit: at most ``rate`` requests in any second, spread evenly.

Each request reserves the next free slot, ``1/rate`` after the previous one, and sleeps
until it. Slots are never bunched: a limiter idle for a minute does not let a burst
through (a carrier counting requests per second would refuse it).
"""

from __future__ import annotations

import asyncio
import time

from consumers.polling import metrics

__all__ = ["RateLimit"]


class RateLimit:
    """At most ``rate`` requests per second for one provider."""

    def __init__(self, provider: str, rate: float) -> None:
        self.provider = provider
        self.interval = 1.0 / rate
        self._next = 0.0

    async def acquire(self) -> None:
        """Wait for this request's slot."""
        now = time.monotonic()
        slot = max(now, self._next)
        self._next = slot + self.interval
        wait = slot - now
        if wait > 0:
            metrics.RATE_LIMIT_WAITS.labels(self.provider).inc()
            metrics.RATE_LIMIT_WAIT_SECONDS.labels(self.provider).inc(wait)
            await asyncio.sleep(wait)
