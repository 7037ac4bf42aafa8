"""What the fake status APIs share: the request log, the sliding-window rate limit, the
scripts of states that change after some polls, and a server with injectable faults."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import orjson
from aiohttp import web

from smsrx.cli.dev.process import free_port

T = TypeVar("T")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def json_response(status: int, body: Any, headers: dict[str, str] | None = None) -> web.Response:
    """A JSON answer."""
    return web.Response(
        status=status, body=orjson.dumps(body), content_type="application/json", headers=headers
    )


@dataclass
class Request:
    """One request the fake received, and how it answered."""

    at: float
    """``time.monotonic()`` when it arrived."""
    method: str
    path: str
    message_id: str | None
    status: int = 0
    """The HTTP status answered (0 while in flight or when the client gave up)."""


class RateLimit:
    """At most ``per_second`` requests in any sliding 1-second window; the others are
    violations. Every arrival counts toward the window, refused or not."""

    def __init__(self, per_second: float | None = None) -> None:
        self.per_second = per_second
        self.violations = 0
        self._arrivals: deque[float] = deque()

    def admit(self, now: float) -> bool:
        """Record an arrival at ``now``; False (and one more violation) when over the limit."""
        while self._arrivals and self._arrivals[0] <= now - 1.0:
            self._arrivals.popleft()
        self._arrivals.append(now)
        if self.per_second is None or len(self._arrivals) <= self.per_second:
            return True
        self.violations += 1
        return False


class Script(Generic[T]):
    """States that change after some polls: ``[(a, 2), (b, 0)]`` answers ``a`` to the
    first two polls and ``b`` from then on (the last step lasts forever)."""

    def __init__(self, steps: Sequence[tuple[T, int]]) -> None:
        if not steps:
            raise ValueError("a script needs at least one step")
        self.steps = list(steps)
        self.polls = 0

    def advance(self) -> T:
        """The state answered to this poll; counts the poll."""
        n, self.polls = self.polls, self.polls + 1
        for state, polls in self.steps[:-1]:
            if n < polls:
                return state
            n -= polls
        return self.steps[-1][0]


@dataclass
class FakeServer:
    """An aiohttp app on a free loopback port with the faults both fakes inject."""

    rate_limit: RateLimit = field(default_factory=RateLimit)
    bad_credentials: bool = False
    """Refuse every credential, right or wrong."""
    requests: list[Request] = field(default_factory=list)
    url: str = ""
    _errors: deque[int] = field(default_factory=deque)
    _delays: deque[float] = field(default_factory=deque)
    _runner: web.AppRunner | None = None

    @property
    def rate_violations(self) -> int:
        """Requests refused with 429 by the rate limit."""
        return self.rate_limit.violations

    def limit_rate(self, per_second: float | None) -> None:
        """Answer 429 past ``per_second`` requests in a sliding second (None: no limit)."""
        self.rate_limit.per_second = per_second

    def fail(self, times: int = 1, status: int = 503) -> None:
        """The next ``times`` requests are answered ``status`` (a 5xx burst)."""
        self._errors.extend([status] * times)

    def slow(self, delay: float, times: int = 1) -> None:
        """The next ``times`` requests wait ``delay`` seconds before answering."""
        self._delays.extend([delay] * times)

    def count(self, message_id: str | None = None) -> int:
        """Requests received, for one message id or all."""
        return sum(1 for r in self.requests if message_id is None or r.message_id == message_id)

    def routes(self, app: web.Application) -> None:
        """Add the documented endpoints (each fake)."""
        raise NotImplementedError

    async def message_id_of(self, request: web.Request) -> str | None:
        """The message id a request asks about, for the log (each fake)."""
        return None

    async def start(self) -> None:
        """Serve on a free loopback port."""
        app = web.Application(middlewares=[self._faults])
        self.routes(app)
        # handler_cancellation: a client that gave up on a slow answer ends the handler.
        self._runner = web.AppRunner(
            app, access_log=None, handler_cancellation=True, shutdown_timeout=1.0
        )
        await self._runner.setup()
        port = free_port()
        await web.TCPSite(self._runner, "127.0.0.1", port).start()
        self.url = f"http://127.0.0.1:{port}"

    async def stop(self) -> None:
        """Stop serving."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @web.middleware
    async def _faults(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        now = time.monotonic()
        entry = Request(now, request.method, request.path, await self.message_id_of(request))
        self.requests.append(entry)
        response = await self._answer(request, handler, now)
        entry.status = response.status
        return response

    async def _answer(
        self, request: web.Request, handler: Handler, now: float
    ) -> web.StreamResponse:
        if not self.rate_limit.admit(now):
            return json_response(429, {"error": "Too Many Requests"}, {"Retry-After": "1"})
        if self._delays:
            await asyncio.sleep(self._delays.popleft())
        if self._errors:
            status = self._errors.popleft()
            return web.Response(status=status, text="Service Unavailable")
        return await handler(request)
