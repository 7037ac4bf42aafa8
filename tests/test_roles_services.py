"""Least privilege in PostgreSQL: each service's own code, connected as a LOGIN user in
its group role (``test_<service>`` IN ROLE ``smsrx_<service>``, tests/conftest.py's
``logins``), does its job against the real test database and is refused the rest.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from receiver.dedup import Dedup
from smsrx.clock import utcnow
from smsrx.db import create_pool
from smsrx.events import InboundMessage
from smsrx.prune import connect_for_prune, prune
from smsrx.retention import policy
from smsrx.settings import Settings
from smsrx.statuses import Status
from subscriptions.store import State, SubscriptionStore
from tests.consumers.conftest import (
    Runner,
    api,
    feed,
    read_api,
    receipt,
    submission,
    wait_for,
)
from tests.consumers.conftest import inbound as inbound_sms
from tests.roles_harness import denied


@pytest.fixture
async def runner(settings: Settings) -> AsyncIterator[Runner]:
    """In-process workers, stopped at teardown."""
    run = Runner(settings)
    yield run
    await run.close()


# --- each service, running its own code as its role -------------------------------------


async def test_receiver_dedups_as_its_role_and_reads_no_sms(
    connect, logins, db: asyncpg.Connection
) -> None:
    """The receiver's dedup writes and finds event ids as smsrx_receiver, which cannot read inbound SMS or anything else."""
    pool = await create_pool(logins["smsrx_receiver"], max_size=2)
    try:
        first = Dedup(pool, cache_size=10)
        first.published("ev-1", "orange", "m-1")
        first.published("ev-1", "orange", "m-1")  # ON CONFLICT DO NOTHING
        await first.close()
        second = Dedup(pool, cache_size=10)
        try:
            assert await second.seen("ev-1") is True
            assert await second.seen("ev-2") is False
        finally:
            await second.close()
    finally:
        await pool.close()
    assert await db.fetchval("SELECT count(*) FROM receiver_dedup") == 1
    conn = await connect("smsrx_receiver")
    await denied(conn, "SELECT content FROM inbound_messages")
    await denied(conn, "SELECT raw FROM status_events")
    await denied(conn, "SELECT phone FROM suppressions")
    await denied(conn, "DELETE FROM receiver_dedup")
    await denied(conn, "UPDATE receiver_dedup SET provider = 'x'")
    await denied(conn, "INSERT INTO status_events (event_id) VALUES (gen_random_uuid())")


async def test_status_projection_runs_as_its_role(
    settings_factory, runner: Runner, logins, connect, db: asyncpg.Connection
) -> None:
    """status-projection, connected as smsrx_status_projection, applies submissions, receipts and inbound SMS, publishes its outbox and expires; it cannot prune."""
    settings = settings_factory(expiry_horizon=1.0, expiry_sweep_interval=0.3).with_(
        database_url=logins["smsrx_status_projection"]
    )
    topics = settings.topics
    now = utcnow()
    done, silent = "+2250700000001", "+2250700000002"
    await feed(settings, topics.submissions, [submission("role-1", [done, silent], now)])
    await feed(settings, topics.delivery_receipts, [receipt("role-1", done, Status.DELIVERED, now)])
    await feed(settings, topics.inbound, [inbound_sms("mo-1", done, now)])
    runner.start(runner.projection(settings))

    async def projected() -> bool:
        states = await db.fetch("SELECT recipient, status FROM recipient_status")
        return {r["recipient"]: r["status"] for r in states} == {
            done: "delivered",
            silent: "expired",  # the sweep claimed it and published a synthetic receipt
        } and bool(await db.fetchval("SELECT count(*) FROM inbound_messages"))

    await wait_for(projected, "the projection and the expiry sweep, as their role", timeout=30)
    await wait_for(
        lambda: _outbox_empty(db), "the outbox published and emptied, as its role", timeout=30
    )

    conn = await connect("smsrx_status_projection")
    assert await conn.fetchval("SELECT sum(pending) FROM recipients_pending") is None
    await denied(conn, "SELECT phone FROM suppressions")
    await denied(conn, "SELECT phone FROM optout_events")
    await denied(conn, "SELECT id FROM orange_subscriptions")
    await denied(conn, "INSERT INTO receiver_dedup VALUES ('e', 'p', 'm')")
    await denied(conn, "UPDATE status_events SET raw = '{}'::json")
    # The prune is smsrx_prune's alone: status-projection is no member of it.
    assert not await conn.fetchval("SELECT pg_has_role('smsrx_prune', 'MEMBER')")
    await denied(conn, "DELETE FROM receiver_dedup")
    await denied(conn, "DELETE FROM analytics_receipts_minute")
    await denied(conn, "DELETE FROM status_events")


async def _outbox_empty(db: asyncpg.Connection) -> bool:
    return bool(await db.fetchval("SELECT count(*) = 0 FROM status_outbox"))


async def test_analytics_runs_as_its_role(
    settings_factory, runner: Runner, logins, connect, db: asyncpg.Connection
) -> None:
    """analytics, connected as smsrx_analytics, counts receipts and inbound SMS once; it cannot read a status, a number or a text."""
    settings = settings_factory().with_(database_url=logins["smsrx_analytics"])
    now = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
    receipts = [receipt(f"a-{i}", "+2250700000001", Status.SENT, now) for i in range(5)]
    await feed(settings, settings.topics.delivery_receipts, receipts + receipts[:2])
    await feed(settings, settings.topics.inbound, [inbound_sms("mo-a", "+2250700000009", now)])
    worker = runner.start(runner.analytics(settings))
    await runner.drain(worker, records=8)
    assert await db.fetchval("SELECT sum(events) FROM analytics_receipts_minute") == 5
    assert await db.fetchval("SELECT sum(messages) FROM analytics_inbound_minute") == 1
    conn = await connect("smsrx_analytics")
    assert await conn.fetchval("SELECT sum(events) FROM receipts_daily") == 5
    await denied(conn, "SELECT recipient FROM recipient_status")
    await denied(conn, "SELECT content FROM inbound_messages")
    await denied(conn, "DELETE FROM analytics_processed_events")


async def test_inbound_worker_runs_as_its_role(
    settings_factory, runner: Runner, logins, connect, db: asyncpg.Connection
) -> None:
    """The inbound worker, connected as smsrx_inbound, routes a STOP, suppresses the number and answers the read API; it never reads stored SMS."""
    settings = settings_factory().with_(database_url=logins["smsrx_inbound"])
    phone = "+2250700000042"
    now = utcnow()
    stop = InboundMessage.create(
        provider="vavasms",
        message_id="mo-stop",
        sender=phone,
        content="STOP",
        sent_at=now,
        sent_at_text=now.isoformat(),
        received_at=now,
        raw={"content": "STOP"},
    )
    worker = runner.inbound(settings)
    await feed(settings, settings.topics.inbound, [stop, stop])

    async def suppressed() -> bool:
        return bool(
            await db.fetchval("SELECT suppressed FROM suppressions WHERE phone = $1", phone)
        )

    await wait_for(suppressed, "the opt-out applied as smsrx_inbound", timeout=30)
    assert await db.fetchval("SELECT count(*) FROM inbound_routed") == 1
    async with read_api(worker) as http:
        assert (await api(http, phone))["suppressed"] is True
    conn = await connect("smsrx_inbound")
    assert await conn.fetchval("SELECT count(*) FROM optout_activity") == 1
    await denied(conn, "SELECT content FROM inbound_messages")
    await denied(conn, "SELECT recipient FROM recipient_status")
    await denied(conn, "DELETE FROM suppressions")


async def test_reconciler_store_runs_as_its_role(logins, connect, db: asyncpg.Connection) -> None:
    """Every statement of the subscriptions store works as smsrx_reconciler, which reads nothing else."""
    pool = await create_pool(logins["smsrx_reconciler"], max_size=2)
    try:
        store = SubscriptionStore(pool)
        await store.add("sub-1", "2250000", "https://example.com/dr")
        await store.add("sub-1", "2250000", "https://example.com/dr")
        await store.checked("sub-1", State.DRIFTED, observed="https://x.example", detail="drift")
        assert [s.id for s in await store.live("2250000")] == ["sub-1"]
        await store.removed("sub-1", "test")
        assert (await store.get("sub-1")).state is State.REMOVED  # type: ignore[union-attr]
        assert len(await store.all()) == 1
    finally:
        await pool.close()
    conn = await connect("smsrx_reconciler")
    await denied(conn, "SELECT phone FROM suppressions")
    await denied(conn, "DELETE FROM orange_subscriptions")


async def test_prune_deletes_and_erases_as_its_role(
    settings: Settings, logins, db: asyncpg.Connection
) -> None:
    """`smsrx db prune` as smsrx_prune deletes and erases what is past retention; as status-projection it is refused and deletes nothing."""
    old = utcnow() - timedelta(days=800)
    await db.execute(
        "INSERT INTO receiver_dedup (event_id, provider, message_id, published_at) "
        "VALUES ('old', 'orange', 'm', $1), ('new', 'orange', 'm', now())",
        old,
    )
    await db.execute(
        "INSERT INTO analytics_receipts_minute VALUES ($1, 'orange', 'CIV', 'sent', 3)",
        old.replace(second=0, microsecond=0),
    )
    await db.execute(
        "INSERT INTO inbound_messages (provider, message_id, event_id, sender, content, "
        "sent_at_text, received_at, raw, recorded_at) VALUES ('vavasms', 'mo-old', $1, "
        "'+2250700000001', 'secret text', '', $2, '{\"t\": 1}', $3)",
        str(uuid.uuid4()),
        old,
        utcnow() - timedelta(days=40),
    )
    refused = await connect_for_prune(logins["smsrx_status_projection"])
    try:
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await prune(refused, policy(settings))
    finally:
        await refused.close()
    assert await db.fetchval("SELECT count(*) FROM receiver_dedup") == 2
    conn = await connect_for_prune(logins["smsrx_prune"])
    try:
        report = await prune(conn, policy(settings))
    finally:
        await conn.close()
    assert report is not None
    assert [r["event_id"] for r in await db.fetch("SELECT event_id FROM receiver_dedup")] == ["new"]
    assert await db.fetchval("SELECT count(*) FROM analytics_receipts_minute") == 0
    assert await db.fetchval("SELECT content FROM inbound_messages") == ""
    assert report.erased == 1
