"""smsrx.fastmetrics exports exactly what prometheus_client's Counter and Histogram do."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from smsrx.fastmetrics import FastCounter, FastHistogram

BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
VALUES = st.one_of(
    st.sampled_from(BUCKETS),
    st.floats(min_value=0, max_value=100, allow_nan=False, allow_infinity=False),
)


def _exposition(registry: CollectorRegistry) -> list[str]:
    return [
        line for line in generate_latest(registry).decode().splitlines() if "_created" not in line
    ]


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["orange", "vavasms"]),
            st.sampled_from(["accepted", "duplicate"]),
            VALUES,
        ),
        max_size=50,
    )
)
def test_same_exposition_as_prometheus_client(observations: list[tuple[str, str, float]]) -> None:
    """Any sequence of increments and observations, bucket bounds included, gives the same text (less _created)."""
    slow, fast = CollectorRegistry(), CollectorRegistry()
    counter = Counter("t_requests", "doc", ["provider", "outcome"], registry=slow)
    histogram = Histogram("t_seconds", "doc", ["provider"], buckets=BUCKETS, registry=slow)
    fast_counter = FastCounter("t_requests", "doc", ["provider", "outcome"], registry=fast)
    fast_histogram = FastHistogram("t_seconds", "doc", ["provider"], BUCKETS, registry=fast)
    for provider, outcome, value in observations:
        counter.labels(provider, outcome).inc()
        histogram.labels(provider).observe(value)
        fast_counter.cell(provider, outcome)[0] += 1
        fast_histogram.observe(fast_histogram.cell(provider), value)
    assert _exposition(fast) == _exposition(slow)


def test_observing_many_at_once_equals_one_by_one() -> None:
    """observe(value, count=n) is n observations of value."""
    registry = CollectorRegistry()
    histogram = FastHistogram("t_batch_seconds", "doc", ["topic"], BUCKETS, registry=registry)
    histogram.observe(histogram.cell("a"), 0.02, count=3)
    for _ in range(3):
        histogram.observe(histogram.cell("b"), 0.02)
    text = generate_latest(registry).decode()
    assert text.replace('topic="a"', 'topic="b"').count("\n") == text.count("\n")
    a = [line.split()[-1] for line in text.splitlines() if 'topic="a"' in line]
    b = [line.split()[-1] for line in text.splitlines() if 'topic="b"' in line]
    assert a == b


def test_wrong_label_count_and_duplicate_names_are_refused() -> None:
    """A cell with the wrong number of labels is an error, as is a second metric of one name."""
    registry = CollectorRegistry()
    counter = FastCounter("t_dup", "doc", ["provider"], registry=registry)
    with pytest.raises(ValueError, match="expected labels"):
        counter.cell("a", "b")
    with pytest.raises(ValueError, match="Duplicated"):
        Counter("t_dup", "doc", registry=registry)
