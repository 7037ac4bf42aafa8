"""VavaSMS: its status check, parsed without I/O, and its poll client.

``POST {status_url}`` with the form ``username``, ``password``, ``message_id`` answers
HTTP 200 whatever happened, and says what in ``code``: ``0`` (an int) on success,
``"901"`` (a string) for refused credentials, ``"709"`` for an unknown id::

    {"code": 0, "message": "OPERATION_SUCCES",
     "data": [{"lot_id": "LOT-20190617-1445425", "message_id": "SM-20190617-1445914",
               "status": "sent", "description": "Envoyé"}]}

Each recipient of a send has its own ``message_id``, so one poll is about one recipient.
The documentation gives no time for a status, so ``occurred_at`` is None.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from consumers.polling.client import Outcome, PolledStatus, PollResult
from consumers.polling.http import HttpPollClient
from smsrx.envvars import ConfigError
from smsrx.providers import StatusMapping, get
from smsrx.settings import Settings

__all__ = ["PROVIDER", "VavaSmsClient", "parse_status"]

logger = logging.getLogger(__name__)

PROVIDER = "vavasms"

_SUCCESS = "0"
_INVALID_CREDENTIALS = "901"
_UNKNOWN_ID = "709"


def _item(item: Any, recipient: str, mapping: StatusMapping) -> PolledStatus | None:
    """One ``data[]`` item, or None (with a warning) when it is malformed."""
    status = item.get("status") if isinstance(item, dict) else None
    if not isinstance(item, dict) or not isinstance(status, str) or not status.strip():
        logger.warning("vavasms answer: item without a status string skipped")
        return None
    mapped = mapping.map(status)
    description = item.get("description")
    if not mapped.known and isinstance(description, str):
        # The French description may be known when the code is not ("Livré").
        by_description = mapping.map(description)
        if by_description.known:
            mapped = by_description
    return PolledStatus(recipient, status, mapped, None, item)


def parse_status(
    body: Any, recipient: str, mapping: StatusMapping, message_id: str | None = None
) -> PollResult:
    """A status check's answer for ``recipient`` (E.164). Items naming another
    ``message_id`` than the one given are ignored; ``code`` is compared as a string."""
    if not isinstance(body, dict):
        return PollResult(Outcome.RETRY, reason="answer is not a JSON object")
    if "code" not in body or isinstance(body["code"], bool | dict | list):
        return PollResult(Outcome.RETRY, reason="answer has no code")
    code = str(body["code"]).strip()
    if code == _INVALID_CREDENTIALS:
        return PollResult(Outcome.AUTH_FAILED, reason="carrier code 901 INVALID_CREDENTIALS")
    if code == _UNKNOWN_ID:
        return PollResult(Outcome.NOT_FOUND, reason="carrier code 709 EXECUTION_ERROR")
    if code != _SUCCESS:
        name = body.get("status") or body.get("message")
        label = f" {name[:40]}" if isinstance(name, str) else ""
        return PollResult(Outcome.RETRY, reason=f"carrier code {code[:20]}{label}")
    data = body.get("data")
    if not isinstance(data, list):
        return PollResult(Outcome.RETRY, reason="answer has no data list")
    statuses = []
    for item in data:
        other = isinstance(item, dict) and item.get("message_id") not in (None, message_id)
        if message_id is not None and other:
            continue
        if (polled := _item(item, recipient, mapping)) is not None:
            statuses.append(polled)
    return PollResult(Outcome.OK, statuses)


class VavaSmsClient(HttpPollClient):
    """VavaSMS's status check: one request per recipient's ``message_id``."""

    provider = PROVIDER

    def __init__(
        self,
        status_url: str,
        username: str,
        password: str,
        timeout: float,
        mapping: StatusMapping | None = None,
    ) -> None:
        super().__init__(timeout)
        self._url = status_url
        self._username = username
        self._password = password
        self._mapping = mapping or get(PROVIDER).statuses

    @classmethod
    def from_settings(cls, settings: Settings) -> VavaSmsClient:
        """A client of ``settings.vavasms_status_url`` with the mapping extended by
        ``SMSRX_VAVASMS_STATUS_MAP``; raise ConfigError without both credentials."""
        if not settings.vavasms_username or not settings.vavasms_password:
            raise ConfigError(
                "SMSRX_VAVASMS_USERNAME and SMSRX_VAVASMS_PASSWORD must both be set to poll VavaSMS"
            )
        mapping = get(PROVIDER).statuses.extended(dict(settings.vavasms_status_map))
        return cls(
            settings.vavasms_status_url,
            settings.vavasms_username,
            settings.vavasms_password,
            settings.poll_timeout,
            mapping,
        )

    def __repr__(self) -> str:
        return f"VavaSmsClient({self._url!r})"

    @property
    def _secret(self) -> str:
        return self._password

    async def poll(self, message_id: str, recipients: Sequence[str]) -> PollResult:
        """The status of the one recipient whose message is ``message_id``; VavaSMS
        answers its own errors with HTTP 200 and a ``code``."""
        if len(recipients) != 1:
            raise ValueError(f"VavaSMS polls one recipient per message id, not {len(recipients)}")
        form = {"username": self._username, "password": self._password, "message_id": message_id}
        body = await self._request(
            "POST", self._url, data=form, headers={"Accept": "application/json"}
        )
        if isinstance(body, PollResult):
            return body
        return parse_status(body, recipients[0], self._mapping, message_id)
