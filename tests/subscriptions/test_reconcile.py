"""Reconcile, and the operations it is made of, against the fake Orange API and PostgreSQL."""

from __future__ import annotations

import logging

import asyncpg
import pytest

from subscriptions import operations
from subscriptions.client import OrangeClient
from subscriptions.errors import ServerError
from subscriptions.reconcile import Verdict, judge, reconcile
from subscriptions.store import State, StoredSubscription, SubscriptionStore
from subscriptions.wire import Registration
from tests.subscriptions.conftest import AUTH_HEADER, NOTIFY_URL, OTHER_URL, SENDER, sample
from tests.subscriptions.fake_orange import FakeOrange


def runs(result: str) -> float:
    """``smsrx_orange_reconciliations_total`` for one result."""
    return sample("smsrx_orange_reconciliations_total", result=result)


def in_place() -> float:
    """The in-place gauge."""
    return sample("smsrx_orange_subscription_in_place")


def _row(**changes: object) -> StoredSubscription:
    from datetime import UTC, datetime

    fields: dict[str, object] = {
        "id": "a",
        "sender": SENDER,
        "notify_url": NOTIFY_URL,
        "state": State.ACTIVE,
        "detail": None,
        "observed_notify_url": None,
        "created_at": datetime.now(UTC),
        "last_checked_at": None,
        "removed_at": None,
    }
    fields.update(changes)
    return StoredSubscription(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("current", "observed", "verdict"),
    [
        (None, None, Verdict.NOTHING_REGISTERED),
        (_row(), None, Verdict.UNKNOWN),
        (
            _row(),
            Registration("a", "https://example.com:443/callbacks/orange/dr", ""),
            Verdict.IN_PLACE,
        ),
        (_row(), Registration("a", OTHER_URL, ""), Verdict.DRIFTED),
    ],
)
def test_judge(
    current: StoredSubscription | None, observed: Registration | None, verdict: Verdict
) -> None:
    """The pure decision: nothing stored, 404, same URL (with :443) or another URL."""
    assert judge(NOTIFY_URL, current, observed) is verdict


async def test_subscribe_stores_the_id(
    client: OrangeClient, store: SubscriptionStore, fake: FakeOrange
) -> None:
    """subscribe records Orange's id with the sender, the URL and the time."""
    registration = await operations.subscribe(client, store, NOTIFY_URL)
    row = await store.get(registration.id)
    assert row is not None
    assert (row.sender, row.notify_url, row.state) == (SENDER, NOTIFY_URL, State.ACTIVE)
    assert row.created_at is not None
    assert in_place() == 1


async def test_reconcile_registers_when_nothing_is(
    client: OrangeClient, store: SubscriptionStore, fake: FakeOrange
) -> None:
    """With nothing stored, reconcile subscribes and the gauge says in place."""
    before = runs("subscribed")
    result = await reconcile(client, store, NOTIFY_URL)
    assert result.verdict is Verdict.NOTHING_REGISTERED and result.in_place
    assert fake.registration is not None and fake.registration.notify_url == NOTIFY_URL
    assert [row.id for row in await store.live(SENDER)] == [fake.registration.id]
    assert runs("subscribed") == before + 1
    assert in_place() == 1


async def test_reconcile_in_place_changes_nothing(
    client: OrangeClient, store: SubscriptionStore, fake: FakeOrange
) -> None:
    """A second pass only checks, and records the check time."""
    first = await reconcile(client, store, NOTIFY_URL)
    before = sample("smsrx_orange_subscription_last_check_timestamp_seconds")
    second = await reconcile(client, store, NOTIFY_URL)
    assert second.verdict is Verdict.IN_PLACE and second.steps == []
    assert second.registration is not None and first.registration is not None
    assert second.registration.id == first.registration.id
    assert fake.count("subscribe") == 1
    row = await store.get(first.registration.id)
    assert row is not None and row.last_checked_at is not None
    assert sample("smsrx_orange_subscription_last_check_timestamp_seconds") >= before > 0
    assert fake.count("check") == 1


async def test_reconcile_repairs_a_drifted_url(
    client: OrangeClient, store: SubscriptionStore, fake: FakeOrange
) -> None:
    """When Orange posts elsewhere, reconcile unsubscribes that id and registers ours again."""
    old = (await reconcile(client, store, NOTIFY_URL)).registration
    assert old is not None
    fake.drift(OTHER_URL)
    before = runs("repaired")
    result = await reconcile(client, store, NOTIFY_URL)
    assert result.verdict is Verdict.DRIFTED and result.registration is not None
    assert fake.registration is not None
    assert fake.registration.notify_url == NOTIFY_URL
    assert fake.registration.id == result.registration.id != old.id
    assert fake.count("unsubscribe") == 1
    row = await store.get(old.id)
    assert row is not None and row.state is State.REMOVED
    assert row.detail == f"drifted to {OTHER_URL}"
    assert runs("repaired") == before + 1
    assert in_place() == 1


async def test_reconcile_recovers_a_deleted_registration(
    client: OrangeClient, store: SubscriptionStore, fake: FakeOrange
) -> None:
    """A registration deleted behind our back is registered again under a new stored id."""
    old = (await reconcile(client, store, NOTIFY_URL)).registration
    assert old is not None
    fake.delete_behind_our_back()
    before = runs("recovered")
    result = await reconcile(client, store, NOTIFY_URL)
    assert result.verdict is Verdict.UNKNOWN and result.registration is not None
    assert fake.registration is not None and fake.registration.id == result.registration.id
    live = await store.live(SENDER)
    assert [row.id for row in live] == [result.registration.id]
    row = await store.get(old.id)
    assert row is not None and row.state is State.REMOVED
    assert row.detail is not None and row.detail.startswith("unknown to Orange (404)")
    assert runs("recovered") == before + 1


async def test_reconcile_recovers_a_lost_id(
    client: OrangeClient, store: SubscriptionStore, fake: FakeOrange, db: asyncpg.Connection
) -> None:
    """With the stored id lost, reconcile subscribes again and stores the new id."""
    await reconcile(client, store, NOTIFY_URL)
    await db.execute("DELETE FROM orange_subscriptions")
    result = await reconcile(client, store, NOTIFY_URL)
    assert result.verdict is Verdict.NOTHING_REGISTERED
    assert fake.registration is not None
    assert [row.id for row in await store.live(SENDER)] == [fake.registration.id]


async def test_reconcile_follows_another_client_replacing_ours(
    client: OrangeClient, store: SubscriptionStore, fake: FakeOrange
) -> None:
    """Someone else subscribed another URL: our id is gone, so we subscribe ours again."""
    await reconcile(client, store, NOTIFY_URL)
    fake.subscribe_elsewhere(OTHER_URL)
    result = await reconcile(client, store, NOTIFY_URL)
    assert result.verdict is Verdict.UNKNOWN
    assert fake.registration is not None and fake.registration.notify_url == NOTIFY_URL


async def test_reconcile_removes_stale_ids(
    client: OrangeClient, store: SubscriptionStore, fake: FakeOrange
) -> None:
    """Older stored ids are unsubscribed and marked removed; the current one stays."""
    first = await operations.subscribe(client, store, OTHER_URL)
    second = await operations.subscribe(client, store, NOTIFY_URL)
    result = await reconcile(client, store, NOTIFY_URL)
    assert result.verdict is Verdict.IN_PLACE
    assert result.steps == [f"removed stale subscription id={first.id} (Orange no longer knew it)"]
    assert [row.id for row in await store.live(SENDER)] == [second.id]
    stale = await store.get(first.id)
    assert stale is not None and stale.state is State.REMOVED
    assert fake.registration is not None and fake.registration.id == second.id


async def test_reconcile_moves_to_a_new_url(
    client: OrangeClient, store: SubscriptionStore, fake: FakeOrange
) -> None:
    """A changed desired URL (--notify-url) is a drift, repaired to the new URL."""
    await reconcile(client, store, NOTIFY_URL)
    result = await reconcile(client, store, OTHER_URL)
    assert result.verdict is Verdict.DRIFTED and result.in_place
    assert fake.registration is not None and fake.registration.notify_url == OTHER_URL


async def test_reconcile_rides_out_faults(
    client: OrangeClient, store: SubscriptionStore, fake: FakeOrange
) -> None:
    """Expired tokens, a 5xx burst and a slow answer in one pass still end in place."""
    await reconcile(client, store, NOTIFY_URL)
    fake.expire_tokens()
    fake.delete_behind_our_back()
    fake.fail("check", 503, times=2)
    fake.slow("subscribe", 1.0)
    result = await reconcile(client, store, NOTIFY_URL)
    assert result.in_place
    assert fake.registration is not None and fake.registration.notify_url == NOTIFY_URL


async def test_reconcile_failure_is_counted(
    client: OrangeClient, store: SubscriptionStore, fake: FakeOrange
) -> None:
    """A pass that Orange fails raises, counts as failed and leaves the gauge alone."""
    await reconcile(client, store, NOTIFY_URL)
    fake.fail("check", 500, times=10)
    before = runs("failed")
    with pytest.raises(ServerError):
        await reconcile(client, store, NOTIFY_URL)
    assert runs("failed") == before + 1
    assert in_place() == 1


async def test_check_marks_drift_and_unknown(
    client: OrangeClient, store: SubscriptionStore, fake: FakeOrange
) -> None:
    """check records drifted with Orange's URL, then unknown after a 404."""
    registration = await operations.subscribe(client, store, NOTIFY_URL)
    fake.drift(OTHER_URL)
    result = await operations.check(client, store, registration.id, NOTIFY_URL)
    assert not result.in_place
    row = await store.get(registration.id)
    assert row is not None and row.state is State.DRIFTED
    assert row.observed_notify_url == OTHER_URL
    assert in_place() == 0
    fake.delete_behind_our_back()
    result = await operations.check(client, store, registration.id, NOTIFY_URL)
    assert result.registration is None
    row = await store.get(registration.id)
    assert row is not None and row.state is State.UNKNOWN


async def test_unsubscribe_removes_every_stored_id(
    client: OrangeClient, store: SubscriptionStore, fake: FakeOrange
) -> None:
    """unsubscribe deletes the registration and marks the ids removed."""
    first = await operations.subscribe(client, store, NOTIFY_URL)
    second = await operations.subscribe(client, store, NOTIFY_URL)
    result = await operations.unsubscribe(client, store, recover_with=NOTIFY_URL)
    assert result.removed == [second.id] and result.already_gone == [first.id]
    assert not result.recovered
    assert fake.registration is None
    assert await store.live(SENDER) == []
    assert in_place() == 0


async def test_unsubscribe_recovers_a_forgotten_id(
    client: OrangeClient, store: SubscriptionStore, fake: FakeOrange
) -> None:
    """With no id known to Orange, unsubscribe subscribes again and unsubscribes that id."""
    fake.subscribe_elsewhere(OTHER_URL)
    result = await operations.unsubscribe(client, store, recover_with=NOTIFY_URL)
    assert result.recovered and len(result.removed) == 1
    assert fake.registration is None
    row = await store.get(result.removed[0])
    assert row is not None and row.state is State.REMOVED


async def test_no_secret_in_logs(
    client: OrangeClient,
    store: SubscriptionStore,
    fake: FakeOrange,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """At DEBUG, with refreshes, retries and errors, no header or token is logged."""
    caplog.set_level(logging.DEBUG)
    await reconcile(client, store, NOTIFY_URL)
    fake.expire_tokens()
    fake.drift(OTHER_URL)
    fake.fail("unsubscribe", 502, times=1)
    await reconcile(client, store, NOTIFY_URL)
    fake.fail("check", 401, times=2)
    with pytest.raises(Exception) as caught:
        await reconcile(client, store, NOTIFY_URL)
    logged = caplog.text + str(caught.value) + repr(caught.value)
    assert "orange token fetched" in logged  # the logs were captured
    assert AUTH_HEADER not in logged and AUTH_HEADER.split()[1] not in logged
    assert len(fake.issued_tokens) >= 2
    assert not [token for token in fake.issued_tokens if token in logged]
