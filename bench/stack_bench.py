"""Section 6: the whole stack at full speed, and how long it takes to catch up.

The system runs as an operator runs it (:mod:`bench.whole`): ``smsrx receiver``
(HTTPS, one process), ``smsrx consumer status-projection`` and ``smsrx consumer
analytics``, on the broker and PostgreSQL. Each repetition gets fresh topics, emptied
tables and new processes, warms up (a short wrk run, then a catch-up), then:

1. wrk (1 thread, 64 connections, ``orange.lua``, every receipt for a new message)
   posts as fast as the receiver answers, for 60 s;
2. the throughput is the receipts answered 200 per second, cross-checked with the
   receiver's own count of receipts the broker acknowledged: the two may differ only
   by the requests in flight when wrk stopped, else the run stops with an error;
3. catch-up is the time from the end of the burst until both groups have committed
   every receipt and analytics every status change the projection published;
4. CPU per receipt is the CPU each process of the system used over the burst and
   the catch-up (broker, every PostgreSQL process, receiver, status-projection,
   analytics; not wrk, not this process), divided by the receipts acknowledged.
"""

from __future__ import annotations

import logging
import time

from bench import procfs
from bench.report import Results
from bench.stack import BenchStack
from bench.whole import CONNECTIONS, PROCESSES, Burst, WholeSystem
from bench.wrk import run_wrk

__all__ = ["burst", "catchup_limit", "record", "run_stack", "warm_up"]

logger = logging.getLogger(__name__)

_NAMES = {
    "broker": "broker (Tansu)",
    "postgres": "PostgreSQL (all its processes)",
    "receiver": "receiver",
    "projection": "status-projection",
    "analytics": "analytics",
}


def catchup_limit(seconds: float) -> float:
    """How long a catch-up after ``seconds`` of load may take before the run fails."""
    return max(120.0, 5 * seconds)


async def warm_up(system: WholeSystem) -> None:
    """Connections, TLS sessions, group joins and the first batches, then a catch-up."""
    await run_wrk(system.url, connections=8, seconds=2, duplicates=0.0)
    await system.caught_up(catchup_limit(2))


async def burst(system: WholeSystem, seconds: float) -> Burst:
    """wrk at full speed for ``seconds``, then the catch-up; the CPU of both."""
    system.check()
    published = await system.published()
    busy, own, cpu = procfs.machine_busy_seconds(), procfs.own_cpu_seconds(), system.cpu()
    run = await run_wrk(system.url, connections=CONNECTIONS, seconds=seconds, duplicates=0.0)
    catchup = await system.caught_up(catchup_limit(seconds))
    used = {name: now - cpu.get(name, 0.0) for name, now in system.cpu().items()}
    own_used = procfs.own_cpu_seconds() - own
    busy_used = procfs.machine_busy_seconds() - busy
    system.check()
    published = await system.published() - published
    acked = run.requests - run.errors
    # Requests still in flight when wrk stopped may have been published, unanswered.
    if not 0 <= published - acked <= CONNECTIONS + run.errors:
        raise RuntimeError(
            f"whole system: wrk got {acked:,} answers 200 ({run.errors} errors), the receiver "
            f"published {published:,.0f} receipts; they may differ by at most the "
            f"{CONNECTIONS} requests in flight"
        )
    stack = sum(used.values())
    return Burst(
        seconds=run.seconds,
        acked=acked,
        published=published,
        errors=run.errors,
        http_p99=run.p99_ms,
        catchup=catchup,
        cpu=used,
        load=own_used - stack,
        others=max(0.0, busy_used - own_used),
    )


def record(results: Results, key: str, label: str, run: Burst) -> None:
    """The figures of one burst under ``key`` (``stack``, ``soak.start``, ...)."""
    results.add(f"{key}.rate", f"{label}: receipts acknowledged per second", "req/s", run.rate)
    results.add(f"{key}.catchup", f"{label}: catch-up after the burst", "s", run.catchup)
    results.add(f"{key}.http_p99", f"{label}: HTTP latency (wrk), p99", "ms", run.http_p99)
    results.add(
        f"{key}.cpu.total",
        f"{label}: CPU per receipt, every process but wrk (burst + catch-up)",
        "µs",
        run.per_receipt(),
    )
    for name in PROCESSES:
        results.add(
            f"{key}.cpu.{name}",
            f"{label}: CPU per receipt, {_NAMES[name]}",
            "µs",
            run.per_receipt(name),
        )
    results.notes.append(
        f"{label}: {run.acked:,} receipts answered 200 in {run.seconds:.1f}s "
        f"({run.errors} errors), {run.published:,.0f} published (the receiver's counter); "
        f"over the burst and the {run.catchup:.1f}s catch-up the system used "
        f"{sum(run.cpu.values()) / run.elapsed:.2f} cores, wrk and the benchmark "
        f"{run.load / run.elapsed:.2f}, other processes {run.others / run.elapsed:.2f}"
    )
    logger.info(
        "%s: %.0f receipts/s, caught up in %.1fs, %.0f µs CPU per receipt (%s)",
        label,
        run.rate,
        run.catchup,
        run.per_receipt(),
        ", ".join(f"{name} {run.per_receipt(name):.0f}" for name in PROCESSES),
    )


async def run_stack(stack: BenchStack, results: Results, *, runs: int, seconds: float) -> None:
    """Section 6, ``runs`` times, each on fresh topics and new processes."""
    label = f"whole stack, {seconds:.0f}s at full speed"
    for repetition in range(runs):
        logger.info("whole stack: repetition %d of %d", repetition + 1, runs)
        started = time.monotonic()
        system = await WholeSystem.start(stack, "stack")
        try:
            await warm_up(system)
            record(results, "stack", label, await burst(system, seconds))
        finally:
            await system.stop()
        logger.info("whole stack: repetition took %.0fs", time.monotonic() - started)
