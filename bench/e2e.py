"""Section 4: end to end at a steady rate, from the HTTP 200 to the row in the projection.

The whole system runs as an operator runs it: ``smsrx receiver`` (HTTPS),
``smsrx consumer status-projection`` and ``smsrx consumer analytics``. This process
sends Orange receipts at a fixed rate (open loop: sends are scheduled by the clock,
not by answers), each for a new message, over keep-alive HTTPS connections.

For each receipt it notes when the 200 arrived. A poller asks PostgreSQL every
20 ms which of the acknowledged messages have a row in ``recipient_status``; a
receipt's latency is from its 200 to the answer of the first poll that found its
row. Figures are therefore upper bounds, by at most one poll interval plus the
poll's round trip. Consumer lag, sampled every second, is the number of receipts the
broker acknowledged to the receiver (its ``events_published`` counter) minus the
group's committed offsets.
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
from bench.stack import Service, Stack
from bench.wrk import E2E_SCRIPT, WrkResult, run_wrk

__all__ = ["run_e2e"]

logger = logging.getLogger(__name__)

_POLL = 0.02
_CONNECTIONS = 32


@dataclass
class _Run:
    acked: dict[str, float] = field(default_factory=dict)  # message id -> time of the 200
    latencies: list[float] = field(default_factory=list)
    answered: int = 0
    errors: int = 0
    wrk: WrkResult | None = None
    lag: dict[str, list[float]] = field(default_factory=dict)


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class _Answers:
    """Reads the answer logs e2e.lua writes, as they grow."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._offsets: dict[Path, int] = {}
        self._partial: dict[Path, bytes] = {}

    def read(self, run: _Run) -> None:
        """Add the answers logged since the last call to ``run``."""
        for path in sorted(self.folder.glob("*.log")):
            with path.open("rb") as log:
                log.seek(self._offsets.get(path, 0))
                data = self._partial.pop(path, b"") + log.read()
                self._offsets[path] = log.tell()
            lines = data.split(b"\n")
            if lines[-1]:
                self._partial[path] = lines[-1]
            for line in lines[:-1]:
                message_id, at, status = line.decode().split()
                if status == "200":
                    run.acked[message_id] = float(at)
                    run.answered += 1
                else:
                    run.errors += 1


async def _poll(
    conn: asyncpg.Connection, run: _Run, answers: _Answers, stop: asyncio.Event
) -> None:
    while True:
        stopping = stop.is_set()
        answers.read(run)
        if stopping and not run.acked:
            return
        if run.acked:
            ids = list(run.acked)[:5000]
            rows = await conn.fetch(
                "SELECT DISTINCT message_id FROM recipient_status "
                "WHERE provider = 'orange' AND message_id = ANY($1::text[])",
                ids,
            )
            seen = time.monotonic()  # the clock e2e.lua logs with (CLOCK_MONOTONIC)
            for row in rows:
                acked = run.acked.pop(row[0], None)
                if acked is not None:
                    run.latencies.append(max(0.0, seen - acked))
        await asyncio.sleep(_POLL)


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


async def run_e2e(
    stack: Stack,
    results: Results,
    watch: procfs.MemoryWatch,
    *,
    runs: int,
    seconds: float,
    rate: int = 2000,
) -> None:
    """Section 4: ``rate`` receipts per second for ``seconds``, ``runs`` times."""
    assert stack.cert is not None and stack.broker is not None and stack.postgres is not None
    prefix = f"e2e{uuid.uuid4().hex[:8]}."
    settings = stack.settings(prefix)
    await stack.create_topics(prefix)
    await stack.truncate()
    receiver = stack.receiver("receiver-e2e", prefix=prefix)
    projection = stack.consumer("status-projection", prefix=prefix)
    analytics = stack.consumer("analytics", prefix=prefix)
    url = f"https://127.0.0.1:{receiver.port}/callbacks/orange/dr"
    topic = settings.topics.delivery_receipts
    partitions = sorted(await highwaters(stack.bootstrap, topic))
    groups = {
        "status-projection": Offsets(stack.bootstrap, prefix + "smsrx-status-projection"),
        "analytics": Offsets(stack.bootstrap, prefix + "smsrx-analytics"),
    }
    processes = {
        "receiver": lambda: [receiver.pid],
        "status-projection": lambda: [projection.pid],
        "analytics": lambda: [analytics.pid],
        "broker": lambda: [stack.broker.child.pid] if stack.broker.child.pid else [],  # type: ignore[union-attr]
        "postgres": lambda: procfs.tree(stack.postgres.child.pid or 0),  # type: ignore[union-attr]
    }
    conn = await asyncpg.connect(stack.database_url)
    try:
        # Warm-up: the workers join their groups, every process reaches its steady state.
        await _one_run(
            url,
            conn,
            rate=200,
            seconds=5,
            receiver=receiver,
            groups=groups,
            topic=topic,
            partitions=partitions,
        )
        await asyncio.sleep(2)
        for name, pids in processes.items():
            watch.record_idle(f"e2e.{name}", pids(), summed=name == "postgres")
        for repetition in range(runs):
            logger.info("end to end: repetition %d of %d", repetition + 1, runs)
            async with sampling(watch, {f"e2e.{n}": p for n, p in processes.items()}):
                run = await _one_run(
                    url,
                    conn,
                    rate=rate,
                    seconds=seconds,
                    receiver=receiver,
                    groups=groups,
                    topic=topic,
                    partitions=partitions,
                )
            _record(results, run, rate, seconds)
    finally:
        await conn.close()
        for offsets in groups.values():
            await offsets.close()
        for service in (analytics, projection, receiver):
            stack.stop_service(service)
        await stack.delete_topics(prefix)


async def _one_run(
    url: str,
    conn: asyncpg.Connection,
    *,
    rate: int,
    seconds: float,
    receiver: Service,
    groups: dict[str, Offsets],
    topic: str,
    partitions: list[int],
) -> _Run:
    run = _Run()
    stop = asyncio.Event()
    with tempfile.TemporaryDirectory(prefix="smsrx-e2e-") as folder:
        answers = _Answers(Path(folder))
        poller = asyncio.create_task(_poll(conn, run, answers, stop))
        lag = asyncio.create_task(_watch_lag(receiver, groups, topic, partitions, run))
        connections = _CONNECTIONS
        start = time.monotonic() + 0.5
        args = [uuid.uuid4().hex[:12], str(rate), folder, f"{start:.6f}", str(connections)]
        try:
            run.wrk = await run_wrk(
                url,
                connections=connections,
                threads=connections,
                seconds=seconds,
                script=E2E_SCRIPT,
                script_args=args,
            )
        finally:
            lag.cancel()
            stop.set()
            try:
                await asyncio.wait_for(poller, 30)
            except TimeoutError:
                logger.warning("%d acknowledged receipts never became visible", len(run.acked))
            await asyncio.gather(lag, return_exceptions=True)
    return run


def _record(results: Results, run: _Run, rate: int, seconds: float) -> None:
    label = f"end to end at {rate:,}/s"
    lat = run.latencies
    results.add(
        "e2e.p50", f"{label}: 200 → visible in projection, p50", "ms", _percentile(lat, 0.5) * 1000
    )
    results.add(
        "e2e.p99", f"{label}: 200 → visible in projection, p99", "ms", _percentile(lat, 0.99) * 1000
    )
    results.add(
        "e2e.max",
        f"{label}: 200 → visible in projection, max",
        "ms",
        max(lat, default=float("nan")) * 1000,
    )
    assert run.wrk is not None
    results.add("e2e.http_p99", f"{label}: HTTP latency (wrk), p99", "ms", run.wrk.p99_ms)
    results.add(
        "e2e.rate",
        f"{label}: receipts acknowledged per second",
        "req/s",
        run.answered / run.wrk.seconds,
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
    if run.errors or run.acked:
        results.notes.append(
            f"{label}: {run.errors} requests failed, {len(run.acked)} acknowledged receipts never became visible"
        )
    logger.info(
        "e2e: %d acked, p50 %.0f ms, p99 %.0f ms, max %.0f ms, lag max %s",
        run.answered,
        _percentile(lat, 0.5) * 1000,
        _percentile(lat, 0.99) * 1000,
        max(lat, default=0) * 1000,
        {k: max(v, default=0) for k, v in run.lag.items()},
    )
