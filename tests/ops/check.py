"""The operations check's run: the stack, real traffic, and a real Prometheus watching it.

``observe(workdir)`` starts the fake Orange API, the fake Gateway SMS and VavaSMS status
APIs, ``smsrx dev`` (with the poller, since the fakes' credentials are set) and
Prometheus, sends traffic (and stalls the broker once, and breaks the Orange subscription
twice), waits until the workers and the poller have caught up, and returns what the tests
look at. The tests in
test_observability.py then evaluate every panel and alert against it.

Also a command, to refresh the README's picture::

    .venv/bin/python -m tests.ops.check docs/img/ingestion.png
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import asyncpg

from smsrx.cli.dev.postgres import Postgres
from tests.ops import grafana
from tests.ops.stack import (
    JOBS,
    ROOT,
    DevCommand,
    FakeCarriers,
    FakeOrangeServer,
    Prometheus,
    get,
    wait_until,
)
from tests.ops.traffic import Report, Traffic

T = TypeVar("T")

TRAFFIC_SECONDS = 45.0
STEP = 2.0
"""Step of the range queries, in seconds (Grafana's $__interval)."""
RATE_INTERVAL = "15s"
"""$__rate_interval: 15 one-second scrapes, like Grafana's 4 scrapes at 15 s in production."""
READER_PASSWORD = "ops-check"
SQL_RANGE = timedelta(minutes=5)
"""Time range of the PostgreSQL panels, ending when the run ends."""


def run_async(make: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a coroutine on its own loop in its own thread (never on pytest's loop)."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["result"] = asyncio.run(make())
        except BaseException as exc:  # re-raised in the caller's thread
            box["error"] = exc

    thread = threading.Thread(target=target, name="ops-check-async")
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    result: T = box["result"]
    return result


@dataclass
class Observation:
    """Everything the tests look at after the run."""

    workdir: Path
    stack: DevCommand
    orange: FakeOrangeServer
    carriers: FakeCarriers
    prometheus: Any = None
    """The :class:`Prometheus` scraping the stack, once started."""
    report: Report = field(default_factory=Report)
    start: float = 0.0
    end: float = 0.0
    exposition: dict[str, str] = field(default_factory=dict)
    """Process name -> the text of its /metrics at the end."""

    @property
    def reader_url(self) -> str:
        """The dev database, as Grafana's read-only role."""
        return str(self.stack.addresses["database_url"]).replace(
            "postgresql://postgres@", "postgresql://grafana_reader@"
        )

    def prom(self, expr: str, *, range_: str | None = None) -> str:
        """A panel expression as Grafana sends it over the observed window."""
        return expr_for(expr, self.start, self.end, range_)

    def query_range(self, expr: str) -> list[dict[str, Any]]:
        """Run ``expr`` over the observed window as Grafana would."""
        return self.prometheus.query_range(self.prom(expr), self.start, self.end, STEP)

    def sql(self, text: str) -> list[asyncpg.Record]:
        """Run a panel's SQL as grafana_reader, the dashboard's time picker at 'Last 5 minutes'.

        The rollups are per minute: a range as short as the run may hold no minute
        stamp with traffic in it, as it would not on a dashboard either.
        """
        end = datetime.fromtimestamp(self.end, UTC)
        expanded = grafana.sql(text, end - SQL_RANGE, end)

        async def fetch() -> list[asyncpg.Record]:
            conn = await asyncpg.connect(self.reader_url)
            try:
                rows: list[asyncpg.Record] = await conn.fetch(expanded)
                return rows
            finally:
                await conn.close()

        return run_async(fetch)

    def stop(self) -> None:
        """Stop Prometheus, the stack and the fake carrier APIs."""
        if self.prometheus is not None:
            self.prometheus.stop()
        self.stack.stop()
        self.orange.stop()
        self.carriers.stop()


def expr_for(expr: str, start: float, end: float, range_: str | None = None) -> str:
    """Grafana's variables replaced for a dashboard showing [start, end]."""
    return grafana.promql(
        expr,
        {"provider": ".*"},
        rate_interval=RATE_INTERVAL,
        interval=f"{STEP:g}s",
        range_=range_ or f"{round(end - start)}s",
    )


def observe(workdir: Path, traffic_seconds: float = TRAFFIC_SECONDS) -> Observation:
    """Run everything; the caller must call ``stop()`` on the result, even on failure."""
    orange = FakeOrangeServer()
    carriers = FakeCarriers()
    try:
        stack = DevCommand(workdir, orange.start(), carriers.start())
    except BaseException:
        orange.stop()
        carriers.stop()
        raise
    obs = Observation(workdir, stack, orange, carriers)
    try:
        addresses = stack.start()
        obs.prometheus = Prometheus(workdir, addresses["metrics_urls"])
        obs.prometheus.start()
        wait_until("every target up", lambda: _all_up(obs.prometheus), 60)
        obs.start = time.time()
        _drive(obs, traffic_seconds)
        _wait_caught_up(obs)
        time.sleep(3)  # a few more scrapes and rule evaluations of the final state
        obs.end = time.time()
        obs.exposition = {
            name: get(url).decode() for name, url in addresses["metrics_urls"].items()
        }
        grant_reader(str(addresses["database_url"]))
    except BaseException as exc:
        obs.stop()
        raise AssertionError(f"{exc!r}\n--- smsrx dev log ---\n{stack.tail()}") from exc
    return obs


def _all_up(prometheus: Prometheus) -> bool:
    targets = prometheus.api("targets")["activeTargets"]
    return len(targets) == len(JOBS) and all(t["health"] == "up" for t in targets)


def _drive(obs: Observation, seconds: float) -> None:
    traffic = Traffic(obs.stack.addresses, obs.stack.broker_process(), obs.carriers)
    box: dict[str, Any] = {}

    def send() -> None:
        try:
            box["report"] = run_async(lambda: traffic.run(seconds))
        except BaseException as exc:
            box["error"] = exc

    thread = threading.Thread(target=send, name="ops-traffic")
    thread.start()
    # Meanwhile, break the Orange subscription twice: once deleted behind our back (the
    # reconciler re-subscribes), once with checks failing (a failed reconcile pass).
    time.sleep(seconds * 0.25)
    obs.orange.call("delete_behind_our_back")
    time.sleep(seconds * 0.35)
    obs.orange.call("fail", "check", 503, 4)
    thread.join()
    if "error" in box:
        raise box["error"]
    obs.report = box["report"]


def _wait_caught_up(obs: Observation) -> None:
    prom = obs.prometheus

    def caught_up() -> bool:
        checks = {
            "lag": "sum(smsrx_consumer_lag_records) == 0",
            "spool": 'sum(smsrx_receiver_spool_events{job="smsrx-receiver"}) == 0',
            "outbox": 'sum(smsrx_status_outbox_pending_records{job="smsrx-status-projection"}) == 0',
            "expired": 'sum(smsrx_expiry_receipts_published_total{job="smsrx-status-projection"}) > 0',
            "analytics": "sum(smsrx_analytics_final_outcomes_total) > 0",
            "opt-outs": 'sum(smsrx_optouts_total{job="smsrx-inbound", action="opt_out"}) > 0',
            "suppressed": 'max(smsrx_suppressed_numbers{job="smsrx-inbound"}) > 0',
            "polled": 'sum(smsrx_poll_receipts_total{job="smsrx-poller", status="delivered"}) > 0',
            "poll-waits": 'sum(smsrx_poll_rate_limit_waits_total{job="smsrx-poller"}) > 0',
            "unmapped": 'sum(smsrx_unmapped_statuses_total{job="smsrx-poller"}) > 0',
            "poll-gauges": 'count(smsrx_polls_overdue_seconds{job="smsrx-poller"}) > 0',
        }
        return all(prom.query(expr) for expr in checks.values())

    wait_until("the workers to catch up", caught_up, 90, interval=1)


def grant_reader(database_url: str) -> None:
    """Create grafana_reader with ops/postgres/initdb/grafana-reader.psql, as compose does."""
    subprocess.run(
        [
            Postgres.psql_path(),
            database_url,
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "-v",
            f"reader_password={READER_PASSWORD}",
            "-f",
            str(ROOT / "ops" / "postgres" / "initdb" / "grafana-reader.psql"),
        ],
        check=True,
        capture_output=True,
        timeout=30,
    )


def render_ingestion(obs: Observation, path: Path) -> int:
    """Draw the Ingestion dashboard from Prometheus to ``path``; return the series drawn."""
    from tests.ops.render import render  # matplotlib: only this step needs it

    board = grafana.dashboards()["ingestion"]
    panels = [p for p in grafana.panels() if p.dashboard == "ingestion"]
    seconds = round(obs.end - obs.start)
    return render(
        str(board["title"]),
        panels,
        obs.query_range,
        path,
        (obs.start, obs.end),
        subtitle=f"{seconds} s of synthetic carrier traffic through `smsrx dev` (Orange receipts "
        "in 6 countries, VavaSMS inbound, repeats, refusals, a 4 s broker stall), scraped every "
        "second by Prometheus; drawn from the dashboard's own queries by tests/ops/check.py",
    )


def main(argv: list[str]) -> int:
    """``python -m tests.ops.check PNG``: run the check's traffic and draw the Ingestion PNG."""
    if len(argv) != 1:
        print("usage: python -m tests.ops.check OUTPUT.png", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="smsrx-ops-") as tmp:
        obs = observe(Path(tmp))
        try:
            series = render_ingestion(obs, Path(argv[0]))
        finally:
            obs.stop()
    print(f"wrote {argv[0]}: {series} series; answers {dict(obs.report.answers)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
