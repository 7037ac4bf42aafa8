"""Repeated measurements, their median and spread, and the tables a run prints."""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

__all__ = ["Figure", "Results", "Target", "fmt", "table"]


@dataclass
class Figure:
    """One quantity measured once per repetition."""

    name: str
    unit: str
    values: list[float] = field(default_factory=list)

    def add(self, value: float) -> None:
        """Record one repetition."""
        self.values.append(value)

    @property
    def median(self) -> float:
        """The median over repetitions (NaN when none)."""
        return statistics.median(self.values) if self.values else float("nan")

    @property
    def spread(self) -> str:
        """``min–max`` over repetitions."""
        if not self.values:
            return "-"
        return f"{fmt(min(self.values), self.unit)}–{fmt(max(self.values), self.unit)}"

    @property
    def spread_pct(self) -> float:
        """Half the range, as a percentage of the median."""
        if len(self.values) < 2 or not self.median:
            return 0.0
        return (max(self.values) - min(self.values)) / 2 / abs(self.median) * 100


@dataclass
class Target:
    """A figure of the issue's target table and the bound it must meet."""

    label: str
    figure: Figure
    bound: float
    higher_is_better: bool
    requires: tuple[Figure, float] | None = None
    """Another figure whose median must reach a value too (the rate a latency was at)."""
    requires_at_most: tuple[Figure, float] | None = None
    """Another figure whose median must not exceed a value (the catch-up a rate allowed)."""

    @property
    def met(self) -> bool:
        """Whether the median meets the bound (and the required figures their values)."""
        median = self.figure.median
        if self.requires is not None and not self.requires[0].median >= self.requires[1]:
            return False
        if self.requires_at_most is not None and not (
            self.requires_at_most[0].median <= self.requires_at_most[1]
        ):
            return False
        return median >= self.bound if self.higher_is_better else median <= self.bound

    @property
    def wanted(self) -> str:
        """The bound, e.g. ``≥ 0.80`` or ``≤ 25.0 ms``."""
        unit = "" if self.figure.unit == "ratio" else f" {self.figure.unit}"
        return f"{'≥' if self.higher_is_better else '≤'} {fmt(self.bound, self.figure.unit)}{unit}"

    @property
    def attained(self) -> float:
        """The median as a fraction of the target: 1 or more meets it."""
        median = self.figure.median
        if not median:
            return float("nan")
        return median / self.bound if self.higher_is_better else self.bound / median


@dataclass
class Results:
    """Every figure of a run, by key, plus the targets and notes."""

    figures: dict[str, Figure] = field(default_factory=dict)
    targets: list[Target] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def figure(self, key: str, name: str, unit: str) -> Figure:
        """The figure under ``key``, created on first use."""
        if key not in self.figures:
            self.figures[key] = Figure(name, unit)
        return self.figures[key]

    def add(self, key: str, name: str, unit: str, value: float) -> None:
        """Record one repetition of a figure."""
        self.figure(key, name, unit).add(value)

    def ratio(self, key: str, name: str, top: str, bottom: str) -> Figure:
        """A figure made of per-repetition ratios of two others (paired by repetition)."""
        figure = self.figure(key, name, "ratio")
        a, b = self.figures.get(top), self.figures.get(bottom)
        if a is not None and b is not None:
            figure.values = [x / y for x, y in zip(a.values, b.values, strict=False) if y]
        return figure

    def target(
        self,
        label: str,
        key: str,
        bound: float,
        *,
        higher_is_better: bool,
        requires: tuple[str, float] | None = None,
        requires_at_most: tuple[str, float] | None = None,
    ) -> None:
        """Declare a target on an existing figure; ``requires`` names a figure that must
        reach a value too, ``requires_at_most`` one that must not exceed a value."""
        if key in self.figures:
            self.targets.append(
                Target(
                    label,
                    self.figures[key],
                    bound,
                    higher_is_better,
                    self._bound(requires),
                    self._bound(requires_at_most),
                )
            )

    def _bound(self, requirement: tuple[str, float] | None) -> tuple[Figure, float] | None:
        if requirement is None or requirement[0] not in self.figures:
            return None
        return (self.figures[requirement[0]], requirement[1])


_UNITS: dict[str, Callable[[float], str]] = {
    "req/s": lambda v: f"{v:,.0f}",
    "events/s": lambda v: f"{v:,.0f}",
    "rows/s": lambda v: f"{v:,.0f}",
    "msg/s": lambda v: f"{v:,.0f}",
    "req/CPU-s": lambda v: f"{v:,.0f}",
    "ms": lambda v: f"{v:,.1f}" if v < 100 else f"{v:,.0f}",
    "s": lambda v: f"{v:,.2f}",
    "µs": lambda v: f"{v:,.0f}",
    "MB": lambda v: f"{v:,.0f}",
    "ratio": lambda v: f"{v:.3f}",
    "records": lambda v: f"{v:,.0f}",
    "%": lambda v: f"{v:.1f}",
}


def fmt(value: float, unit: str) -> str:
    """A value formatted for its unit."""
    if value != value:  # NaN
        return "-"
    return _UNITS.get(unit, lambda v: f"{v:,.3g}")(value)


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], *, markdown: bool) -> str:
    """A plain-text or Markdown table."""
    if markdown:
        lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
        lines += ["| " + " | ".join(row) + " |" for row in rows]
        return "\n".join(lines)
    widths = [max(len(str(c)) for c in column) for column in zip(headers, *rows, strict=True)]
    out = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))]
    out.append("  ".join("-" * w for w in widths))
    out += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
    return "\n".join(out)


def figure_rows(figures: Sequence[Figure]) -> list[list[str]]:
    """Rows of name, median, spread and repetitions."""
    return [
        [
            f.name,
            f"{fmt(f.median, f.unit)} {f.unit}",
            f"{f.spread} (±{f.spread_pct:.0f} %)",
            str(len(f.values)),
        ]
        for f in figures
    ]


def target_rows(targets: Sequence[Target]) -> list[list[str]]:
    """Rows of the target table."""
    return [
        [
            t.label,
            t.wanted,
            f"{fmt(t.figure.median, t.figure.unit)} {t.figure.unit if t.figure.unit != 'ratio' else ''}".strip(),
            f"{t.figure.spread} (n={len(t.figure.values)})",
            f"{t.attained:.3f}",
            ("met" if t.met else "**missed**") + _conditions(t),
        ]
        for t in targets
    ]


def _conditions(target: Target) -> str:
    """`` (at 2,000 req/s)``: the medians of the figures a target requires."""
    shown = [
        f"{fmt(needed[0].median, needed[0].unit)} {needed[0].unit}"
        for needed in (target.requires, target.requires_at_most)
        if needed is not None
    ]
    return f" (at {', '.join(shown)})" if shown else ""
