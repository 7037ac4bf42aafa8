"""Carrier status values that no mapping knows: counted by provider and value, and logged
once each per process (``docs/statuses.md``). Used by the receiver and the poller."""

from __future__ import annotations

import logging

from prometheus_client import Counter

__all__ = ["UNMAPPED", "unmapped_status"]

logger = logging.getLogger(__name__)

UNMAPPED = Counter(
    "smsrx_unmapped_statuses_total",
    "Carrier status values no mapping knows (kept as 'unknown'), by provider and value",
    ["provider", "value"],
)

_MAX_VALUES = 200
_seen: set[tuple[str, str]] = set()


def unmapped_status(provider: str, value: str) -> None:
    """Count one receipt whose status ``value`` is not in ``provider``'s mapping; log a
    value the first time it is seen. Past 200 distinct values, further ones are counted
    as ``other`` so a misbehaving carrier cannot grow the label set without bound."""
    key = (provider, value)
    if key not in _seen:
        if len(_seen) >= _MAX_VALUES:
            UNMAPPED.labels(provider, "other").inc()
            return
        _seen.add(key)
        logger.warning(
            "%s reported status %r, which docs/statuses.md does not map: kept as 'unknown' "
            "(add it to the mapping, or to the provider's *_STATUS_MAP setting)",
            provider,
            value,
        )
    UNMAPPED.labels(provider, value).inc()
