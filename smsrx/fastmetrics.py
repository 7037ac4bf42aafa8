"""Counters and histograms for the per-request path, kept as plain numbers and turned
into Prometheus samples only when ``/metrics`` is scraped.

prometheus_client's ``Counter.inc`` and ``Histogram.observe`` take a lock per value
they touch (a histogram observation: its bucket and its sum), which costs more than the
work a receipt's request does with them (figures: bench/README.md, "Costs the code
relies on"). These keep one list of numbers per label set instead, updated without a
lock: every smsrx process updates and scrapes its metrics on one event loop thread.

The exposition is the same as prometheus_client's for the same name, labels and
buckets (``_total``, ``_bucket``/``_count``/``_sum``), so dashboards, alerts and
``REGISTRY.get_sample_value`` see no difference; only ``_created`` is not exported.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator, Sequence

from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

__all__ = ["FastCounter", "FastHistogram"]


class FastCounter(Collector):
    """A counter by label values: ``cell(labels)`` once, then ``cell[0] += n``."""

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str],
        registry: CollectorRegistry | None = REGISTRY,
    ) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = tuple(labelnames)
        self._cells: dict[tuple[str, ...], list[float]] = {}
        if registry is not None:
            registry.register(self)

    def cell(self, *labels: str) -> list[float]:
        """The one-element list holding the count of ``labels`` (created at 0)."""
        found = self._cells.get(labels)
        if found is None:
            if len(labels) != len(self.labelnames):
                raise ValueError(f"{self.name}: expected labels {self.labelnames}, got {labels}")
            found = self._cells[labels] = [0.0]
        return found

    def inc(self, *labels: str, amount: float = 1.0) -> None:
        """Add ``amount`` to the count of ``labels``."""
        self.cell(*labels)[0] += amount

    def describe(self) -> list[Metric]:
        """The family without samples, for the registry's duplicate-name check."""
        return [CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)]

    def collect(self) -> Iterator[Metric]:
        """The counts as of now."""
        family = CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for labels, (value,) in list(self._cells.items()):
            family.add_metric(labels, value)
        yield family


class FastHistogram(Collector):
    """A histogram by label values; :meth:`observe` is a bisect and three additions."""

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str],
        buckets: Sequence[float],
        registry: CollectorRegistry | None = REGISTRY,
    ) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = tuple(labelnames)
        self.bounds = tuple(sorted(float(b) for b in buckets))
        self._cells: dict[tuple[str, ...], list[float]] = {}
        if registry is not None:
            registry.register(self)

    def cell(self, *labels: str) -> list[float]:
        """The counts of ``labels``: one per bucket, then +Inf, then the sum."""
        found = self._cells.get(labels)
        if found is None:
            if len(labels) != len(self.labelnames):
                raise ValueError(f"{self.name}: expected labels {self.labelnames}, got {labels}")
            found = self._cells[labels] = [0.0] * (len(self.bounds) + 2)
        return found

    def observe(self, cell: list[float], value: float, count: int = 1) -> None:
        """Record ``count`` observations of ``value`` in ``cell`` (from :meth:`cell`)."""
        cell[bisect.bisect_left(self.bounds, value)] += count
        cell[-1] += value * count

    def describe(self) -> list[Metric]:
        """The family without samples, for the registry's duplicate-name check."""
        return [HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)]

    def collect(self) -> Iterator[Metric]:
        """Cumulative buckets, count and sum as of now."""
        family = HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)
        edges = [_le(b) for b in self.bounds] + ["+Inf"]
        for labels, cell in list(self._cells.items()):
            total, cumulative = 0.0, []
            for edge, count in zip(edges, cell[:-1], strict=True):
                total += count
                cumulative.append((edge, total))
            family.add_metric(labels, cumulative, cell[-1])
        yield family


def _le(bound: float) -> str:
    """A bucket bound as prometheus_client writes it (``0.005``, ``1.0``)."""
    return repr(float(bound))
