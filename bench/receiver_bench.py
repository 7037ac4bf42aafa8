"""Sections 1 and 2: receiver throughput and latency against the bare handler; scale-out.

Section 1 runs four servers side by side: the full receiver (``smsrx receiver``:
allowlist, parse, dedup against PostgreSQL, durable publish to the broker) and the
bare aiohttp handler, each over HTTPS and over plain HTTP. Every repetition runs
wrk against each of them in turn, at 64 and at 256 connections, so the ratios
compare runs taken a few seconds apart.

Section 2 runs ``smsrx receiver --workers N`` (N processes sharing the port with
SO_REUSEPORT) for N = 1 and 2, and divides the requests served by the CPU seconds
the receiver processes used, read from /proc. Around every run it checks that N
processes serve: the same N worker pids before and after, each of which answered
requests (from its own metrics port); otherwise the benchmark stops.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass

import aiohttp
import psutil

from bench import procfs
from bench.report import Results
from bench.scrape import metric_sum, sampling, scrape
from bench.stack import BenchStack, Service
from bench.wrk import run_wrk

__all__ = ["CONNECTIONS", "run_receiver", "run_scale_out"]

logger = logging.getLogger(__name__)

CONNECTIONS = (64, 256)


@dataclass
class _Target:
    key: str
    label: str
    service: Service
    scheme: str

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.service.port}/callbacks/orange/dr"

    def pids(self) -> list[int]:
        return procfs.tree(self.service.pid)


def _cpu(pids: list[int]) -> float:
    return sum(procfs.cpu_seconds(pid) for pid in pids)


async def _load(
    results: Results,
    target: _Target,
    connections: int,
    seconds: float,
    watch: procfs.MemoryWatch,
) -> None:
    pids = target.pids()
    before = _cpu(pids)
    groups = {target.key: target.pids}
    async with sampling(watch, groups):
        run = await run_wrk(target.url, connections=connections, seconds=seconds)
    cpu = _cpu(pids) - before
    prefix = f"{target.key}.c{connections}"
    label = f"{target.label}, {connections} conn"
    results.add(f"{prefix}.rps", f"{label}: throughput", "req/s", run.rps)
    results.add(f"{prefix}.p50", f"{label}: p50 latency", "ms", run.p50_ms)
    results.add(f"{prefix}.p99", f"{label}: p99 latency", "ms", run.p99_ms)
    results.add(f"{prefix}.max", f"{label}: max latency", "ms", run.max_ms)
    results.add(f"{prefix}.cpu", f"{label}: server CPU per request", "µs", cpu / run.requests * 1e6)
    if run.errors:
        results.notes.append(f"{label}: {run.errors} of {run.requests} requests failed (wrk)")
    logger.info(
        "%-36s %7.0f req/s  p50 %6.1f  p99 %6.1f  max %6.1f ms  cpu %4.0f µs/req",
        label,
        run.rps,
        run.p50_ms,
        run.p99_ms,
        run.max_ms,
        cpu / run.requests * 1e6,
    )


async def run_receiver(
    stack: BenchStack, results: Results, watch: procfs.MemoryWatch, *, runs: int, seconds: float
) -> None:
    """Section 1: full receiver and bare handler, HTTPS and HTTP, at 64 and 256 connections."""
    targets = [
        _Target(
            "receiver.https", "full receiver, HTTPS", stack.receiver("receiver-https"), "https"
        ),
        _Target("bare.https", "bare aiohttp, HTTPS", stack.bare("bare-https"), "https"),
        _Target(
            "receiver.http",
            "full receiver, HTTP",
            stack.receiver("receiver-http", http=True),
            "http",
        ),
        _Target("bare.http", "bare aiohttp, HTTP", stack.bare("bare-http", http=True), "http"),
    ]
    for target in targets:
        watch.record_idle(target.key, target.pids())
    for target in targets:  # warm-up: connections, TLS sessions, caches, the first batches
        await run_wrk(target.url, connections=64, seconds=2)
    before = {
        t.key: await scrape(t.service.metrics_port) for t in targets if t.service.metrics_port
    }
    for repetition in range(runs):
        logger.info("receiver: repetition %d of %d", repetition + 1, runs)
        for connections in CONNECTIONS:
            for target in targets:
                await _load(results, target, connections, seconds, watch)
    for target in targets:
        if target.service.metrics_port:
            _outcomes(
                results, target, before[target.key], await scrape(target.service.metrics_port)
            )
    for transport in ("https", "http"):
        for connections in CONNECTIONS:
            key = f"c{connections}.rps"
            results.ratio(
                f"ratio.{transport}.c{connections}",
                f"full receiver ÷ bare aiohttp, {transport.upper()}, {connections} conn",
                f"receiver.{transport}.{key}",
                f"bare.{transport}.{key}",
            )
    for target in targets:
        stack.stop_service(target.service)


def _outcomes(results: Results, target: _Target, before: dict, after: dict) -> None:  # type: ignore[type-arg]
    def delta(**labels: str) -> float:
        name = "smsrx_receiver_requests_total"
        return metric_sum(after, name, **labels) - metric_sum(before, name, **labels)

    total = delta(provider="orange")
    accepted = delta(provider="orange", outcome="accepted")
    duplicate = delta(provider="orange", outcome="duplicate")
    other = total - accepted - duplicate
    results.notes.append(
        f"{target.label}: {total:,.0f} callbacks answered by the receiver: {accepted:,.0f} accepted "
        f"(published), {duplicate:,.0f} duplicates ({duplicate / max(total, 1) * 100:.1f} %), "
        f"{other:,.0f} other outcomes"
    )


def _serving(service: Service, workers: int) -> list[int]:
    """The processes that serve: the receiver itself, or the worker processes its parent
    supervises (not multiprocessing's resource tracker, its other child)."""
    if workers == 1:
        return [service.pid]
    found = []
    for child in psutil.Process(service.pid).children():
        with contextlib.suppress(psutil.Error):
            if child.status() != psutil.STATUS_ZOMBIE and "spawn_main" in " ".join(child.cmdline()):
                found.append(child.pid)
    return sorted(found)


async def _requests(service: Service, workers: int) -> list[float]:
    """Callbacks each worker has answered so far, from its own metrics port (base + slot);
    0 for a worker whose metrics port does not answer."""
    assert service.metrics_port is not None
    counts = []
    for slot in range(workers):
        try:
            samples = await scrape(service.metrics_port + slot)
        except (aiohttp.ClientError, OSError):
            samples = {}
        counts.append(metric_sum(samples, "smsrx_receiver_requests_total"))
    return counts


async def run_scale_out(
    stack: BenchStack, results: Results, watch: procfs.MemoryWatch, *, runs: int, seconds: float
) -> None:
    """Section 2: ``smsrx receiver --workers N`` for N = 1 and 2, HTTPS, 64 connections."""
    targets = []
    for workers in (1, 2):
        service = stack.receiver(f"receiver-workers{workers}", workers=workers)
        targets.append(
            (workers, _Target(f"scale.n{workers}", f"receiver ×{workers}", service, "https"))
        )
    for _, target in targets:
        await run_wrk(target.url, connections=64, seconds=2)
    served: dict[int, list[float]] = {}
    for repetition in range(runs):
        logger.info("scale-out: repetition %d of %d", repetition + 1, runs)
        for workers, target in targets:
            serving = _serving(target.service, workers)
            answered = await _requests(target.service, workers)
            pids = target.pids()  # the parent of --workers 2 only supervises; it is counted too
            before = _cpu(pids)
            async with sampling(watch, {f"receiver ×{workers} (each)": target.pids}):
                run = await run_wrk(target.url, connections=64, seconds=seconds)
            cpu = _cpu(pids) - before
            share = [
                a - b
                for a, b in zip(await _requests(target.service, workers), answered, strict=True)
            ]
            after = _serving(target.service, workers)
            if len(serving) != workers or after != serving or not all(share):
                raise RuntimeError(
                    f"receiver --workers {workers}: serving processes {serving} before the run, "
                    f"{after} after, requests answered by each {share}"
                )
            served[workers] = [
                a + b for a, b in zip(served.get(workers, [0.0] * workers), share, strict=True)
            ]
            results.add(
                f"scale.n{workers}.processes",
                f"receiver ×{workers}: processes serving (checked before and after each run)",
                "processes",
                len(serving),
            )
            results.add(
                f"scale.n{workers}.rps",
                f"receiver ×{workers}, HTTPS, 64 conn: throughput",
                "req/s",
                run.rps,
            )
            results.add(
                f"scale.n{workers}.per_cpu",
                f"receiver ×{workers}: requests per receiver CPU-second",
                "req/CPU-s",
                run.requests / cpu if cpu else float("nan"),
            )
            results.add(
                f"scale.n{workers}.cpu_used",
                f"receiver ×{workers}: receiver CPU used (cores)",
                "cores",
                cpu / run.seconds,
            )
            logger.info(
                "receiver x%d: %d processes %s answering %s; %7.0f req/s, %6.0f req per CPU-s, %.2f cores",
                workers,
                len(serving),
                serving,
                [f"{s:.0f}" for s in share],
                run.rps,
                run.requests / cpu if cpu else 0,
                cpu / run.seconds,
            )
    for workers, counts in served.items():
        total = sum(counts) or 1
        results.notes.append(
            f"receiver ×{workers}: {workers} process{'es' if workers > 1 else ''} served, "
            "requests answered by each (its own metrics port): "
            + " / ".join(f"{c:,.0f} ({c / total * 100:.0f} %)" for c in counts)
        )
    results.ratio(
        "scale.ratio.per_cpu",
        "scale-out: requests per CPU-second, 2 processes ÷ 1",
        "scale.n2.per_cpu",
        "scale.n1.per_cpu",
    )
    results.ratio(
        "scale.ratio.rps", "scale-out: throughput, 2 processes ÷ 1", "scale.n2.rps", "scale.n1.rps"
    )
    for _, target in targets:
        stack.stop_service(target.service)
