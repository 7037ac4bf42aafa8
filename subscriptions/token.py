"""Orange's OAuth2 access token: parsed without I/O, cached until shortly before it expires.

Orange sends ``expires_in`` as a string of seconds (``"7776000"``, 90 days). The
token's value never appears in a ``repr``, a log line or an error.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from subscriptions.errors import UnexpectedResponse

__all__ = ["AccessToken", "Secret", "TokenCache", "parse_token_response", "refresh_margin"]

MAX_REFRESH_MARGIN = 300.0
"""Refresh at most this many seconds before expiry (5 minutes of a 90-day token)."""


class Secret:
    """A credential that shows as ``***`` in every repr, str and traceback."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def reveal(self) -> str:
        """The value itself, for the one header that carries it."""
        return self._value


def refresh_margin(lifetime: float) -> float:
    """How long before expiry a token stops being used: a tenth of its life, at most 5 min."""
    return min(MAX_REFRESH_MARGIN, lifetime / 10)


@dataclass(frozen=True, slots=True)
class AccessToken:
    """A bearer token and the monotonic time after which we stop using it."""

    value: str = field(repr=False)
    """The secret itself: sent in ``Authorization: Bearer``, never logged."""
    lifetime: float
    """``expires_in`` as Orange sent it, in seconds."""
    use_until: float
    """Monotonic clock reading after which the token is refreshed."""

    @property
    def authorization(self) -> str:
        """The ``Authorization`` header value for API calls."""
        return f"Bearer {self.value}"


def parse_token_response(body: bytes, *, now: float) -> AccessToken:
    """Turn the token endpoint's JSON into an :class:`AccessToken` valid from ``now``."""
    try:
        data: Any = orjson.loads(body)
        value = data["access_token"]
        lifetime = float(data["expires_in"])  # a string in Orange's answers; a number is fine too
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        raise UnexpectedResponse(
            "Orange's token endpoint did not return access_token and expires_in as documented"
        ) from None
    token_type = data.get("token_type", "Bearer")
    if not isinstance(value, str) or not value or lifetime <= 0:
        raise UnexpectedResponse("Orange's token endpoint returned an empty or expired token")
    if not isinstance(token_type, str) or token_type.lower() != "bearer":
        raise UnexpectedResponse(f"Orange's token endpoint returned token_type {token_type!r}")
    return AccessToken(
        value=value, lifetime=lifetime, use_until=now + lifetime - refresh_margin(lifetime)
    )


class TokenCache:
    """Holds the current token; knows when it is too old to use."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._token: AccessToken | None = None

    def __repr__(self) -> str:
        return f"<TokenCache {'fresh' if self.get() else 'empty'}>"

    def get(self) -> AccessToken | None:
        """The cached token if it is still fresh, else ``None``."""
        if self._token is not None and self.clock() < self._token.use_until:
            return self._token
        return None

    def store(self, body: bytes) -> AccessToken:
        """Parse a token response, keep the token and return it."""
        self._token = parse_token_response(body, now=self.clock())
        return self._token

    def discard(self, token: AccessToken | None = None) -> None:
        """Forget the cached token (only if it is still ``token``, when one is given)."""
        if token is None or self._token is token:
            self._token = None
