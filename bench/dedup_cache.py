"""The receiver's dedup cache under a long run: nanoseconds per remembered event.

Runs 1,000,000 distinct event ids through ``receiver.dedup.Dedup``'s in-process cache
at its default size and prints the cost per insert for each block of 100,000, so a
cost that grows with the run (the plain-dict eviction did: 0.2 µs, then 15-170 µs
per insert once the cache was full) shows at once. Also times the old eviction for
comparison with ``--old``.

    .venv/bin/python bench/dedup_cache.py [--events N] [--size N] [--old]
"""

from __future__ import annotations

import argparse
import time
import uuid

from receiver.dedup import Dedup


def _old_remember(cache: dict[str, None], size: int, event_id: str) -> None:
    cache[event_id] = None
    if len(cache) > size:
        del cache[next(iter(cache))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--size", type=int, default=200_000, help="cache size (the default)")
    parser.add_argument("--old", action="store_true", help="also time the plain-dict eviction")
    args = parser.parse_args()
    ids = [str(uuid.uuid4()) for _ in range(args.events)]
    block = max(1, args.events // 10)
    dedup = Dedup(None, cache_size=args.size)
    rows = [("OrderedDict (current)", dedup.remember)]
    if args.old:
        old: dict[str, None] = {}
        rows.append(("dict + next(iter()) (before)", lambda e: _old_remember(old, args.size, e)))
    for name, remember in rows:
        costs = []
        for start in range(0, args.events, block):
            began = time.perf_counter()
            for event_id in ids[start : start + block]:
                remember(event_id)
            costs.append((time.perf_counter() - began) * 1e9 / block)
        print(f"{name}: ns per insert, per block of {block:,}:")
        print("  " + " ".join(f"{c:,.0f}" for c in costs))
        print(
            f"  first block {costs[0]:,.0f} ns, last block {costs[-1]:,.0f} ns, max {max(costs):,.0f} ns"
        )
    print(f"cache entries at the end: {len(dedup._cache):,} (bound {args.size:,})")


if __name__ == "__main__":
    main()
