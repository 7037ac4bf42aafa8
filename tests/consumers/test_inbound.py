"""The inbound worker against the real broker and PostgreSQL: opt-outs, the
suppression list, routing, and the read API."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import asyncpg
import orjson

from consumers.routes import parse_rules
from smsrx.codec import decode_opt_out, decode_routed
from smsrx.events import InboundMessage, OptOut, OptOutAction
from smsrx.settings import Settings
from tests.consumers.conftest import T0, feed, read_api, wait_for
from tests.helpers import read_topic

PHONE = "+2250700000001"


def mo(message_id: str, text: str, *, sender: str = PHONE, minutes: int = 0, **raw: Any):
    """An inbound SMS from ``sender`` saying ``text``."""
    at = T0 + timedelta(minutes=minutes)
    return InboundMessage.create(
        provider="vavasms",
        message_id=message_id,
        sender=sender,
        content=text,
        sent_at=at,
        sent_at_text=at.isoformat(),
        received_at=at + timedelta(seconds=2),
        raw={"message_id": message_id, "form": sender, "content": text, **raw},
    )


async def suppression(db: asyncpg.Connection, phone: str = PHONE) -> dict[str, Any] | None:
    """The suppressions row of ``phone``."""
    row = await db.fetchrow("SELECT * FROM suppressions WHERE phone = $1", phone)
    return dict(row) if row else None


async def opt_outs(settings: Settings) -> list[OptOut]:
    """Every event on sms.opt-outs.v1."""
    return [
        decode_opt_out(r.value)
        for r in await read_topic(settings.kafka_bootstrap, settings.topics.opt_outs)
    ]


async def test_arret_twice_is_one_opt_out_and_start_lifts_it(runner, settings, db) -> None:
    """ "Arrêt" notified twice becomes one opt_out event and a suppression; START lifts it."""
    worker = runner.inbound(settings)
    stop = mo("SM-1", "Arrêt")
    await feed(settings, settings.topics.inbound, [stop, stop])
    await wait_for(lambda: suppression(db), "the suppression row")
    row = await suppression(db)
    assert row is not None and row["suppressed"] is True and row["keyword"] == "ARRET"
    assert row["occurred_at"] == stop.sent_at  # the SMS's own date
    [event] = await opt_outs(settings)
    assert (event.phone, event.action, event.keyword, event.source.value) == (
        PHONE,
        OptOutAction.OPT_OUT,
        "ARRET",
        "keyword",
    )
    assert event.inbound_message_id == "SM-1"

    await feed(settings, settings.topics.inbound, [mo("SM-2", "START", minutes=5)])

    async def lifted() -> bool:
        row = await suppression(db)
        return row is not None and row["suppressed"] is False

    await wait_for(lifted, "the opt-in applied")
    assert [e.action for e in await opt_outs(settings)] == [
        OptOutAction.OPT_OUT,
        OptOutAction.OPT_IN,
    ]
    assert await db.fetchval("SELECT count(*) FROM optout_events") == 2
    await runner.stop(worker)


async def test_replaying_the_inbound_topic_changes_nothing(runner, settings, db) -> None:
    """A second group reading sms.inbound.v1 from offset 0 publishes and changes nothing."""
    messages = [
        mo(f"SM-{i}", text, sender=f"+22507000001{i:02d}")
        for i, text in enumerate(["STOP", "stop please", "Bonjour", "ARRET", "oui"])
    ]
    worker = runner.inbound(settings)
    await feed(settings, settings.topics.inbound, messages)
    await wait_for(
        lambda: _count(db, "SELECT count(*) FROM suppressions WHERE suppressed"),
        "3 suppressions",
    )
    await runner.drain(worker, records=5 + 4)  # 5 inbound, then 4 opt-out events back
    await runner.stop(worker)
    before = [dict(r) for r in await db.fetch("SELECT * FROM suppressions ORDER BY phone")]
    published = len(await read_topic(settings.kafka_bootstrap, settings.topics.opt_outs))
    routed = len(await read_topic(settings.kafka_bootstrap, settings.topics.inbound_routed))
    assert (published, routed) == (4, 5)

    again = runner.inbound(settings, group_id=settings.topics.prefix + "replay")
    await runner.drain(again, records=5 + 4)
    await runner.stop(again)
    after = [dict(r) for r in await db.fetch("SELECT * FROM suppressions ORDER BY phone")]
    assert after == before
    assert len(await read_topic(settings.kafka_bootstrap, settings.topics.opt_outs)) == published
    assert len(await read_topic(settings.kafka_bootstrap, settings.topics.inbound_routed)) == routed


async def _count(db: asyncpg.Connection, query: str, expected: int = 3) -> bool:
    return await db.fetchval(query) == expected


async def test_the_latest_event_wins_whatever_the_arrival_order(runner, settings, db) -> None:
    """An old opt-out applied after a newer opt-in leaves the number opted in."""
    now = T0 + timedelta(days=1)
    newer_in = OptOut.manual(
        phone=PHONE, action=OptOutAction.OPT_IN, occurred_at=now, received_at=now
    )
    older_out = OptOut.manual(
        phone=PHONE,
        action=OptOutAction.OPT_OUT,
        occurred_at=now - timedelta(hours=1),
        received_at=now,
        reason="import",
    )
    worker = runner.inbound(settings)
    await feed(settings, settings.topics.opt_outs, [newer_in, older_out, older_out])
    await runner.drain(worker, records=3)
    row = await suppression(db)
    assert row is not None and row["suppressed"] is False
    assert str(row["event_id"]) == newer_in.event_id
    assert await db.fetchval("SELECT count(*) FROM optout_events") == 2
    # Same moment: the higher event_id wins, in either order.
    tie = [
        OptOut.manual(phone="+2250700000009", action=a, occurred_at=now, received_at=now)
        for a in (OptOutAction.OPT_OUT, OptOutAction.OPT_IN)
    ]
    winner = max(tie, key=lambda e: e.event_id)
    await feed(settings, settings.topics.opt_outs, tie)
    await runner.drain(worker, records=5)
    row = await suppression(db, "+2250700000009")
    assert row is not None and str(row["event_id"]) == winner.event_id
    await runner.stop(worker)


async def test_messages_are_routed_by_their_first_keyword(runner, settings, db) -> None:
    """Rules route by keyword, to the routed topic or the rule's own; the rest is default."""
    rules = parse_rules(
        '[[routes]]\nname = "rdv"\nkeywords = ["OUI", "NON"]\n'
        '[[routes]]\nname = "info"\nkeywords = ["INFO"]\ntopic = "sms.inbound.info.v1"\n',
        topic_prefix=settings.topics.prefix,
    )
    worker = runner.inbound(settings, rules=rules)
    messages = [
        mo("SM-a", "Oui je viens", sender="+2250700000011"),
        mo("SM-b", "INFO", sender="+2250700000012"),
        mo("SM-c", "Bonjour", sender="+2250700000013"),
        mo("SM-d", "STOP", sender="+2250700000014"),
    ]
    await feed(settings, settings.topics.inbound, messages)
    await runner.drain(worker, records=4 + 2)  # OUI is an opt-in too, STOP an opt-out
    routed = {
        m.message_id: (route, r.key)
        for r in await read_topic(settings.kafka_bootstrap, settings.topics.inbound_routed)
        for m, route in [decode_routed(r.value)]
    }
    assert routed == {
        "SM-a": ("rdv", b"SM-a"),
        "SM-c": ("default", b"SM-c"),
        "SM-d": ("opt-out", b"SM-d"),
    }
    info = await read_topic(
        settings.kafka_bootstrap, settings.topics.prefix + "sms.inbound.info.v1"
    )
    assert [decode_routed(r.value)[1] for r in info] == ["info"]
    actions = {e.phone: e.action for e in await opt_outs(settings)}
    assert actions == {
        "+2250700000011": OptOutAction.OPT_IN,
        "+2250700000014": OptOutAction.OPT_OUT,
    }
    await runner.stop(worker)


async def test_read_api_answers_from_the_suppression_list(runner, settings, db) -> None:
    """GET /v1/optouts/{e164}: suppressed with since and keyword; unknown allowed; junk 400."""
    worker = runner.inbound(settings)
    await feed(settings, settings.topics.inbound, [mo("SM-1", "STOP")])
    await wait_for(lambda: suppression(db), "the suppression row")
    async with read_api(worker) as http:
        async with http.get("/v1/optouts/+2250700000001") as resp:
            assert resp.status == 200
            assert orjson.loads(await resp.read()) == {
                "phone": PHONE,
                "suppressed": True,
                "since": "2026-03-02T09:00:00.000000Z",
                "keyword": "STOP",
            }
        async with http.get("/v1/optouts/%2B2250700000002") as resp:
            assert (resp.status, (await resp.json())["suppressed"]) == (200, False)
        async with http.get("/v1/optouts/not-a-number") as resp:
            assert (resp.status, (await resp.json())["error"]) == (400, "invalid_phone")
    await runner.stop(worker)


async def test_a_broker_gone_mid_batch_routes_nothing_until_it_publishes(settings, db) -> None:
    """When the routed records cannot be published, the batch is rolled back (nothing marked
    routed) and retried; once the broker takes them, the message is routed exactly once."""
    from consumers.batches import Batch
    from consumers.errors import BrokerUnavailable
    from consumers.inbound import Inbound
    from smsrx.cli.dev.broker import Broker
    from smsrx.db import create_pool
    from smsrx.kafka import create_topics, make_producer

    worker = Inbound(settings.with_(kafka_send_timeout=1.0), handle_signals=False)
    worker.pool = await create_pool(settings.database_url, min_size=1, max_size=2)
    own = Broker()
    own.start()
    doomed = worker.settings.with_(kafka_bootstrap=own.bootstrap)
    await create_topics(doomed)
    worker.producer = make_producer(doomed)
    await worker.producer.start()
    own.kill()  # gone with the batch in hand
    batch = Batch([(settings.topics.inbound, mo("SM-gone", "STOP"))])
    try:
        try:
            await worker._transaction(batch)
        except BrokerUnavailable:
            pass
        else:
            raise AssertionError("published to a broker that is not there")
        assert await db.fetchval("SELECT count(*) FROM inbound_routed") == 0

        await worker.producer.stop()
        worker.producer = make_producer(settings)
        await worker.producer.start()
        applied = await worker._transaction(batch)
        assert applied.applied[settings.topics.inbound] == 1
        again = await worker._transaction(batch)  # redelivered: routed once only
        assert again.duplicate[settings.topics.inbound] == 1
        assert await db.fetchval("SELECT count(*) FROM inbound_routed") == 1
        assert len(await opt_outs(settings)) == 1
    finally:
        await worker.producer.stop()
        await worker.pool.close()
