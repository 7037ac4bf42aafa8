"""Pure URL handling: the callback URL Orange accepts, and the paths of its API.

Orange posts delivery receipts only to ``https://`` on port 443, and echoes a
registered URL back with ``:443`` spelled out, so URLs are compared normalised.
"""

from __future__ import annotations

from urllib.parse import quote, unquote, urlsplit, urlunsplit

from subscriptions.errors import InvalidNotifyURL, UnexpectedResponse

__all__ = [
    "normalise_url",
    "same_url",
    "sender_segment",
    "subscription_id_from_resource_url",
    "validate_notify_url",
]

_DEFAULT_PORTS = {"https": 443, "http": 80}


def validate_notify_url(url: str) -> str:
    """Return ``url`` if Orange can post receipts to it, else raise :class:`InvalidNotifyURL`."""
    text = url.strip()
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        raise InvalidNotifyURL(f"notify URL {text!r} is not a valid URL") from None
    if parts.scheme.lower() != "https":
        raise InvalidNotifyURL(
            f"notify URL {text!r} must start with https:// — "
            "Orange posts delivery receipts only to HTTPS callbacks on port 443"
        )
    if not parts.hostname:
        raise InvalidNotifyURL(f"notify URL {text!r} has no host name")
    if port not in (None, 443):
        raise InvalidNotifyURL(
            f"notify URL {text!r} uses port {port} — "
            "Orange posts delivery receipts only to port 443; serve the callback there "
            "(a reverse proxy can forward to the receiver's port)"
        )
    if parts.username or parts.password:
        raise InvalidNotifyURL(f"notify URL {text!r} must not carry a user name or password")
    return text


def normalise_url(url: str) -> str:
    """``url`` with a lower-case scheme and host and without its default port."""
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    if ":" in host:
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:
        return url.strip()
    netloc = host if port is None or port == _DEFAULT_PORTS.get(scheme) else f"{host}:{port}"
    return urlunsplit((scheme, netloc, parts.path or "/", parts.query, parts.fragment))


def same_url(left: str, right: str) -> bool:
    """Whether two URLs name the same callback (``https://h/p`` is ``https://h:443/p``)."""
    return normalise_url(left) == normalise_url(right)


def sender_segment(sender: str) -> str:
    """The sender as Orange's paths spell it: ``tel:+2250000`` URL-encoded, ``tel%3A%2B2250000``."""
    return quote(f"tel:+{sender}", safe="")


def subscription_id_from_resource_url(resource_url: str) -> str:
    """The subscription id at the end of ``.../outbound/subscriptions/{id}``."""
    path = urlsplit(resource_url.strip()).path.rstrip("/")
    head, _, last = path.rpartition("/")
    if not last or not head.endswith("/subscriptions"):
        raise UnexpectedResponse(
            f"Orange returned resourceURL {resource_url!r}, which does not end in "
            "/subscriptions/{id}"
        )
    return unquote(last)
