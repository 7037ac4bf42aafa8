"""Make Orange's registration match the settings: one pass, safe to repeat.

A pass, in this order:

1. Unsubscribe stale ids: stored rows of the sender, not removed, other than the
   newest. Doing it first means no later step can remove what this pass registers.
2. Check the newest stored id (the current one) and judge it with :func:`judge`.
3. Act on the verdict:

   - ``in_place``: nothing to do;
   - ``nothing_registered``: subscribe;
   - ``drifted``: unsubscribe the drifted id, then subscribe the URL we want;
   - ``unknown`` (Orange answered 404, the id is lost or was deleted behind our back):
     subscribe again, which, as Orange documents for a forgotten id, registers the
     URL under a new id that we store.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from enum import StrEnum

from subscriptions import metrics, operations
from subscriptions.client import OrangeClient
from subscriptions.store import StoredSubscription, SubscriptionStore
from subscriptions.urls import same_url
from subscriptions.wire import Registration

__all__ = ["ReconcileResult", "Verdict", "judge", "reconcile"]

logger = logging.getLogger(__name__)


class Verdict(StrEnum):
    """The state of the current registration against the URL we want."""

    IN_PLACE = "in_place"
    NOTHING_REGISTERED = "nothing_registered"
    DRIFTED = "drifted"
    UNKNOWN = "unknown"

    @property
    def result(self) -> str:
        """The ``result`` label of ``smsrx_orange_reconciliations_total`` after acting on it."""
        return _RESULTS[self]


_RESULTS = {
    Verdict.IN_PLACE: "in_place",
    Verdict.NOTHING_REGISTERED: "subscribed",
    Verdict.DRIFTED: "repaired",
    Verdict.UNKNOWN: "recovered",
}


def judge(
    desired: str, current: StoredSubscription | None, observed: Registration | None
) -> Verdict:
    """Pure decision: ``observed`` is Orange's answer for ``current``, ``None`` on 404."""
    if current is None:
        return Verdict.NOTHING_REGISTERED
    if observed is None:
        return Verdict.UNKNOWN
    if same_url(observed.notify_url, desired):
        return Verdict.IN_PLACE
    return Verdict.DRIFTED


@dataclass(slots=True)
class ReconcileResult:
    """What one pass found and did."""

    verdict: Verdict = Verdict.NOTHING_REGISTERED
    """The state found before acting."""
    registration: Registration | None = None
    """What is registered at the end of the pass."""
    steps: list[str] = field(default_factory=list)
    """What was done, one line each, for people."""

    @property
    def in_place(self) -> bool:
        """Whether the pass ended with the desired URL registered."""
        return self.registration is not None


async def reconcile(
    client: OrangeClient, store: SubscriptionStore, desired: str
) -> ReconcileResult:
    """One pass; raises :class:`~subscriptions.errors.OrangeError` if Orange fails it."""
    result = ReconcileResult()
    try:
        await _reconcile(client, store, desired, result)
    except Exception:
        metrics.RECONCILIATIONS.labels(result="failed").inc()
        raise
    metrics.RECONCILIATIONS.labels(result=result.verdict.result).inc()
    logger.info("reconcile verdict=%s steps=%d", result.verdict, len(result.steps))
    return result


async def _reconcile(
    client: OrangeClient, store: SubscriptionStore, desired: str, result: ReconcileResult
) -> None:
    live = await store.live(client.sender)
    current, stale = (live[0], live[1:]) if live else (None, [])
    for row in stale:
        gone = await operations.remove(client, store, row.id, "stale: a newer subscription exists")
        result.steps.append(
            f"removed stale subscription id={row.id}"
            + ("" if gone else " (Orange no longer knew it)")
        )
    observed = None
    if current is not None:
        observed = (await operations.check(client, store, current.id, desired)).registration
    result.verdict = judge(desired, current, observed)
    if result.verdict is Verdict.IN_PLACE:
        result.registration = observed
        return
    if result.verdict is Verdict.DRIFTED:
        assert current is not None and observed is not None
        result.steps.append(
            f"drifted: Orange posts to {observed.notify_url} under id={current.id}, "
            f"we want {desired}"
        )
        await operations.remove(client, store, current.id, f"drifted to {observed.notify_url}")
        result.steps.append(f"unsubscribed id={current.id}")
    elif result.verdict is Verdict.UNKNOWN:
        assert current is not None
        result.steps.append(
            f"unknown: Orange does not know id={current.id} (404); subscribing again "
            "to register the URL under a new id"
        )
    else:
        result.steps.append("nothing registered for this sender")
    registration = await operations.subscribe(client, store, desired)
    if current is not None and result.verdict is Verdict.UNKNOWN and current.id != registration.id:
        await store.removed(current.id, f"unknown to Orange (404); replaced by {registration.id}")
    result.steps.append(f"subscribed id={registration.id} notify_url={desired}")
    if same_url(registration.notify_url, desired):
        result.registration = registration
    else:
        result.steps.append(f"but Orange registered {registration.notify_url} instead")
