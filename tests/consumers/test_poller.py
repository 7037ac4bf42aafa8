"""The poller against the fake carrier APIs, the real broker and the real PostgreSQL."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable

import asyncpg
import orjson
import pytest

from consumers.status_cli import load_story, render_text
from smsrx.settings import Settings
from tests.consumers.conftest import T0, Runner, feed, sample, submission, wait_for
from tests.consumers.poll_harness import (
    Carriers,
    carriers,
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
        sub = submission("5e5e65429f272510fb6adcc0", [A, B, C], _now(), provider="gatewaysms")
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
            submission("SM-1", ["+2250700000001"], _now(), provider="vavasms"),
            submission("SM-2", ["+2250700000002"], _now(), provider="vavasms"),
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
    """Done when 4: orange, mboasms and orangepro submissions schedule nothing and call no API; they stay pending."""
    settings = carriers.settings(settings_factory)
    run = Runner(settings)
    try:
        run.start(run.projection())
        worker = poller(run, settings)
        subs = [
            submission(f"{p}-1", ["+2250700000009"], _now(), provider=p)
            for p in ("orange", "mboasms", "orangepro")
        ]
        subs.append(submission("SM-9", ["+2250700000008"], _now(), provider="vavasms"))
        carriers.vava.add_message("SM-9", [("sent", 1)])
        await feed(settings, settings.topics.submissions, subs)
        await run.drain(worker, records=4)
        await wait_for(lambda: carriers.vava.count("SM-9") >= 2, "two VavaSMS polls")
    finally:
        await run.close()
    assert set(await schedule(db)) == {("vavasms", "SM-9", "+2250700000008")}
    assert carriers.gateway.count() == 0
    assert {r.message_id for r in await receipts(settings)} == {"SM-9"}


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
            [submission("gw-push", [A, B], _now(), provider="gatewaysms")],
        )
        await wait_for(lambda: carriers.gateway.count("gw-push") >= 2, "two polls")
        from smsrx.statuses import Status
        from tests.consumers.conftest import receipt

        pushed = receipt(
            "gw-push",
            A,
            Status.DELIVERED,
            _now(),
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
            [submission("SM-H", ["+2250700000007"], _now(), provider="vavasms")],
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


async def test_errors_back_off_and_unknown_ids_end_unknown(
    carriers: Carriers,
    settings_factory: Callable[..., Settings],
    db: asyncpg.Connection,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A 5xx burst and a slow answer are retried until the status comes; an id the carrier never knew ends 'unknown' with the reason after 3 tries."""
    settings = carriers.settings(settings_factory, poll_timeout=0.5)
    carriers.gateway.add_message("gw-err", {A: [("DELIVERED", 1)]})
    carriers.gateway.fail(times=3, status=503)
    carriers.vava.slow(1.5, times=1)
    carriers.vava.add_message("SM-E", [("delivered", 1)])
    run = Runner(settings)
    try:
        run.start(run.projection())
        poller(run, settings)
        subs = [
            submission("gw-err", [A], _now(), provider="gatewaysms"),
            submission("SM-E", ["+2250700000006"], _now(), provider="vavasms"),
            submission("SM-GONE", ["+2250700000005"], _now(), provider="vavasms"),
        ]
        await feed(settings, settings.topics.submissions, subs)
        await until_final(db, "gatewaysms", 1)
        await until_final(db, "vavasms", 1)

        async def gave_up() -> bool:
            row = (await schedule(db)).get(("vavasms", "SM-GONE", "+2250700000005"))
            return row is not None and row["done_reason"] == "not_found"

        await wait_for(gave_up, "the unknown id given up", 30)
        await wait_for(
            lambda: _status_of(db, "vavasms", "SM-GONE"), "its unknown receipt projected", 30
        )
    finally:
        await run.close()
    assert carriers.vava.count("SM-GONE") == 3
    assert sample("smsrx_polls_total", provider="gatewaysms", outcome="retry") >= 3
    story = await load_story(db, "vavasms", "SM-GONE")
    assert story.recipients[0].status == "unknown"
    assert story.recipients[0].provider_status == "smsrx:not-found"
    assert carriers.gateway.token not in caplog.text
    assert carriers.vava.password not in caplog.text


async def test_refused_credentials_pause_the_provider_with_one_log_line(
    carriers: Carriers,
    settings_factory: Callable[..., Settings],
    db: asyncpg.Connection,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """VavaSMS code 901 pauses VavaSMS polling (one error line, the credentials gauge at 0) and keeps every schedule; Gateway SMS goes on."""
    settings = carriers.settings(settings_factory)
    carriers.vava.bad_credentials = True
    for i in range(5):
        carriers.vava.add_message(f"SM-A{i}", [("delivered", 1)])
    carriers.gateway.add_message("gw-ok", {A: [("DELIVERED", 1)]})
    run = Runner(settings)
    caplog.set_level(logging.ERROR, logger="consumers.poller")
    try:
        run.start(run.projection())
        worker = poller(run, settings, auth_pause=3600.0)
        subs = [
            submission(f"SM-A{i}", [f"+225070000001{i}"], _now(), provider="vavasms")
            for i in range(5)
        ]
        subs.append(submission("gw-ok", [A], _now(), provider="gatewaysms"))
        await feed(settings, settings.topics.submissions, subs)
        await until_final(db, "gatewaysms", 1)
        await wait_for(lambda: carriers.vava.count() >= 1, "a VavaSMS request")
        await asyncio.sleep(1.5)
        assert sample("smsrx_poll_credentials_ok", provider="vavasms") == 0
        assert sample("smsrx_poll_credentials_ok", provider="gatewaysms") == 1
        asked = carriers.vava.count()
    finally:
        await run.close()
    assert asked <= 5  # the claimed batch at most; then nothing during the pause
    refusals = [r for r in caplog.records if "refused the credentials" in r.getMessage()]
    assert len(refusals) == 1
    assert "SMSRX_VAVASMS_USERNAME and SMSRX_VAVASMS_PASSWORD" in refusals[0].getMessage()
    assert carriers.vava.password not in caplog.text
    rows = await schedule(db)
    pending = [k for k, r in rows.items() if k[0] == "vavasms" and r["done_reason"] is None]
    assert len(pending) == 5
    assert worker.polled >= 1


async def test_a_killed_poller_polls_again_at_most_once_and_loses_nothing(
    carriers: Carriers, settings_factory: Callable[..., Settings], db: asyncpg.Connection
) -> None:
    """A poller killed while its requests are in flight leaves its rows leased; the next one polls each at most once more, and every recipient ends final."""
    settings = carriers.settings(settings_factory)
    ids = [f"SM-K{i}" for i in range(6)]
    for mid in ids:
        carriers.vava.add_message(mid, [("delivered", 1)])
    carriers.vava.slow(3.0, times=6)
    run = Runner(settings)
    try:
        run.start(run.projection())
        first = poller(run, settings)
        subs = [
            submission(mid, [f"+22507000002{i}"], _now(), provider="vavasms")
            for i, mid in enumerate(ids)
        ]
        await feed(settings, settings.topics.submissions, subs)
        await wait_for(lambda: carriers.vava.count() >= 6, "six requests in flight")
        task = run.tasks.pop(first)
        task.cancel()  # no drain, no record: as a SIGKILL leaves the database
        await asyncio.gather(task, return_exceptions=True)
        poller(run, settings)
        await until_final(db, "vavasms", 6, timeout=60)
    finally:
        await run.close()
    assert all(carriers.vava.count(mid) <= 2 for mid in ids)
    published = Counter(r.event_id for r in await receipts(settings))
    assert len(published) == 6


def _now():  # type: ignore[no-untyped-def]
    from smsrx.clock import utcnow

    return utcnow()


async def _status_of(db: asyncpg.Connection, provider: str, message_id: str) -> bool:
    status = await db.fetchval(
        "SELECT status FROM recipient_status WHERE provider = $1 AND message_id = $2",
        provider,
        message_id,
    )
    return status is not None


_ = T0


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
        subs.append(submission(f"gw-{i}", numbers, _now(), provider="gatewaysms"))
    for i in range(900):
        carriers.vava.add_message(
            f"SM-{i}", [("sent", 1), ("delivered", 1)] if i % 3 else [("failed", 1)]
        )
        subs.append(submission(f"SM-{i}", [f"+2250701{i:06d}"], _now(), provider="vavasms"))
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
