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

    @property
    def met(self) -> bool:
        """Whether the median meets the bound (and the required figure its value)."""
        median = self.figure.median
        if self.requires is not None and not self.requires[0].median >= self.requires[1]:
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
    ) -> None:
        """Declare a target on an existing figure."""
        if key in self.figures:
            needed = None
            if requires is not None and requires[0] in self.figures:
                needed = (self.figures[requires[0]], requires[1])
            self.targets.append(Target(label, self.figures[key], bound, higher_is_better, needed))


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
            ("met" if t.met else "**missed**")
            + (
                f" (at {fmt(t.requires[0].median, t.requires[0].unit)} {t.requires[0].unit})"
                if t.requires is not None
                else ""
            ),
        ]
        for t in targets
    ]
