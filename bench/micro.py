"""Costs the code relies on: the hot-path helpers against what they replace.

Each line prints microseconds per call, the median of ``--repeat`` timings of
``--number`` calls. The figures in bench/README.md ("Costs the code relies on") come
from this script; module docstrings link there instead of quoting numbers.

    python -m bench.micro [--number 20000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import random
import statistics
import timeit
import uuid
from collections.abc import Callable

import phonenumbers
import pycountry
from aiokafka.partitioner import murmur2 as aiokafka_murmur2
from prometheus_client import CollectorRegistry, Counter, Histogram

from smsrx import events, partitioner, phones
from smsrx.fastmetrics import FastCounter, FastHistogram

_KEY = b"8f3a2c1e-5b7d-4e9a-a1c3-2d4f6e8b0a9c"
_PARTS = ("orange", "8f3a2c1e-5b7d-4e9a-a1c3-2d4f6e8b0a9c", "+2250700000000", "DeliveredToTerminal")
_NAMESPACE = uuid.UUID("6ba7b810-9dad-11d1-80b4-00c04fd430c8")


def _numbers(count: int) -> list[str]:
    """Distinct Côte d'Ivoire mobile numbers, as a campaign's receipts carry them."""
    rng = random.Random(1)
    return [f"+22507{rng.randrange(10**8):08d}" for _ in range(count)]


def _slow_e164(number: str) -> str:
    return phonenumbers.format_number(
        phonenumbers.parse(number), phonenumbers.PhoneNumberFormat.E164
    )


def _slow_alpha3(number: str) -> str:
    region = phonenumbers.region_code_for_number(phonenumbers.parse(number))
    country = pycountry.countries.get(alpha_2=region) if region else None
    return country.alpha_3 if country is not None else "ZZZ"


def _timed(call: Callable[[], object], number: int, repeat: int) -> float:
    return statistics.median(timeit.repeat(call, number=number, repeat=repeat)) / number * 1e6


def _metrics(n: int, r: int) -> list[tuple[str, float]]:
    """A counter increment and a histogram observation, as the receiver makes per request."""
    registry = CollectorRegistry()
    buckets = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
    counter = Counter("m_total", "m", ["p", "o"], registry=registry).labels("orange", "accepted")
    histogram = Histogram("m_seconds", "m", ["p"], buckets=buckets, registry=registry).labels("o")
    fast_counter = FastCounter("f", "f", ["p", "o"], registry=registry)
    fast_histogram = FastHistogram("f_seconds", "f", ["p"], buckets, registry=registry)

    def fast_inc() -> None:
        fast_counter.cell("orange", "accepted")[0] += 1

    return [
        ("prometheus_client Counter.inc (child looked up)", _timed(counter.inc, n, r)),
        ("smsrx.fastmetrics FastCounter, cell and +1", _timed(fast_inc, n, r)),
        (
            "prometheus_client Histogram.observe (13 buckets)",
            _timed(lambda: histogram.observe(0.012), n, r),
        ),
        (
            "smsrx.fastmetrics FastHistogram.observe",
            _timed(lambda: fast_histogram.observe(fast_histogram.cell("o"), 0.012), n, r),
        ),
    ]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--number", type=int, default=20_000, help="calls per timing")
    parser.add_argument("--repeat", type=int, default=5, help="timings per figure")
    args = parser.parse_args(argv)
    n, r = args.number, args.repeat

    def each(function: Callable[[str], object]) -> Callable[[], object]:
        # A fresh number per call: campaign numbers rarely repeat, so no cache helps.
        numbers = iter(_numbers(n * r + 1))
        return lambda: function(next(numbers))

    rows = [
        ("phonenumbers.parse + format (E.164)", _timed(each(_slow_e164), n, r)),
        ("smsrx.phones.to_e164, fast path", _timed(each(phones.to_e164), n, r)),
        ("phonenumbers.parse + region + pycountry (alpha-3)", _timed(each(_slow_alpha3), n, r)),
        (
            "smsrx.phones.country_alpha3, fast path",
            _timed(each(phones.country_alpha3.__wrapped__), n, r),
        ),
        ("aiokafka murmur2, 36-byte key", _timed(lambda: aiokafka_murmur2(_KEY), n, r)),
        ("smsrx.partitioner.murmur2", _timed(lambda: partitioner.murmur2(_KEY), n, r)),
        (
            "str(uuid.uuid5(...))",
            _timed(lambda: str(uuid.uuid5(_NAMESPACE, "\x1f".join(_PARTS))), n, r),
        ),
        ("smsrx.events.event_id_for", _timed(lambda: events.event_id_for(*_PARTS), n, r)),
        *_metrics(n, r),
    ]
    width = max(len(name) for name, _ in rows)
    for name, micros in rows:
        print(f"{name:<{width}}  {micros:6.2f} µs")


if __name__ == "__main__":
    main()
