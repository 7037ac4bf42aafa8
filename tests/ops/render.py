"""Draw a dashboard's Prometheus panels to a PNG, from the same queries Grafana runs.

Used for docs/img/ingestion.png, so a newcomer sees what the dashboards show.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import matplotlib.dates as mdates
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

from tests.ops.grafana import PROMETHEUS, Panel

Query = Callable[[str], list[dict[str, Any]]]
"""Runs one panel expression as a range query and returns the matrix."""

_BACKGROUND = "#181b1f"
_PANEL = "#111217"
_TEXT = "#ccccdc"
_GRID = "#2c3235"
_PALETTE = [
    "#73bf69", "#f2cc0c", "#8ab8ff", "#ff780a", "#f2495c", "#5794f2", "#b877d9", "#fade2a",
    "#96d98d", "#ffb357", "#c0d8ff", "#ff7383", "#ca95e5", "#37872d", "#c4162a", "#1f60c4",
]  # fmt: skip


def _formatter(unit: str) -> FuncFormatter:
    def seconds(value: float, _: Any) -> str:
        if value == 0:
            return "0"
        return f"{value * 1000:.3g} ms" if abs(value) < 1 else f"{value:.3g} s"

    def percent(value: float, _: Any) -> str:
        return f"{value * 100:.0f}%"

    def plain(value: float, _: Any) -> str:
        suffix = unit.split(":", 1)[1].strip() if unit.startswith("suffix:") else ""
        if unit == "reqps":
            suffix = "req/s"
        return f"{value:.3g} {suffix}".strip()

    return FuncFormatter({"s": seconds, "percentunit": percent}.get(unit, plain))


def _legend(template: str, labels: dict[str, str]) -> str:
    out = template
    for key, value in labels.items():
        out = out.replace("{{" + key + "}}", value)
    return out.replace("{{", "").replace("}}", "") or "value"


def render(
    title: str,
    panels: list[Panel],
    query: Query,
    path: Path,
    window: tuple[float, float],
    subtitle: str = "",
) -> int:
    """Draw every Prometheus time-series panel over ``window``; return the series drawn."""
    x_range = tuple(datetime.fromtimestamp(t, UTC) for t in window)
    drawn = [p for p in panels if p.datasource_type == PROMETHEUS and p.raw["type"] == "timeseries"]
    cols = 2
    rows = math.ceil(len(drawn) / cols)
    fig = Figure(figsize=(16, 3.4 * rows), facecolor=_BACKGROUND)
    axes = fig.subplots(rows, cols, squeeze=False)
    fig.suptitle(title, color=_TEXT, fontsize=16, x=0.01, ha="left", y=0.995)
    if subtitle:
        fig.text(0.01, 0.985 - 0.12 / rows, subtitle, color="#8e8e8e", fontsize=9, ha="left")
    series_count = 0
    for ax, panel in zip(axes.flat, drawn, strict=False):
        ax.set_facecolor(_PANEL)
        ax.set_title(panel.title, color=_TEXT, fontsize=10.5, loc="left")
        ax.tick_params(colors="#8e8e8e", labelsize=8)
        for spine in ax.spines.values():
            spine.set_color(_GRID)
        ax.grid(color=_GRID, linewidth=0.6)
        ax.yaxis.set_major_formatter(_formatter(panel.unit))
        ax.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M:%S", tz=UTC))
        ax.set_xlim(*x_range)
        color = 0
        for target in panel.targets:
            for item in query(target["expr"]):
                points = [
                    (datetime.fromtimestamp(t, UTC), float(v))
                    for t, v in item["values"]
                    if math.isfinite(float(v))
                ]
                if not points:
                    continue
                xs, ys = zip(*points, strict=True)
                ax.plot(
                    xs,
                    ys,
                    linewidth=1.4,
                    color=_PALETTE[color % len(_PALETTE)],
                    label=_legend(target.get("legendFormat", ""), item["metric"]),
                )
                color += 1
                series_count += 1
        if color:
            ax.legend(
                fontsize=7,
                loc="upper left",
                facecolor=_PANEL,
                edgecolor=_GRID,
                labelcolor=_TEXT,
                ncols=2 if color > 4 else 1,
            )
    for ax in list(axes.flat)[len(drawn) :]:
        ax.set_visible(False)
    fig.tight_layout(rect=(0, 0, 1, 0.975 - 0.1 / rows))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80, facecolor=_BACKGROUND)
    return series_count
