"""``smsrx subscriptions ...``: register, check, repair and remove Orange's receipt callback.

Exit codes: 0 done and in place; 1 Orange or the database failed, or the callback
is not registered as wanted; 2 a setting or option is missing or unusable.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable, Coroutine
from typing import Any

from smsrx.settings import ConfigError, Settings, parse_duration
from subscriptions import operations
from subscriptions.client import open_client
from subscriptions.config import desired_notify_url, wanted_notify_url
from subscriptions.errors import InvalidNotifyURL, SubscriptionError
from subscriptions.reconcile import reconcile
from subscriptions.report import (
    check_lines,
    list_lines,
    reconcile_lines,
    subscribe_lines,
    unsubscribe_lines,
)
from subscriptions.store import open_store
from subscriptions.watch import DATABASE_ERRORS, database_problem, run_reconciler

__all__ = ["add_commands"]

_WATCH_DEFAULT = -1.0  # --watch without a value: SMSRX_ORANGE_RECONCILE_INTERVAL


def _say(line: str) -> None:
    print(line, flush=True)


def _run(command: Callable[[], Coroutine[Any, Any, int]]) -> int:
    """Run ``command``; turn our errors into one actionable line on stderr and an exit code."""
    try:
        return asyncio.run(command())
    except InvalidNotifyURL as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 2
    except SubscriptionError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 1
    except DATABASE_ERRORS as exc:
        print(f"error: {database_problem(exc)}", file=sys.stderr)
        return 1


def _subscribe(settings: Settings, args: argparse.Namespace) -> int:
    async def command() -> int:
        notify_url = desired_notify_url(settings, args.notify_url)
        async with open_client(settings) as client, open_store(settings.database_url) as store:
            registration = await operations.subscribe(client, store, notify_url)
        for line in subscribe_lines(registration, notify_url, client.sender):
            _say(line)
        return 0

    return _run(command)


def _check(settings: Settings, args: argparse.Namespace) -> int:
    async def command() -> int:
        desired = wanted_notify_url(settings, args.notify_url)
        async with open_client(settings) as client, open_store(settings.database_url) as store:
            subscription_id = args.id
            if subscription_id is None:
                live = await store.live(client.sender)
                if not live:
                    _say(
                        f"check: NONE, no subscription stored for sender tel:+{client.sender} — "
                        "run 'smsrx subscriptions reconcile'"
                    )
                    return 1
                subscription_id, desired = live[0].id, desired or live[0].notify_url
            if desired is None:
                raise ConfigError(
                    "SMSRX_ORANGE_NOTIFY_URL is not set: pass --notify-url to say which URL we want"
                )
            result = await operations.check(client, store, subscription_id, desired)
        for line in check_lines(result):
            _say(line)
        return 0 if result.in_place else 1

    return _run(command)


def _unsubscribe(settings: Settings, args: argparse.Namespace) -> int:
    async def command() -> int:
        recover_with = wanted_notify_url(settings, args.notify_url)
        async with open_client(settings) as client, open_store(settings.database_url) as store:
            result = await operations.unsubscribe(
                client, store, subscription_id=args.id, recover_with=recover_with
            )
        for line in unsubscribe_lines(result, client.sender):
            _say(line)
        if args.id is None and not result.removed and recover_with is None:
            print(
                "error: Orange knew no stored subscription id; to recover it as Orange documents "
                "(subscribe, then unsubscribe the new id), set SMSRX_ORANGE_NOTIFY_URL or pass "
                "--notify-url",
                file=sys.stderr,
            )
            return 1
        return 0

    return _run(command)


def _list(settings: Settings, args: argparse.Namespace) -> int:
    async def command() -> int:
        async with open_store(settings.database_url) as store:
            rows = await store.all()
        for line in list_lines(rows):
            _say(line)
        return 0

    return _run(command)


def _reconcile(settings: Settings, args: argparse.Namespace) -> int:
    if args.watch is not None:
        interval = None if args.watch == _WATCH_DEFAULT else args.watch
        return _run(
            lambda: run_reconciler(settings, _say, notify_url=args.notify_url, interval=interval)
        )

    async def command() -> int:
        notify_url = desired_notify_url(settings, args.notify_url)
        async with open_client(settings) as client, open_store(settings.database_url) as store:
            result = await reconcile(client, store, notify_url)
        for line in reconcile_lines(result):
            _say(line)
        return 0 if result.in_place else 1

    return _run(command)


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
