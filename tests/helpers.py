"""What many tests need, written once: process environments, an emptied database,
the records of a topic, and Orange receipt bodies."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from receiver.adapters import orange
from smsrx.settings import Settings

__all__ = [
    "dev_command_env",
    "event_id_of",
    "orange_receipt",
    "process_env",
    "read_topic",
    "settings_env",
    "truncate",
]


def process_env(**variables: str) -> dict[str, str]:
    """This process's environment without any ``SMSRX_*`` variable, plus ``variables``
    (given without their ``SMSRX_`` prefix: ``KAFKA_BOOTSTRAP="..."``)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SMSRX_")}
    env.update({f"SMSRX_{name}": value for name, value in variables.items()})
    return env


def dev_command_env(state: Path, **variables: str) -> dict[str, str]:
    """The environment of ``smsrx dev`` in ``state``: a free port for its broker, its
    database and every port its processes serve, plus ``variables`` (as in
    :func:`process_env`), so that several can run at once."""
    from smsrx.cli.dev.process import free_port
    from smsrx.cli.dev.stack import serving_ports

    ports = {name.removeprefix("SMSRX_"): str(free_port()) for name in serving_ports(Settings())}
    return process_env(
        **{
            "STATE_DIR": str(state),
            "KAFKA_BOOTSTRAP": f"127.0.0.1:{free_port()}",
            "DATABASE_URL": f"postgresql://postgres@127.0.0.1:{free_port()}/smsrx",
            **ports,
            **variables,
        }
    )


def second_terminal(home: Path, *argv: str, **variables: str) -> subprocess.CompletedProcess[str]:
    """`smsrx ARGV` run in ``home`` as from a new terminal: no SMSRX_* variable but
    ``variables``, ``HOME`` set to ``home``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SMSRX_")}
    env.update(HOME=str(home), **variables)
    return subprocess.run(
        [sys.executable, "-m", "smsrx.cli", *argv],
        env=env,
        cwd=home,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def settings_env(settings: Settings, **variables: str) -> dict[str, str]:
    """The environment of an smsrx process on the broker, topics and database of
    ``settings``, metrics on loopback, plus ``variables`` (as in :func:`process_env`)."""
    return process_env(
        **{
            "KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
            "KAFKA_IDEMPOTENCE": "0",  # the test broker has no idempotent producer
            "TOPIC_PREFIX": settings.topics.prefix,
            "DATABASE_URL": settings.database_url,
            "METRICS_HOST": "127.0.0.1",
            "SHUTDOWN_TIMEOUT": "5s",
            **variables,
        }
    )


async def truncate(database_url: str) -> None:
    """Empty every table but the migration ledger."""
    conn = await asyncpg.connect(database_url)
    try:
        tables = await conn.fetch(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' "
            "AND tablename <> 'schema_migrations'"
        )
        if tables:
            names = ", ".join(f'"{row["tablename"]}"' for row in tables)
            await conn.execute(f"TRUNCATE {names} RESTART IDENTITY CASCADE")
    finally:
        await conn.close()


async def read_topic(bootstrap: str, topic: str, *, idle: float = 0.0) -> list[Any]:
    """Every record of ``topic``, from offset 0 to its end as the broker reports it now;
    with ``idle``, then also what arrives until nothing new has come for ``idle`` seconds."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        await consumer.topics()  # fetches the cluster's metadata
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        if not partitions:
            return []
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        end = await consumer.end_offsets(partitions)
        records: list[Any] = []
        while any([await consumer.position(tp) < end[tp] for tp in partitions]):
            for batch in (await consumer.getmany(timeout_ms=500)).values():
                records.extend(batch)
        while idle > 0:
            batch = await consumer.getmany(timeout_ms=int(idle * 1000))
            if not batch:
                break
            records.extend(r for rs in batch.values() for r in rs)
        return records
    finally:
        await asyncio.wait_for(consumer.stop(), 5)


def orange_receipt(
    message_id: str = "m-1",
    address: str = "+2250700000000",
    status: str = "DeliveredToTerminal",
    **extra: object,
) -> bytes:
    """An Orange deliveryInfoNotification as Orange posts it; ``extra`` adds members
    to the notification (beside ``callbackData`` and ``deliveryInfo``)."""
    info = {"address": f"tel:{address.removeprefix('tel:')}", "deliveryStatus": status}
    notification = {"callbackData": message_id, "deliveryInfo": info, **extra}
    return orjson.dumps({"deliveryInfoNotification": notification})


def event_id_of(body: bytes) -> str:
    """The event_id the receiver gives an Orange receipt (the adapter is pure)."""
    return orange.parse("application/json", body, datetime.now(UTC))[0].event_id
