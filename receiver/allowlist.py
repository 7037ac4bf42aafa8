"""Source-address checks: which client sent a request, and may it post here.

The client is the direct TCP peer, unless that peer is a trusted proxy. Then the
``X-Forwarded-For`` chain is read from the right, skipping trusted proxies: the
first address that is not one is the client. Entries to its left were written by
the client itself and can be forged, so they never matter. (aiohttp-remotes'
``XForwardedStrict`` refuses every request whose peer is not a proxy, but carriers
also reach us directly, so the rule is spelled out here instead.)
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Iterable, Sequence

from receiver.errors import Forbidden
from smsrx.settings import Network

__all__ = ["Address", "client_address", "is_allowed", "parse_address"]

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def parse_address(text: str) -> Address:
    """An IP address; an IPv4-mapped IPv6 address (``::ffff:a.b.c.d``) becomes IPv4."""
    text = text.strip()
    if text.startswith("[") and "]" in text:  # "[v6]:port"
        text = text[1 : text.index("]")]
    elif text.count(":") == 1:  # "v4:port"
        text = text.split(":", 1)[0]
    address = ipaddress.ip_address(text.split("%", 1)[0])
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


# Carriers post from a handful of addresses: the peer of each request is parsed once.
_parse_peer = functools.lru_cache(maxsize=1024)(parse_address)


def is_allowed(address: Address, networks: Iterable[Network]) -> bool:
    """Whether ``address`` is inside one of ``networks`` (same IP version)."""
    return any(address.version == net.version and address in net for net in networks)


def client_address(
    peer: str | None, forwarded_for: Sequence[str], trusted_proxies: Sequence[Network]
) -> Address:
    """The address of the client that sent a request, or :class:`Forbidden`."""
    if not peer:
        raise Forbidden("no peer address", reason="refused_ip")
    try:
        client = _parse_peer(peer)
    except ValueError:
        raise Forbidden(f"unparseable peer address {peer!r}", reason="refused_ip") from None
    if not trusted_proxies or not forwarded_for or not is_allowed(client, trusted_proxies):
        return client
    hops = [hop for header in forwarded_for for hop in header.split(",")]
    for hop in reversed(hops):
        try:
            client = parse_address(hop)
        except ValueError:
            raise Forbidden("malformed X-Forwarded-For", reason="bad_forwarded") from None
        if not is_allowed(client, trusted_proxies):
            return client
    return client
