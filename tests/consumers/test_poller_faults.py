"""The poller's faults: carrier errors, refused credentials, unknown ids, and a poller
killed mid-poll, against the fake carrier APIs, the real broker and PostgreSQL."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable

import asyncpg
import pytest

from consumers.status_cli import load_story, render_text
from smsrx.codec import decode_status_change
from smsrx.settings import Settings
from tests.consumers.conftest import Runner, feed, sample, submission, wait_for
from tests.consumers.poll_harness import (
    Carriers,
    carriers,
    now,
    poller,
    receipts,
    schedule,
    until_final,
)
from tests.consumers.proxy import Proxy
from tests.helpers import read_topic

__all__ = ["carriers"]

A = "+393495155018"


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
            submission("gw-err", [A], now(), provider="gatewaysms"),
            submission("SM-E", ["+2250700000006"], now(), provider="vavasms"),
            submission("SM-GONE", ["+2250700000005"], now(), provider="vavasms"),
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
    assert "did not know the message (0 poll(s) answered, the last 3 request(s) failed)" in (
        render_text(story)
    )
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
            submission(f"SM-A{i}", [f"+225070000001{i}"], now(), provider="vavasms")
            for i in range(5)
        ]
        subs.append(submission("gw-ok", [A], now(), provider="gatewaysms"))
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
            submission(mid, [f"+22507000002{i}"], now(), provider="vavasms")
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


async def test_a_database_outage_mid_poll_polls_again_at_most_once_and_loses_nothing(
    carriers: Carriers,
    settings_factory: Callable[..., Settings],
    db: asyncpg.Connection,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """PostgreSQL unreachable while six answers are on their way: the schedule is not written, the poller keeps going, and once it is back each recipient is polled at most once more, ends final, and each status change is published once."""
    caplog.set_level(logging.WARNING, logger="consumers.poller")
    settings = carriers.settings(settings_factory)
    proxy, through = Proxy.before(settings)
    await proxy.restore()
    ids = [f"SM-D{i}" for i in range(6)]
    for mid in ids:
        carriers.vava.add_message(mid, [("delivered", 1)])
    carriers.vava.slow(2.0, times=6)
    run = Runner(settings)
    try:
        run.start(run.projection())  # the projection reaches PostgreSQL directly
        worker = poller(run, through)
        subs = [
            submission(mid, [f"+22507000003{i}"], now(), provider="vavasms")
            for i, mid in enumerate(ids)
        ]
        await feed(settings, settings.topics.submissions, subs)
        await wait_for(lambda: carriers.vava.count() >= 6, "six requests in flight")
        await proxy.cut()
        await wait_for(
            lambda: "schedule not updated" in caplog.text, "the schedule write to fail", 30
        )
        await proxy.restore()
        await until_final(db, "vavasms", 6, timeout=60)
        assert not run.tasks[worker].done(), "the poller stopped"
    finally:
        await run.close()
        await proxy.cut()
    assert all(carriers.vava.count(mid) <= 2 for mid in ids)
    rows = await schedule(db)
    assert sorted(r["done_reason"] for r in rows.values()) == ["final"] * 6
    changes = await read_topic(settings.kafka_bootstrap, settings.topics.message_status)
    assert len(changes) == 6
    assert len({decode_status_change(r.value).event_id for r in changes}) == 6
    assert len({r.event_id for r in await receipts(settings)}) == 6


async def _status_of(db: asyncpg.Connection, provider: str, message_id: str) -> bool:
    status = await db.fetchval(
        "SELECT status FROM recipient_status WHERE provider = $1 AND message_id = $2",
        provider,
        message_id,
    )
    return status is not None
