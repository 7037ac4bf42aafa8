"""The provider registry: every carrier smsrx knows, one module each.

Each module (``orange``, ``gatewaysms``, ``vavasms``, ``mboasms``, ``orangepro``) declares
a :class:`~smsrx.providers.base.Provider`: its name as events carry it, how smsrx learns
its statuses (push callbacks, a status API to poll, or neither), its status mapping, and
the settings that hold its allowlist and credentials. The services look a provider up
here; its push parser lives in ``receiver.adapters`` and its poll client in
``consumers.polling``, since the shared package imports no service.

The status mappings are the versioned table of ``docs/statuses.md``
(:data:`MAPPING_VERSION`); a test pins that document to this code.
"""

from __future__ import annotations

from collections.abc import Mapping

from smsrx.providers import gatewaysms, mboasms, orange, orangepro, vavasms
from smsrx.providers.base import Mapped, Provider, StatusMapping, UnknownProvider

__all__ = [
    "MAPPING_VERSION",
    "NAMES",
    "PROVIDERS",
    "Mapped",
    "Provider",
    "StatusMapping",
    "UnknownProvider",
    "get",
]

MAPPING_VERSION = 1
"""Version of the status mapping table; bumped whenever a row changes meaning."""

PROVIDERS: Mapping[str, Provider] = {
    p.name: p
    for p in (
        orange.PROVIDER,
        gatewaysms.PROVIDER,
        vavasms.PROVIDER,
        mboasms.PROVIDER,
        orangepro.PROVIDER,
    )
}
"""Every provider, by the name events carry."""

NAMES: tuple[str, ...] = tuple(PROVIDERS)
"""Every provider name, in the order the documentation lists them."""


def get(name: str) -> Provider:
    """The provider called ``name``; raise :class:`UnknownProvider` naming the known ones."""
    try:
        return PROVIDERS[name]
    except KeyError:
        raise UnknownProvider(
            f"unknown provider {name!r}: expected one of {', '.join(NAMES)}"
        ) from None
