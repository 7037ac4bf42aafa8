"""Settings: one frozen object, read from the environment once, in ``main()``.

Each setting is declared once, as a :class:`Settings` field made by :func:`setting`:
its variable, kind, default and meaning. :meth:`Settings.from_env`, the list that
``smsrx --help`` prints (:data:`VARIABLES`) and the README's table (:func:`markdown_table`,
rewritten by ``make settings-doc``) are all made from those declarations. Nothing here
reads the environment at import time.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from dataclasses import fields, replace
from functools import partial
from pathlib import Path
from typing import Any

from smsrx.envvars import (
    DURATION,
    FLAG,
    KEY,
    NETWORKS,
    PATH,
    PORT,
    PROVIDER_URL,
    ConfigError,
    Kind,
    Network,
    Setting,
    at_least,
    either,
    one_of,
    parse_duration,
    parse_networks,
    setting,
    settings_class,
)
from smsrx.topics import Topics

__all__ = [
    "DECLARED",
    "LOG_LEVELS",
    "ORANGE_SOURCE_ADDRESSES",
    "VARIABLES",
    "ConfigError",
    "Kind",
    "Network",
    "Setting",
    "Settings",
    "markdown_table",
    "parse_duration",
    "parse_networks",
    "setting",
    "state_dir_of",
    "with_table",
]

ORANGE_SOURCE_ADDRESSES = ("80.12.13.2", "80.12.102.66", "80.12.209.66", "80.12.66.97")
"""The addresses Orange's SMS API documents as the source of its delivery receipts."""

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
_MIB = 1024 * 1024
_STATE_DIR = Path(".smsrx")
_TOPIC_PREFIX = Kind(
    "topic prefix", lambda name, text: Topics(prefix=text.strip()), blank_is_default=False
)
_LOG_LEVEL = Kind("log level", partial(one_of, choices=LOG_LEVELS))
KAFKA_SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_SSL")
"""How smsrx talks to the brokers; credentials never travel without TLS (no SASL_PLAINTEXT)."""
KAFKA_SASL_MECHANISMS = ("SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN")
_KAFKA_SECURITY = Kind("security protocol", partial(one_of, choices=KAFKA_SECURITY_PROTOCOLS))
_KAFKA_SASL_MECHANISM = Kind("SASL mechanism", partial(one_of, choices=KAFKA_SASL_MECHANISMS))


def state_dir_of(environ: Mapping[str, str]) -> Path:
    """``SMSRX_STATE_DIR``, else ``.smsrx`` in the working directory: where ``smsrx dev``
    keeps its data and its ``dev.json``, and where the other commands look for it."""
    state_dir: Path = DECLARED["state_dir"].read(environ)
    return state_dir


def _in_mib(size: int) -> str:
    return f"{size // _MIB} MiB"


def _retention(name: str, text: str) -> float:
    seconds = parse_duration(name, text.strip())
    if seconds < 1:
        raise ConfigError(f"{name}={text.strip()!r}: must be at least 1s")
    return seconds


_RETENTION = Kind("duration >= 1s", _retention)


def _as_set(declared: Setting, environ: Mapping[str, str]) -> str:
    """A variable's text as the operator set it, else its default as the help writes it."""
    return environ.get(declared.env, "").strip() or str(declared.shown)


# Tables that deduplicate what a topic may replay keep their rows at least this long.
_REPLAYED_FROM_TOPICS = ("retain_processed", "retain_history")


@settings_class
class Settings:
    """Everything a smsrx process needs to know, read once by ``main()``.

    Each field is declared once, with :func:`setting`: its variable, kind, default and
    meaning. :meth:`from_env`, ``smsrx --help`` (:data:`VARIABLES`) and the README's
    table (:func:`markdown_table`) are all made from those declarations.
    """

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
    database_url: str = setting(
        "SMSRX_DATABASE_URL",
        default="postgresql://smsrx@127.0.0.1:5432/smsrx",
        help="PostgreSQL URL",
        secret=True,  # its password
    )
    receiver_host: str = setting(
        "SMSRX_RECEIVER_HOST", default="0.0.0.0", help="address the receiver listens on"
    )
    receiver_port: int = setting(
        "SMSRX_RECEIVER_PORT", default=8443, kind=PORT, help="port of the carrier-facing receiver"
    )
    metrics_host: str = setting(
        "SMSRX_METRICS_HOST",
        default="127.0.0.1",
        help="address the /metrics endpoints and the opt-out read API listen on",
        shown="{}: this host only; 0.0.0.0 for Prometheus in other containers",
    )
    receiver_metrics_port: int = setting(
        "SMSRX_RECEIVER_METRICS_PORT",
        default=9101,
        kind=PORT,
        help="receiver /metrics port, plain HTTP",
    )
    status_projection_metrics_port: int = setting(
        "SMSRX_STATUS_PROJECTION_METRICS_PORT",
        default=9102,
        kind=PORT,
        help="status-projection /metrics port",
    )
    analytics_metrics_port: int = setting(
        "SMSRX_ANALYTICS_METRICS_PORT", default=9103, kind=PORT, help="analytics /metrics port"
    )
    subscriptions_metrics_port: int = setting(
        "SMSRX_SUBSCRIPTIONS_METRICS_PORT",
        default=9104,
        kind=PORT,
        help="subscriptions reconciler /metrics port",
    )
    inbound_metrics_port: int = setting(
        "SMSRX_INBOUND_METRICS_PORT",
        default=9105,
        kind=PORT,
        help="inbound worker's /metrics and opt-out read API (GET /v1/optouts/{e164}) port",
    )
    tls_cert: Path | None = setting(
        "SMSRX_TLS_CERT", default=None, kind=PATH, help="PEM certificate chain for HTTPS"
    )
    tls_key: Path | None = setting(
        "SMSRX_TLS_KEY", default=None, kind=PATH, help="PEM private key for HTTPS"
    )
    insecure_http: bool = setting(
        "SMSRX_INSECURE_HTTP",
        default=False,
        kind=FLAG,
        help="serve plain HTTP, only behind a TLS-terminating proxy",
    )
    allow_orange: tuple[Network, ...] = setting(
        "SMSRX_ALLOW_ORANGE",
        default=",".join(ORANGE_SOURCE_ADDRESSES),
        kind=NETWORKS,
        help="CIDRs allowed to post Orange receipts",
        shown=f"Orange's {len(ORANGE_SOURCE_ADDRESSES)} documented IPs",
    )
    allow_vavasms: tuple[Network, ...] = setting(
        "SMSRX_ALLOW_VAVASMS",
        default=(),
        kind=NETWORKS,
        help="CIDRs allowed to post VavaSMS inbound SMS",
    )
    trusted_proxies: tuple[Network, ...] = setting(
        "SMSRX_TRUSTED_PROXIES",
        default=(),
        kind=NETWORKS,
        help="CIDRs of proxies whose X-Forwarded-For is honoured",
    )
    max_body_bytes: int = setting(
        "SMSRX_MAX_BODY_BYTES",
        default=64 * 1024,
        kind=at_least(1024),
        help="largest callback body accepted",
    )
    client_timeout: float = setting(
        "SMSRX_CLIENT_TIMEOUT",
        default="10s",
        kind=DURATION,
        help="longest a client may take for its TLS handshake, to send a request, "
        "or idle between requests",
    )
    max_connections: int = setting(
        "SMSRX_MAX_CONNECTIONS",
        default=4096,
        kind=at_least(1),
        help="open connections per receiver process; past it, new ones are closed before TLS",
        shown="{}: carriers need a few hundred at most; a stalled handshake holds about "
        "78 KiB, so 4096 about 370 MiB: 1024 keeps a process under 150 MB, bench/README.md",
    )
    retry_after: int = setting(
        "SMSRX_RETRY_AFTER",
        default=5,
        kind=at_least(1),
        help="Retry-After seconds sent with a 503",
    )
    dedup_cache_size: int = setting(
        "SMSRX_DEDUP_CACHE_SIZE",
        default=200_000,
        kind=at_least(0),
        help="receiver's in-process dedup cache entries",
    )
    spool_dir: Path = setting(
        "SMSRX_SPOOL_DIR",
        default=_STATE_DIR / "spool",
        kind=PATH,
        help="receiver's durable spool directory",
        shown="<state dir>/spool",
        derive=lambda values: values["state_dir"] / "spool",
    )
    spool_max_bytes: int = setting(
        "SMSRX_SPOOL_MAX_BYTES",
        default=256 * _MIB,
        kind=at_least(0),
        help="spool size limit, 503 when full; 0 turns the spool off",
        shown=_in_mib,
    )
    spool_replay_rate: int = setting(
        "SMSRX_SPOOL_REPLAY_RATE",
        default=2000,
        kind=at_least(1),
        help="events per second replayed from the spool once the broker is back",
    )
    batch_max_records: int = setting(
        "SMSRX_BATCH_MAX_RECORDS",
        default=5000,
        kind=at_least(1),
        help="largest batch a worker applies in one transaction",
    )
    fetch_max_wait: float = setting(
        "SMSRX_FETCH_MAX_WAIT",
        default="100ms",
        kind=DURATION,
        help="longest a worker's fetch waits at the broker for more records",
    )
    expiry_horizon: float = setting(
        "SMSRX_EXPIRY_HORIZON",
        default="72h",
        kind=DURATION,
        help="time without a final status before 'expired'",
    )
    expiry_sweep_interval: float = setting(
        "SMSRX_EXPIRY_SWEEP_INTERVAL",
        default="60s",
        kind=DURATION,
        help="how often the expiry sweep runs",
    )
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
    prune_interval: float = setting(
        "SMSRX_PRUNE_INTERVAL",
        default="1h",
        kind=DURATION,
        help="how often status-projection prunes what is past its retention; 0 turns it off",
    )
    shutdown_timeout: float = setting(
        "SMSRX_SHUTDOWN_TIMEOUT",
        default="10s",
        kind=DURATION,
        help="longest graceful drain on SIGTERM",
    )
    orange_api_url: str = setting(
        "SMSRX_ORANGE_API_URL",
        default="https://api.orange.com",
        kind=PROVIDER_URL,
        help="Orange API base URL, https:// only",
    )
    insecure_provider_urls: bool = setting(
        "SMSRX_INSECURE_PROVIDER_URLS",
        default=False,
        kind=FLAG,
        help="accept http:// provider API URLs: for tests against a local fake API only, "
        "never in production",
    )
    orange_auth_header: str | None = setting(
        "SMSRX_ORANGE_AUTH_HEADER",
        default=None,
        help="Orange app authorization header, 'Basic ...'",
        secret=True,
    )
    orange_sender: str | None = setting(
        "SMSRX_ORANGE_SENDER",
        default=None,
        help="Orange sender number, country code and number, no '+'",
    )
    orange_notify_url: str | None = setting(
        "SMSRX_ORANGE_NOTIFY_URL",
        default=None,
        help="HTTPS URL Orange posts receipts to",
        shown="port 443",
    )
    orange_timeout: float = setting(
        "SMSRX_ORANGE_TIMEOUT", default="10s", kind=DURATION, help="timeout of one Orange API call"
    )
    orange_reconcile_interval: float = setting(
        "SMSRX_ORANGE_RECONCILE_INTERVAL",
        default="5m",
        kind=DURATION,
        help="how often the reconciler checks the subscription",
    )
    state_dir: Path = setting(
        "SMSRX_STATE_DIR",
        default=_STATE_DIR,
        kind=PATH,
        help="state directory of 'smsrx dev'; other commands find its dev.json there",
    )
    inbound_routes: Path | None = setting(
        "SMSRX_INBOUND_ROUTES",
        default=None,
        kind=PATH,
        help="TOML rules file: keyword routes of inbound SMS, opt-out and opt-in keywords "
        "(docs/inbound.md)",
        shown="none: default keywords, every other message routed 'default'",
    )
    log_level: str = setting(
        "SMSRX_LOG_LEVEL", default="INFO", kind=_LOG_LEVEL, help=either(LOG_LEVELS)
    )

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Settings:
        """Read every ``SMSRX_*`` variable; raise :class:`ConfigError` naming a bad one."""
        values = {
            name: declared.read(environ)
            for name, declared in DECLARED.items()
            if declared.derive is None or not declared.is_blank(environ)
        }
        for name, declared in DECLARED.items():
            if declared.derive is not None and name not in values:
                values[name] = declared.derive(values)
        cert, key = DECLARED["tls_cert"], DECLARED["tls_key"]
        if (values["tls_cert"] is None) != (values["tls_key"] is None):
            raise ConfigError(f"{cert.env} and {key.env} must be set together")
        _check_kafka_security(values)
        topics = DECLARED["topic_retention"]
        for name in _REPLAYED_FROM_TOPICS:
            if values[name] < values["topic_retention"]:
                kept = DECLARED[name]
                raise ConfigError(
                    f"{kept.env}={_as_set(kept, environ)} is shorter than "
                    f"{topics.env}={_as_set(topics, environ)}: an event replayed from a "
                    "topic would no longer be known as a duplicate; keep "
                    f"{kept.env} at least as long as {topics.env}"
                )
        return cls(**values)

    def __post_init__(self) -> None:
        if self.insecure_provider_urls:
            return
        for name, declared in DECLARED.items():
            url = getattr(self, name)
            if declared.kind is PROVIDER_URL and not url.lower().startswith("https://"):
                raise ConfigError(
                    f"{declared.env}={url!r}: must be an https:// URL "
                    "(SMSRX_INSECURE_PROVIDER_URLS=1 allows http:// in tests)"
                )

    def with_(self, **changes: Any) -> Settings:
        """A copy with some fields changed (for the dev supervisor and tests)."""
        return replace(self, **changes)


def _check_kafka_security(values: Mapping[str, Any]) -> None:
    """SASL_SSL has a user and a password; nothing is set that the protocol would ignore."""
    protocol = values["kafka_security_protocol"]
    names = {f: DECLARED[f].env for f in ("kafka_sasl_username", "kafka_sasl_password")}
    given = [env for f, env in names.items() if values[f] is not None]
    where = f"SMSRX_KAFKA_SECURITY_PROTOCOL={protocol}"
    if protocol == "SASL_SSL" and len(given) < len(names):
        raise ConfigError(f"{where} needs {' and '.join(names.values())}")
    if protocol != "SASL_SSL" and given:
        raise ConfigError(f"{given[0]} is set, but {where} sends no credentials: use SASL_SSL")
    if protocol == "PLAINTEXT" and values["kafka_ca_file"] is not None:
        raise ConfigError(f"SMSRX_KAFKA_CA_FILE is set, but {where} uses no TLS")


DECLARED: Mapping[str, Setting] = {f.name: f.metadata[KEY] for f in fields(Settings)}
"""Each :class:`Settings` field's declaration, by field name, in declaration order."""

VARIABLES: dict[str, str] = {declared.env: declared.description for declared in DECLARED.values()}
"""Every variable with its meaning and default, as ``smsrx --help`` lists them."""

_BEGIN = "<!-- settings:begin -->"
_END = "<!-- settings:end -->"


def markdown_table() -> str:
    """The README's table of every variable, from the declarations."""
    rows = ["| variable | meaning (default) |", "|---|---|"]
    for name, text in VARIABLES.items():
        cell = text.replace("|", "\\|")
        rows.append(f"| `{name}` | {cell} |")
    return "\n".join(rows) + "\n"


def with_table(document: str) -> str:
    """``document`` with the text between its settings markers replaced by :func:`markdown_table`."""
    head, begin, rest = document.partition(_BEGIN)
    _, end, tail = rest.partition(_END)
    if not (begin and end):
        raise ValueError(f"no {_BEGIN} ... {_END} markers")
    return f"{head}{_BEGIN}\n\n{markdown_table()}\n{_END}{tail}"


def _main(argv: Sequence[str]) -> int:
    """``python -m smsrx.settings [FILE]``: print the table, or rewrite it in FILE."""
    if not argv:
        sys.stdout.write(markdown_table())
        return 0
    path = Path(argv[0])
    path.write_text(with_table(path.read_text(encoding="utf-8")), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
