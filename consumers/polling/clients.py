"""The poll client of each provider that has one, and which of them can be polled here:
those whose every credential setting is set (``Provider.credential_envs``)."""

from __future__ import annotations

from collections.abc import Callable

from consumers.polling.client import PollClient
from consumers.polling.gatewaysms import GatewaySmsClient
from consumers.polling.vavasms import VavaSmsClient
from smsrx import providers
from smsrx.settings import DECLARED, Settings

__all__ = ["FACTORIES", "missing_credentials", "open_clients", "poll_rate", "pollable"]

FACTORIES: dict[str, Callable[[Settings], PollClient]] = {
    "gatewaysms": GatewaySmsClient.from_settings,
    "vavasms": VavaSmsClient.from_settings,
}
"""Each provider with a status API, and how to build its client from the settings."""

_FIELDS = {declared.env: name for name, declared in DECLARED.items()}


def missing_credentials(settings: Settings) -> dict[str, list[str]]:
    """For each provider with a status API, the credential variables that are not set."""
    return {
        name: [
            env
            for env in providers.get(name).credential_envs
            if not getattr(settings, _FIELDS[env])
        ]
        for name in FACTORIES
    }


def poll_rate(settings: Settings, name: str) -> float:
    """The requests per second allowed to provider ``name``'s status API."""
    env = providers.get(name).poll_rate_env
    if env is None:
        raise ValueError(f"{name} declares no poll rate setting")
    return float(getattr(settings, _FIELDS[env]))


def pollable(settings: Settings) -> list[str]:
    """The providers this deployment can poll: every credential set."""
    return [name for name, missing in missing_credentials(settings).items() if not missing]


def open_clients(settings: Settings) -> dict[str, PollClient]:
    """A client for each provider that can be polled."""
    return {name: FACTORIES[name](settings) for name in pollable(settings)}
