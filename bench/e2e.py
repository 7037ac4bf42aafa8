"""Section 4: end to end at a steady rate, from the HTTP 200 to the row in the projection.

The whole system runs as an operator runs it: ``smsrx receiver`` (HTTPS),
``smsrx consumer status-projection`` and ``smsrx consumer analytics``. wrk sends Orange
receipts at a fixed rate with ``e2e.lua`` (sends follow the clock, not the answers),
each for a new message, and logs the wall-clock time each 200 arrived.

The time a row became visible is read from PostgreSQL itself, after the run: the
benchmark's server runs with ``track_commit_timestamp = on``, so
``pg_xact_commit_timestamp(xmin)`` of a ``recipient_status`` row is when the
transaction that wrote it committed. Every message gets exactly one receipt, so that
is the transaction that made the row visible. Nothing polls the database while the
load runs. The commit time is stamped just before the commit's WAL flush, so figures
are low by that flush (about a millisecond here).

Consumer lag, sampled every second, is the number of receipts the broker
acknowledged to the receiver (its ``events_published`` counter) minus the group's
committed offsets.
"""

from __future__ import annotations

import asyncio
import logging
import statistics
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg

from bench import procfs
from bench.kafkautil import Offsets, highwaters
from bench.report import Results
from bench.scrape import metric_sum, sampling, scrape
from bench.stack import BenchStack, Service
from bench.wrk import E2E_SCRIPT, WrkResult, run_wrk
from consumers.analytics import Analytics
from consumers.status_projection import StatusProjection

__all__ = ["run_e2e"]

logger = logging.getLogger(__name__)

_CONNECTIONS = 64
_VISIBLE = """
SELECT message_id, extract(epoch FROM pg_xact_commit_timestamp(xmin))::float8
  FROM recipient_status
 WHERE provider = 'orange' AND message_id >= $1 AND message_id < $2
"""


@dataclass
class _Run:
    tag: str
    acked: dict[str, float] = field(default_factory=dict)  # message id -> time of the 200
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    invisible: int = 0
    wrk: WrkResult | None = None
    lag: dict[str, list[float]] = field(default_factory=dict)


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _read_answers(folder: Path, run: _Run) -> None:
    for path in sorted(folder.glob("*.log")):
        for line in path.read_text().splitlines():
            message_id, at, status = line.split()
            if status == "200":
                run.acked[message_id] = float(at)
            else:
                run.errors += 1


async def _visibility(conn: asyncpg.Connection, run: _Run, limit: float = 60.0) -> None:
    """Wait until every acknowledged receipt has its row, then read the commit times."""
    low, high = run.tag + "-", run.tag + "-~"
    deadline = time.monotonic() + limit
    while True:
        rows = await conn.fetch(_VISIBLE, low, high)
        if len(rows) >= len(run.acked) or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.5)
    committed = {row[0]: row[1] for row in rows}
    for message_id, acked in run.acked.items():
        at = committed.get(message_id)
        if at is None:
            run.invisible += 1
        else:
            run.latencies.append(max(0.0, at - acked))
    if run.invisible:
        missing = sorted(set(run.acked) - set(committed))[:5]
        logger.warning("%d acknowledged receipts never became visible: %s", run.invisible, missing)


async def _watch_lag(
    receiver: Service, groups: dict[str, Offsets], topic: str, partitions: list[int], run: _Run
) -> None:
    assert receiver.metrics_port is not None
    while True:
        published = metric_sum(
            await scrape(receiver.metrics_port),
            "smsrx_receiver_events_published_total",
            topic=topic,
        )
        for name, offsets in groups.items():
            committed = await offsets.committed(topic, partitions)
            run.lag.setdefault(name, []).append(max(0.0, published - committed))
        await asyncio.sleep(1.0)


@dataclass
class _System:
    url: str
    receiver: Service
    groups: dict[str, Offsets]
    topic: str
    partitions: list[int]


async def _one_run(system: _System, conn: asyncpg.Connection, *, rate: int, seconds: float) -> _Run:
    run = _Run(tag=uuid.uuid4().hex[:12])
    lag = asyncio.create_task(
        _watch_lag(system.receiver, system.groups, system.topic, system.partitions, run)
    )
    with tempfile.TemporaryDirectory(prefix="smsrx-e2e-") as folder:
        start = time.time() + 0.5
        args = [run.tag, str(rate), folder, f"{start:.6f}", str(_CONNECTIONS)]
        try:
            run.wrk = await run_wrk(
                system.url,
                connections=_CONNECTIONS,
                threads=_CONNECTIONS,
                seconds=seconds,
                script=E2E_SCRIPT,
                script_args=args,
            )
            await asyncio.sleep(1.0)  # one more lag sample: the tail of the run
        finally:
            lag.cancel()
            await asyncio.gather(lag, return_exceptions=True)
        _read_answers(Path(folder), run)
    await _visibility(conn, run)
    return run


async def run_e2e(
    stack: BenchStack,
    results: Results,
    watch: procfs.MemoryWatch,
    *,
    runs: int,
    seconds: float,
    rate: int = 2000,
) -> None:
    """Section 4: ``rate`` receipts per second for ``seconds``, ``runs`` times.

    Each repetition gets fresh topics and fresh processes: the development broker keeps
    records in memory, and its fetches cost more as a partition grows (its CPU per
    receipt doubled from one minute-long run to the next on the same topics).
    """
    conn = await asyncpg.connect(stack.database_url)
    try:
        await stack.truncate()
        for repetition in range(runs):
            logger.info("end to end: repetition %d of %d", repetition + 1, runs)
            await _repetition(stack, conn, results, watch, rate=rate, seconds=seconds)
    finally:
        await conn.close()


async def _repetition(
    stack: BenchStack,
    conn: asyncpg.Connection,
    results: Results,
    watch: procfs.MemoryWatch,
    *,
    rate: int,
    seconds: float,
) -> None:
    assert stack.broker is not None and stack.postgres is not None
    broker, postgres = stack.broker.child, stack.postgres.child
    assert broker is not None and postgres is not None
    prefix = f"e2e{uuid.uuid4().hex[:8]}."
    await stack.create_topics(prefix)
    topic = stack.settings(SMSRX_TOPIC_PREFIX=prefix).topics.delivery_receipts
    receiver = stack.receiver("receiver-e2e", prefix=prefix)
    projection = stack.consumer("status-projection", prefix=prefix)
    analytics = stack.consumer("analytics", prefix=prefix)
    system = _System(
        url=f"https://127.0.0.1:{receiver.port}/callbacks/orange/dr",
        receiver=receiver,
        groups={
            "status-projection": Offsets(stack.bootstrap, prefix + StatusProjection.group),
            "analytics": Offsets(stack.bootstrap, prefix + Analytics.group),
        },
        topic=topic,
        partitions=sorted(await highwaters(stack.bootstrap, topic)),
    )
    processes = {
        "receiver": lambda: [receiver.pid],
        "status-projection": lambda: [projection.pid],
        "analytics": lambda: [analytics.pid],
        "broker": lambda: [broker.pid] if broker.pid else [],
        "postgres": lambda: procfs.tree(postgres.pid or 0),
    }
    try:
        # Warm-up: the workers join their groups, every process reaches its steady state.
        await _one_run(system, conn, rate=200, seconds=3)
        await asyncio.sleep(1)
        if "e2e.receiver" not in watch.idle:
            for name, pids in processes.items():
                watch.record_idle(f"e2e.{name}", pids(), summed=name == "postgres")
        groups = {f"e2e.{n}": p for n, p in processes.items()}
        async with sampling(watch, groups, summed={"e2e.postgres"}):
            run = await _one_run(system, conn, rate=rate, seconds=seconds)
        _record(results, run, rate)
    finally:
        for offsets in system.groups.values():
            await offsets.close()
        for service in (analytics, projection, receiver):
            stack.stop_service(service)
        await stack.delete_topics(prefix)


def _record(results: Results, run: _Run, rate: int) -> None:
    assert run.wrk is not None
    label = f"end to end at {rate:,}/s"
    lat = run.latencies
    for key, text, value in (
        ("p50", "p50", _percentile(lat, 0.5)),
        ("p99", "p99", _percentile(lat, 0.99)),
        ("max", "max", max(lat, default=float("nan"))),
    ):
        results.add(
            f"e2e.{key}", f"{label}: 200 → visible in projection, {text}", "ms", value * 1000
        )
    results.add("e2e.http_p99", f"{label}: HTTP latency (wrk), p99", "ms", run.wrk.p99_ms)
    results.add(
        "e2e.rate",
        f"{label}: receipts acknowledged per second",
        "req/s",
        len(run.acked) / run.wrk.seconds,
    )
    for name, samples in run.lag.items():
        results.add(
            f"e2e.lag.{name}.max",
            f"{label}: {name} consumer lag, max",
            "records",
            max(samples, default=0),
        )
        results.add(
            f"e2e.lag.{name}.mean",
            f"{label}: {name} consumer lag, mean",
            "records",
            statistics.fmean(samples) if samples else 0,
        )
    if run.errors or run.invisible:
        results.notes.append(
            f"{label}: {run.errors} requests failed; {run.invisible} acknowledged receipts "
            "never became visible"
        )
    logger.info(
        "e2e: %d acked (%.0f/s), p50 %.0f ms, p99 %.0f ms, max %.0f ms, lag max %s",
        len(run.acked),
        len(run.acked) / run.wrk.seconds,
        _percentile(lat, 0.5) * 1000,
        _percentile(lat, 0.99) * 1000,
        max(lat, default=0) * 1000,
        {k: max(v, default=0) for k, v in run.lag.items()},
    )
