"""``smsrx doctor``: which carriers' status APIs this deployment polls (README, "Carriers")."""

from __future__ import annotations

from consumers.polling.clients import missing_credentials
from smsrx import providers
from smsrx.cli.dev.state import RunningStack
from smsrx.cli.doctor_check import Check, passed
from smsrx.settings import Settings

__all__ = ["polling"]


def polling(settings: Settings, dev: RunningStack | None = None) -> list[Check]:
    """One item per provider with a status API: polled, or what it needs to be. Beside a
    running ``smsrx dev`` (``dev``), a provider its poller polls counts as polled: it was
    given the credentials in the terminal that started it."""
    checks = []
    polled_by_dev = dev.polled if dev is not None else ()
    for name, missing in missing_credentials(settings).items():
        title = providers.get(name).title
        if not missing:
            checks.append(passed(f"polling {name}", f"{title} is polled (smsrx consumer poller)"))
        elif name in polled_by_dev:
            assert dev is not None
            checks.append(
                passed(
                    f"polling {name}",
                    f"{title} is polled by the poller of 'smsrx dev' (pid {dev.pid}), "
                    "with the credentials it was started with",
                )
            )
        else:  # as for Orange's subscription: a carrier this deployment may not use
            checks.append(
                passed(
                    f"polling {name}",
                    f"not configured: {title}'s messages would stay 'sent' until expired; "
                    f"set {' and '.join(missing)} to poll its status API",
                )
            )
    return checks
