"""The settings of status polling (``smsrx consumer poller``): its schedule and limits,
and the credentials of the carriers whose status APIs it queries (Gateway SMS, VavaSMS).
A provider is polled only when all of its credentials are set."""

from __future__ import annotations

from smsrx.envvars import (
    DURATION,
    PORT,
    PROVIDER_URL,
    ConfigError,
    Kind,
    at_least,
    parse_duration,
    setting,
    settings_group,
)
from smsrx.statuses import Status

__all__ = ["DEFAULT_SCHEDULE", "PollSettings", "parse_schedule", "parse_status_map"]

DEFAULT_SCHEDULE = "1m,5m,15m,1h,3h,6h,12h"


def parse_schedule(name: str, text: str) -> tuple[float, ...]:
    """``1m,5m,1h``: the delays after the submission, one per poll; the last repeats."""
    parts = [p.strip() for p in text.split(",")]
    if not all(parts):
        raise ConfigError(f"{name}={text!r}: expected delays separated by commas, e.g. 1m,5m,1h")
    delays = tuple(parse_duration(name, p) for p in parts)
    if any(d <= 0 for d in delays):
        raise ConfigError(f"{name}={text!r}: every delay must be longer than 0s")
    return delays


def parse_status_map(name: str, text: str) -> tuple[tuple[str, Status], ...]:
    """``delivrd=delivered,undeliv=failed``: carrier values added to a status mapping."""
    rows: dict[str, Status] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        value, sep, status = part.partition("=")
        if not sep or not value.strip():
            raise ConfigError(f"{name}: {part!r} is not VALUE=STATUS")
        try:
            rows[value.strip()] = Status(status.strip().lower())
        except ValueError:
            choices = ", ".join(s.value for s in Status)
            raise ConfigError(f"{name}: {status.strip()!r} is not one of {choices}") from None
    return tuple(rows.items())


def _rate(name: str, text: str) -> float:
    try:
        value = float(text.strip())
    except ValueError:
        raise ConfigError(f"{name}={text.strip()!r}: expected requests per second") from None
    if not 0 < value <= 10_000:
        raise ConfigError(f"{name}={value:g}: must be above 0 and at most 10000")
    return value


SCHEDULE = Kind("delays", parse_schedule)
STATUS_MAP = Kind("status map", parse_status_map)
RATE = Kind("requests/s", _rate)


@settings_group
class PollSettings:
    """Status polling: schedule, concurrency, rate limits, and carrier credentials."""

    poller_metrics_port: int = setting(
        "SMSRX_POLLER_METRICS_PORT", default=9107, kind=PORT, help="poller /metrics port"
    )
    poll_schedule: tuple[float, ...] = setting(
        "SMSRX_POLL_SCHEDULE",
        default=DEFAULT_SCHEDULE,
        kind=SCHEDULE,
        help="delays after a submission at which each recipient's status is polled; the "
        "last repeats until SMSRX_EXPIRY_HORIZON",
    )
    poll_concurrency: int = setting(
        "SMSRX_POLL_CONCURRENCY",
        default=8,
        kind=at_least(1),
        help="status API requests in flight at once, across providers",
    )
    poll_timeout: float = setting(
        "SMSRX_POLL_TIMEOUT", default="10s", kind=DURATION, help="timeout of one status request"
    )
    gatewaysms_api_url: str = setting(
        "SMSRX_GATEWAYSMS_API_URL",
        default="https://ws.messaggisms.com",
        kind=PROVIDER_URL,
        help="Gateway SMS API base URL, https:// only",
    )
    gatewaysms_token: str | None = setting(
        "SMSRX_GATEWAYSMS_TOKEN",
        default=None,
        help="Gateway SMS Bearer token; polling Gateway SMS needs it",
        secret=True,
    )
    gatewaysms_poll_rate: float = setting(
        "SMSRX_GATEWAYSMS_POLL_RATE",
        default=5.0,
        kind=RATE,
        help="Gateway SMS status requests per second, at most",
    )
    vavasms_status_url: str = setting(
        "SMSRX_VAVASMS_STATUS_URL",
        default="https://vavasms.com/api/v1/text/status",
        kind=PROVIDER_URL,
        help="full URL of VavaSMS's status check (its doc gives the parameters, not the "
        "path), https:// only",
    )
    vavasms_username: str | None = setting(
        "SMSRX_VAVASMS_USERNAME",
        default=None,
        help="VavaSMS account e-mail; polling VavaSMS needs it and the password",
    )
    vavasms_password: str | None = setting(
        "SMSRX_VAVASMS_PASSWORD", default=None, help="VavaSMS account password", secret=True
    )
    vavasms_poll_rate: float = setting(
        "SMSRX_VAVASMS_POLL_RATE",
        default=5.0,
        kind=RATE,
        help="VavaSMS status requests per second, at most",
    )
    vavasms_status_map: tuple[tuple[str, Status], ...] = setting(
        "SMSRX_VAVASMS_STATUS_MAP",
        default=(),
        kind=STATUS_MAP,
        help="VavaSMS status values to add to its mapping, VALUE=STATUS,... (docs/statuses.md)",
        shown="none",
    )
