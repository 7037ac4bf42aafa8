"""``smsrx subscriptions ...``: register, check, repair and remove Orange's receipt callback.

Exit codes: 0 done and in place; 1 Orange or the database failed, or the callback
is not registered as wanted; 2 a setting or option is missing or unusable.

Each handler imports :mod:`subscriptions.commands` (the client, the store, the
metrics) only when its task runs, as every ``smsrx`` command does.
"""

from __future__ import annotations

import argparse
from typing import Any

from smsrx.settings import ConfigError, Settings, parse_duration

__all__ = ["add_commands"]

_WATCH_DEFAULT = -1.0  # --watch without a value: SMSRX_ORANGE_RECONCILE_INTERVAL


def _subscribe(settings: Settings, args: argparse.Namespace) -> int:
    from subscriptions.commands import run_subscribe

    return run_subscribe(settings, args)


def _check(settings: Settings, args: argparse.Namespace) -> int:
    from subscriptions.commands import run_check

    return run_check(settings, args)


def _unsubscribe(settings: Settings, args: argparse.Namespace) -> int:
    from subscriptions.commands import run_unsubscribe

    return run_unsubscribe(settings, args)


def _list(settings: Settings, args: argparse.Namespace) -> int:
    from subscriptions.commands import run_list

    return run_list(settings, args)


def _reconcile(settings: Settings, args: argparse.Namespace) -> int:
    from subscriptions.commands import run_reconcile

    if args.watch == _WATCH_DEFAULT:
        args.watch = settings.orange_reconcile_interval
    return run_reconcile(settings, args)


def _interval(text: str) -> float:
    try:
        seconds = parse_duration("--watch", text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if seconds <= 0:
        raise argparse.ArgumentTypeError("--watch: the interval must be more than zero")
    return seconds


_NOTIFY_HELP = "callback URL, https:// on port 443 (default: SMSRX_ORANGE_NOTIFY_URL)"


def add_commands(sub: Any) -> None:
    """Register ``subscriptions`` on the ``smsrx`` parser."""
    parser = sub.add_parser(
        "subscriptions",
        help="register Orange's delivery-receipt callback, check, repair and remove it",
        description="Orange posts delivery receipts only to the one callback URL registered for "
        "the account through its subscription API. These commands keep that registration "
        "right. They need SMSRX_ORANGE_AUTH_HEADER, SMSRX_ORANGE_SENDER and, for the URL, "
        "SMSRX_ORANGE_NOTIFY_URL or --notify-url. Ids are kept in SMSRX_DATABASE_URL.",
    )
    tasks = parser.add_subparsers(dest="subscriptions", metavar="TASK", required=True)

    subscribe = tasks.add_parser(
        "subscribe",
        help="register the callback URL (replaces the one Orange has)",
        description="Register the URL with Orange and store the subscription id it returns.",
    )
    subscribe.add_argument("--notify-url", metavar="URL", help=_NOTIFY_HELP)
    subscribe.set_defaults(handler=_subscribe)

    check = tasks.add_parser(
        "check",
        help="ask Orange which URL it posts receipts to",
        description="Check the current stored subscription (or --id) with Orange and say "
        "whether it posts to the URL we want. Exits 1 unless it does.",
    )
    check.add_argument("--id", metavar="ID", help="check this subscription id instead")
    check.add_argument("--notify-url", metavar="URL", help=_NOTIFY_HELP)
    check.set_defaults(handler=_check)

    unsubscribe = tasks.add_parser(
        "unsubscribe",
        help="remove the callback registration",
        description="Unsubscribe every stored subscription of the sender (or only --id). If "
        "Orange knows none of them, recover the id as Orange documents: subscribe again, then "
        "unsubscribe the new id.",
    )
    unsubscribe.add_argument("--id", metavar="ID", help="unsubscribe only this subscription id")
    unsubscribe.add_argument(
        "--notify-url", metavar="URL", help="URL to subscribe with when recovering a lost id"
    )
    unsubscribe.set_defaults(handler=_unsubscribe)

    tasks.add_parser(
        "list",
        help="show the stored subscriptions and their state",
        description="Every subscription we made, newest first, with what we last learnt about "
        "it: active, drifted, unknown (Orange answered 404) or removed.",
    ).set_defaults(handler=_list)

    rec = tasks.add_parser(
        "reconcile",
        help="make Orange's registration match the settings",
        description="Subscribe if nothing is registered or the URL drifted, subscribe again if "
        "Orange lost the stored id, and unsubscribe stale ids. Exits 1 unless the callback "
        "ends up registered as wanted.",
    )
    rec.add_argument("--notify-url", metavar="URL", help=_NOTIFY_HELP)
    rec.add_argument(
        "--watch",
        metavar="INTERVAL",
        nargs="?",
        const=_WATCH_DEFAULT,
        type=_interval,
        help="keep reconciling every INTERVAL (30s, 5m; default SMSRX_ORANGE_RECONCILE_INTERVAL) "
        "until SIGTERM or Ctrl-C, serving /metrics on SMSRX_SUBSCRIPTIONS_METRICS_PORT",
    )
    rec.set_defaults(handler=_reconcile)
