"""The poller against the fake carrier APIs, the real broker and the real PostgreSQL."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable

import asyncpg
import orjson

from consumers.status_cli import load_story, render_text
from smsrx.settings import Settings
from tests.consumers.conftest import Runner, feed, submission, wait_for
from tests.consumers.poll_harness import (
    Carriers,
    carriers,
    now,
    poller,
    receipts,
    schedule,
    statuses,
    until_final,
)
from tests.fakes.vavasms import VavaState
from tests.helpers import read_topic

__all__ = ["carriers"]

A, B, C = "+393495155018", "+393495155019", "+393495155020"


async def test_gateway_three_recipients_reach_their_final_status(
    carriers: Carriers, settings_factory: Callable[..., Settings], db: asyncpg.Connection
) -> None:
    """Done when 1: DELIVERED, UNDELIVERABLE, then DELIVERED after 3 polls show as delivered, failed, delivered with the carrier's time, learnt by poll."""
    settings = carriers.settings(settings_factory)
    carriers.gateway.add_message(
        "5e5e65429f272510fb6adcc0",
        {A: [("DELIVERED", 1)], B: [("UNDELIVERABLE", 1)], C: [("PENDING", 3), ("DELIVERED", 1)]},
    )
    run = Runner(settings)
    try:
        run.start(run.projection())
        poller(run, settings)
        sub = submission("5e5e65429f272510fb6adcc0", [A, B, C], now(), provider="gatewaysms")
        await feed(settings, settings.topics.submissions, [sub])
        await until_final(db, "gatewaysms", 3)
        polls_at_final = carriers.gateway.count("5e5e65429f272510fb6adcc0")
        await asyncio.sleep(1.5)  # several schedule steps: nothing more is asked
        assert carriers.gateway.count("5e5e65429f272510fb6adcc0") == polls_at_final
    finally:
        await run.close()
    assert carriers.gateway.polls("5e5e65429f272510fb6adcc0", C) == 4
    assert await statuses(db, "gatewaysms") == {
        ("5e5e65429f272510fb6adcc0", A): "delivered",
        ("5e5e65429f272510fb6adcc0", B): "failed",
        ("5e5e65429f272510fb6adcc0", C): "delivered",
    }
    rows = await schedule(db)
    assert {r["done_reason"] for r in rows.values()} == {"final"}
    events = await db.fetch(
        "SELECT recipient, source, occurred_at, provider_status FROM status_events"
    )
    assert {e["source"] for e in events} == {"poll"}
    # C: PENDING_ENROUTE once (3 polls of the same value), then DELIVERED_TO_HANDSET
    assert Counter(e["recipient"] for e in events) == {A: 1, B: 1, C: 2}
    assert all(
        e["occurred_at"] is not None for e in events if e["provider_status"] != "PENDING_ENROUTE"
    )
    text = render_text(await load_story(db, "gatewaysms", "5e5e65429f272510fb6adcc0"))
    assert text.count("learnt by poll (status API); carrier time") == 3
    assert "polling ended" in text


async def test_vavasms_recipients_reach_their_final_status(
    carriers: Carriers, settings_factory: Callable[..., Settings], db: asyncpg.Connection
) -> None:
    """Done when 2: each VavaSMS recipient has its own message id and goes sent, then delivered (or Livré), by poll."""
    settings = carriers.settings(settings_factory)
    carriers.vava.add_message("SM-1", [("sent", 2), ("delivered", 1)])
    carriers.vava.add_message("SM-2", [(VavaState("sent"), 1), (VavaState("DLVR", "Livré"), 1)])
    run = Runner(settings)
    try:
        run.start(run.projection())
        poller(run, settings)
        subs = [
            submission("SM-1", ["+2250700000001"], now(), provider="vavasms"),
            submission("SM-2", ["+2250700000002"], now(), provider="vavasms"),
        ]
        await feed(settings, settings.topics.submissions, subs)
        await until_final(db, "vavasms", 2)
    finally:
        await run.close()
    assert await statuses(db, "vavasms") == {
        ("SM-1", "+2250700000001"): "delivered",
        ("SM-2", "+2250700000002"): "delivered",
    }
    published = [r for r in await receipts(settings) if r.provider == "vavasms"]
    assert sorted((r.message_id, r.provider_status, r.source) for r in published) == [
        ("SM-1", "delivered", "poll"),
        ("SM-1", "sent", "poll"),
        ("SM-2", "DLVR", "poll"),
        ("SM-2", "sent", "poll"),
    ]


async def test_providers_without_a_status_api_are_never_polled(
    carriers: Carriers, settings_factory: Callable[..., Settings], db: asyncpg.Connection
) -> None:
    """Done when 4: orange, mboasms and orangepro submissions schedule nothing and call no API; they show as sent, and say why no status will come."""
    settings = carriers.settings(settings_factory)
    run = Runner(settings)
    try:
        run.start(run.projection())
        worker = poller(run, settings)
        subs = [
            submission(f"{p}-1", ["+2250700000009"], now(), provider=p)
            for p in ("orange", "mboasms", "orangepro")
        ]
        subs.append(submission("SM-9", ["+2250700000008"], now(), provider="vavasms"))
        carriers.vava.add_message("SM-9", [("sent", 1)])
        await feed(settings, settings.topics.submissions, subs)
        await run.drain(worker, records=4)
        await wait_for(lambda: carriers.vava.count("SM-9") >= 2, "two VavaSMS polls")
    finally:
        await run.close()
    assert set(await schedule(db)) == {("vavasms", "SM-9", "+2250700000008")}
    assert carriers.gateway.count() == 0
    assert {r.message_id for r in await receipts(settings)} == {"SM-9"}
    mboa = render_text(await load_story(db, "mboasms", "mboasms-1"))
    assert "+2250700000009  SENT (not final): MboaSMS reports no delivery status" in mboa
    orange = render_text(await load_story(db, "orange", "orange-1"))
    assert "+2250700000009  SENT (not final): no receipt yet" in orange


async def test_a_pushed_final_status_stops_polling(
    carriers: Carriers, settings_factory: Callable[..., Settings], db: asyncpg.Connection
) -> None:
    """Done when 4: a final status that arrives by another way (here a receipt on the topic) ends polling of that recipient at once."""
    settings = carriers.settings(settings_factory, poll_schedule=(0.3,))
    carriers.gateway.add_message("gw-push", {A: [("PENDING", 1000)], B: [("PENDING", 1000)]})
    run = Runner(settings)
    try:
        run.start(run.projection())
        poller(run, settings)
        await feed(
            settings,
            settings.topics.submissions,
            [submission("gw-push", [A, B], now(), provider="gatewaysms")],
        )
        await wait_for(lambda: carriers.gateway.count("gw-push") >= 2, "two polls")
        from smsrx.statuses import Status
        from tests.consumers.conftest import receipt

        pushed = receipt(
            "gw-push",
            A,
            Status.DELIVERED,
            now(),
            provider="gatewaysms",
            provider_status="DELIVERED_TO_HANDSET",
        )
        await feed(settings, settings.topics.delivery_receipts, [pushed])

        async def ended() -> bool:
            row = (await schedule(db))[("gatewaysms", "gw-push", A)]
            return bool(row["done_reason"] == "final")

        await wait_for(ended, "polling of A ended")
        await asyncio.sleep(1.0)
        rows = await schedule(db)
    finally:
        await run.close()
    assert rows[("gatewaysms", "gw-push", B)]["done_reason"] is None
    assert rows[("gatewaysms", "gw-push", A)]["polls"] < rows[("gatewaysms", "gw-push", B)]["polls"]


async def test_polling_ends_at_the_horizon(
    carriers: Carriers, settings_factory: Callable[..., Settings], db: asyncpg.Connection
) -> None:
    """Done when 4: a recipient that never turns final is polled until SMSRX_EXPIRY_HORIZON, then no more."""
    settings = carriers.settings(settings_factory, poll_schedule=(0.5,), expiry_horizon=8.0)
    carriers.vava.add_message("SM-H", [("sent", 10_000)])
    run = Runner(settings)
    try:
        poller(run, settings)
        await feed(
            settings,
            settings.topics.submissions,
            [submission("SM-H", ["+2250700000007"], now(), provider="vavasms")],
        )

        async def ended() -> bool:
            row = (await schedule(db)).get(("vavasms", "SM-H", "+2250700000007"))
            return row is not None and row["done_reason"] == "horizon"

        await wait_for(ended, "polling ended at the horizon", 30)
        asked = carriers.vava.count("SM-H")
        await asyncio.sleep(1.0)
        assert carriers.vava.count("SM-H") == asked
    finally:
        await run.close()
    # The group join takes a few seconds of the 8 s; then one poll per 0.5 s until 8 s.
    assert 2 <= asked <= 17


async def test_many_submissions_stay_within_the_carriers_rate_limits(
    carriers: Carriers, settings_factory: Callable[..., Settings], db: asyncpg.Connection
) -> None:
    """Done when 3, scaled down (bench/poll.py runs 10,000): 1,200 submissions across both providers never exceed a fake's 50 req/s; every recipient ends final and each status change is published once."""
    settings = carriers.settings(
        settings_factory, gatewaysms_poll_rate=45.0, vavasms_poll_rate=45.0, poll_concurrency=8
    )
    carriers.gateway.limit_rate(50)
    carriers.vava.limit_rate(50)
    subs = []
    for i in range(300):
        numbers = [f"+3934951{i:04d}{j}" for j in range(2)]
        slow = i % 2 == 0
        carriers.gateway.add_message(
            f"gw-{i}",
            {
                n: [("PENDING", 1), ("DELIVERED", 1)] if slow else [("UNDELIVERABLE", 1)]
                for n in numbers
            },
        )
        subs.append(submission(f"gw-{i}", numbers, now(), provider="gatewaysms"))
    for i in range(900):
        carriers.vava.add_message(
            f"SM-{i}", [("sent", 1), ("delivered", 1)] if i % 3 else [("failed", 1)]
        )
        subs.append(submission(f"SM-{i}", [f"+2250701{i:06d}"], now(), provider="vavasms"))
    run = Runner(settings)
    try:
        run.start(run.projection())
        poller(run, settings)
        await feed(settings, settings.topics.submissions, subs)
        await until_final(db, "gatewaysms", 600, timeout=120)
        await until_final(db, "vavasms", 900, timeout=120)
    finally:
        await run.close()
    for fake in (carriers.gateway, carriers.vava):
        assert fake.rate_violations == 0
        times = sorted(r.at for r in fake.requests)
        assert max(_in_any_second(times)) <= 50
    assert len(carriers.gateway.requests) == 300 + 150  # one per message, the slow half twice
    assert len(carriers.vava.requests) == 900 + 600
    changes = await read_topic(settings.kafka_bootstrap, settings.topics.message_status)
    ids = Counter(orjson.loads(r.value)["event_id"] for r in changes)
    assert len(ids) == 2 * 600 - 300 + 2 * 900 - 300  # sent then final, or final at once
    assert max(ids.values()) == 1


def _in_any_second(times: list[float]) -> list[int]:
    """For each request, how many requests fell in the second that ends with it."""
    counts, start = [], 0
    for end, at in enumerate(times):
        while times[start] <= at - 1.0:
            start += 1
        counts.append(end - start + 1)
    return counts or [0]


async def test_analytics_show_delivery_rates_for_push_and_polled_providers(
    carriers: Carriers, settings_factory: Callable[..., Settings], db: asyncpg.Connection
) -> None:
    """Done when 5: with Orange pushing and Gateway SMS and VavaSMS polled, the per-provider delivery rate has all three, from the polled finals too."""
    from smsrx.statuses import Status
    from tests.consumers.conftest import receipt

    settings = carriers.settings(settings_factory)
    carriers.gateway.add_message("gw-r", {A: [("DELIVERED", 1)], B: [("REJECTED", 1)]})
    carriers.vava.add_message("SM-R", [("delivered", 1)])
    run = Runner(settings)
    try:
        run.start(run.projection())
        run.start(run.analytics())
        poller(run, settings)
        at = now()
        subs = [
            submission("gw-r", [A, B], at, provider="gatewaysms"),
            submission("SM-R", ["+2250700000031"], at, provider="vavasms"),
            submission("or-1", ["+2250700000032"], at),
        ]
        await feed(settings, settings.topics.submissions, subs)
        pushed = receipt("or-1", "+2250700000032", Status.DELIVERED, at)
        await feed(settings, settings.topics.delivery_receipts, [pushed])

        async def rates() -> bool:
            rows = await db.fetch("SELECT provider FROM delivery_rate_provider_daily")
            return {r["provider"] for r in rows} >= {"orange", "gatewaysms", "vavasms"}

        await wait_for(rates, "delivery rates of the three providers", 60)
    finally:
        await run.close()
    rows = await db.fetch(
        "SELECT provider, delivered, failed, final, delivery_rate FROM delivery_rate_provider_daily"
    )
    by = {
        r["provider"]: (r["delivered"], r["failed"], r["final"], float(r["delivery_rate"]))
        for r in rows
    }
    assert by == {"orange": (1, 0, 1, 1.0), "gatewaysms": (1, 1, 2, 0.5), "vavasms": (1, 0, 1, 1.0)}
