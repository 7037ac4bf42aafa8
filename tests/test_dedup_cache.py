"""The receiver's in-process dedup cache: bounded, oldest out first, over a million events."""

from __future__ import annotations

from receiver.dedup import Dedup


def test_a_million_events_keep_the_newest_within_the_bound() -> None:
    """After 1,000,000 events the cache holds exactly the newest cache_size ids, in order."""
    size = 200_000
    dedup = Dedup(None, cache_size=size)
    for i in range(1_000_000):
        dedup.remember(f"e{i}")
    assert len(dedup._cache) == size
    assert dedup.cached("e999999") and dedup.cached(f"e{1_000_000 - size}")
    assert not dedup.cached(f"e{1_000_000 - size - 1}") and not dedup.cached("e0")
    assert next(iter(dedup._cache)) == f"e{1_000_000 - size}"


def test_a_repeat_does_not_grow_the_cache() -> None:
    """Remembering an id again keeps one entry, so repeats never evict others early."""
    dedup = Dedup(None, cache_size=3)
    for event_id in ("a", "b", "a", "a", "c"):
        dedup.remember(event_id)
    assert [dedup.cached(e) for e in "abc"] == [True, True, True]
    dedup.remember("d")
    assert [dedup.cached(e) for e in "abcd"] == [False, True, True, True]
