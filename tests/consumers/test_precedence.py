"""Precedence: the projection's state depends on the set of events, never on their order."""

from __future__ import annotations

import itertools
from datetime import timedelta

import asyncpg
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from consumers.batches import Batch
from consumers.projection import Stored, plan_receipts
from consumers.status_projection import StatusProjection
from smsrx.events import DeliveryReceipt, Submission
from smsrx.settings import Settings
from smsrx.statuses import Status
from tests.consumers.conftest import T0, oracle, receipt, submission

_EXAMPLE = itertools.count()

# Several carrier statuses per canonical status, and few distinct times, so that ties on
# rank and on received_at (broken by event_id) come up often.
_VARIANTS = [
    (Status.QUEUED, "MessageWaiting"),
    (Status.SENT, "DeliveredToNetwork"),
    (Status.SENT, "Accepted"),
    (Status.UNKNOWN, "DeliveryUncertain"),
    (Status.UNKNOWN, "Weird"),
    (Status.EXPIRED, "smsrx:expired"),
    (Status.FAILED, "DeliveryImpossible"),
    (Status.FAILED, "Rejected"),
    (Status.DELIVERED, "DeliveredToTerminal"),
]


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[list[DeliveryReceipt | Submission], list[list[int]], bool]:
    """Distinct events of one message, then the order, duplication and batching to feed."""
    n = next(_EXAMPLE)
    message_id = f"prop-{n}"
    recipients = [f"+22507000000{i:02d}" for i in range(draw(st.integers(1, 2)))]
    variants = draw(st.lists(st.sampled_from(_VARIANTS), min_size=1, max_size=7, unique=True))
    events: list[DeliveryReceipt | Submission] = []
    for status, provider_status in variants:
        who = draw(st.sampled_from(recipients))
        at = T0 + timedelta(seconds=draw(st.integers(0, 3)))
        events.append(receipt(message_id, who, status, at, provider_status=provider_status))
    with_submission = draw(st.booleans())
    if with_submission:
        events.append(submission(message_id, recipients, T0 - timedelta(seconds=5)))
    # every order, with any event repeated, cut into batches anywhere
    order = draw(st.permutations(range(len(events))))
    extra = draw(st.lists(st.integers(0, len(events) - 1), max_size=len(events)))
    fed = list(order)
    for index in extra:
        fed.insert(draw(st.integers(0, len(fed))), index)
    cuts = sorted(draw(st.sets(st.integers(1, max(1, len(fed) - 1)), max_size=4)))
    batches = [fed[a:b] for a, b in itertools.pairwise([0, *cuts, len(fed)]) if fed[a:b]]
    return events, batches, with_submission


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(scenario=scenarios())
async def test_any_order_and_duplication_gives_the_same_state(
    database_url: str, scenario: tuple[list[DeliveryReceipt | Submission], list[list[int]], bool]
) -> None:
    """Every order, duplication and batching of a message's events ends in the state
    precedence demands, with each event once in the history."""
    events, batches, with_submission = scenario
    cfg = Settings(database_url=database_url)
    worker = StatusProjection(cfg, handle_signals=False)
    topics = cfg.topics
    conn = await asyncpg.connect(database_url)
    try:
        for indices in batches:
            items = []
            for i in indices:
                event = events[i]
                topic = (
                    topics.submissions if hasattr(event, "recipients") else topics.delivery_receipts
                )
                items.append((topic, event))
            async with conn.transaction():
                await worker.apply(conn, Batch(items))

        receipts = [e for e in events if isinstance(e, DeliveryReceipt)]
        message_id = receipts[0].message_id
        expected = oracle(receipts)
        rows = await conn.fetch(
            "SELECT * FROM recipient_status WHERE message_id = $1 AND status IS NOT NULL",
            message_id,
        )
        got = {
            (r["provider"], r["message_id"], r["recipient"]): {k: r[k] for k in expected_keys()}
            for r in rows
        }
        assert got == expected
        submitted = T0 - timedelta(seconds=5) if with_submission else None
        for r in rows:
            assert r["submitted_at"] == submitted
            if r["is_final"]:
                start = submitted or r["first_event_at"]
                assert r["final_at"] == r["status_at"]
                assert r["time_to_final"] == r["status_at"] - start
        history = await conn.fetchval(
            "SELECT count(*) FROM status_events WHERE message_id = $1", message_id
        )
        assert history == len(receipts)
    finally:
        await conn.close()


def expected_keys() -> tuple[str, ...]:
    return (
        "status",
        "is_final",
        "provider_status",
        "status_event_id",
        "first_event_at",
        "last_event_at",
        "event_count",
    )


def test_late_lower_rank_is_a_prevented_regression() -> None:
    """A receipt ranked below the status already reached is counted, and changes nothing."""
    delivered = receipt("m", "+2250700000001", Status.DELIVERED, T0)
    sent = receipt("m", "+2250700000001", Status.SENT, T0 - timedelta(seconds=1))
    plan = plan_receipts([delivered, sent], {})
    assert plan.regressions == {"orange": 1}
    assert [(c.previous_status, c.status) for c in plan.changes] == [(None, Status.DELIVERED)]

    stored = Stored(Status.DELIVERED, T0, delivered.event_id, None, T0)
    plan = plan_receipts([sent], {("orange", "m", "+2250700000001"): stored})
    assert plan.regressions == {"orange": 1}
    assert plan.changes == []


def test_delivered_replaces_failed_and_nothing_replaces_delivered() -> None:
    """failed then delivered is a change; delivered then failed is a prevented regression."""
    key = ("orange", "m", "+2250700000001")
    failed = receipt("m", "+2250700000001", Status.FAILED, T0)
    delivered = receipt("m", "+2250700000001", Status.DELIVERED, T0 + timedelta(seconds=1))
    plan = plan_receipts([delivered], {key: Stored(Status.FAILED, T0, failed.event_id, None, T0)})
    (change,) = plan.changes
    assert (change.previous_status, change.status, change.is_final) == (
        Status.FAILED,
        Status.DELIVERED,
        True,
    )
    stored = Stored(Status.DELIVERED, delivered.received_at, delivered.event_id, None, T0)
    plan = plan_receipts([failed], {key: stored})
    assert plan.changes == [] and plan.regressions == {"orange": 1}


def test_one_batch_collapses_to_one_change() -> None:
    """queued, sent and delivered in one batch publish a single change, to delivered."""
    chain = [
        receipt("m", "+2250700000001", s, T0 + timedelta(seconds=i))
        for i, s in enumerate([Status.QUEUED, Status.SENT, Status.DELIVERED])
    ]
    plan = plan_receipts(chain, {})
    assert [(c.status, c.cause_event_id) for c in plan.changes] == [
        (Status.DELIVERED, chain[2].event_id)
    ]
    assert plan.changes[0].first_event_at == T0
