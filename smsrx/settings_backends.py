"""The settings of the backing services, by concern: the event broker and its topics,
PostgreSQL, and how long rows are kept. :class:`smsrx.settings.Settings` inherits
every group; a function that needs only one may take that group's type.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

from smsrx.envvars import (
    DURATION,
    FLAG,
    PATH,
    ConfigError,
    Kind,
    at_least,
    either,
    one_of,
    parse_duration,
    setting,
    settings_group,
)
from smsrx.topics import Topics

__all__ = [
    "KAFKA_SASL_MECHANISMS",
    "KAFKA_SECURITY_PROTOCOLS",
    "DatabaseSettings",
    "KafkaSettings",
    "RetentionSettings",
]

KAFKA_SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_SSL")
"""How smsrx talks to the brokers; credentials never travel without TLS (no SASL_PLAINTEXT)."""
KAFKA_SASL_MECHANISMS = ("SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN")
_KAFKA_SECURITY = Kind("security protocol", partial(one_of, choices=KAFKA_SECURITY_PROTOCOLS))
_KAFKA_SASL_MECHANISM = Kind("SASL mechanism", partial(one_of, choices=KAFKA_SASL_MECHANISMS))
_TOPIC_PREFIX = Kind(
    "topic prefix", lambda name, text: Topics(prefix=text.strip()), blank_is_default=False
)


def _retention(name: str, text: str) -> float:
    seconds = parse_duration(name, text.strip())
    if seconds < 1:
        raise ConfigError(f"{name}={text.strip()!r}: must be at least 1s")
    return seconds


_RETENTION = Kind("duration >= 1s", _retention)


@settings_group
class KafkaSettings:
    """The event broker and the topics: every process that produces or consumes."""

    kafka_bootstrap: str = setting(
        "SMSRX_KAFKA_BOOTSTRAP",
        default="127.0.0.1:9092",
        help="Kafka bootstrap servers, host:port[,host:port]",
    )
    kafka_idempotence: bool = setting(
        "SMSRX_KAFKA_IDEMPOTENCE",
        default=True,
        kind=FLAG,
        help="enable the idempotent producer; off for brokers without it",
    )
    kafka_send_timeout: float = setting(
        "SMSRX_KAFKA_SEND_TIMEOUT",
        default="5s",
        kind=DURATION,
        help="longest wait for the broker to acknowledge a record",
    )
    kafka_security_protocol: str = setting(
        "SMSRX_KAFKA_SECURITY_PROTOCOL",
        default="PLAINTEXT",
        kind=_KAFKA_SECURITY,
        help=f"how clients reach the brokers: {either(KAFKA_SECURITY_PROTOCOLS)}",
        shown="{}; SASL_SSL in docker-compose",
    )
    kafka_sasl_mechanism: str = setting(
        "SMSRX_KAFKA_SASL_MECHANISM",
        default="SCRAM-SHA-512",
        kind=_KAFKA_SASL_MECHANISM,
        help=f"SASL mechanism with SASL_SSL: {either(KAFKA_SASL_MECHANISMS)}",
    )
    kafka_sasl_username: str | None = setting(
        "SMSRX_KAFKA_SASL_USERNAME",
        default=None,
        help="this service's Kafka user, with SASL_SSL",
    )
    kafka_sasl_password: str | None = setting(
        "SMSRX_KAFKA_SASL_PASSWORD",
        default=None,
        help="that user's password, with SASL_SSL",
        secret=True,
    )
    kafka_ca_file: Path | None = setting(
        "SMSRX_KAFKA_CA_FILE",
        default=None,
        kind=PATH,
        help="PEM CA certificates that sign the brokers' certificates, with SSL or SASL_SSL",
        shown="the system's CAs",
    )
    topics: Topics = setting(
        "SMSRX_TOPIC_PREFIX",
        default="",
        kind=_TOPIC_PREFIX,
        help="prefix for every topic name, e.g. 'staging.'",
    )
    topic_partitions: int = setting(
        "SMSRX_TOPIC_PARTITIONS",
        default=4,
        kind=at_least(1),
        help="partitions of each topic 'smsrx topics create' makes",
    )
    topic_replication: int = setting(
        "SMSRX_TOPIC_REPLICATION",
        default=1,
        kind=at_least(1),
        help="replication factor of those topics",
        shown="{}; 3 on a real cluster",
    )
    topic_retention: float = setting(
        "SMSRX_TOPIC_RETENTION",
        default="7d",
        kind=_RETENTION,
        help="retention.ms of those topics (the compacted one excepted): how far back a "
        "replay reaches",
    )


@settings_group
class DatabaseSettings:
    """PostgreSQL: every process but the receiver's edge needs it."""

    database_url: str = setting(
        "SMSRX_DATABASE_URL",
        default="postgresql://smsrx@127.0.0.1:5432/smsrx",
        help="PostgreSQL URL",
        secret=True,  # its password
    )


@settings_group
class RetentionSettings:
    """How long each kind of row is kept (``smsrx db prune`` deletes what is older)."""

    retain_dedup: float = setting(
        "SMSRX_RETAIN_DEDUP",
        default="7d",
        kind=_RETENTION,
        help="how long the receiver's dedup rows are kept",
    )
    retain_history: float = setting(
        "SMSRX_RETAIN_HISTORY",
        default="90d",
        kind=_RETENTION,
        help="how long receipt history, inbound SMS metadata and finished recipients' status "
        "are kept; at least SMSRX_TOPIC_RETENTION",
    )
    retain_processed: float = setting(
        "SMSRX_RETAIN_PROCESSED",
        default="14d",
        kind=_RETENTION,
        help="how long the ids of events counted (analytics) or routed (inbound) are kept; "
        "at least SMSRX_TOPIC_RETENTION",
    )
    retain_inbound_text: float = setting(
        "SMSRX_RETAIN_INBOUND_TEXT",
        default="30d",
        kind=_RETENTION,
        help="after this, an inbound SMS's text and raw payload are erased (its metadata stays)",
    )
    retain_rollups: float = setting(
        "SMSRX_RETAIN_ROLLUPS",
        default="400d",
        kind=_RETENTION,
        help="how long the analytics rollups (per minute, per hour) are kept",
    )
