"""Section 7: the whole stack after 30 minutes at 1,000 receipts/s, against its start.

One repetition (it is long), on the system of :mod:`bench.whole`, whose topics are
not reset between the phases: what the stack keeps of the 30 minutes is the point.

1. capacity at the start: a 20 s burst at full speed and its catch-up, as in
   section 6 (receipts/s, CPU per receipt);
2. memory at the start: receiver and broker RSS, PostgreSQL's PSS summed;
3. a steady 1,000 receipts/s for 30 minutes with ``e2e.lua`` (sends follow the
   clock), logging every minute the rate, the consumer lag and the CPU in use;
   the achieved rate must be within 5 % of the one asked, else the run says so;
   consumer lag is read at its end, then the system catches up;
4. memory at the end, then the same burst again: capacity after ÷ at the start, and
   CPU per receipt of every process but the broker, end ÷ start (the development
   broker's fetches cost more as its in-memory partitions grow: this figure says
   whether anything else slowed down).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import tempfile
import time
import uuid
from dataclasses import dataclass, field

from bench.report import Results
from bench.stack import BenchStack
from bench.stack_bench import burst, catchup_limit, record, warm_up
from bench.whole import CONNECTIONS, PROCESSES, Burst, WholeSystem
from bench.wrk import E2E_SCRIPT, WrkResult, run_wrk

__all__ = ["run_soak"]

logger = logging.getLogger(__name__)

_MEMORY = {
    "receiver": "receiver RSS",
    "broker": "broker RSS (memory storage: holds every record)",
    "postgres": "PostgreSQL, sum of PSS over its processes",
}


@dataclass
class _Steady:
    run: WrkResult
    published: float
    cpu: dict[str, float]
    lag: dict[str, float]
    """Consumer lag by group when the load stopped."""
    lag_max: dict[str, float] = field(default_factory=dict)
    """The largest of the minute samples."""

    @property
    def acked(self) -> int:
        return self.run.requests - self.run.errors

    @property
    def rate(self) -> float:
        return self.acked / self.run.seconds


async def _progress(system: WholeSystem, minutes: float, steady: dict[str, float]) -> None:
    """Log rate, lag and CPU every minute, keeping the largest lag in ``steady``."""
    published, cpu, at = await system.published(), system.cpu(), time.monotonic()
    minute = 0
    while True:
        await asyncio.sleep(60.0)
        minute += 1
        now_published, now_cpu, now = await system.published(), system.cpu(), time.monotonic()
        lag = await system.lag()
        for name, value in lag.items():
            steady[name] = max(steady.get(name, 0.0), value)
        cores = {name: (now_cpu[name] - cpu.get(name, 0.0)) / (now - at) for name in now_cpu}
        logger.info(
            "soak: minute %d of %.0f: %.0f receipts/s, lag %s, stack CPU %.2f cores (%s)",
            minute,
            minutes,
            (now_published - published) / (now - at),
            ", ".join(f"{name} {value:,.0f}" for name, value in lag.items()),
            sum(cores.values()),
            ", ".join(f"{name} {cores[name]:.2f}" for name in PROCESSES),
        )
        published, cpu, at = now_published, now_cpu, now


async def _steady(system: WholeSystem, *, minutes: float, rate: int) -> _Steady:
    """``rate`` receipts/s for ``minutes``, each for a new message, at a fixed pace."""
    system.check()
    lag_max: dict[str, float] = {}
    published, cpu = await system.published(), system.cpu()
    progress = asyncio.create_task(_progress(system, minutes, lag_max))
    try:
        with tempfile.TemporaryDirectory(prefix="smsrx-soak-") as folder:
            start = time.time() + 0.5
            args = [uuid.uuid4().hex[:12], str(rate), folder, f"{start:.6f}", str(CONNECTIONS)]
            run = await run_wrk(
                system.url,
                connections=CONNECTIONS,
                threads=CONNECTIONS,
                seconds=minutes * 60,
                script=E2E_SCRIPT,
                script_args=args,
            )
    finally:
        progress.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await progress
    used = {name: now - cpu.get(name, 0.0) for name, now in system.cpu().items()}
    lag = await system.lag()
    system.check()
    steady = _Steady(run, await system.published() - published, used, lag, lag_max)
    if not 0 <= steady.published - steady.acked <= CONNECTIONS + run.errors:
        raise RuntimeError(
            f"soak: wrk got {steady.acked:,} answers 200, the receiver published "
            f"{steady.published:,.0f} receipts; they may differ by at most {CONNECTIONS}"
        )
    return steady


async def run_soak(
    stack: BenchStack,
    results: Results,
    *,
    minutes: float,
    burst_seconds: float = 20.0,
    rate: int = 1000,
) -> None:
    """Section 7, once: burst, ``minutes`` at ``rate``, burst again."""
    system = await WholeSystem.start(stack, "soak")
    try:
        await warm_up(system)
        before = await burst(system, burst_seconds)
        record(results, "soak.start", f"soak, start: {burst_seconds:.0f}s at full speed", before)
        memory = system.memory()
        logger.info("soak: %.0f minutes at %d receipts/s", minutes, rate)
        steady = await _steady(system, minutes=minutes, rate=rate)
        lag = {name: f"{value:,.0f}" for name, value in steady.lag.items()}
        logger.info("soak: %.0f receipts/s reached, lag at the end %s", steady.rate, lag)
        caught = await system.caught_up(catchup_limit(minutes * 60))
        _record_steady(results, steady, rate=rate, minutes=minutes, catchup=caught)
        for when, sizes in (("start", memory), ("end", system.memory())):
            for name, size in sizes.items():
                results.add(
                    f"soak.rss.{name}.{when}",
                    f"soak: {_MEMORY[name]}, at the {when} of the steady phase",
                    "MB",
                    size / 2**20,
                )
        after = await burst(system, burst_seconds)
        record(results, "soak.end", f"soak, end: {burst_seconds:.0f}s at full speed", after)
    finally:
        await system.stop()
    results.ratio(
        "soak.ratio",
        f"soak: capacity after {minutes:.0f} min at {rate:,}/s ÷ at its start",
        "soak.end.rate",
        "soak.start.rate",
    )
    # The development broker slows down as its in-memory partitions grow: this says
    # whether anything else did.
    results.add(
        "soak.cpu_ratio.without_broker",
        "soak: CPU per receipt of every process but the broker, end ÷ start",
        "ratio",
        _without_broker(after) / _without_broker(before),
    )
    logger.info("soak: capacity after ÷ at the start %.3f", after.rate / before.rate)


def _without_broker(run: Burst) -> float:
    return run.per_receipt() - run.per_receipt("broker")


def _record_steady(
    results: Results, steady: _Steady, *, rate: int, minutes: float, catchup: float
) -> None:
    label = f"soak, {minutes:.0f} min at {rate:,}/s"
    results.add(
        "soak.steady.rate", f"{label}: receipts acknowledged per second", "req/s", steady.rate
    )
    results.add(
        "soak.steady.http_p99", f"{label}: HTTP latency (wrk), p99", "ms", steady.run.p99_ms
    )
    results.add(
        "soak.steady.cpu.total",
        f"{label}: CPU per receipt, every process but wrk",
        "µs",
        sum(steady.cpu.values()) / steady.acked * 1e6 if steady.acked else float("nan"),
    )
    for name, value in steady.lag.items():
        results.add(f"soak.steady.lag.{name}", f"{label}: {name} lag at its end", "records", value)
    for name, value in steady.lag_max.items():
        results.add(
            f"soak.steady.lag.{name}.max",
            f"{label}: {name} lag, largest minute sample",
            "records",
            value,
        )
    results.add("soak.steady.catchup", f"{label}: catch-up after it", "s", catchup)
    if abs(steady.rate - rate) > 0.05 * rate:
        results.notes.append(
            f"{label}: **only {steady.rate:,.0f} receipts/s reached**, not within 5 % of "
            f"{rate:,}/s ({steady.run.errors} errors): the capacity ratio is not for that load"
        )
        logger.warning("soak: %.0f receipts/s reached, not within 5 %% of %d", steady.rate, rate)
    results.notes.append(
        f"{label}: {steady.acked:,} receipts answered 200 ({steady.run.errors} errors), "
        f"{steady.published:,.0f} published; the system used "
        f"{sum(steady.cpu.values()) / steady.run.seconds:.2f} cores"
    )
