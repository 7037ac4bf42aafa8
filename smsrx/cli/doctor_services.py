"""``smsrx doctor``'s checks of the services: the broker, PostgreSQL and Orange's subscription.

Each async check asks its service under a time limit and hands the answer to a pure
verdict function (``*_verdict``), which the tests also call directly. Nothing here
writes: the broker is asked for metadata and one InitProducerId, PostgreSQL is read,
and Orange is called only with ``--online``, through the path of
``smsrx subscriptions check``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import asyncpg
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaConnectionError, KafkaError

from smsrx.cli.doctor_check import Check, failed, passed, warned
from smsrx.db import DB_ERRORS, Migration, migrations
from smsrx.kafka import (
    BrokerWithoutIdempotence,
    make_admin,
    make_producer,
    start_producer,
    stop_bounded,
)
from smsrx.settings import ConfigError, Settings
from subscriptions import operations
from subscriptions.client import RetryPolicy, open_client
from subscriptions.errors import SubscriptionError
from subscriptions.orange_settings import REQUIRED, skip_reason, wanted_notify_url
from subscriptions.reconciler import database_problem
from subscriptions.report import check_lines
from subscriptions.store import State, StoredSubscription, open_store
from subscriptions.urls import same_url

__all__ = [
    "broker",
    "idempotence_verdict",
    "migrations_verdict",
    "orange",
    "postgres",
    "stored_subscription_verdict",
    "topics_verdict",
]

_CLIENT_ID = "smsrx-doctor"
_RECONCILE = "run 'smsrx subscriptions reconcile'"


def _reason(exc: BaseException) -> str:
    """An error in a few words: an OSError by its errno ("Connection refused")."""
    if isinstance(exc, KafkaConnectionError):
        return "no connection could be made"  # its text lists the resolved addresses
    if isinstance(exc, OSError) and exc.errno and not isinstance(exc, socket.gaierror):
        return os.strerror(exc.errno)
    if isinstance(exc, OSError) and exc.strerror:
        return str(exc.strerror)
    return str(exc) or type(exc).__name__


# -- broker ------------------------------------------------------------------------------


async def _close_admin(admin: AIOKafkaAdminClient, limit: float) -> None:
    with contextlib.suppress(Exception):
        async with asyncio.timeout(limit):
            await admin.close()


async def broker(settings: Settings, limit: float) -> list[Check]:
    """The broker answers; its idempotent producer against SMSRX_KAFKA_IDEMPOTENCE; the topics.

    When the broker cannot be reached, that one failure is the whole answer.
    """
    where = settings.kafka_bootstrap
    fix = "start the broker, or set SMSRX_KAFKA_BOOTSTRAP to where it listens"
    admin = make_admin(
        settings, request_timeout_ms=max(1000, int(limit * 1000)), client_id=_CLIENT_ID
    )
    try:
        async with asyncio.timeout(limit):
            await admin.start()
            cluster = await admin.describe_cluster()
            described = await admin.describe_topics()  # every topic: never auto-creates one
    except TimeoutError:
        return [failed("broker", f"{where}: no answer within {limit:g}s", fix)]
    except (KafkaError, OSError, ValueError) as exc:
        return [failed("broker", f"cannot reach {where}: {_reason(exc)}", fix)]
    finally:
        await _close_admin(admin, limit)
    brokers = len(cluster.get("brokers") or ())
    reached = passed(
        "broker", f"{where}: {brokers} broker(s), cluster {cluster.get('cluster_id') or '-'}"
    )
    return [reached, await _idempotence(settings, limit), topics_verdict(settings, described)]


async def _idempotence(settings: Settings, limit: float) -> Check:
    """Start an idempotent producer, as the services would with SMSRX_KAFKA_IDEMPOTENCE=1."""
    probe = settings.with_(kafka_idempotence=True, kafka_send_timeout=limit)
    producer = make_producer(probe, client_id=_CLIENT_ID)
    try:
        async with asyncio.timeout(limit):
            await start_producer(producer, probe)  # sends InitProducerId
    except BrokerWithoutIdempotence as exc:
        return idempotence_verdict(type(exc.__cause__).__name__, settings.kafka_idempotence)
    except TimeoutError:
        return warned("idempotence", f"InitProducerId got no answer within {limit:g}s")
    except (KafkaError, OSError) as exc:
        return warned("idempotence", f"InitProducerId failed: {_reason(exc)}")
    await stop_bounded(producer, limit)
    return idempotence_verdict(None, settings.kafka_idempotence)


def idempotence_verdict(refusal: str | None, enabled: bool) -> Check:
    """Whether SMSRX_KAFKA_IDEMPOTENCE (``enabled``) suits a broker that granted
    InitProducerId (``refusal`` None) or refused it with the error named ``refusal``."""
    name = "idempotence"
    if refusal is None and enabled:
        return passed(name, "the broker grants InitProducerId, and SMSRX_KAFKA_IDEMPOTENCE=1")
    if refusal is None:
        return warned(
            name,
            "the broker has the idempotent producer, but SMSRX_KAFKA_IDEMPOTENCE=0: a retried "
            "send may write a record twice",
            "set SMSRX_KAFKA_IDEMPOTENCE=1",
        )
    without = f"the broker has no idempotent producer (InitProducerId: {refusal})"
    if not enabled:
        return passed(name, f"{without}, and SMSRX_KAFKA_IDEMPOTENCE=0")
    return failed(
        name,
        f"{without}, but SMSRX_KAFKA_IDEMPOTENCE=1: the receiver and the workers cannot start",
        "set SMSRX_KAFKA_IDEMPOTENCE=0 for this broker",
    )


def topics_verdict(settings: Settings, described: Sequence[Mapping[str, Any]]) -> Check:
    """Every smsrx topic exists; their partition counts, which should all be the same."""
    name = "topics"
    found = {
        str(topic["topic"]): len(topic["partitions"])
        for topic in described
        if topic.get("error_code", 0) == 0
    }
    wanted = settings.topics.all()
    counts = {topic: found[topic] for topic in wanted if topic in found}
    shown = ", ".join(f"{topic} ({count})" for topic, count in counts.items())
    missing = [topic for topic in wanted if topic not in found]
    if missing:
        return failed(
            name,
            f"missing: {', '.join(missing)}" + (f"; present: {shown}" if shown else ""),
            "run 'smsrx topics create' (SMSRX_TOPIC_PARTITIONS partitions each)",
        )
    if len(set(counts.values())) > 1:
        return warned(
            name,
            f"partition counts differ: {shown}",
            "give every smsrx topic the same partition count: status-projection splits its "
            "batches by partition number (docs/consumers.md)",
        )
    count = next(iter(counts.values()))
    return passed(name, f"all {len(wanted)} exist, {count} partition(s) each: {', '.join(wanted)}")


# -- PostgreSQL --------------------------------------------------------------------------


def _where(url: str) -> str:
    """Where the database is, without the password a URL may carry."""
    try:
        parts = urlsplit(url)
        port = parts.port or 5432
    except ValueError:  # a URL asyncpg reads but urlsplit does not (several hosts)
        return "SMSRX_DATABASE_URL"
    return f"{parts.hostname}:{port}{parts.path}"


def _connect_failure(where: str, exc: BaseException, limit: float) -> Check:
    if isinstance(exc, TimeoutError):
        detail = f"{where}: no answer within {limit:g}s"
    elif isinstance(exc, OSError):
        detail = f"cannot connect to {where}: {_reason(exc)}"
    else:
        detail = f"{where}: {_reason(exc)}"
    if isinstance(exc, asyncpg.InvalidCatalogNameError):
        fix = "create the database, or correct its name in SMSRX_DATABASE_URL"
    elif isinstance(exc, asyncpg.InvalidAuthorizationSpecificationError):
        fix = "correct the user or password in SMSRX_DATABASE_URL"
    else:
        fix = "start PostgreSQL, or set SMSRX_DATABASE_URL to where it listens"
    return failed("postgres", detail, fix)


async def postgres(settings: Settings, limit: float) -> list[Check]:
    """PostgreSQL answers; the migrations applied against those this smsrx ships.

    When the database cannot be reached, that one failure is the whole answer.
    """
    where = _where(settings.database_url)
    try:
        async with asyncio.timeout(limit):
            conn = await asyncpg.connect(settings.database_url, timeout=limit)
    except (*DB_ERRORS, ValueError) as exc:
        return [_connect_failure(where, exc, limit)]
    try:
        async with asyncio.timeout(limit):
            version = await conn.fetchval("SHOW server_version")
            applied: dict[int, str] = {}
            if await conn.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL"):
                rows = await conn.fetch("SELECT version, name FROM schema_migrations")
                applied = {row["version"]: row["name"] for row in rows}
    except DB_ERRORS as exc:  # TimeoutError is an OSError
        return [
            passed("postgres", where),
            failed("migrations", f"cannot read schema_migrations: {_reason(exc)}"),
        ]
    finally:
        with contextlib.suppress(*DB_ERRORS):
            await conn.close(timeout=limit)
    return [
        passed("postgres", f"{where}: PostgreSQL {version}"),
        migrations_verdict(applied, migrations()),
    ]


def migrations_verdict(applied: Mapping[int, str], available: Sequence[Migration]) -> Check:
    """The migrations applied (version -> name) against those this smsrx ships."""
    name = "migrations"
    known = {migration.version for migration in available}
    pending = [f"{m.version:04d}_{m.name}" for m in available if m.version not in applied]
    if pending:
        done = len(known & set(applied))
        return failed(
            name,
            f"{done} of {len(available)} applied; pending: {', '.join(pending)}",
            "run 'smsrx db migrate'",
        )
    newer = [f"{version:04d}_{applied[version]}" for version in sorted(set(applied) - known)]
    latest = f"{available[-1].version:04d}_{available[-1].name}" if available else "-"
    if newer:
        return warned(
            name,
            f"all {len(available)} applied, and also {', '.join(newer)}, which this smsrx "
            "does not ship: the schema is newer than this smsrx",
            "run the smsrx version that migrated this database",
        )
    return passed(name, f"all {len(available)} applied (latest {latest})")


# -- Orange subscription -----------------------------------------------------------------


def stored_subscription_verdict(
    live: Sequence[StoredSubscription],
    sender: str,
    wanted: str | None,
    now: datetime,
    stale_after: timedelta,
) -> Check:
    """What the subscriptions store knows about ``sender``'s registration.

    ``live`` holds its rows not yet removed, newest first
    (:meth:`subscriptions.store.SubscriptionStore.live`); ``wanted`` is
    SMSRX_ORANGE_NOTIFY_URL; a last check older than ``stale_after`` is a warning.
    """
    name = "orange subscription"
    if not live:
        return failed(
            name,
            f"no subscription stored for sender tel:+{sender}: Orange may post its receipts "
            "elsewhere, or nowhere",
            _RECONCILE,
        )
    current, stale = live[0], len(live) - 1
    checked = current.last_checked_at
    found = (
        f"id={current.id} {current.state.value}, posts to {current.notify_url}, last checked "
        f"{checked:%Y-%m-%d %H:%M} UTC"
        if checked
        else f"id={current.id} {current.state.value}, posts to {current.notify_url}, never checked"
    )
    found += " (as stored; --online asks Orange)"
    if current.state is State.DRIFTED:
        return failed(name, f"{found}: Orange posts to {current.observed_notify_url}", _RECONCILE)
    if current.state is State.UNKNOWN:
        return failed(name, f"{found}: Orange no longer knows this id (404)", _RECONCILE)
    if wanted is not None and not same_url(current.notify_url, wanted):
        return failed(name, f"{found}, but SMSRX_ORANGE_NOTIFY_URL is {wanted}", _RECONCILE)
    if stale:
        return warned(name, f"{found}; {stale} older id(s) still registered", _RECONCILE)
    if checked is None or now - checked > stale_after:
        return warned(
            name,
            f"{found}: not checked for over {stale_after / timedelta(minutes=1):.0f} min",
            "run the reconciler ('smsrx subscriptions reconcile --watch'; 'smsrx dev' runs it)",
        )
    return passed(name, found)


async def orange(
    settings: Settings, limit: float, now: datetime, *, online: bool, store_ready: bool
) -> list[Check]:
    """Orange's subscription as the store knows it; with ``online``, as Orange says.

    Without ``store_ready`` (PostgreSQL unreachable or not migrated) only the settings
    are checked.
    """
    name = "orange subscription"
    configure = "set " + ", ".join(REQUIRED) + " ('smsrx --help')"
    if not (settings.orange_auth_header or settings.orange_sender):
        return [
            passed(name, "not configured (SMSRX_ORANGE_AUTH_HEADER, SMSRX_ORANGE_SENDER unset)")
        ]
    if reason := skip_reason(settings):
        return [failed(name, reason.removeprefix("subscriptions: "), configure)]
    if not store_ready:
        return []
    sender = settings.orange_sender or ""
    try:
        wanted = wanted_notify_url(settings)
        async with asyncio.timeout(limit), open_store(settings.database_url) as store:
            live = await store.live(sender)
    except TimeoutError:
        return [failed(name, f"the subscriptions store gave no answer within {limit:g}s")]
    except (*DB_ERRORS, ConfigError, SubscriptionError) as exc:
        return [failed(name, database_problem(exc) if isinstance(exc, DB_ERRORS) else str(exc))]
    stale_after = timedelta(seconds=max(3 * settings.orange_reconcile_interval, 3600))
    checks = [stored_subscription_verdict(live, sender, wanted, now, stale_after)]
    if online:
        checks.append(await _online(settings, live[0].id if live else None, wanted, limit))
    return checks


async def _online(
    settings: Settings, subscription_id: str | None, wanted: str | None, limit: float
) -> Check:
    """``smsrx subscriptions check``'s path: ask Orange what the current id posts to."""
    name = "orange (online)"
    if subscription_id is None:
        return failed(name, "no stored subscription id to ask Orange about", _RECONCILE)
    # One try each for the token and the check, each within SMSRX_ORANGE_TIMEOUT.
    longest = max(limit, 2 * settings.orange_timeout)
    try:
        async with (
            asyncio.timeout(longest),
            open_client(settings, retry=RetryPolicy(attempts=1)) as client,
            open_store(settings.database_url) as store,
        ):
            row = await store.get(subscription_id)
            desired = wanted or (row.notify_url if row else "")
            result = await operations.check(client, store, subscription_id, desired)
    except TimeoutError:
        return failed(name, f"Orange gave no answer within {longest:g}s", "try again later")
    except SubscriptionError as exc:
        return failed(name, exc.message)
    except DB_ERRORS as exc:
        return failed(name, database_problem(exc))
    line = " ".join(check_lines(result)).removeprefix("check: ")
    detail, _, fix = line.partition(" — ")
    return Check(name, result.in_place, detail, fix or None)
