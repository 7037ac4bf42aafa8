"""Gateway SMS (messaggisms): its recipients API, parsed without I/O, and its poll client.

One ``GET {base}/messages/{id}/recipients/`` with ``Authorization: Bearer <token>``
answers every recipient of a message::

    {"data": [{"number": "+39-3495155018", "state": "DELIVERED",
               "report": {"status": {"groupName": "DELIVERED",
                                     "name": "DELIVERED_TO_HANDSET", ...},
                          "doneAt": "2020-03-03T15:11:03.168+0100", ...},
               "timestamp_delivery": {"$date": {"$numberLong": "1583244663000"}}, ...}],
     "message": "1 Result", "credit": 90.2, "success": true, "error": null}

The group (``report.status.groupName``) decides the canonical status; the status name
is kept verbatim. A top-level ``state`` that disagrees with the group makes the item
``unknown``: the carrier contradicts itself, and we do not pick a side.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from consumers.polling.client import Outcome, PolledStatus, PollResult
from consumers.polling.http import HttpPollClient
from smsrx.envvars import ConfigError
from smsrx.errors import SmsrxError
from smsrx.phones import InvalidPhoneNumber, to_e164
from smsrx.privacy import Masked
from smsrx.providers import Mapped, StatusMapping, get
from smsrx.settings import Settings
from smsrx.statuses import Status

__all__ = [
    "PROVIDER",
    "GatewaySmsClient",
    "UnexpectedAnswer",
    "parse_answer",
    "parse_recipients",
]

logger = logging.getLogger(__name__)

PROVIDER = "gatewaysms"


class UnexpectedAnswer(SmsrxError, ValueError):
    """The answer is not the documented envelope; the message says what is wrong."""

    retriable = True


class _Malformed(ValueError):
    """One recipient item lacks a field or has the wrong type."""


def _at(obj: Any, *path: str) -> Any:
    """``obj[path[0]][path[1]]...``, or raise :class:`_Malformed` naming the path."""
    for depth, key in enumerate(path):
        if not isinstance(obj, dict) or key not in obj:
            raise _Malformed(".".join(path[: depth + 1]) + " is missing")
        obj = obj[key]
    return obj


def _text(obj: Any, *path: str) -> str:
    value = _at(obj, *path)
    if not isinstance(value, str) or not value.strip():
        raise _Malformed(".".join(path) + " is not a non-empty string")
    return value


def _occurred_at(item: dict[str, Any]) -> datetime | None:
    """``timestamp_delivery`` (ms since the epoch), else ``report.doneAt``, else None."""
    try:
        millis = int(_at(item, "timestamp_delivery", "$date", "$numberLong"))
        return datetime.fromtimestamp(millis / 1000, UTC)
    except (_Malformed, TypeError, ValueError, OverflowError, OSError):
        pass
    try:
        done = datetime.fromisoformat(_text(item, "report", "doneAt"))
    except (_Malformed, ValueError):
        return None
    return done.astimezone(UTC) if done.tzinfo is not None else None


def _recipient(item: dict[str, Any]) -> str:
    """``+39-3495155018`` (or ``report.to``, ``393495155018``) as E.164."""
    raw = item.get("number")
    if not isinstance(raw, str):
        raw = _text(item, "report", "to")
    try:
        return to_e164(raw.replace("-", "").replace(" ", ""))
    except InvalidPhoneNumber as exc:
        raise _Malformed(f"number is not a phone number ({exc})") from None


def _status(item: Any, mapping: StatusMapping) -> PolledStatus:
    if not isinstance(item, dict):
        raise _Malformed("not an object")
    recipient = _recipient(item)
    group = _text(item, "report", "status", "groupName")
    name = _text(item, "report", "status", "name")
    state = item.get("state")
    if state is not None and not isinstance(state, str):
        raise _Malformed("state is not a string")
    mapped = mapping.map(group)
    if state is not None and state.strip().casefold() != group.strip().casefold():
        logger.warning(
            "gatewaysms message %s recipient %s: state %r disagrees with "
            "report.status.groupName %r; status kept as unknown",
            item.get("message_id"),
            Masked(recipient),
            state,
            group,
        )
        mapped = Mapped(Status.UNKNOWN, known=False)
    return PolledStatus(recipient, name, mapped, _occurred_at(item), item)


def parse_recipients(body: Any, mapping: StatusMapping) -> list[PolledStatus]:
    """The statuses of a recipients answer; a malformed item is skipped with a warning.
    Raise :class:`UnexpectedAnswer` when the body is not the documented envelope."""
    if not isinstance(body, dict):
        raise UnexpectedAnswer("answer is not a JSON object")
    data = body.get("data")
    if not isinstance(data, list):
        raise UnexpectedAnswer("answer has no data list")
    statuses = []
    for i, item in enumerate(data):
        try:
            statuses.append(_status(item, mapping))
        except _Malformed as exc:
            logger.warning("gatewaysms answer: data[%d] skipped: %s", i, exc)
    return statuses


def parse_answer(body: Any, mapping: StatusMapping, recipients: Sequence[str]) -> PollResult:
    """A 200 answer as a poll result: the statuses of ``recipients`` (E.164) only, or
    why there are none when the envelope says ``success: false``."""
    if isinstance(body, dict) and body.get("success") is False:
        error = str(body.get("error"))
        if error == "404":
            return PollResult(Outcome.NOT_FOUND, reason="carrier error 404")
        if error in ("401", "403"):
            return PollResult(Outcome.AUTH_FAILED, reason=f"carrier error {error}")
        return PollResult(Outcome.RETRY, reason=f"carrier error {error[:40]}")
    try:
        statuses = parse_recipients(body, mapping)
    except UnexpectedAnswer as exc:
        return PollResult(Outcome.RETRY, reason=str(exc))
    wanted = set(recipients)
    return PollResult(Outcome.OK, [s for s in statuses if s.recipient in wanted])


class GatewaySmsClient(HttpPollClient):
    """Gateway SMS's recipients API: one request per poll, for every recipient."""

    provider = PROVIDER
    not_found_statuses = frozenset({404})

    def __init__(
        self, base_url: str, token: str, timeout: float, mapping: StatusMapping | None = None
    ) -> None:
        super().__init__(timeout)
        self._base = base_url.rstrip("/")
        self._authorization = f"Bearer {token}"
        self._token = token
        self._mapping = mapping or get(PROVIDER).statuses

    @classmethod
    def from_settings(cls, settings: Settings) -> GatewaySmsClient:
        """A client of ``settings.gatewaysms_api_url``; raise ConfigError without a token."""
        if not settings.gatewaysms_token:
            raise ConfigError("SMSRX_GATEWAYSMS_TOKEN is not set: Gateway SMS cannot be polled")
        return cls(settings.gatewaysms_api_url, settings.gatewaysms_token, settings.poll_timeout)

    def __repr__(self) -> str:
        return f"GatewaySmsClient({self._base!r})"

    @property
    def _secret(self) -> str:
        return self._token

    async def poll(self, message_id: str, recipients: Sequence[str]) -> PollResult:
        """The statuses of ``recipients`` of ``message_id``; never raises for the carrier."""
        url = f"{self._base}/messages/{quote(message_id, safe='')}/recipients/"
        headers = {"Authorization": self._authorization, "Accept": "application/json"}
        body = await self._request("GET", url, headers=headers)
        if isinstance(body, PollResult):
            return body
        return parse_answer(body, self._mapping, recipients)
