"""What a provider declares: :class:`Provider` and its :class:`StatusMapping`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from smsrx.errors import EXIT_USAGE, SmsrxError
from smsrx.statuses import FINAL_STATUSES, Status

__all__ = ["Mapped", "Provider", "StatusMapping", "UnknownProvider", "normalise"]


class UnknownProvider(SmsrxError, ValueError):
    """A provider name that is not in the registry."""

    exit_code = EXIT_USAGE


def normalise(value: str) -> str:
    """How a carrier's status text is compared: trimmed and case-folded (``Envoyé``,
    ``ENVOYÉ`` and ``envoyé `` are one value)."""
    return value.strip().casefold()


@dataclass(frozen=True, slots=True)
class Mapped:
    """A carrier status, mapped: its canonical status, and whether the table knew it."""

    status: Status
    known: bool

    @property
    def is_final(self) -> bool:
        """Whether the carrier will report nothing more for this recipient."""
        return self.status in FINAL_STATUSES


_UNMAPPED = Mapped(Status.UNKNOWN, known=False)


@dataclass(frozen=True, slots=True)
class StatusMapping:
    """One provider's table from its status values to canonical statuses.

    Values are matched after :func:`normalise`; an unmapped value is ``unknown`` with
    ``known=False`` (callers count and log it, and keep the carrier's value verbatim).
    """

    rows: Mapping[str, Status]
    """The documented rows, as the carrier spells each value."""
    documented: frozenset[str] = frozenset()
    """The values the carrier's own documentation shows; the others are likely values
    smsrx maps ahead of seeing them."""
    _exact: dict[str, Mapped] = field(init=False, repr=False, compare=False)
    _index: dict[str, Mapped] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        exact = {k: Mapped(v, known=True) for k, v in self.rows.items()}
        object.__setattr__(self, "_exact", exact)
        object.__setattr__(self, "_index", {normalise(k): m for k, m in exact.items()})

    def map(self, value: str) -> Mapped:
        """The canonical status of ``value``; ``unknown`` when the table does not have it."""
        mapped = self._exact.get(value)  # the carrier's own spelling: the usual case
        if mapped is None:
            mapped = self._index.get(normalise(value), _UNMAPPED)
        return mapped

    def extended(self, extra: Mapping[str, Status]) -> StatusMapping:
        """This table with ``extra`` rows added or replacing (a setting's additions)."""
        return StatusMapping({**self.rows, **extra}, self.documented)


@dataclass(frozen=True, slots=True)
class Provider:
    """Everything smsrx knows about one carrier."""

    name: str
    """The name events carry in ``provider``."""
    title: str
    """The carrier as people call it."""
    statuses: StatusMapping
    """Its status values to canonical statuses (``docs/statuses.md``)."""
    push: tuple[str, ...] = ()
    """What it pushes to the receiver: ``"receipts"``, ``"inbound"``."""
    polls: bool = False
    """Whether it documents a status API that the poller queries."""
    polls_per_message: bool = False
    """Whether one status request answers for every recipient of a message (else one
    request per recipient)."""
    status_key: str = "status"
    """Which field of the carrier's answer the mapping reads."""
    allowlist_env: str | None = None
    """The setting that holds the networks allowed to post its callbacks."""
    credential_envs: tuple[str, ...] = ()
    """The settings its status API needs; the poller polls it only when all are set."""
    poll_rate_env: str | None = None
    """The setting that caps its status requests per second."""
    knows: str = ""
    """What smsrx can and cannot learn about its messages (the README's table)."""
