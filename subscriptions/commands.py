"""The work behind each ``smsrx subscriptions`` task (imported only when one runs)."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable, Coroutine
from typing import Any

from smsrx.settings import ConfigError, Settings
from subscriptions import operations
from subscriptions.cli import _WATCH_DEFAULT
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

__all__: list[str] = []  # the handlers are reached through subscriptions.cli


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
