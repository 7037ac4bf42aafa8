"""The reconciler (``reconcile --watch``): a reconcile pass every interval, ``/metrics``
served meanwhile.

Stops on SIGTERM or SIGINT (or when ``stop`` is set): no new pass starts, a pass
in flight gets ``SMSRX_SHUTDOWN_TIMEOUT`` to finish and is then cancelled. A failed
pass is reported and the next one runs on schedule.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Awaitable, Callable

import asyncpg

from smsrx.db import DB_ERRORS
from smsrx.metrics import start_metrics_server
from smsrx.settings import Settings
from subscriptions.client import RetryPolicy, open_client
from subscriptions.errors import SubscriptionError
from subscriptions.orange_settings import desired_notify_url, require
from subscriptions.reconcile import ReconcileResult, reconcile
from subscriptions.report import reconcile_lines
from subscriptions.store import open_store

__all__ = ["Emit", "database_problem", "run_reconciler"]

logger = logging.getLogger(__name__)

Emit = Callable[[str], None]
"""Where command output goes: ``print`` in the CLI, a list in tests."""


def database_problem(exc: BaseException) -> str:
    """One line about a database error, saying what to do when we know."""
    if isinstance(exc, asyncpg.UndefinedTableError):
        return "database (SMSRX_DATABASE_URL) has no orange_subscriptions table — run 'smsrx db migrate'"
    return f"database (SMSRX_DATABASE_URL): {exc}"


async def run_reconciler(
    settings: Settings,
    emit: Emit,
    *,
    notify_url: str | None = None,
    interval: float | None = None,
    stop: asyncio.Event | None = None,
    handle_signals: bool = True,
    retry: RetryPolicy | None = None,
) -> int:
    """Reconcile every ``interval`` (``SMSRX_ORANGE_RECONCILE_INTERVAL``) until stopped.

    Raises ConfigError or InvalidNotifyURL before starting if the settings are unusable.
    """
    desired = desired_notify_url(settings, notify_url)
    require(settings, "SMSRX_ORANGE_AUTH_HEADER", "SMSRX_ORANGE_SENDER")
    every = interval or settings.orange_reconcile_interval
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    signals = (signal.SIGTERM, signal.SIGINT) if handle_signals else ()
    for sig in signals:
        loop.add_signal_handler(sig, stop.set)
    try:
        runner = await start_metrics_server(
            "subscriptions", settings.metrics_host, settings.subscriptions_metrics_port
        )
        try:
            async with (
                open_client(settings, retry=retry) as client,
                open_store(settings.database_url) as store,
            ):
                logger.info("reconciler started interval=%gs", every)
                while not stop.is_set():
                    await _pass(
                        lambda: reconcile(client, store, desired),
                        stop,
                        settings.shutdown_timeout,
                        emit,
                    )
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), every)
        finally:
            await runner.cleanup()
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)
    logger.info("reconciler stopped")
    return 0


async def _pass(
    run: Callable[[], Awaitable[ReconcileResult]], stop: asyncio.Event, grace: float, emit: Emit
) -> None:
    task = asyncio.ensure_future(run())
    stopping = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({task, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if not task.done():
            logger.info("stopping, waiting up to %gs for the pass in flight", grace)
            await asyncio.wait({task}, timeout=grace)
    except asyncio.CancelledError:
        task.cancel()
        raise
    finally:
        stopping.cancel()
    if not task.done():
        task.cancel()
        await asyncio.wait({task})
        emit("reconcile: interrupted by shutdown")
        return
    try:
        result = task.result()
    except SubscriptionError as exc:
        emit(f"reconcile: error: {exc.message}")
    except DB_ERRORS as exc:  # reported, transient or not: the next pass may find it fixed
        emit(f"reconcile: error: {database_problem(exc)}")
    else:
        for line in reconcile_lines(result):
            emit(line)
