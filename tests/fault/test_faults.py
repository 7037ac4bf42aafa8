"""Fault injection across the whole system: nothing acknowledged is lost, nothing is counted twice.

The development broker (Tansu) keeps records in memory, so a broker restart loses what
was already in Kafka. The broker outage case therefore lets the consumers catch up
before the kill, and keeps the load running through the outage: every callback during
it must be spooled, answered 200, replayed, projected and counted exactly once. With
docker-compose's replicated Apache Kafka the records already in Kafka survive as well.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from pathlib import Path

import pytest

from tests.fault.harness import LoadResult, receipt_body

pytestmark = pytest.mark.timeout(600)


def _assert_exact(report) -> None:
    assert report.lost == 0, report
    assert report.double_counted == 0, report
    assert report.projected == report.distinct_acknowledged, report


async def test_broker_outage_under_load(make_system) -> None:
    """20,000 receipts with the broker down 30 s in the middle: every 200 is projected exactly once."""
    system = await make_system(SMSRX_SPOOL_REPLAY_RATE="5000")
    load = await system.load(range(0, 8000), rate=800)
    await system.settle(load.acked)
    published = await system.topic_records()  # all consumed: safe to lose with the memory broker

    system.broker.kill()
    outage = asyncio.create_task(system.load(range(8000, 20000), rate=400))
    await asyncio.sleep(30)
    spooled = system.receiver_metric("smsrx_receiver_spool_events")
    await system.restart_broker()
    load.merge(await outage)
    await system.settle(load.acked)
    published += await system.topic_records()
    report = await system.report(
        "broker down 30 s",
        load,
        published=published,
        note=f"{spooled:.0f} events in the spool at restart",
    )
    assert load.sent == 20000 and spooled >= 10000  # the load kept coming through the outage
    assert load.statuses == {200: 20000}, load.statuses  # the spool took everything
    _assert_exact(report)


async def test_database_outage_under_load(make_system) -> None:
    """PostgreSQL SIGKILLed mid-load and restarted: the receiver keeps accepting, workers resume, counts exact."""
    system = await make_system()
    loading = asyncio.create_task(system.load(range(10000), rate=500, duplicates=0.05))
    await asyncio.sleep(5)
    system.postgres.kill()
    await asyncio.sleep(10)
    system.postgres.start()
    load = await loading
    await system.settle(load.acked)
    report = await system.report(
        "PostgreSQL killed 10 s", load, published=await system.topic_records()
    )
    assert load.statuses.get(200, 0) == load.sent, load.statuses  # accepted throughout
    _assert_exact(report)


async def test_worker_sigkill_mid_batch(make_system) -> None:
    """status-projection and analytics SIGKILLed under load and restarted: counts exact."""
    system = await make_system(SMSRX_BATCH_MAX_RECORDS="500")
    loading = asyncio.create_task(system.load(range(12000), rate=1500, duplicates=0.05))
    await asyncio.sleep(3)
    system.kill("status-projection")
    system.kill("analytics")
    await asyncio.sleep(2)
    system.start_process("status-projection")
    system.start_process("analytics")
    load = await loading
    report = await system.report(
        "workers SIGKILLed mid-batch", load, published=await system.topic_records()
    )
    _assert_exact(report)


async def test_receiver_sigkill_mid_replay(make_system) -> None:
    """The receiver SIGKILLed while replaying its spool, then restarted: the replay resumes, counts exact."""
    system = await make_system(SMSRX_SPOOL_REPLAY_RATE="500")
    system.broker.kill()
    load = await system.load(range(4000), rate=1000)
    assert load.statuses == {200: 4000}, load.statuses
    await system.restart_broker()
    deadline = time.monotonic() + 60
    while system.receiver_metric("smsrx_receiver_spool_replayed_events_total") < 500:
        assert time.monotonic() < deadline, "replay never started"
        await asyncio.sleep(0.2)
    left = system.receiver_metric("smsrx_receiver_spool_events")
    system.kill("receiver")
    system.start_process("receiver")
    report = await system.report(
        "receiver SIGKILLed mid-replay",
        load,
        published=0,
        note=f"{left:.0f} of 4000 still spooled at the kill",
    )
    report.published = await system.topic_records()
    assert 0 < left < 4000
    _assert_exact(report)


async def test_redelivery_counted_once(make_system) -> None:
    """The same receipt 5 times, two copies at once: every copy gets 200, it is projected and counted once."""
    system = await make_system()
    body = receipt_body(7)
    first = await system.load([7], rate=100)
    sequential = [await system.load([7], rate=100) for _ in range(2)]
    concurrent = await asyncio.gather(system.load([7], rate=100), system.load([7], rate=100))
    load = LoadResult()
    for part in (first, *sequential, *concurrent):
        load.merge(part)
    assert load.statuses == {200: 5} and len(load.acked) == 1 and body
    report = await system.report(
        "same receipt 5 times", load, published=await system.topic_records()
    )
    _assert_exact(report)
    history, _, rollup = await system.counts()
    assert (history, rollup, report.published) == (1, 1, 1)


async def test_spool_disk_full(make_system, tmp_path: Path) -> None:
    """The spool's 256 KiB filesystem fills while the broker is down, and the receiver is
    SIGKILLed and restarted in between: every 200 is projected exactly once, the rest got 503."""
    mount = tmp_path / "tiny"
    mount.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)], capture_output=True
    )
    if mounted.returncode:
        pytest.skip(f"cannot mount a tmpfs (needs root): {mounted.stderr.decode().strip()}")
    try:
        system = await make_system(
            SMSRX_SPOOL_DIR=str(mount / "spool"), SMSRX_SPOOL_REPLAY_RATE="5000"
        )
        system.broker.kill()
        load = await system.load(range(0, 1500), rate=300)
        spooled = system.receiver_metric("smsrx_receiver_spool_events")
        system.kill("receiver")  # a crash with a full spool: it must come back with it whole
        system.start_process("receiver")
        load.merge(await system.load(range(1500, 2000), rate=300))
        await system.restart_broker()
        report = await system.report(
            "spool's disk full, receiver restarted",
            load,
            published=0,
            note=f"answers {load.statuses}; {spooled:.0f} events spooled before the restart",
        )
        report.published = await system.topic_records()
        assert set(load.statuses) == {200, 503}, load.statuses  # filled up, never a 500
        assert 0 < spooled <= load.statuses[200] == len(load.acked), (load.statuses, spooled)
        _assert_exact(report)
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


async def test_rebalance_during_database_outage(make_system) -> None:
    """PostgreSQL is down while a second status-projection and analytics join their groups
    (a rebalance) and comes back: every 200 is projected and counted exactly once."""
    system = await make_system(SMSRX_BATCH_MAX_RECORDS="200")
    loading = asyncio.create_task(system.load(range(10000), rate=500, duplicates=0.05))
    await asyncio.sleep(4)
    system.postgres.kill()
    await asyncio.sleep(2)
    for name in ("status-projection", "analytics"):
        system.start_process(name, instance=f"{name}-2")
    await asyncio.sleep(8)  # the groups rebalance while the database is away
    system.postgres.start()
    load = await loading
    report = await system.report(
        "rebalance during a database outage", load, published=await system.topic_records()
    )
    assert load.statuses.get(200, 0) == load.sent, load.statuses
    _assert_exact(report)
