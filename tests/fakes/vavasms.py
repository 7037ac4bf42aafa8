"""A fake of VavaSMS's status check, over real HTTP on loopback.

``POST /api/v1/text/status`` with ``username``, ``password``, ``message_id`` and an
optional ``lot_id``, form-encoded as the documentation's samples send them (JSON is
accepted too). Every answer is HTTP 200 and says what happened in ``code``: ``0`` (an
int) with ``data[]`` items of ``status`` and a French ``description``, ``"901"`` for
bad credentials and ``"709"`` for an id it does not know (strings), as documented.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from tests.fakes.common import FakeServer, Script, json_response

__all__ = ["DESCRIPTIONS", "PATH", "FakeVavaSms", "VavaState"]

PATH = "/api/v1/text/status"

DESCRIPTIONS = {
    "sent": "Envoyé",
    "pending": "En attente",
    "delivered": "Livré",
    "failed": "Échec",
    "rejected": "Rejeté",
    "expired": "Expiré",
}
"""Status to the French description VavaSMS answers beside it."""

_INVALID_CREDENTIALS = {
    "code": "901",
    "status": "INVALID_CREDENTIALS",
    "description": "Identifiant de connexion incorrect",
}
_UNKNOWN_ID = {
    "code": "709",
    "message": "EXECUTION_ERROR",
    "description": "Aucun envoi existe pour ce ID",
    "data": [],
}


@dataclass(frozen=True)
class VavaState:
    """One answer's ``status``, and its ``description`` (the French default if None)."""

    status: str
    description: str | None = None


@dataclass
class _Message:
    lot_id: str
    script: Script[VavaState]


@dataclass
class FakeVavaSms(FakeServer):
    """The fake status check; ``url`` is its full URL once started."""

    username: str = "test@example.com"
    password: str = "vava-test-password"
    _messages: dict[str, _Message] = field(default_factory=dict)

    async def start(self) -> None:
        """Serve on a free loopback port; ``url`` is the status check's URL."""
        await super().start()
        self.url += PATH

    def add_message(
        self,
        message_id: str,
        steps: Sequence[tuple[VavaState | str, int]],
        lot_id: str = "LOT-20190617-1445425",
    ) -> None:
        """One recipient's message; it follows its script of (status, polls)."""
        script = Script([(s if isinstance(s, VavaState) else VavaState(s), n) for s, n in steps])
        self._messages[message_id] = _Message(lot_id, script)

    def forget(self, message_id: str) -> None:
        """The message is unknown from now on."""
        self._messages.pop(message_id, None)

    def polls(self, message_id: str) -> int:
        """How many times a message's status was answered."""
        return self._messages[message_id].script.polls

    def routes(self, app: web.Application) -> None:
        app.router.add_post(PATH, self._status)

    async def message_id_of(self, request: web.Request) -> str | None:
        value = (await _fields(request)).get("message_id")
        return value if isinstance(value, str) else None

    async def _status(self, request: web.Request) -> web.Response:
        fields = await _fields(request)
        if (
            self.bad_credentials
            or fields.get("username") != self.username
            or fields.get("password") != self.password
        ):
            return json_response(200, _INVALID_CREDENTIALS)
        message_id = fields.get("message_id")
        message = self._messages.get(message_id) if isinstance(message_id, str) else None
        lot_id = fields.get("lot_id")
        if message is None or (lot_id not in (None, "") and lot_id != message.lot_id):
            return json_response(200, _UNKNOWN_ID)
        now = message.script.advance()
        item = {
            "lot_id": message.lot_id,
            "message_id": message_id,
            "status": now.status,
            "description": now.description or DESCRIPTIONS.get(now.status, now.status),
        }
        return json_response(200, {"code": 0, "message": "OPERATION_SUCCES", "data": [item]})


async def _fields(request: web.Request) -> dict[str, Any]:
    """The request's parameters, form-encoded or JSON (an unreadable body has none)."""
    if request.content_type == "application/json":
        try:
            body = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            return {}
        return body if isinstance(body, dict) else {}
    return {k: v for k, v in (await request.post()).items() if isinstance(v, str)}
