"""The expiry sweep beside the projection: the sweep never makes the projection wait on
the broker, and its receipts stay at least once with deterministic ids."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta

import asyncpg
import pytest
from aiokafka.errors import KafkaError

from consumers.batches import Batch
from consumers.expiry import ExpirySweeper
from consumers.status_projection import StatusProjection
from smsrx.cli.dev.broker import Broker
from smsrx.clock import utcnow
from smsrx.kafka import make_producer
from smsrx.settings import Settings
from smsrx.statuses import Status
from tests.consumers.conftest import receipt, wait_for

HORIZON = 3600.0


async def _seed_due(db: asyncpg.Connection, count: int, *, prefix: str = "exp") -> None:
    """``count`` recipients submitted two horizons ago, with no receipt: all due."""
    await db.execute(
        """
        INSERT INTO recipient_status (provider, message_id, recipient, submitted_at)
        SELECT 'orange', $1 || '-' || lpad(i::text, 6, '0'), '+22507' || lpad(i::text, 8, '0'),
               now() - make_interval(secs => $2 + i % 600)
          FROM generate_series(1, $3) AS i
        """,
        prefix,
        2 * HORIZON,
        count,
    )


async def _count(db: asyncpg.Connection, sql: str, *args: object) -> int:
    return int(await db.fetchval(sql, *args))


@contextlib.asynccontextmanager
async def _standalone(
    settings: Settings, *, bootstrap: str | None = None
) -> AsyncIterator[ExpirySweeper]:
    """A sweeper with its own pool and producer, as another worker's would be."""
    pool = await asyncpg.create_pool(settings.database_url, min_size=1, max_size=2)
    assert pool is not None
    if bootstrap is not None:  # a real client that cannot reach any broker: every send fails
        settings = settings.with_(kafka_bootstrap=bootstrap, kafka_send_timeout=0.5)
    producer = make_producer(settings)
    if bootstrap is None:
        await producer.start()
    try:
        yield ExpirySweeper(settings, pool, producer)
    finally:
        await producer.stop()
        await pool.close()


@contextlib.contextmanager
def _stalled(broker: Broker) -> Iterator[None]:
    """The broker stalled (SIGSTOP), as a slow or hung broker would be, until the block ends."""
    assert broker.child is not None and broker.child.pid is not None
    os.kill(broker.child.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(broker.child.pid, signal.SIGCONT)


async def _claimed(db: asyncpg.Connection, key: tuple[str, str, str]) -> bool:
    """Whether the sweep has taken the recipient: marked (committed), or locked right now."""
    try:
        async with db.transaction():
            marked = await db.fetchval(
                "SELECT expiry_published_at IS NOT NULL FROM recipient_status"
                " WHERE provider = $1 AND message_id = $2 AND recipient = $3 FOR KEY SHARE NOWAIT",
                *key,
            )
    except asyncpg.LockNotAvailableError:
        return True
    return bool(marked)


@pytest.mark.fault
@pytest.mark.timeout(300)
async def test_a_sweep_waiting_on_the_broker_does_not_stall_the_projection(
    broker, settings_factory, runner, db
) -> None:
    """While a sweep of 50,000 expiries waits on a stalled broker, the projection applies
    receipts at once, even for the recipients being expired: the sweep holds no row lock
    while it publishes. Once the broker is back every expiry is published and applied, and
    the real final receipt still outranks the synthetic one."""
    due = 50_000
    # A send timeout like production's: a lock held while publishing could last 2 x 10 s.
    settings = settings_factory(
        expiry_horizon=HORIZON, expiry_sweep_interval=3600.0, kafka_send_timeout=10.0
    )
    await _seed_due(db, due)
    first = await db.fetchrow(
        "SELECT provider, message_id, recipient FROM recipient_status ORDER BY submitted_at LIMIT 1"
    )
    key = (first["provider"], first["message_id"], first["recipient"])
    topic = settings.topics.delivery_receipts
    late = [
        receipt(key[1], key[2], Status.DELIVERED, utcnow()),  # for a recipient being expired
        receipt("other-1", "+2250700000001", Status.SENT, utcnow()),
    ]
    projection = StatusProjection(settings, handle_signals=False, expiry_sweep=False)
    async with _standalone(settings) as sweeper:
        await sweeper.producer.partitions_for(topic)  # metadata known before the stall
        sweep = asyncio.create_task(sweeper.sweep())
        try:
            with _stalled(broker):
                await wait_for(lambda: _claimed(db, key), "the sweep to claim its first recipients")
                conn = await asyncpg.connect(settings.database_url)
                try:
                    # A lock the sweep held until the broker answered would end this in 3 s.
                    await conn.execute("SET lock_timeout = '3s'")
                    async with conn.transaction():
                        await projection.apply(conn, Batch([(topic, r) for r in late]))
                finally:
                    await conn.close()
                assert not sweep.done()  # the receipts were applied while the sweep waited
            assert await sweep == due
        finally:
            sweep.cancel()
            await asyncio.gather(sweep, return_exceptions=True)

    worker = runner.start(runner.projection(settings, expiry_sweep=False))
    await runner.drain(worker, records=due, timeout=180)
    statuses = dict(await db.fetch("SELECT status, count(*) FROM recipient_status GROUP BY status"))
    assert statuses == {"expired": due - 1, "delivered": 1, "sent": 1}
    assert await _count(db, "SELECT count(*) FROM status_events WHERE synthetic") == due


async def test_a_failed_publish_leaves_the_recipients_due(settings_factory, runner, db) -> None:
    """When the broker cannot take the sweep's receipts, the recipients stay due: the next
    sweep publishes them, and they are expired once each."""
    settings = settings_factory(expiry_horizon=HORIZON, expiry_sweep_interval=3600.0)
    await _seed_due(db, 300)
    async with _standalone(settings, bootstrap="127.0.0.1:9") as sweeper:
        with pytest.raises((KafkaError, TimeoutError)):
            await sweeper.sweep()
    claimed = "SELECT count(*) FROM recipient_status WHERE expiry_published_at IS NOT NULL"
    assert await _count(db, claimed) == 0
    async with _standalone(settings) as sweeper:
        assert await sweeper.sweep() == 300
    worker = runner.start(runner.projection(settings, expiry_sweep=False))
    await runner.drain(worker, records=300)
    assert await _count(db, "SELECT count(*) FROM recipient_status WHERE status = 'expired'") == 300


async def test_a_sweep_published_twice_is_applied_once(settings_factory, runner, db) -> None:
    """Recipients whose receipts were published but never applied (lost by the broker, or
    claimed by a sweep that crashed) are published again once the republish delay passed;
    the same receipts published twice are applied once."""
    settings = settings_factory(expiry_horizon=HORIZON, expiry_sweep_interval=3600.0)
    await _seed_due(db, 200)
    async with _standalone(settings) as sweeper:
        now = utcnow()
        later = now + sweeper.republish_after + timedelta(seconds=1)
        assert await sweeper.sweep(now=now) == 200
        assert await sweeper.sweep(now=now + timedelta(seconds=1)) == 0  # claimed, not yet due
        assert await sweeper.sweep(now=later) == 200
    worker = runner.start(runner.projection(settings, expiry_sweep=False))
    await runner.drain(worker, records=400)
    assert await _count(db, "SELECT count(*) FROM recipient_status WHERE status = 'expired'") == 200
    assert await _count(db, "SELECT count(*) FROM status_events WHERE synthetic") == 200
    assert worker.sweeper is not None
    assert await worker.sweeper.sweep(now=later + timedelta(days=1)) == 0
