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

import aiohttp
import orjson

from consumers.polling.client import Outcome, PolledStatus, PollResult
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


def _retry_after(value: str | None) -> float | None:
    try:
        seconds = float(value) if value is not None else None
    except ValueError:
        return None  # an HTTP-date: the poller's own schedule decides
    return seconds if seconds is not None and 0 <= seconds < 86_400 else None


def _http_failure(status: int, retry_after: str | None) -> PollResult | None:
    """What a non-200 HTTP status means (VavaSMS answers its errors with a 200)."""
    if status == 200:
        return None
    if status in (401, 403):
        return PollResult(Outcome.AUTH_FAILED, reason=f"HTTP {status}")
    if status == 429:
        return PollResult(Outcome.RETRY, reason="HTTP 429", retry_after=_retry_after(retry_after))
    return PollResult(Outcome.RETRY, reason=f"HTTP {status}")


class VavaSmsClient:
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
        self._url = status_url
        self._username = username
        self._password = password
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._mapping = mapping or get(PROVIDER).statuses
        self._session: aiohttp.ClientSession | None = None

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

    async def poll(self, message_id: str, recipients: Sequence[str]) -> PollResult:
        """The status of the one recipient whose message is ``message_id``."""
        if len(recipients) != 1:
            raise ValueError(f"VavaSMS polls one recipient per message id, not {len(recipients)}")
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        form = {"username": self._username, "password": self._password, "message_id": message_id}
        try:
            async with self._session.post(
                self._url, data=form, headers={"Accept": "application/json"}
            ) as response:
                failure = _http_failure(response.status, response.headers.get("Retry-After"))
                if failure is not None:
                    return failure
                body = orjson.loads(await response.read())
        except TimeoutError:
            return PollResult(Outcome.RETRY, reason=f"no answer within {self._timeout.total}s")
        except aiohttp.ClientError as exc:
            return PollResult(Outcome.RETRY, reason=self._scrub(f"{type(exc).__name__}: {exc}"))
        except orjson.JSONDecodeError:
            return PollResult(Outcome.RETRY, reason="answer is not JSON")
        return parse_status(body, recipients[0], self._mapping, message_id)

    def _scrub(self, text: str) -> str:
        """One line, at most 200 characters, without the password."""
        if self._password:
            text = text.replace(self._password, "***")
        return " ".join(text.split())[:200]

    async def close(self) -> None:
        """Release the HTTP session."""
        if self._session is not None:
            await self._session.close()
            self._session = None
