"""analytics against the real broker and PostgreSQL, and replays of whole topics."""

from __future__ import annotations

import uuid
from collections import Counter

from consumers.rollups import country_of
from tests.consumers.conftest import (
    T0,
    feed,
    inbound,
    oracle,
    sample,
    submission,
    wait_for,
    workload,
)
from tests.helpers import read_topic

_TABLES = {
    "recipient_status": "provider, message_id, recipient",
    "status_events": "event_id",
    "submissions": "provider, message_id",
    "inbound_messages": "provider, message_id",
    "status_outbox": "id",
    "analytics_processed_events": "event_id",
    "analytics_receipts_minute": "minute, provider, country, status",
    "analytics_inbound_minute": "minute, provider, country",
    "analytics_outcomes_minute": "minute, provider, country, status",
    "analytics_latency_hour": "hour, provider, country, since, status, le",
}


async def _snapshot(db) -> dict[str, list[tuple[object, ...]]]:
    return {
        table: [tuple(r) for r in await db.fetch(f"SELECT * FROM {table} ORDER BY {key}")]
        for table, key in _TABLES.items()
    }


async def _build(settings, runner, db, *, messages: int = 200):
    """Submissions for half the messages, then shuffled duplicated receipts and inbound SMS,
    through both workers until everything is counted."""
    story = workload(messages, recipients=2, duplicates=0.3, seed=11)
    topics = settings.topics
    numbers: dict[str, list[str]] = {}
    for r in story.distinct:
        numbers.setdefault(r.message_id, [])
        if r.recipient not in numbers[r.message_id]:
            numbers[r.message_id].append(r.recipient)
    submitted = [submission(m, rs, T0) for m, rs in sorted(numbers.items())[::2]]
    mos = [inbound(f"mo-{i}", "+33612345678" if i % 3 else "+2250709000001", T0) for i in range(40)]
    await feed(settings, topics.submissions, submitted)
    projection = runner.start(runner.projection())
    analytics = runner.start(runner.analytics())
    await runner.drain(projection, records=len(submitted))
    await feed(settings, topics.delivery_receipts, story.sent)
    await feed(settings, topics.inbound, mos + mos[:10])
    await runner.drain(projection, records=len(submitted) + len(story.sent) + 50)
    await wait_for(lambda: _outbox_empty(db), "the status changes to be published", timeout=30)
    changes = len(await read_topic(settings.kafka_bootstrap, topics.message_status))
    await runner.drain(analytics, records=len(story.sent) + 50 + changes)
    return story, submitted, mos, projection, analytics


async def _outbox_empty(db) -> bool:
    return bool(await db.fetchval("SELECT count(*) FROM status_outbox") == 0)


async def test_rollups_count_each_distinct_event_once(settings, runner, db) -> None:
    """Receipt and inbound rollups sum to the distinct events; outcomes, latency buckets and
    the delivery-rate views count each recipient once, under its current final status."""
    receipts_before = sample("smsrx_analytics_receipts_total", provider="orange", status="sent")
    story, submitted, mos, *_ = await _build(settings, runner, db)

    by_status = Counter(r.status.value for r in story.distinct)
    rows = await db.fetch(
        "SELECT status, sum(events)::bigint AS n FROM analytics_receipts_minute GROUP BY status"
    )
    assert {r["status"]: r["n"] for r in rows} == by_status
    by_country = Counter(country_of(r.recipient) for r in story.distinct)
    rows = await db.fetch(
        "SELECT country, sum(events)::bigint AS n FROM analytics_receipts_minute GROUP BY country"
    )
    assert {r["country"]: r["n"] for r in rows} == by_country
    assert set(by_country) == {"CIV", "FRA", "SEN", "CMR"}
    assert await db.fetchval("SELECT sum(messages) FROM analytics_inbound_minute") == len(mos)
    assert (
        sample("smsrx_analytics_receipts_total", provider="orange", status="sent") - receipts_before
        == by_status["sent"]
    )

    expected = oracle(story.distinct)
    finals = Counter(v["status"] for v in expected.values() if v["is_final"])
    rows = await db.fetch(
        "SELECT status, sum(recipients)::bigint AS n FROM analytics_outcomes_minute GROUP BY status"
    )
    assert {r["status"]: r["n"] for r in rows if r["n"]} == finals
    view = await db.fetchrow(
        "SELECT sum(delivered)::bigint AS delivered, sum(final)::bigint AS final "
        "FROM delivery_rate_provider_daily WHERE provider = 'orange'"
    )
    assert (view["delivered"], view["final"]) == (finals["delivered"], finals.total())

    submitted_ids = {s.message_id for s in submitted}
    final_keys = [k for k, v in expected.items() if v["is_final"]]
    rows = await db.fetch(
        "SELECT since, sum(samples)::bigint AS n FROM analytics_latency_hour GROUP BY since"
    )
    assert {r["since"]: r["n"] for r in rows} == {
        "first_receipt": len(final_keys),
        "submission": sum(1 for k in final_keys if k[1] in submitted_ids),
    }
    # Submitted at T0; receipts arrive within T0 + 600 s: every sample is within 10 minutes.
    top = await db.fetchval(
        "SELECT max(samples) FROM time_to_final_daily WHERE since = 'submission' AND le <= 600"
    )
    assert top == sum(1 for k in final_keys if k[1] in submitted_ids)


async def test_replaying_every_topic_changes_no_row_and_no_count(settings, runner, db) -> None:
    """Replaying every topic from offset 0 into the built projection and rollups changes no
    row and no count, and publishes no status change again."""
    *_, projection, analytics = await _build(settings, runner, db, messages=150)
    await runner.stop(projection)
    await runner.stop(analytics)
    before = await _snapshot(db)
    assert before["status_outbox"] == []
    topics = settings.topics
    published = len(await read_topic(settings.kafka_bootstrap, topics.message_status))
    records = {t: len(await read_topic(settings.kafka_bootstrap, t)) for t in topics.all()}

    replay = uuid.uuid4().hex[:8]
    again = runner.start(runner.projection(group_id=f"replay-projection-{replay}"))
    counted = runner.start(runner.analytics(group_id=f"replay-analytics-{replay}"))
    await runner.drain(
        again,
        records=records[topics.submissions]
        + records[topics.delivery_receipts]
        + records[topics.inbound],
    )
    await runner.drain(
        counted,
        records=records[topics.delivery_receipts]
        + records[topics.inbound]
        + records[topics.message_status],
    )
    await runner.stop(again)
    await runner.stop(counted)
    assert await _snapshot(db) == before
    assert len(await read_topic(settings.kafka_bootstrap, topics.message_status)) == published
