"""Which Orange settings the subscription manager needs, and what to say when one is missing."""

from __future__ import annotations

import re

from smsrx.settings import ConfigError, Settings
from subscriptions.errors import InvalidNotifyURL
from subscriptions.urls import validate_notify_url

__all__ = [
    "REQUIRED",
    "desired_notify_url",
    "missing_credentials",
    "require",
    "skip_reason",
    "wanted_notify_url",
]

REQUIRED = ("SMSRX_ORANGE_AUTH_HEADER", "SMSRX_ORANGE_SENDER", "SMSRX_ORANGE_NOTIFY_URL")
"""The variables the reconciler cannot run without."""

_HINTS = {
    "SMSRX_ORANGE_AUTH_HEADER": "the app's Authorization header from the Orange Developer portal, 'Basic ...'",
    "SMSRX_ORANGE_SENDER": "the sender number, country code and number without '+', e.g. 2250000",
    "SMSRX_ORANGE_NOTIFY_URL": "the https:// URL on port 443 where Orange should post receipts",
}
_SENDER = re.compile(r"^[1-9]\d{3,14}$")


def _value(settings: Settings, name: str) -> str | None:
    return {
        "SMSRX_ORANGE_AUTH_HEADER": settings.orange_auth_header,
        "SMSRX_ORANGE_SENDER": settings.orange_sender,
        "SMSRX_ORANGE_NOTIFY_URL": settings.orange_notify_url,
    }[name]


def _unset(name: str) -> ConfigError:
    return ConfigError(f"{name} is not set: {_HINTS[name]}")


def missing_credentials(settings: Settings) -> list[str]:
    """Names of the ``SMSRX_ORANGE_*`` variables the reconciler needs and that are unset."""
    return [name for name in REQUIRED if not _value(settings, name)]


def skip_reason(settings: Settings) -> str | None:
    """One line saying why ``smsrx dev`` does not run the reconciler, or ``None`` to run it."""
    missing = missing_credentials(settings)
    if missing:
        return f"subscriptions: reconciler not started, {', '.join(missing)} not set"
    try:
        desired_notify_url(settings)
        require(settings, "SMSRX_ORANGE_SENDER")
    except (ConfigError, InvalidNotifyURL) as exc:
        return f"subscriptions: reconciler not started, {exc}"
    return None


def require(settings: Settings, *names: str) -> list[str]:
    """The values of ``names``, or :class:`ConfigError` naming the first one unset or malformed."""
    values = []
    for name in names:
        value = _value(settings, name)
        if not value:
            raise _unset(name)
        if name == "SMSRX_ORANGE_SENDER" and not _SENDER.match(value):
            raise ConfigError(
                f"{name}={value!r}: expected the country code and number, digits only, "
                "without '+' or '00', e.g. 2250000"
            )
        values.append(value)
    return values


def wanted_notify_url(settings: Settings, override: str | None = None) -> str | None:
    """``override`` (``--notify-url``) or ``SMSRX_ORANGE_NOTIFY_URL``, checked; ``None`` if neither.

    Raises :class:`InvalidNotifyURL` when Orange would refuse the URL.
    """
    if override:
        return validate_notify_url(override)
    if not settings.orange_notify_url:
        return None
    try:
        return validate_notify_url(settings.orange_notify_url)
    except InvalidNotifyURL as exc:
        raise InvalidNotifyURL(f"SMSRX_ORANGE_NOTIFY_URL: {exc.message}") from None


def desired_notify_url(settings: Settings, override: str | None = None) -> str:
    """The callback URL we want registered: ``override`` (``--notify-url``) or the setting.

    Raises :class:`ConfigError` when neither is set, :class:`InvalidNotifyURL` when
    Orange would refuse it.
    """
    url = wanted_notify_url(settings, override)
    if url is None:
        raise _unset("SMSRX_ORANGE_NOTIFY_URL")
    return url
