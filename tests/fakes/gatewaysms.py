"""A fake of Gateway SMS's (messaggisms) recipients API, over real HTTP on loopback.

It answers the two documented reads, ``GET /messages/{id}/recipients/`` and
``GET /messages/{id}/recipients/{number}``, with ``Authorization: Bearer <token>``, in
the documentation's envelope (``data``, ``message``, ``credit``, ``success``, ``error``)
and Recipient_Object shape: ``number`` as ``+39-3495155018``, the group in ``state``
and ``report.status.groupName``, the status in ``state_description`` and
``report.status.name``, and ``timestamp_delivery`` only once the recipient is final.
An unknown message (or number) is a 404 with a JSON body; a bad token a 401.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import phonenumbers
from aiohttp import web

from tests.fakes.common import FakeServer, Script, json_response

__all__ = ["STATUSES", "FakeGatewaySms", "GatewayState"]

STATUSES: dict[str, tuple[int, int, str, str]] = {
    "PENDING": (1, 7, "PENDING_ENROUTE", "Message sent to next instance"),
    "UNDELIVERABLE": (2, 9, "UNDELIVERABLE_NOT_DELIVERED", "Message sent not delivered"),
    "DELIVERED": (3, 5, "DELIVERED_TO_HANDSET", "Message delivered to handset"),
    "EXPIRED": (4, 15, "EXPIRED_EXPIRED", "Message expired"),
    "REJECTED": (5, 6, "REJECTED_NETWORK", "Network is forbidden"),
}
"""Group name to (groupId, status id, status name, description), Infobip's model."""

_FINAL = frozenset({"UNDELIVERABLE", "DELIVERED", "EXPIRED", "REJECTED"})
_CET = timezone(timedelta(hours=1))  # the documentation's timestamps are +0100
_NOT_FOUND = {"data": [], "success": False, "message": "Not found", "error": 404}
_UNAUTHORIZED = {"data": [], "success": False, "message": "Unauthorized", "error": 401}


@dataclass(frozen=True)
class GatewayState:
    """One state of a recipient: its group, and optionally a status name and a top-level
    ``state`` that disagrees with the group (to test inconsistent answers)."""

    group: str
    name: str | None = None
    state: str | None = None


def _ms(at: float) -> dict[str, Any]:
    return {"$date": {"$numberLong": str(int(at * 1000))}}


def _iso(at: float) -> str:
    """``2020-03-03T15:11:03.168+0100``, as the documentation writes ``doneAt``."""
    local = datetime.fromtimestamp(at, UTC).astimezone(_CET)
    return local.strftime("%Y-%m-%dT%H:%M:%S.") + f"{local.microsecond // 1000:03d}+0100"


@dataclass
class _Recipient:
    e164: str
    index: int
    script: Script[GatewayState]
    sent_at: float
    report_id: str = field(default_factory=lambda: secrets.token_hex(12))
    done_at: float | None = None

    def digits(self) -> str:
        return self.e164.lstrip("+")

    def item(self, message_id: str) -> dict[str, Any]:
        """The Recipient_Object of this poll (each call is one poll)."""
        now = self.script.advance()
        group_id, status_id, name, description = STATUSES.get(
            now.group, (0, 0, now.group, now.group)
        )
        name = now.name or name
        final = now.group in _FINAL
        if final and self.done_at is None:
            self.done_at = time.time()
        number = phonenumbers.parse(self.e164, None)
        prefix = f"+{number.country_code}"
        national = phonenumbers.national_significant_number(number)
        report: dict[str, Any] = {
            "price": {"pricePerMessage": 0.03, "currency": "EUR"},
            "status": {
                "id": status_id,
                "groupId": group_id,
                "groupName": now.group,
                "name": name,
                "description": description,
            },
            "error": {
                "id": 0,
                "name": "NO_ERROR",
                "description": "No Error",
                "groupId": 0,
                "groupName": "OK",
                "permanent": False,
            },
            "messageId": self.report_id,
            "smsCount": 1,
            "sentAt": _iso(self.sent_at),
            "to": self.digits(),
        }
        item: dict[str, Any] = {
            "number": f"{prefix}-{national}",
            "prefix": prefix,
            "send_id": f"{message_id}_{self.index}",
            "body": "test",
            "sms": 1,
            "remaining_chr": 156,
            "state": now.state or now.group,
            "state_description": name,
            "price": 0.03,
            "fields": [],
            "message_id": message_id,
            "i": self.index,
            "state_detail": description,
            "timestamp_sent": _ms(self.sent_at),
            "real_cost": 0.03,
            "report": report,
            "id": self.report_id,
        }
        if final and self.done_at is not None:
            report["doneAt"] = _iso(self.done_at)
            item["timestamp_delivery"] = _ms(self.done_at)
        return item


@dataclass
class FakeGatewaySms(FakeServer):
    """The fake API; ``url`` is its base URL once started."""

    token: str = "gw-test-token"
    credit: float = 90.20949999999985
    _messages: dict[str, list[_Recipient]] = field(default_factory=dict)

    def add_message(
        self,
        message_id: str,
        recipients: Mapping[str, Sequence[tuple[GatewayState | str, int]]],
    ) -> None:
        """A sent message; each E.164 recipient follows its script of (state, polls)."""
        sent_at = time.time()
        self._messages[message_id] = [
            _Recipient(
                e164,
                i,
                Script(
                    [(s if isinstance(s, GatewayState) else GatewayState(s), n) for s, n in steps]
                ),
                sent_at,
            )
            for i, (e164, steps) in enumerate(recipients.items())
        ]

    def forget(self, message_id: str) -> None:
        """The message is unknown from now on."""
        self._messages.pop(message_id, None)

    def polls(self, message_id: str, e164: str) -> int:
        """How many times a recipient's status was answered."""
        return next(r.script.polls for r in self._messages[message_id] if r.e164 == e164)

    def routes(self, app: web.Application) -> None:
        app.router.add_get("/messages/{id}/recipients/", self._recipients)
        app.router.add_get("/messages/{id}/recipients/{number}", self._recipient)

    async def message_id_of(self, request: web.Request) -> str | None:
        return request.match_info.get("id")

    def _authorised(self, request: web.Request) -> bool:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        return not self.bad_credentials and scheme == "Bearer" and token == self.token

    def _ok(self, message_id: str, recipients: list[_Recipient]) -> web.Response:
        data = [r.item(message_id) for r in recipients]
        return json_response(
            200,
            {
                "data": data,
                "message": f"{len(data)} Result{'' if len(data) == 1 else 's'}",
                "credit": self.credit,
                "success": True,
                "error": None,
            },
        )

    async def _recipients(self, request: web.Request) -> web.Response:
        if not self._authorised(request):
            return json_response(401, _UNAUTHORIZED)
        message_id = request.match_info["id"]
        if message_id not in self._messages:
            return json_response(404, _NOT_FOUND)
        return self._ok(message_id, self._messages[message_id])

    async def _recipient(self, request: web.Request) -> web.Response:
        if not self._authorised(request):
            return json_response(401, _UNAUTHORIZED)
        message_id = request.match_info["id"]
        digits = "".join(c for c in request.match_info["number"] if c.isdigit())
        found = [r for r in self._messages.get(message_id, []) if r.digits() == digits]
        if not found:
            return json_response(404, _NOT_FOUND)
        return self._ok(message_id, found)
