"""Crashes, rebalances and database outages: counts stay exact."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from smsrx.cli.dev.process import free_port
from smsrx.settings import Settings
from tests.consumers.conftest import feed, oracle, projected, sample, wait_for, workload
from tests.consumers.kafka_state import committed_offsets, end_offsets
from tests.consumers.proxy import Proxy
from tests.helpers import settings_env

pytestmark = pytest.mark.fault

_ANALYTICS_TABLES = (
    "analytics_receipts_minute",
    "analytics_inbound_minute",
    "analytics_outcomes_minute",
    "analytics_latency_hour",
)


def _env(settings: Settings, batch: int) -> dict[str, str]:
    return settings_env(
        settings,
        STATUS_PROJECTION_METRICS_PORT=str(free_port()),
        ANALYTICS_METRICS_PORT=str(free_port()),
        BATCH_MAX_RECORDS=str(batch),
        EXPIRY_HORIZON=f"{settings.expiry_horizon:.0f}s",
        LOG_LEVEL="INFO",
    )


class Workers:
    """Both workers as real processes: ``python -m smsrx.cli consumer ...``."""

    def __init__(self, settings: Settings, log: Path, batch: int) -> None:
        self.settings = settings
        self.log = log
        self.batch = batch
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self) -> None:
        env = _env(self.settings, self.batch)
        with self.log.open("ab") as out:
            for role in ("status-projection", "analytics"):
                self.procs.append(
                    subprocess.Popen(
                        [sys.executable, "-m", "smsrx.cli", "consumer", role],
                        env=env,
                        stdin=subprocess.DEVNULL,
                        stdout=out,
                        stderr=subprocess.STDOUT,
                    )
                )

    def kill(self) -> None:
        for proc in self.procs:
            proc.kill()
            proc.wait()
        self.procs = []

    def terminate(self) -> list[int]:
        for proc in self.procs:
            proc.send_signal(signal.SIGTERM)
        codes = [proc.wait(30) for proc in self.procs]
        self.procs = []
        return codes

    def alive(self) -> bool:
        return all(proc.poll() is None for proc in self.procs)


async def _done(db, distinct: int, finals: Counter[str]) -> bool:
    history = await db.fetchval("SELECT count(*) FROM status_events")
    outbox = await db.fetchval("SELECT count(*) FROM status_outbox")
    counted = await db.fetchval("SELECT coalesce(sum(events), 0) FROM analytics_receipts_minute")
    rows = await db.fetch(
        "SELECT status, sum(recipients)::bigint AS n FROM analytics_outcomes_minute GROUP BY status"
    )
    outcomes = {r["status"]: r["n"] for r in rows if r["n"]}
    assert history <= distinct and counted <= distinct, "an event was applied twice"
    return history == distinct and outbox == 0 and counted == distinct and outcomes == finals


async def _assert_exact(db, story) -> None:
    expected = oracle(story.distinct)
    assert await projected(db) == expected
    assert await db.fetchval("SELECT count(DISTINCT event_id) FROM status_events") == len(
        story.distinct
    )
    rows = await db.fetch(
        "SELECT status, sum(events)::bigint AS n FROM analytics_receipts_minute GROUP BY status"
    )
    assert {r["status"]: r["n"] for r in rows} == Counter(r.status.value for r in story.distinct)
    finals = Counter(v["status"] for v in expected.values() if v["is_final"])
    rows = await db.fetch(
        "SELECT since, sum(samples)::bigint AS n FROM analytics_latency_hour GROUP BY since"
    )
    assert {r["since"]: r["n"] for r in rows} == {"first_receipt": finals.total()}


async def test_sigkill_mid_batch_then_restart_ends_exact(settings, db, tmp_path) -> None:
    """About 10,000 shuffled, duplicated receipts for 2,000 messages; both workers SIGKILLed
    inside a batch transaction, then at a random point, then restarted: every count ends
    exact, and SIGTERM then drains them cleanly."""
    story = workload(2000, recipients=2, duplicates=0.15, seed=3)
    expected = oracle(story.distinct)
    finals = Counter(v["status"] for v in expected.values() if v["is_final"])
    await feed(settings, settings.topics.delivery_receipts, story.sent)
    workers = Workers(settings, tmp_path / "workers.log", batch=200)
    workers.start()
    try:
        await wait_for(
            lambda: _history_at_least(db, 1000), "the first batches to be applied", timeout=60
        )
        # Block both workers inside their batch transaction, then kill them there.
        async with db.transaction():
            await db.execute("LOCK TABLE recipient_status IN SHARE MODE")
            for table in _ANALYTICS_TABLES:
                await db.execute(f"LOCK TABLE {table} IN SHARE MODE")
            await wait_for(lambda: _blocked(db), "both workers blocked mid-batch", timeout=60)
            workers.kill()
        assert not await _done(db, len(story.distinct), finals)

        workers.start()
        progress = await db.fetchval("SELECT count(*) FROM status_events")
        await wait_for(
            lambda: _history_at_least(db, progress + 1500), "progress after restart", timeout=90
        )
        workers.kill()

        workers.start()
        await wait_for(
            lambda: _done(db, len(story.distinct), finals), "everything applied", timeout=120
        )
        assert workers.alive()
        assert workers.terminate() == [0, 0]
    finally:
        workers.kill()
    await _assert_exact(db, story)
    assert "shutdown on SIGTERM" in (tmp_path / "workers.log").read_text()


async def _history_at_least(db, n: int) -> bool:
    return bool(await db.fetchval("SELECT count(*) FROM status_events") >= n)


async def _blocked(db) -> bool:
    rows = await db.fetch(
        "SELECT DISTINCT relation::regclass::text AS rel FROM pg_locks WHERE NOT granted"
    )
    waiting = {r["rel"] for r in rows}
    return "recipient_status" in waiting and bool(waiting & set(_ANALYTICS_TABLES))


async def test_rebalance_mid_stream_ends_exact(settings_factory, runner, db) -> None:
    """Two workers of each kind in one group, one joining and one leaving mid-stream, end
    with every count exact."""
    # The expiry sweep runs every second, as it would in a long run: it must leave alone
    # recipients within the horizon (by default it first runs after a minute).
    settings = settings_factory(batch_max_records=100, expiry_sweep_interval=1.0)
    story = workload(1000, recipients=2, duplicates=0.3, seed=5)
    expected = oracle(story.distinct)
    finals = Counter(v["status"] for v in expected.values() if v["is_final"])
    # The stream is fed in thirds around the join and the leave, so both happen mid-stream
    # however fast or slow the machine is.
    third = len(story.sent) // 3
    topic = settings.topics.delivery_receipts
    await feed(settings, topic, story.sent[:third])
    first = runner.start(runner.projection(settings))
    first_a = runner.start(runner.analytics(settings))
    await wait_for(lambda: first.processed >= 500, "the first worker to make progress")
    second = runner.start(runner.projection(settings))
    second_a = runner.start(runner.analytics(settings))
    # The second third goes out once the joiners hold partitions: fed before the
    # rebalance ends, the first workers could drain all of it and leave them nothing.
    await wait_for(
        lambda: second.assigned.is_set() and second_a.assigned.is_set(), "the joiners' partitions"
    )
    await feed(settings, topic, story.sent[third : 2 * third])
    await wait_for(lambda: second.processed > 0 and second_a.processed > 0, "the joiners to work")
    await runner.stop(first)
    await runner.stop(first_a)
    await feed(settings, topic, story.sent[2 * third :])
    await wait_for(
        lambda: _done(db, len(story.distinct), finals), "everything applied", timeout=120
    )
    await _assert_exact(db, story)
    assert first.processed + second.processed >= len(story.sent)


async def test_database_outage_pauses_then_resumes_exactly(settings_factory, runner, db) -> None:
    """With PostgreSQL unreachable at start and again mid-stream, the worker neither crashes
    nor commits; once it is back, every receipt is applied exactly once."""
    proxy, settings = Proxy.before(settings_factory())
    story = workload(200, recipients=1, duplicates=0.2, seed=9)
    half = len(story.sent) // 2
    await feed(settings, settings.topics.delivery_receipts, story.sent[:half])
    worker = runner.start(runner.projection(settings, expiry_sweep=False))
    await asyncio.sleep(1.0)  # let it find the database down at start
    assert not runner.tasks[worker].done()
    await proxy.restore()
    await runner.drain(worker, records=half)

    errors = sample(
        "smsrx_consumer_database_errors_total", worker="status-projection", kind="transient"
    )
    await proxy.cut()
    await feed(settings, settings.topics.delivery_receipts, story.sent[half:])
    await wait_for(
        lambda: (
            sample(
                "smsrx_consumer_database_errors_total", worker="status-projection", kind="transient"
            )
            > errors + 1
        ),
        "the worker to retry the batch",
    )
    assert worker.processed == half and not runner.tasks[worker].done()
    await proxy.restore()
    await runner.drain(worker, records=len(story.sent))
    await runner.stop(worker)
    await proxy.cut()
    assert await projected(db) == oracle(story.distinct)
    assert await db.fetchval("SELECT count(*) FROM status_events") == len(story.distinct)


async def test_rebalance_while_the_database_is_down_loses_nothing(
    settings_factory, runner, db
) -> None:
    """A worker whose PostgreSQL is unreachable holds a batch and a prefetched one when a
    second member joins its group (a rebalance); once the database is back, every receipt
    is applied exactly once and the committed offsets are the topic's end offsets."""
    settings = settings_factory(batch_max_records=40)
    proxy, behind = Proxy.before(settings)
    topic = settings.topics.delivery_receipts
    story = workload(300, recipients=1, duplicates=0.2, seed=11)
    await proxy.restore()
    first = runner.start(runner.projection(behind, expiry_sweep=False))
    await wait_for(first.assigned.is_set, "the first worker to be assigned its partitions")
    await proxy.cut()
    errors = _transient()
    await feed(settings, topic, story.sent)
    await wait_for(lambda: _transient() > errors + 1, "the first worker to retry its batch")
    assert first.processed == 0

    revoked = _revoked()
    runner.start(runner.projection(settings, expiry_sweep=False))
    # The database comes back as soon as the first worker gave its partitions up, while
    # the group is still rebalancing.
    await wait_for(lambda: _revoked() > revoked, "the first worker's partitions to be revoked")
    await proxy.restore()
    distinct = len(story.distinct)
    applied = await _settled(db, distinct, timeout=60)
    assert applied == distinct, f"{distinct - applied} of {distinct} receipts never applied"
    for worker in list(runner.tasks):
        await runner.stop(worker)
    await proxy.cut()
    assert await projected(db) == oracle(story.distinct)
    assert await db.fetchval("SELECT count(*) FROM status_events") == len(story.distinct)
    committed = await committed_offsets(settings, first.group_id, topic)
    assert committed == await end_offsets(settings, topic)
    assert sum(committed.values()) == len(story.sent)


def _transient() -> float:
    return sample(
        "smsrx_consumer_database_errors_total", worker="status-projection", kind="transient"
    )


def _revoked() -> float:
    return sample("smsrx_consumer_rebalances_total", worker="status-projection", change="revoked")


async def _settled(db, expected: int, timeout: float) -> int:
    """The receipts in the history once they reach ``expected``, or after ``timeout``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        applied = int(await db.fetchval("SELECT count(*) FROM status_events"))
        if applied >= expected or loop.time() > deadline:
            return applied
        await asyncio.sleep(0.2)
