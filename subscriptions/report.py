"""Command output: what each command found and did, in lines a person can act on."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from subscriptions.operations import CheckResult, UnsubscribeResult
from subscriptions.reconcile import ReconcileResult, Verdict
from subscriptions.store import State, StoredSubscription
from subscriptions.urls import normalise_url, same_url
from subscriptions.wire import Registration

__all__ = [
    "check_lines",
    "list_lines",
    "reconcile_lines",
    "subscribe_lines",
    "unsubscribe_lines",
]

FIX = "run 'smsrx subscriptions reconcile'"


def subscribe_lines(registration: Registration, notify_url: str, sender: str) -> list[str]:
    """After ``subscribe``."""
    lines = [f"subscribed: id={registration.id} notify_url={notify_url} (sender tel:+{sender})"]
    if not same_url(registration.notify_url, notify_url):
        lines.append(f"  but Orange registered {registration.notify_url} — {FIX}")
    return lines


def check_lines(result: CheckResult) -> list[str]:
    """After ``check``."""
    registration = result.registration
    if registration is None:
        return [
            f"check: UNKNOWN, Orange does not know id={result.subscription_id} (404): "
            f"the registration was removed or replaced — {FIX}"
        ]
    if result.in_place:
        return [
            f"check: OK, Orange posts receipts to {registration.notify_url} "
            f"(id={result.subscription_id})"
        ]
    return [
        f"check: DRIFTED, Orange posts to {registration.notify_url}, we want {result.desired} "
        f"(id={result.subscription_id}) — {FIX}"
    ]


def unsubscribe_lines(result: UnsubscribeResult, sender: str) -> list[str]:
    """After ``unsubscribe``."""
    lines = [f"already gone: Orange no longer knew id={each} (404)" for each in result.already_gone]
    if result.recovered:
        lines.append(
            "recovered: Orange knew no stored id, so we subscribed again to learn the current id "
            "and unsubscribed it, as Orange documents for a forgotten id"
        )
    lines += [f"unsubscribed: id={each} (sender tel:+{sender})" for each in result.removed]
    return lines


def reconcile_lines(result: ReconcileResult) -> list[str]:
    """After one ``reconcile`` pass."""
    lines = [f"reconcile: {step}" for step in result.steps]
    registration = result.registration
    if registration is None:
        lines.append(
            f"reconcile: FAILED, the callback is not registered as wanted ({result.verdict})"
        )
    elif result.verdict is Verdict.IN_PLACE:
        lines.append(
            f"reconcile: OK, Orange posts receipts to {normalise_url(registration.notify_url)} "
            f"(id={registration.id})"
        )
    else:
        lines.append(
            f"reconcile: {result.verdict.result.upper()}, Orange now posts receipts to "
            f"{normalise_url(registration.notify_url)} (id={registration.id})"
        )
    return lines


def _when(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ") if moment else "-"


def _role(row: StoredSubscription, current: dict[str, str]) -> str:
    if row.state is State.REMOVED:
        return ""
    return "current" if current.get(row.sender) == row.id else "stale, reconcile removes it"


def list_lines(rows: Sequence[StoredSubscription]) -> list[str]:
    """The ``list`` table: every stored subscription, newest first, with its state."""
    if not rows:
        return [f"no subscriptions stored — {FIX}"]
    current: dict[str, str] = {}
    for row in rows:  # newest first: the first live row of a sender is its current one
        if row.state is not State.REMOVED:
            current.setdefault(row.sender, row.id)
    table = [("ID", "SENDER", "STATE", "CREATED", "LAST CHECK", "NOTIFY URL", "NOTE")]
    for row in rows:
        note = "; ".join(
            filter(
                None,
                [
                    _role(row, current),
                    row.detail,
                    f"Orange posts to {row.observed_notify_url}"
                    if row.observed_notify_url and row.state is not State.REMOVED
                    else "",
                ],
            )
        )
        table.append(
            (
                row.id,
                row.sender,
                row.state.value,
                _when(row.created_at),
                _when(row.last_checked_at),
                row.notify_url,
                note,
            )
        )
    widths = [max(len(line[col]) for line in table) for col in range(len(table[0]) - 1)]
    return [
        "  ".join(
            cell.ljust(width) for cell, width in zip(line, [*widths, 0], strict=True)
        ).rstrip()
        for line in table
    ]
