"""Subscribe, check and unsubscribe: one Orange call each, recorded in the store and metrics.

Each returns what happened as data; :mod:`subscriptions.cli` words it for people.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from subscriptions import metrics
from subscriptions.client import OrangeClient
from subscriptions.errors import NotFound
from subscriptions.store import State, SubscriptionStore
from subscriptions.urls import same_url
from subscriptions.wire import Registration

__all__ = [
    "CheckResult",
    "UnsubscribeResult",
    "check",
    "remove",
    "subscribe",
    "unsubscribe",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class CheckResult:
    """What Orange has registered under one id, against the URL we want."""

    subscription_id: str
    """The id that was checked."""
    desired: str
    """The callback URL we want."""
    registration: Registration | None
    """Orange's answer; ``None`` when Orange does not know the id (404)."""

    @property
    def in_place(self) -> bool:
        """Orange posts receipts for this id to the URL we want."""
        return self.registration is not None and same_url(
            self.registration.notify_url, self.desired
        )


@dataclass(slots=True)
class UnsubscribeResult:
    """Which ids Orange removed, and which it no longer knew."""

    removed: list[str] = field(default_factory=list)
    """Ids Orange deleted (204)."""
    already_gone: list[str] = field(default_factory=list)
    """Ids Orange answered 404 for."""
    recovered: bool = False
    """Whether we subscribed again to learn an id to unsubscribe, as Orange documents."""


async def subscribe(
    client: OrangeClient, store: SubscriptionStore, notify_url: str
) -> Registration:
    """Register ``notify_url`` and store the id Orange returns."""
    registration = await client.subscribe(notify_url)
    await store.add(registration.id, client.sender, notify_url)
    in_place = same_url(registration.notify_url, notify_url)
    if not in_place:
        await store.checked(
            registration.id,
            State.DRIFTED,
            observed=registration.notify_url,
            detail="Orange registered another URL than the one sent",
        )
    metrics.observe_check()  # Orange's answer tells what is registered, as a check would
    metrics.set_in_place(in_place)
    return registration


async def check(
    client: OrangeClient, store: SubscriptionStore, subscription_id: str, desired: str
) -> CheckResult:
    """Ask Orange what ``subscription_id`` posts to and record the answer."""
    try:
        registration: Registration | None = await client.check(subscription_id)
    except NotFound:
        registration = None
        await store.checked(
            subscription_id, State.UNKNOWN, observed=None, detail="Orange answered 404"
        )
    else:
        assert registration is not None
        row = await store.get(subscription_id)
        expected = row.notify_url if row else desired
        if same_url(registration.notify_url, expected):
            await store.checked(subscription_id, State.ACTIVE, observed=None, detail=None)
        else:
            await store.checked(
                subscription_id,
                State.DRIFTED,
                observed=registration.notify_url,
                detail="Orange posts to another URL",
            )
    result = CheckResult(subscription_id, desired, registration)
    metrics.observe_check()
    metrics.set_in_place(result.in_place)
    logger.info("orange check id=%s in_place=%s", subscription_id, result.in_place)
    return result


async def remove(
    client: OrangeClient, store: SubscriptionStore, subscription_id: str, why: str
) -> bool:
    """Unsubscribe one id and mark it removed; ``False`` if Orange no longer knew it."""
    try:
        await client.unsubscribe(subscription_id)
    except NotFound:
        await store.removed(subscription_id, f"{why}; Orange no longer knew it (404)")
        return False
    await store.removed(subscription_id, why)
    return True


async def unsubscribe(
    client: OrangeClient,
    store: SubscriptionStore,
    *,
    subscription_id: str | None = None,
    recover_with: str | None = None,
) -> UnsubscribeResult:
    """Remove our callback registration.

    With ``subscription_id``, only that id. Otherwise every id stored for the sender;
    and if Orange knew none of them, do what Orange's documentation says for a
    forgotten id: subscribe again (with ``recover_with``), then unsubscribe the new id.
    """
    result = UnsubscribeResult()
    if subscription_id is not None:
        ids = [subscription_id]
    else:
        ids = [row.id for row in await store.live(client.sender)]
    for each in ids:
        removed = await remove(client, store, each, "unsubscribed")
        (result.removed if removed else result.already_gone).append(each)
    if subscription_id is None and not result.removed and recover_with is not None:
        registration = await subscribe(client, store, recover_with)
        await remove(client, store, registration.id, "unsubscribed after recovering the id")
        result.recovered = True
        result.removed.append(registration.id)
    if result.removed or subscription_id is None:
        metrics.set_in_place(False)
    return result
