"""Reading a process's Prometheus metrics, and sampling memory while load runs."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Collection

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from bench.procfs import MemoryWatch

__all__ = ["metric_sum", "sampling", "scrape"]

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


async def scrape(port: int) -> Samples:
    """Every sample of ``http://127.0.0.1:port/metrics``."""
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{port}/metrics", timeout=aiohttp.ClientTimeout(5)) as r,
    ):
        text = await r.text()
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def metric_sum(samples: Samples, name: str, **labels: str) -> float:
    """The sum of the samples of ``name`` whose labels include ``labels``."""
    wanted = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and wanted <= set(ls))


@contextlib.asynccontextmanager
async def sampling(
    watch: MemoryWatch,
    groups: dict[str, Callable[[], list[int]]],
    interval: float = 0.25,
    *,
    summed: Collection[str] = (),
) -> AsyncIterator[None]:
    """Sample the peak memory of each group while the block runs; the groups in ``summed``
    (processes sharing memory, such as PostgreSQL's) as the sum of their PSS."""

    async def loop() -> None:
        while True:
            for name, pids in groups.items():
                watch.sample(name, pids(), summed=name in summed)
            await asyncio.sleep(interval)

    task = asyncio.create_task(loop())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        for name, pids in groups.items():
            watch.sample(name, pids(), summed=name in summed)
