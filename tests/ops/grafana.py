"""The Grafana side of the check: read the dashboards and expand their queries as Grafana does.

Prometheus panels: ``$__rate_interval``, ``$__interval``, ``$__range`` and the
dashboard's template variables (at "All") are replaced the way Grafana replaces them.
PostgreSQL panels: the macros used here (``$__timeFilter``, ``$__timeFrom``,
``$__timeTo``, ``$__timeGroup``, ``$__timeGroupAlias``) are expanded to the SQL that
Grafana's PostgreSQL datasource generates. Any other macro or variable is an error, so
a query is never run in a form Grafana would not send.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
DASHBOARDS = ROOT / "grafana" / "dashboards"
PROVISIONING = ROOT / "grafana" / "provisioning"

PROMETHEUS = "prometheus"
POSTGRES = "grafana-postgresql-datasource"


@dataclass(frozen=True)
class Panel:
    """One panel of one dashboard."""

    dashboard: str
    """The dashboard file's stem."""
    raw: dict[str, Any]
    variables: dict[str, str]
    """Template variable name -> the regex Grafana substitutes at 'All'."""

    @property
    def title(self) -> str:
        """The panel title."""
        return str(self.raw.get("title", ""))

    @property
    def id(self) -> str:
        """A readable test id."""
        return f"{self.dashboard}/{self.title}"

    @property
    def datasource_type(self) -> str:
        """prometheus or grafana-postgresql-datasource."""
        return str(self.raw["datasource"]["type"])

    @property
    def targets(self) -> list[dict[str, Any]]:
        """The panel's queries."""
        return list(self.raw.get("targets", []))

    @property
    def unit(self) -> str:
        """The panel's default unit."""
        return str(self.raw.get("fieldConfig", {}).get("defaults", {}).get("unit", ""))


def dashboards() -> dict[str, dict[str, Any]]:
    """Every dashboard JSON, by file stem."""
    return {path.stem: json.loads(path.read_text()) for path in sorted(DASHBOARDS.glob("*.json"))}


def variables(board: dict[str, Any]) -> dict[str, str]:
    """The dashboard's template variables and the value Grafana uses at 'All'."""
    out = {}
    for var in board.get("templating", {}).get("list", []):
        out[var["name"]] = var.get("allValue") or ".*"
    return out


def panels() -> Iterator[Panel]:
    """Every panel that queries something (rows excluded), nested panels included."""
    for name, board in dashboards().items():
        found = variables(board)
        stack = list(board.get("panels", []))
        while stack:
            raw = stack.pop(0)
            if raw.get("type") == "row":
                stack[:0] = raw.get("panels", [])
                continue
            yield Panel(name, raw, found)


def datasource_uids() -> dict[str, str]:
    """Provisioned datasource uid -> type."""
    uids = {}
    for path in sorted((PROVISIONING / "datasources").glob("*.yml")):
        for source in yaml.safe_load(path.read_text()).get("datasources", []):
            uids[source["uid"]] = source["type"]
    return uids


def variable_queries() -> Iterator[tuple[str, str, str]]:
    """(dashboard, variable, label_values(...) query) of every query variable."""
    for name, board in dashboards().items():
        for var in board.get("templating", {}).get("list", []):
            if var.get("type") == "query":
                query = var["query"]
                yield name, var["name"], query["query"] if isinstance(query, dict) else query


def promql(
    expr: str, vars_: dict[str, str], *, rate_interval: str, interval: str, range_: str
) -> str:
    """``expr`` as Grafana sends it to Prometheus."""
    out = expr.replace("$__rate_interval", rate_interval)
    out = out.replace("$__interval", interval).replace("$__range", range_)
    for name, value in vars_.items():
        out = re.sub(rf"\$\{{{name}(:[a-z]+)?\}}|\${name}\b", value, out)
    if "$" in out:
        raise ValueError(f"unexpanded variable in {out!r}")
    return out


_INTERVALS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _seconds(text: str) -> int:
    match = re.fullmatch(r"'?(\d+)([smhd])'?", text.strip())
    if not match:
        raise ValueError(f"interval {text!r}")
    return int(match.group(1)) * _INTERVALS[match.group(2)]


def _args(text: str) -> list[str]:
    return [part.strip() for part in text.split(",")] if text.strip() else []


def sql(text: str, start: datetime, end: datetime) -> str:
    """``text`` with Grafana's PostgreSQL macros expanded for the range [start, end]."""
    t0 = start.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    t1 = end.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

    def macro(match: re.Match[str]) -> str:
        name, args = match.group(1), _args(match.group(2))
        if name == "timeFilter":
            return f"{args[0]} BETWEEN '{t0}' AND '{t1}'"
        if name == "timeFrom":
            return f"'{t0}'"
        if name == "timeTo":
            return f"'{t1}'"
        if name in ("timeGroup", "timeGroupAlias"):
            step = _seconds(args[1])
            group = f"floor(extract(epoch from {args[0]})/{step})*{step}"
            return group + (' AS "time"' if name == "timeGroupAlias" else "")
        raise ValueError(f"macro $__{name} is not expanded by this check")

    out = re.sub(r"\$__(\w+)\(([^()]*)\)", macro, text)
    if "$" in out:
        raise ValueError(f"unexpanded macro or variable in {out!r}")
    return out
