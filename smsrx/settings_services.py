"""The settings of smsrx's own processes, by concern: what every process has, the
receiver, the workers, and Orange's subscription API. :class:`smsrx.settings.Settings`
inherits every group; a function that needs only one may take that group's type.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

from smsrx.envvars import (
    DURATION,
    FLAG,
    NETWORKS,
    PATH,
    PORT,
    PROVIDER_URL,
    Kind,
    Network,
    at_least,
    either,
    one_of,
    setting,
    settings_group,
)

__all__ = [
    "LOG_LEVELS",
    "ORANGE_SOURCE_ADDRESSES",
    "OrangeSettings",
    "ProcessSettings",
    "ReceiverSettings",
    "WorkerSettings",
]

ORANGE_SOURCE_ADDRESSES = ("80.12.13.2", "80.12.102.66", "80.12.209.66", "80.12.66.97")
"""The addresses Orange's SMS API documents as the source of its delivery receipts."""

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
_MIB = 1024 * 1024
_STATE_DIR = Path(".smsrx")
_LOG_LEVEL = Kind("log level", partial(one_of, choices=LOG_LEVELS))


def _in_mib(size: int) -> str:
    return f"{size // _MIB} MiB"


@settings_group
class ProcessSettings:
    """What every smsrx process has: its internal HTTP ports, its state directory, its logs and its drain on SIGTERM."""

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
    prune_metrics_port: int = setting(
        "SMSRX_PRUNE_METRICS_PORT",
        default=9106,
        kind=PORT,
        help="/metrics port of 'smsrx db prune --every'",
    )
    shutdown_timeout: float = setting(
        "SMSRX_SHUTDOWN_TIMEOUT",
        default="10s",
        kind=DURATION,
        help="longest graceful drain on SIGTERM",
    )
    state_dir: Path = setting(
        "SMSRX_STATE_DIR",
        default=_STATE_DIR,
        kind=PATH,
        help="state directory of 'smsrx dev'; other commands find its dev.json there",
    )
    log_level: str = setting(
        "SMSRX_LOG_LEVEL", default="INFO", kind=_LOG_LEVEL, help=either(LOG_LEVELS)
    )


@settings_group
class ReceiverSettings:
    """The carrier-facing receiver: its listener, TLS, allowlists, limits, dedup and spool."""

    receiver_host: str = setting(
        "SMSRX_RECEIVER_HOST", default="0.0.0.0", help="address the receiver listens on"
    )
    receiver_port: int = setting(
        "SMSRX_RECEIVER_PORT", default=8443, kind=PORT, help="port of the carrier-facing receiver"
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


@settings_group
class WorkerSettings:
    """The consumer-group workers: batches, the expiry sweep and the inbound rules."""

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
    inbound_routes: Path | None = setting(
        "SMSRX_INBOUND_ROUTES",
        default=None,
        kind=PATH,
        help="TOML rules file: keyword routes of inbound SMS, opt-out and opt-in keywords "
        "(docs/inbound.md)",
        shown="none: default keywords, every other message routed 'default'",
    )


@settings_group
class OrangeSettings:
    """Orange's subscription API: credentials, sender, callback URL, timeouts."""

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
