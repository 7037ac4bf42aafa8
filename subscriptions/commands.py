"""The work behind each ``smsrx subscriptions`` task (imported only when one runs).

Each ``run_*`` is a handler of :mod:`smsrx.cli` (settings, parsed arguments -> exit
code); :mod:`subscriptions.cli` imports this module inside its handlers, so that
building the parser loads neither the client nor the store.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable, Coroutine
from typing import Any

from smsrx.db import DB_ERRORS
from smsrx.errors import EXIT_FAILED
from smsrx.settings import ConfigError, Settings
from subscriptions import operations
from subscriptions.client import open_client
from subscriptions.errors import SubscriptionError
from subscriptions.orange_settings import desired_notify_url, wanted_notify_url
from subscriptions.reconcile import reconcile
from subscriptions.reconciler import database_problem, run_reconciler
from subscriptions.report import (
    check_lines,
    list_lines,
    reconcile_lines,
    subscribe_lines,
    unsubscribe_lines,
)
from subscriptions.store import open_store

__all__ = ["run_check", "run_list", "run_reconcile", "run_subscribe", "run_unsubscribe"]


def _say(line: str) -> None:
    print(line, flush=True)


def _run(command: Callable[[], Coroutine[Any, Any, int]]) -> int:
    """Run ``command``; turn our errors into one actionable line on stderr and an exit code."""
    try:
        return asyncio.run(command())
    except SubscriptionError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return exc.exit_code
    except DB_ERRORS as exc:
        print(f"error: {database_problem(exc)}", file=sys.stderr)
        return EXIT_FAILED


def run_subscribe(settings: Settings, args: argparse.Namespace) -> int:
    """``subscribe``: register the callback URL and store the id."""

    async def command() -> int:
        notify_url = desired_notify_url(settings, args.notify_url)
        async with open_client(settings) as client, open_store(settings.database_url) as store:
            registration = await operations.subscribe(client, store, notify_url)
        for line in subscribe_lines(registration, notify_url, client.sender):
            _say(line)
        return 0

    return _run(command)


def run_check(settings: Settings, args: argparse.Namespace) -> int:
    """``check``: 0 if Orange posts receipts to the URL we want, else 1."""

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


def run_unsubscribe(settings: Settings, args: argparse.Namespace) -> int:
    """``unsubscribe``: remove the stored registrations (or ``--id``), recovering a lost id."""

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


def run_list(settings: Settings, args: argparse.Namespace) -> int:
    """``list``: the stored subscriptions, newest first."""

    async def command() -> int:
        async with open_store(settings.database_url) as store:
            rows = await store.all()
        for line in list_lines(rows):
            _say(line)
        return 0

    return _run(command)


def run_reconcile(settings: Settings, args: argparse.Namespace) -> int:
    """``reconcile``: one pass (0 if the callback ends up as wanted), or every
    ``args.watch`` seconds until stopped."""
    if args.watch is not None:
        return _run(
            lambda: run_reconciler(settings, _say, notify_url=args.notify_url, interval=args.watch)
        )

    async def command() -> int:
        notify_url = desired_notify_url(settings, args.notify_url)
        async with open_client(settings) as client, open_store(settings.database_url) as store:
            result = await reconcile(client, store, notify_url)
        for line in reconcile_lines(result):
            _say(line)
        return 0 if result.in_place else 1

    return _run(command)
