"""Pure parts of polling: the schedule's next time, what an answer decides, submissions of
every provider, and latencies from the carrier's time. No broker, no database."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from consumers.polling.client import Outcome, PolledStatus
from consumers.polling.decide import NOT_FOUND_PROVIDER_STATUS, NOT_FOUND_TRIES, decide, retry_delay
from consumers.polling.schedule import Claimed, next_poll
from consumers.rollups import Tally
from consumers.submit import SubmissionError, build_submissions
from smsrx import providers
from smsrx.events import StatusChange
from smsrx.statuses import Status

NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
SCHEDULE = (60.0, 300.0, 900.0)
HORIZON = 72 * 3600.0


def _row(polls: int = 0, failures: int = 0, last: str | None = None, age: float = 60) -> Claimed:
    return Claimed(
        "gatewaysms", "m-1", "+393495155018", NOW - timedelta(seconds=age), polls, failures, last
    )


def _polled(name: str, group: str, at: datetime | None = None) -> PolledStatus:
    mapped = providers.get("gatewaysms").statuses.map(group)
    return PolledStatus("+393495155018", name, mapped, at, {"state": group})


def test_next_poll_follows_the_schedule_and_repeats_its_last_delay() -> None:
    """Poll k waits the k-th delay; past the list, the last delay repeats; never past the horizon."""
    assert next_poll(SCHEDULE, 0, NOW, None) == NOW + timedelta(seconds=60)
    assert next_poll(SCHEDULE, 2, NOW, None) == NOW + timedelta(seconds=900)
    assert next_poll(SCHEDULE, 50, NOW, None) == NOW + timedelta(seconds=900)
    end = NOW + timedelta(seconds=100)
    assert next_poll(SCHEDULE, 2, NOW, end) == end
    assert next_poll(SCHEDULE, 2, end, end) is None


def test_a_changed_value_is_published_and_the_same_value_is_not() -> None:
    """A new carrier value gives a poll receipt; the same value polled again gives none and advances the schedule."""
    first, receipt = decide(
        _row(),
        Outcome.OK,
        _polled("PENDING_ENROUTE", "PENDING"),
        now=NOW,
        schedule=SCHEDULE,
        horizon=HORIZON,
    )
    assert receipt is not None and receipt.source == "poll" and receipt.status is Status.SENT
    assert (first.polls, first.due_at, first.done_reason) == (1, NOW + timedelta(seconds=300), None)
    again, nothing = decide(
        _row(polls=1, last="PENDING_ENROUTE"), Outcome.OK, _polled("PENDING_ENROUTE", "PENDING"),
        now=NOW, schedule=SCHEDULE, horizon=HORIZON,
    )  # fmt: skip
    assert nothing is None and again.polls == 2


def test_a_final_status_ends_polling_and_keeps_the_carrier_time() -> None:
    """DELIVERED ends polling with a final receipt that carries the carrier's delivery time, and the same event_id a push would have."""
    at = datetime(2020, 3, 3, 14, 11, 3, tzinfo=UTC)
    decision, receipt = decide(
        _row(),
        Outcome.OK,
        _polled("DELIVERED_TO_HANDSET", "DELIVERED", at),
        now=NOW,
        schedule=SCHEDULE,
        horizon=HORIZON,
    )
    assert decision.due_at is None and decision.done_reason == "final"
    assert receipt is not None and receipt.is_final and receipt.occurred_at == at
    pushed = receipt.__class__.create(
        provider="gatewaysms", message_id="m-1", recipient="+393495155018", status=Status.DELIVERED,
        provider_status="DELIVERED_TO_HANDSET", received_at=NOW, raw={},
    )  # fmt: skip
    assert pushed.event_id == receipt.event_id


def test_not_found_is_tried_a_few_times_then_ends_unknown() -> None:
    """An unknown id backs off, and at the third answer ends with a synthetic 'unknown' receipt naming the reason."""
    decision, receipt = decide(
        _row(), Outcome.NOT_FOUND, None, now=NOW, schedule=SCHEDULE, horizon=HORIZON, reason="709"
    )
    assert receipt is None and decision.failures == 1 and decision.due_at is not None
    last, receipt = decide(
        _row(failures=NOT_FOUND_TRIES - 1), Outcome.NOT_FOUND, None, now=NOW, schedule=SCHEDULE,
        horizon=HORIZON, reason="Aucun envoi existe pour ce ID",
    )  # fmt: skip
    assert last.done_reason == "not_found" and last.due_at is None
    assert receipt is not None and receipt.status is Status.UNKNOWN and receipt.synthetic
    assert receipt.provider_status == NOT_FOUND_PROVIDER_STATUS
    assert receipt.raw["reason"] == "Aucun envoi existe pour ce ID"


def test_retries_back_off_and_honour_retry_after() -> None:
    """Each failure doubles the wait from 15 s up to 15 min (±10 %), never below the carrier's Retry-After."""
    assert 13.5 <= retry_delay(1) <= 16.5
    assert 27 <= retry_delay(2) <= 33
    assert 810 <= retry_delay(30) <= 990
    assert retry_delay(1, retry_after=120) == 120
    decision, receipt = decide(
        _row(failures=1), Outcome.RETRY, None, now=NOW, schedule=SCHEDULE, horizon=HORIZON
    )
    assert receipt is None and decision.failures == 2 and decision.polls == 0
    assert NOW + timedelta(seconds=27) <= decision.due_at <= NOW + timedelta(seconds=33)  # type: ignore[operator]


def test_refused_credentials_keep_the_step_and_wait_the_pause() -> None:
    """AUTH_FAILED neither counts a failure nor advances the schedule; the row waits for the pause."""
    decision, receipt = decide(
        _row(polls=2, failures=1),
        Outcome.AUTH_FAILED,
        None,
        now=NOW,
        schedule=SCHEDULE,
        horizon=HORIZON,
        auth_pause=900,
    )
    assert receipt is None and (decision.polls, decision.failures) == (2, 1)
    assert decision.due_at == NOW + timedelta(seconds=900)


def test_the_horizon_ends_polling_whatever_the_answer() -> None:
    """Past submitted_at + horizon, a retry or a non-final status ends polling ('horizon')."""
    old = _row(age=HORIZON + 1)
    for outcome, polled in (
        (Outcome.RETRY, None),
        (Outcome.OK, _polled("PENDING_ENROUTE", "PENDING")),
    ):
        decision, _ = decide(old, outcome, polled, now=NOW, schedule=SCHEDULE, horizon=HORIZON)
        assert decision.done_reason == "horizon" and decision.due_at is None


def test_a_recipient_missing_from_the_answer_counts_as_not_found() -> None:
    """An answer that does not list the recipient is not a status: it counts toward giving up."""
    decision, receipt = decide(
        _row(), Outcome.OK, None, now=NOW, schedule=SCHEDULE, horizon=HORIZON
    )
    assert decision.outcome == "not_found" and decision.failures == 1 and receipt is None


def test_submissions_accept_every_provider_and_pair_vavasms_ids() -> None:
    """Each of the five providers is accepted; VavaSMS takes one message id per recipient, with its lot_id as a tag."""
    for name in providers.NAMES:
        (one,) = build_submissions(
            provider=name,
            message_ids=["m"],
            recipients=["+2250700000001"],
            submitted_at=None,
            tags=[],
        )
        assert one.provider == name
    pair = build_submissions(
        provider="vavasms", message_ids=["SM-1", "SM-2"], recipients=["+2250700000001", "+2250700000002"],
        submitted_at="2026-03-02T09:00:00Z", tags=[], lot_id="LOT-1",
    )  # fmt: skip
    assert [(s.message_id, s.recipients, s.tags) for s in pair] == [
        ("SM-1", ("+2250700000001",), {"lot_id": "LOT-1"}),
        ("SM-2", ("+2250700000002",), {"lot_id": "LOT-1"}),
    ]
    with pytest.raises(SubmissionError, match="expected one of orange, gatewaysms"):
        build_submissions(
            provider="acme",
            message_ids=["m"],
            recipients=["+2250700000001"],
            submitted_at=None,
            tags=[],
        )
    with pytest.raises(SubmissionError, match="one per recipient"):
        build_submissions(
            provider="vavasms",
            message_ids=["a", "b"],
            recipients=["+2250700000001"],
            submitted_at=None,
            tags=[],
        )
    with pytest.raises(SubmissionError, match="only vavasms"):
        build_submissions(
            provider="gatewaysms",
            message_ids=["a", "b"],
            recipients=["+2250700000001", "+2250700000002"],
            submitted_at=None,
            tags=[],
        )


def test_latency_counts_to_the_carrier_time_when_given() -> None:
    """A final change with occurred_at measures time to final up to the carrier's time, not to when the poll learnt it."""
    submitted = NOW - timedelta(hours=2)
    change = StatusChange(
        event_id="e", provider="gatewaysms", message_id="m-1", recipient="+393495155018",
        status=Status.DELIVERED, previous_status=Status.SENT, is_final=True, submitted_at=submitted,
        first_event_at=submitted + timedelta(minutes=1), changed_at=NOW, cause_event_id="c",
        occurred_at=submitted + timedelta(seconds=30),
    )  # fmt: skip
    tally = Tally()
    tally.add_change(change)
    assert ("gatewaysms", "submission", 30.0) in tally.samples
    plain = Tally()
    plain.add_change(replace(change, occurred_at=None))
    assert ("gatewaysms", "submission", 7200.0) in plain.samples


def test_an_unmapped_value_is_counted_each_time_and_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """smsrx_unmapped_statuses_total counts every receipt of a value no mapping knows; the log names it once."""
    from prometheus_client import REGISTRY

    from smsrx.unmapped import unmapped_status

    def count() -> float:
        labels = {"provider": "vavasms", "value": "brand-new-value"}
        return REGISTRY.get_sample_value("smsrx_unmapped_statuses_total", labels) or 0.0

    before = count()
    for _ in range(3):
        unmapped_status("vavasms", "brand-new-value")
    assert count() - before == 3
    assert caplog.text.count("'brand-new-value'") == 1
    assert providers.get("vavasms").statuses.map("brand-new-value").known is False
