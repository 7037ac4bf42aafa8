"""Section 3: worker throughput against the raw upsert ceiling.

Each repetition gets fresh topics (a new ``SMSRX_TOPIC_PREFIX``) and empty tables,
pre-fills ``sms.delivery-receipts.v1`` with the same campaign (500,000 receipts by
default), then:

1. the raw ceiling: this process upserts the same receipts into a plain table, in
   batches of ``SMSRX_BATCH_MAX_RECORDS`` through ``unnest``, one statement and one
   transaction per batch, no other logic (rows of a batch are reduced to one per key,
   which ``ON CONFLICT DO UPDATE`` needs);
2. ``smsrx consumer status-projection`` drains the topic; its rate is measured from
   the group's committed offsets, from the first commit to the last;
3. once its outbox is empty, ``smsrx consumer analytics`` drains the receipts and
   the status changes the projection published.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid

import asyncpg

from bench import procfs
from bench.kafkautil import Offsets, highwaters, prefill
from bench.report import Results
from bench.scrape import sampling
from bench.stack import BenchStack
from bench.traffic import Campaign
from consumers.analytics import Analytics
from consumers.status_projection import StatusProjection

__all__ = ["run_workers"]

logger = logging.getLogger(__name__)

_RAW_TABLE = """
CREATE TABLE IF NOT EXISTS bench_raw_status (
    provider     text COLLATE "C" NOT NULL,
    message_id   text COLLATE "C" NOT NULL,
    recipient    text COLLATE "C" NOT NULL,
    status       text NOT NULL,
    event_id     text NOT NULL,
    received_at  timestamptz NOT NULL,
    events       integer NOT NULL,
    PRIMARY KEY (provider, message_id, recipient)
)"""
_RAW_UPSERT = """
INSERT INTO bench_raw_status AS t (provider, message_id, recipient, status, event_id,
                                   received_at, events)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[],
                     $6::timestamptz[], $7::integer[])
    ON CONFLICT (provider, message_id, recipient) DO UPDATE
   SET status = excluded.status, event_id = excluded.event_id,
       received_at = excluded.received_at, events = t.events + excluded.events
"""


async def raw_upsert(database_url: str, campaign: Campaign, batch: int) -> float:
    """Upsert every receipt of the campaign, batch by batch; return rows per second."""
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(_RAW_TABLE)
        await conn.execute("TRUNCATE bench_raw_status")
        receipts = campaign.receipts
        started = time.perf_counter()
        for start in range(0, len(receipts), batch):
            rows: dict[tuple[str, str, str], tuple[str, str, object, int]] = {}
            for r in receipts[start : start + batch]:
                key = (r.provider, r.message_id, r.recipient)
                seen = rows.get(key)
                rows[key] = (r.status.value, r.event_id, r.received_at, seen[3] + 1 if seen else 1)
            keys = list(rows)
            values = list(rows.values())
            await conn.execute(
                _RAW_UPSERT,
                [k[0] for k in keys],
                [k[1] for k in keys],
                [k[2] for k in keys],
                [v[0] for v in values],
                [v[1] for v in values],
                [v[2] for v in values],
                [v[3] for v in values],
            )
        return len(receipts) / (time.perf_counter() - started)
    finally:
        await conn.close()


async def _drain(
    stack: BenchStack,
    worker: str,
    prefix: str,
    totals: dict[str, tuple[list[int], int]],
    watch: procfs.MemoryWatch,
    limit: float,
) -> tuple[float, float, float, float]:
    """Run a worker until its group committed everything; return (events/s, seconds, µs
    of worker CPU per event, µs of PostgreSQL CPU per event)."""
    group = prefix + (StatusProjection if worker == "status-projection" else Analytics).group
    extra = ("--no-expiry-sweep",) if worker == "status-projection" else ()
    offsets = Offsets(stack.bootstrap, group)
    total = sum(count for _, count in totals.values())
    service = stack.consumer(worker, prefix=prefix, extra=extra)
    assert stack.postgres is not None and stack.postgres.child is not None
    pg_pid = stack.postgres.child.pid
    assert pg_pid is not None
    try:
        first: tuple[float, int, float, float] | None = None
        deadline = time.monotonic() + limit
        async with sampling(watch, {worker: lambda: [service.pid]}):
            while True:
                done = 0
                for topic, (partitions, _) in totals.items():
                    done += await offsets.committed(topic, partitions)
                now = time.monotonic()
                if first is None and done > 0:
                    first = (
                        now,
                        done,
                        procfs.cpu_seconds(service.pid),
                        sum(procfs.cpu_seconds(p) for p in procfs.tree(pg_pid)),
                    )
                if done >= total:
                    break
                if now > deadline or not service.child.alive():
                    raise RuntimeError(
                        f"{worker} drained {done:,} of {total:,} records in {limit:.0f}s"
                    )
                await asyncio.sleep(0.1)
        assert first is not None
        seconds = now - first[0]
        events = total - first[1]
        worker_cpu = procfs.cpu_seconds(service.pid) - first[2]
        pg_cpu = sum(procfs.cpu_seconds(p) for p in procfs.tree(pg_pid)) - first[3]
        return (
            events / seconds,
            seconds,
            worker_cpu / events * 1e6,
            pg_cpu / events * 1e6,
        )
    finally:
        await offsets.close()
        if worker == "status-projection":
            await _outbox_empty(stack.database_url)
        stack.stop_service(service)


async def _outbox_empty(database_url: str, limit: float = 60.0) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        deadline = time.monotonic() + limit
        while await conn.fetchval("SELECT count(*) FROM status_outbox"):
            if time.monotonic() > deadline:
                raise RuntimeError("status-projection did not publish its outbox")
            await asyncio.sleep(0.2)
    finally:
        await conn.close()


async def run_workers(
    stack: BenchStack,
    results: Results,
    watch: procfs.MemoryWatch,
    campaign: Campaign,
    *,
    runs: int,
    batch: int = 5000,
) -> None:
    """Section 3, ``runs`` times."""
    count = len(campaign.records)
    timeout = max(300.0, count / 2000)
    for repetition in range(runs):
        prefix = f"bench{uuid.uuid4().hex[:8]}."
        settings = stack.settings(SMSRX_TOPIC_PREFIX=prefix)
        logger.info("workers: repetition %d of %d, topics %s*", repetition + 1, runs, prefix)
        await stack.create_topics(prefix)
        await stack.truncate()
        rate = await prefill(settings, settings.topics.delivery_receipts, campaign.records)
        results.add("workers.prefill", "pre-fill with aiokafka's batch API", "msg/s", rate)
        receipts_topic = settings.topics.delivery_receipts
        marks = await highwaters(stack.bootstrap, receipts_topic)
        if sum(marks.values()) != count:
            raise RuntimeError(f"pre-fill wrote {sum(marks.values())} records, not {count}")

        raw = await raw_upsert(stack.database_url, campaign, batch)
        results.add("workers.raw", "raw ceiling: batched asyncpg upsert (unnest)", "rows/s", raw)
        logger.info("raw upsert ceiling: %.0f rows/s", raw)

        totals = {receipts_topic: (sorted(marks), count)}
        rate, seconds, cpu, pg = await _drain(
            stack, "status-projection", prefix, totals, watch, timeout
        )
        results.add("workers.projection", "status-projection throughput", "events/s", rate)
        results.add("workers.projection.cpu", "status-projection: worker CPU per event", "µs", cpu)
        results.add(
            "workers.projection.pg", "status-projection: PostgreSQL CPU per event", "µs", pg
        )
        logger.info("status-projection: %.0f events/s (%.1fs)", rate, seconds)

        changes_topic = settings.topics.message_status
        changes = await highwaters(stack.bootstrap, changes_topic)
        totals[changes_topic] = (sorted(changes), sum(changes.values()))
        rate, seconds, cpu, pg = await _drain(stack, "analytics", prefix, totals, watch, timeout)
        results.add(
            "workers.analytics",
            "analytics throughput (receipts + status changes)",
            "events/s",
            rate,
        )
        results.add("workers.analytics.cpu", "analytics: worker CPU per event", "µs", cpu)
        results.add("workers.analytics.pg", "analytics: PostgreSQL CPU per event", "µs", pg)
        logger.info(
            "analytics: %.0f events/s (%.1fs, %d status changes)",
            rate,
            seconds,
            sum(changes.values()),
        )
        await stack.delete_topics(prefix)
    results.ratio(
        "workers.ratio",
        "status-projection ÷ raw upsert ceiling",
        "workers.projection",
        "workers.raw",
    )
