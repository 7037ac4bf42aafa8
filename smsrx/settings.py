"""Settings: one frozen object, read from the environment once, in ``main()``.

Every variable is listed in :data:`VARIABLES` with its meaning, so ``smsrx --help``
and the README show the same text. Nothing here reads the environment at import time.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from smsrx.topics import Topics

__all__ = [
    "ORANGE_SOURCE_ADDRESSES",
    "VARIABLES",
    "ConfigError",
    "Network",
    "Settings",
    "state_dir_of",
]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

ORANGE_SOURCE_ADDRESSES = ("80.12.13.2", "80.12.102.66", "80.12.209.66", "80.12.66.97")
"""The addresses Orange's SMS API documents as the source of its delivery receipts."""


class ConfigError(ValueError):
    """A setting is missing or malformed; the message names the variable."""


VARIABLES: dict[str, str] = {
    "SMSRX_KAFKA_BOOTSTRAP": "Kafka bootstrap servers, host:port[,host:port] (127.0.0.1:9092)",
    "SMSRX_KAFKA_IDEMPOTENCE": "enable the idempotent producer; off for brokers without it (1)",
    "SMSRX_KAFKA_SEND_TIMEOUT": "longest wait for the broker to acknowledge a record (5s)",
    "SMSRX_TOPIC_PREFIX": "prefix for every topic name, e.g. 'staging.' (empty)",
    "SMSRX_TOPIC_PARTITIONS": "partitions of each topic 'smsrx topics create' makes (4)",
    "SMSRX_TOPIC_REPLICATION": "replication factor of those topics (1; 3 on a real cluster)",
    "SMSRX_DATABASE_URL": "PostgreSQL URL (postgresql://smsrx@127.0.0.1:5432/smsrx)",
    "SMSRX_RECEIVER_HOST": "address the receiver listens on (0.0.0.0)",
    "SMSRX_RECEIVER_PORT": "port of the carrier-facing receiver (8443)",
    "SMSRX_METRICS_HOST": "address the /metrics endpoints listen on (0.0.0.0)",
    "SMSRX_RECEIVER_METRICS_PORT": "receiver /metrics port, plain HTTP (9101)",
    "SMSRX_STATUS_PROJECTION_METRICS_PORT": "status-projection /metrics port (9102)",
    "SMSRX_ANALYTICS_METRICS_PORT": "analytics /metrics port (9103)",
    "SMSRX_SUBSCRIPTIONS_METRICS_PORT": "subscriptions reconciler /metrics port (9104)",
    "SMSRX_TLS_CERT": "PEM certificate chain for HTTPS",
    "SMSRX_TLS_KEY": "PEM private key for HTTPS",
    "SMSRX_INSECURE_HTTP": "serve plain HTTP, only behind a TLS-terminating proxy (0)",
    "SMSRX_ALLOW_ORANGE": "CIDRs allowed to post Orange receipts (Orange's 4 documented IPs)",
    "SMSRX_ALLOW_VAVASMS": "CIDRs allowed to post VavaSMS inbound SMS (none)",
    "SMSRX_TRUSTED_PROXIES": "CIDRs of proxies whose X-Forwarded-For is honoured (none)",
    "SMSRX_MAX_BODY_BYTES": "largest callback body accepted (65536)",
    "SMSRX_CLIENT_TIMEOUT": "longest a client may take for its TLS handshake, to send a request, or idle between requests (10s)",
    "SMSRX_MAX_CONNECTIONS": "open connections per receiver process; past it, new ones are closed before TLS (4096: carriers need a few hundred at most; a stalled handshake holds about 78 KiB, so 4096 about 370 MiB: 1024 keeps a process under 150 MB, bench/README.md)",
    "SMSRX_RETRY_AFTER": "Retry-After seconds sent with a 503 (5)",
    "SMSRX_DEDUP_CACHE_SIZE": "receiver's in-process dedup cache entries (200000)",
    "SMSRX_SPOOL_DIR": "receiver's durable spool directory (<state dir>/spool)",
    "SMSRX_SPOOL_MAX_BYTES": "spool size limit, 503 when full; 0 turns the spool off (256 MiB)",
    "SMSRX_SPOOL_REPLAY_RATE": "events per second replayed from the spool once the broker is back (2000)",
    "SMSRX_BATCH_MAX_RECORDS": "largest batch a worker applies in one transaction (5000)",
    "SMSRX_FETCH_MAX_WAIT": "longest a worker's fetch waits at the broker for more records (100ms)",
    "SMSRX_EXPIRY_HORIZON": "time without a final status before 'expired' (72h)",
    "SMSRX_EXPIRY_SWEEP_INTERVAL": "how often the expiry sweep runs (60s)",
    "SMSRX_SHUTDOWN_TIMEOUT": "longest graceful drain on SIGTERM (10s)",
    "SMSRX_ORANGE_API_URL": "Orange API base URL (https://api.orange.com)",
    "SMSRX_ORANGE_AUTH_HEADER": "Orange app authorization header, 'Basic ...' (secret)",
    "SMSRX_ORANGE_SENDER": "Orange sender number, country code and number, no '+'",
    "SMSRX_ORANGE_NOTIFY_URL": "HTTPS URL Orange posts receipts to (port 443)",
    "SMSRX_ORANGE_TIMEOUT": "timeout of one Orange API call (10s)",
    "SMSRX_ORANGE_RECONCILE_INTERVAL": "how often the reconciler checks the subscription (5m)",
    "SMSRX_STATE_DIR": "state directory of 'smsrx dev'; other commands find its dev.json there (./.smsrx)",
    "SMSRX_LOG_LEVEL": "DEBUG, INFO, WARNING or ERROR (INFO)",
}

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def parse_duration(name: str, text: str) -> float:
    """Seconds in ``text``: ``90``, ``1.5s``, ``250ms``, ``10m``, ``72h`` or ``3d``."""
    match = _DURATION.match(text)
    if match is None:
        raise ConfigError(f"{name}={text!r}: expected a duration such as 30s, 10m or 72h")
    return float(match.group(1)) * _UNITS[match.group(2)]


def parse_networks(name: str, text: str) -> tuple[Network, ...]:
    """Comma-separated CIDRs or addresses, IPv4 or IPv6."""
    networks = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise ConfigError(f"{name}: {item!r} is not an IP address or CIDR") from None
    return tuple(networks)


def state_dir_of(environ: Mapping[str, str]) -> Path:
    """``SMSRX_STATE_DIR``, else ``.smsrx`` in the working directory: where ``smsrx dev``
    keeps its data and its ``dev.json``, and where the other commands look for it."""
    return Path(environ.get("SMSRX_STATE_DIR", "").strip() or ".smsrx")


class _Env:
    """Typed access to the environment, naming the variable in every error."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self.environ = environ

    def text(self, name: str, default: str) -> str:
        return self.environ.get(name, default).strip() or default

    def optional(self, name: str) -> str | None:
        return self.environ.get(name, "").strip() or None

    def integer(self, name: str, default: int, *, minimum: int = 0) -> int:
        text = self.environ.get(name, "").strip()
        try:
            value = int(text) if text else default
        except ValueError:
            raise ConfigError(f"{name}={text!r}: expected a whole number") from None
        if value < minimum:
            raise ConfigError(f"{name}={value}: must be at least {minimum}")
        return value

    def port(self, name: str, default: int) -> int:
        value = self.integer(name, default)
        if value > 65535:
            raise ConfigError(f"{name}={value}: not a TCP port")
        return value

    def flag(self, name: str, default: bool) -> bool:
        text = self.environ.get(name)
        if text is None:
            return default
        if text.strip().lower() in _TRUE:
            return True
        if text.strip().lower() in _FALSE:
            return False
        raise ConfigError(f"{name}={text!r}: expected 1/0, true/false, yes/no or on/off")

    def duration(self, name: str, default: str) -> float:
        return parse_duration(name, self.text(name, default))

    def networks(self, name: str, default: str) -> tuple[Network, ...]:
        return parse_networks(name, self.environ.get(name, default))


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything a smsrx process needs to know, read once by ``main()``."""

    kafka_bootstrap: str = "127.0.0.1:9092"
    kafka_idempotence: bool = True
    kafka_send_timeout: float = 5.0
    topics: Topics = field(default_factory=Topics)
    topic_partitions: int = 4
    topic_replication: int = 1
    database_url: str = "postgresql://smsrx@127.0.0.1:5432/smsrx"
    receiver_host: str = "0.0.0.0"
    receiver_port: int = 8443
    metrics_host: str = "0.0.0.0"
    receiver_metrics_port: int = 9101
    status_projection_metrics_port: int = 9102
    analytics_metrics_port: int = 9103
    subscriptions_metrics_port: int = 9104
    tls_cert: Path | None = None
    tls_key: Path | None = None
    insecure_http: bool = False
    allow_orange: tuple[Network, ...] = parse_networks(
        "SMSRX_ALLOW_ORANGE", ",".join(ORANGE_SOURCE_ADDRESSES)
    )
    allow_vavasms: tuple[Network, ...] = ()
    trusted_proxies: tuple[Network, ...] = ()
    max_body_bytes: int = 64 * 1024
    retry_after: int = 5
    client_timeout: float = 10.0
    max_connections: int = 4096
    dedup_cache_size: int = 200_000
    spool_dir: Path = Path(".smsrx/spool")
    spool_max_bytes: int = 256 * 1024 * 1024
    spool_replay_rate: int = 2000
    batch_max_records: int = 5000
    fetch_max_wait: float = 0.1
    expiry_horizon: float = 72 * 3600.0
    expiry_sweep_interval: float = 60.0
    shutdown_timeout: float = 10.0
    orange_api_url: str = "https://api.orange.com"
    orange_auth_header: str | None = field(default=None, repr=False)
    orange_sender: str | None = None
    orange_notify_url: str | None = None
    orange_timeout: float = 10.0
    orange_reconcile_interval: float = 300.0
    state_dir: Path = Path(".smsrx")
    log_level: str = "INFO"

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Settings:
        """Read every ``SMSRX_*`` variable; raise :class:`ConfigError` naming a bad one."""
        env = _Env(environ)
        state_dir = state_dir_of(environ)
        log_level = env.text("SMSRX_LOG_LEVEL", "INFO").upper()
        if log_level not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
            raise ConfigError(
                f"SMSRX_LOG_LEVEL={log_level!r}: expected DEBUG, INFO, WARNING or ERROR"
            )
        cert, key = env.optional("SMSRX_TLS_CERT"), env.optional("SMSRX_TLS_KEY")
        if (cert is None) != (key is None):
            raise ConfigError("SMSRX_TLS_CERT and SMSRX_TLS_KEY must be set together")
        return cls(
            kafka_bootstrap=env.text("SMSRX_KAFKA_BOOTSTRAP", "127.0.0.1:9092"),
            kafka_idempotence=env.flag("SMSRX_KAFKA_IDEMPOTENCE", True),
            kafka_send_timeout=env.duration("SMSRX_KAFKA_SEND_TIMEOUT", "5s"),
            topics=Topics(prefix=env.environ.get("SMSRX_TOPIC_PREFIX", "").strip()),
            topic_partitions=env.integer("SMSRX_TOPIC_PARTITIONS", 4, minimum=1),
            topic_replication=env.integer("SMSRX_TOPIC_REPLICATION", 1, minimum=1),
            database_url=env.text("SMSRX_DATABASE_URL", "postgresql://smsrx@127.0.0.1:5432/smsrx"),
            receiver_host=env.text("SMSRX_RECEIVER_HOST", "0.0.0.0"),
            receiver_port=env.port("SMSRX_RECEIVER_PORT", 8443),
            metrics_host=env.text("SMSRX_METRICS_HOST", "0.0.0.0"),
            receiver_metrics_port=env.port("SMSRX_RECEIVER_METRICS_PORT", 9101),
            status_projection_metrics_port=env.port("SMSRX_STATUS_PROJECTION_METRICS_PORT", 9102),
            analytics_metrics_port=env.port("SMSRX_ANALYTICS_METRICS_PORT", 9103),
            subscriptions_metrics_port=env.port("SMSRX_SUBSCRIPTIONS_METRICS_PORT", 9104),
            tls_cert=Path(cert) if cert else None,
            tls_key=Path(key) if key else None,
            insecure_http=env.flag("SMSRX_INSECURE_HTTP", False),
            allow_orange=env.networks("SMSRX_ALLOW_ORANGE", ",".join(ORANGE_SOURCE_ADDRESSES)),
            allow_vavasms=env.networks("SMSRX_ALLOW_VAVASMS", ""),
            trusted_proxies=env.networks("SMSRX_TRUSTED_PROXIES", ""),
            max_body_bytes=env.integer("SMSRX_MAX_BODY_BYTES", 64 * 1024, minimum=1024),
            retry_after=env.integer("SMSRX_RETRY_AFTER", 5, minimum=1),
            client_timeout=env.duration("SMSRX_CLIENT_TIMEOUT", "10s"),
            max_connections=env.integer("SMSRX_MAX_CONNECTIONS", 4096, minimum=1),
            dedup_cache_size=env.integer("SMSRX_DEDUP_CACHE_SIZE", 200_000),
            spool_dir=Path(env.text("SMSRX_SPOOL_DIR", str(state_dir / "spool"))),
            spool_max_bytes=env.integer("SMSRX_SPOOL_MAX_BYTES", 256 * 1024 * 1024),
            spool_replay_rate=env.integer("SMSRX_SPOOL_REPLAY_RATE", 2000, minimum=1),
            batch_max_records=env.integer("SMSRX_BATCH_MAX_RECORDS", 5000, minimum=1),
            fetch_max_wait=env.duration("SMSRX_FETCH_MAX_WAIT", "100ms"),
            expiry_horizon=env.duration("SMSRX_EXPIRY_HORIZON", "72h"),
            expiry_sweep_interval=env.duration("SMSRX_EXPIRY_SWEEP_INTERVAL", "60s"),
            shutdown_timeout=env.duration("SMSRX_SHUTDOWN_TIMEOUT", "10s"),
            orange_api_url=env.text("SMSRX_ORANGE_API_URL", "https://api.orange.com").rstrip("/"),
            orange_auth_header=env.optional("SMSRX_ORANGE_AUTH_HEADER"),
            orange_sender=env.optional("SMSRX_ORANGE_SENDER"),
            orange_notify_url=env.optional("SMSRX_ORANGE_NOTIFY_URL"),
            orange_timeout=env.duration("SMSRX_ORANGE_TIMEOUT", "10s"),
            orange_reconcile_interval=env.duration("SMSRX_ORANGE_RECONCILE_INTERVAL", "5m"),
            state_dir=state_dir,
            log_level=log_level,
        )

    def with_(self, **changes: Any) -> Settings:
        """A copy with some fields changed (for the dev supervisor and tests)."""
        return replace(self, **changes)
