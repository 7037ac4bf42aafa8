"""The receiver's edge under a connection flood: callback latency and receiver memory.

Three phases, each measured the same way: callbacks sent at a fixed rate (open loop,
one new TLS connection each, as carriers do), timed from connect to answer, while
the receiver's RSS is sampled from ``/proc``:

1. ``baseline``: nothing else;
2. ``idle TLS``: ``--connections`` connections that finish their TLS handshake and
   then send nothing;
3. ``silent TCP``: ``--connections`` connections that never start their handshake.

The flood runs in its own process and reopens each connection the receiver closes
(after ``SMSRX_CLIENT_TIMEOUT``), so it holds its count through the measurement.
The receiver is ``smsrx receiver`` with its default settings (10 s client timeout,
4096 connections), started with the broker and PostgreSQL by ``bench/stack.py``.

Run: ``.venv/bin/python bench/edge_flood.py [--connections 2000] [--seconds 15] [--rate 50]``
(about 2 minutes).
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import resource
import ssl
import sys
import time
from multiprocessing.sharedctypes import Synchronized
from multiprocessing.synchronize import Event
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make ``bench`` and ``smsrx`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import aiohttp
import orjson

from bench.procfs import MemoryWatch, rss_bytes
from bench.report import table
from bench.scrape import metric_sum, sampling, scrape
from bench.stack import BenchStack, Service

FLOOD_SOURCE = "127.0.0.5"  # not on the allowlist: these connections never post anything
MiB = 1024 * 1024


def _raise_fd_limit(need: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < need:
        target = need if hard == resource.RLIM_INFINITY else min(need, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def flood(port: int, ca: str | None, count: int, held: Synchronized[int], stop: Event) -> None:
    """Hold ``count`` idle connections (TLS done if ``ca``, else never started) until ``stop``."""
    _raise_fd_limit(count + 256)
    asyncio.run(_hold(port, ca, count, held, stop))


async def _hold(
    port: int, ca: str | None, count: int, held: Synchronized[int], stop: Event
) -> None:
    context = ssl.create_default_context(cafile=ca) if ca else None
    gate = asyncio.Semaphore(64)  # connects in flight, within the listen backlog

    async def one() -> None:
        while not stop.is_set():
            try:
                async with gate:
                    reader, writer = await asyncio.open_connection(
                        "127.0.0.1",
                        port,
                        ssl=context,
                        server_hostname="localhost" if context else None,
                        local_addr=(FLOOD_SOURCE, 0),
                    )
            except OSError:
                await asyncio.sleep(0.1)
                continue
            with held.get_lock():
                held.value += 1
            try:
                await reader.read(1)  # until the receiver closes it
            except OSError:
                pass
            finally:
                with held.get_lock():
                    held.value -= 1
                writer.close()

    tasks = [asyncio.create_task(one()) for _ in range(count)]
    await asyncio.to_thread(stop.wait)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def callbacks(port: int, ca: Path, rate: float, seconds: float, tag: str) -> list[float]:
    """Callbacks at ``rate`` per second for ``seconds``: each one's latency (NaN if not 200)."""
    context = ssl.create_default_context(cafile=str(ca))
    connector = aiohttp.TCPConnector(ssl=context, force_close=True, limit=0)
    url = f"https://localhost:{port}/callbacks/orange/dr"
    timeout = aiohttp.ClientTimeout(total=30)

    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def one(i: int) -> float:
            info = {"address": "tel:+2250700000000", "deliveryStatus": "DeliveredToTerminal"}
            body = orjson.dumps(
                {"deliveryInfoNotification": {"callbackData": f"{tag}-{i}", "deliveryInfo": info}}
            )
            started = time.perf_counter()
            try:
                async with session.post(
                    url, data=body, headers={"Content-Type": "application/json"}
                ) as resp:
                    await resp.read()
                    ok = resp.status == 200
            except (aiohttp.ClientError, TimeoutError):
                ok = False
            return time.perf_counter() - started if ok else float("nan")

        tasks = []
        start = time.perf_counter()
        for i in range(int(rate * seconds)):
            await asyncio.sleep(max(0.0, start + i / rate - time.perf_counter()))
            tasks.append(asyncio.create_task(one(i)))
        return list(await asyncio.gather(*tasks))


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


async def phase(
    name: str, receiver: Service, ca: Path, args: argparse.Namespace, kind: str | None
) -> list[str]:
    """One measured phase; ``kind`` is ``tls``, ``tcp`` or None (no flood)."""
    assert receiver.port is not None and receiver.metrics_port is not None
    metrics_port = receiver.metrics_port
    context = multiprocessing.get_context("spawn")
    held = context.Value("i", 0)
    stop = context.Event()
    proc = None
    if kind is not None:
        cafile = str(ca) if kind == "tls" else None
        proc = context.Process(
            target=flood, args=(receiver.port, cafile, args.connections, held, stop)
        )
        proc.start()
        for _ in range(300):  # up to 60 s for the flood to hold its count
            if held.value >= args.connections:
                break
            await asyncio.sleep(0.2)
    before = await scrape(metrics_port)
    watch = MemoryWatch()
    lowest_held = held.value
    peak_open = 0.0

    async def watch_flood() -> None:
        nonlocal lowest_held, peak_open
        while True:
            lowest_held = min(lowest_held, held.value)
            samples = await scrape(metrics_port)
            peak_open = max(peak_open, metric_sum(samples, "smsrx_receiver_connections"))
            await asyncio.sleep(0.5)

    watcher = asyncio.create_task(watch_flood())
    async with sampling(watch, {"receiver": lambda: [receiver.pid]}):
        latencies = await callbacks(receiver.port, ca, args.rate, args.seconds, name)
    watcher.cancel()
    after = await scrape(metrics_port)
    stop.set()
    if proc is not None:
        proc.join(30)
    answered = [v for v in latencies if v == v]
    handshake_failures = metric_sum(
        after, "smsrx_receiver_tls_handshake_failures_total"
    ) - metric_sum(before, "smsrx_receiver_tls_handshake_failures_total")
    return [
        name,
        f"{lowest_held:,}" if kind else "-",
        f"{len(answered)}/{len(latencies)}",
        f"{_quantile(answered, 0.50) * 1000:.0f} ms",
        f"{_quantile(answered, 0.99) * 1000:.0f} ms",
        f"{max(answered, default=float('nan')) * 1000:.0f} ms",
        f"{watch.peak.get('receiver', 0) / MiB:.0f} MiB",
        f"{peak_open:,.0f}",
        f"{handshake_failures:,.0f}",
    ]


async def measure(stack: BenchStack, args: argparse.Namespace) -> None:
    """Run the three phases, each on a fresh receiver (freed memory is not given back to
    the system, so a shared one would carry one phase's peak into the next); print the table."""
    await stack.create_topics()
    assert stack.cert is not None
    rows = []
    for name, kind in (("baseline", None), ("idle TLS", "tls"), ("silent TCP", "tcp")):
        receiver = stack.receiver(f"receiver-{kind or 'baseline'}")
        rest = rss_bytes(receiver.pid)
        row = await phase(name, receiver, stack.cert.ca, args, kind)
        rows.append([*row[:6], f"{rest / MiB:.0f} MiB", *row[6:]])
        stack.stop_service(receiver)
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    print(
        f"\n{args.rate:g} callbacks/s for {args.seconds:g} s per phase, one new TLS connection"
        f" each; flood of {args.connections:,} connections; open-file limit {soft}"
    )
    headers = [
        "phase",
        "flood held (min)",
        "200s",
        "p50",
        "p99",
        "max",
        "receiver RSS at rest",
        "receiver RSS (peak)",
        "open connections (peak)",
        "handshake failures",
    ]
    print(table(headers, rows, markdown=args.markdown))


def main() -> None:
    """Parse the options, run the benchmark on a fresh stack, always stop it."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=2000, help="flood size (2000)")
    parser.add_argument("--seconds", type=float, default=15.0, help="length of a phase (15)")
    parser.add_argument("--rate", type=float, default=50.0, help="callbacks per second (50)")
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table")
    args = parser.parse_args()
    _raise_fd_limit(4096)
    with BenchStack(durable=False).running() as stack:
        asyncio.run(measure(stack, args))


if __name__ == "__main__":
    main()
