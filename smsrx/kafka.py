"""Kafka clients, configured the same way for every process.

Every producer uses ``acks="all"`` and bounds each request by the send timeout:
aiokafka can otherwise wait forever on a broker that is down (aio-libs/aiokafka#1101).
The idempotent producer is on by default (Apache Kafka) and can be turned off for
brokers without it (the development broker); :func:`start_producer` says so when a
broker refuses it.

Every client, producer, consumer or admin, is made here and carries the same security
options (:func:`security_options`): PLAINTEXT by default, TLS that verifies the brokers'
certificates, and with SASL_SSL this service's own user, whose ACLs say what it may do.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import (
    KafkaError,
    TopicAlreadyExistsError,
    UnknownError,
    UnsupportedVersionError,
)
from aiokafka.helpers import create_ssl_context

from smsrx.errors import EXIT_NO_IDEMPOTENCE, SmsrxError
from smsrx.settings import ConfigError, KafkaSettings, Settings

__all__ = [
    "BrokerWithoutIdempotence",
    "create_topics",
    "make_admin",
    "make_consumer",
    "make_producer",
    "security_options",
    "start_producer",
    "stop_bounded",
]

logger = logging.getLogger(__name__)


def security_options(settings: KafkaSettings) -> dict[str, Any]:
    """The options of every aiokafka client for ``SMSRX_KAFKA_SECURITY_PROTOCOL``: TLS
    that verifies the brokers against ``SMSRX_KAFKA_CA_FILE`` (or the system's CAs), and
    with SASL_SSL the mechanism, user and password."""
    protocol = settings.kafka_security_protocol
    options: dict[str, Any] = {"security_protocol": protocol}
    if protocol in ("SSL", "SASL_SSL"):
        ca_file = settings.kafka_ca_file
        try:
            options["ssl_context"] = create_ssl_context(
                cafile=None if ca_file is None else str(ca_file)
            )
        except OSError as exc:  # missing, unreadable, or not PEM certificates (SSLError)
            why = exc.strerror or str(exc)
            raise ConfigError(
                f"SMSRX_KAFKA_CA_FILE={str(ca_file)!r}: cannot be used ({why})"
            ) from None
    if protocol == "SASL_SSL":
        options["sasl_mechanism"] = settings.kafka_sasl_mechanism
        options["sasl_plain_username"] = settings.kafka_sasl_username
        options["sasl_plain_password"] = settings.kafka_sasl_password
    return options


def make_producer(settings: KafkaSettings, **overrides: Any) -> AIOKafkaProducer:
    """A producer that waits for every in-sync replica, with bounded requests."""
    timeout_ms = max(1000, int(settings.kafka_send_timeout * 1000))
    options: dict[str, Any] = {
        **security_options(settings),
        "bootstrap_servers": settings.kafka_bootstrap,
        "acks": "all",
        "enable_idempotence": settings.kafka_idempotence,
        "request_timeout_ms": timeout_ms,
        "max_batch_size": 1024 * 1024,
        "linger_ms": 0,
        "client_id": "smsrx",
    }
    options.update(overrides)
    return AIOKafkaProducer(**options)


class BrokerWithoutIdempotence(SmsrxError):
    """The broker refused the idempotent producer's InitProducerId request.

    Brokers without the idempotent producer (the development broker, Tansu) answer it
    with an unknown error or an unsupported version.
    """

    exit_code = EXIT_NO_IDEMPOTENCE

    def __init__(self, bootstrap: str, cause: KafkaError) -> None:
        self.message = (
            f"the broker at {bootstrap} has no idempotent producer (InitProducerId: "
            f"{type(cause).__name__}); set SMSRX_KAFKA_IDEMPOTENCE=0 for brokers without it, "
            "such as the development broker"
        )
        """One line saying what to do."""
        super().__init__(self.message)


async def start_producer(producer: AIOKafkaProducer, settings: KafkaSettings) -> None:
    """Start ``producer``, or stop it again and raise: :class:`BrokerWithoutIdempotence`
    when the broker refuses the idempotent producer, else aiokafka's error."""
    try:
        await producer.start()
    except BaseException as exc:
        await stop_bounded(producer, settings.kafka_send_timeout)
        # start() sends InitProducerId only for an idempotent producer.
        if settings.kafka_idempotence and isinstance(exc, (UnknownError, UnsupportedVersionError)):
            raise BrokerWithoutIdempotence(settings.kafka_bootstrap, exc) from exc
        raise


def make_consumer(
    settings: Settings, *topics: str, group_id: str, **overrides: Any
) -> AIOKafkaConsumer:
    """A consumer-group member that commits manually, after its work is durable."""
    options: dict[str, Any] = {
        **security_options(settings),
        "bootstrap_servers": settings.kafka_bootstrap,
        "group_id": group_id,
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "isolation_level": "read_committed",
        "max_poll_records": settings.batch_max_records,
        # A fetch answers once fetch.min.bytes are there or after this wait. Apache Kafka
        # answers as soon as records exist; some brokers (Tansu) wait much of it anyway,
        # so aiokafka's 500 ms default would be most of the end-to-end latency.
        "fetch_max_wait_ms": max(1, int(settings.fetch_max_wait * 1000)),
        "client_id": group_id,
    }
    options.update(overrides)
    return AIOKafkaConsumer(*topics, **options)


def make_admin(settings: KafkaSettings, **overrides: Any) -> AIOKafkaAdminClient:
    """An admin client (topics, cluster metadata), its requests bounded by the send timeout."""
    options: dict[str, Any] = {
        **security_options(settings),
        "bootstrap_servers": settings.kafka_bootstrap,
        "request_timeout_ms": max(1000, int(settings.kafka_send_timeout * 1000)),
    }
    options.update(overrides)
    return AIOKafkaAdminClient(**options)


async def stop_bounded(client: AIOKafkaProducer | AIOKafkaConsumer, limit: float) -> None:
    """Stop a client, but never wait longer than ``limit`` seconds for it (aiokafka#1101)."""
    try:
        async with asyncio.timeout(limit):
            await client.stop()
    except TimeoutError:
        logger.warning("kafka client stop timed out after %.1fs; abandoning it", limit)


async def create_topics(settings: KafkaSettings, extra: Iterable[str] = ()) -> list[str]:
    """Create every smsrx topic, and the ``extra`` ones (per-route topics), that does not
    exist yet; return those created."""
    admin = make_admin(settings)
    await admin.start()
    created = []
    try:
        existing = set(await admin.list_topics())
        configs = {"min.insync.replicas": "2"} if settings.topic_replication >= 3 else {}
        for name in (*settings.topics.all(), *extra):
            if name in existing:
                continue
            if settings.topics.compacted(name):
                kept = {"cleanup.policy": "compact"}
            else:  # the databases' dedup rows outlive this (smsrx.retention)
                kept = {"retention.ms": str(int(settings.topic_retention * 1000))}
            topic = NewTopic(
                name,
                num_partitions=settings.topic_partitions,
                replication_factor=settings.topic_replication,
                topic_configs={**configs, **kept},
            )
            try:
                await admin.create_topics([topic])
            except TopicAlreadyExistsError:
                continue
            created.append(name)
            logger.info("topic created name=%s partitions=%d", name, settings.topic_partitions)
    finally:
        await admin.close()
    return created
