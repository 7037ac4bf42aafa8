"""What every poll client does over HTTP: one request, its status read as an outcome,
its JSON body, and errors turned into a retry whose reason holds no secret.

A client subclasses :class:`HttpPollClient`, says which HTTP statuses mean an unknown
id (``not_found_statuses``) and which value must never reach a log (``_secret``), and
parses the 200 answer's body itself.
"""

from __future__ import annotations

from typing import Any

import aiohttp
import orjson

from consumers.polling.client import Outcome, PollResult

__all__ = ["HttpPollClient", "http_failure", "retry_after"]


def retry_after(value: str | None) -> float | None:
    """``Retry-After`` in seconds, when it is a number of seconds under a day; an
    HTTP-date or anything else gives None, and the poller's own schedule decides."""
    try:
        seconds = float(value) if value is not None else None
    except ValueError:
        return None
    return seconds if seconds is not None and 0 <= seconds < 86_400 else None


def http_failure(
    status: int, retry_after_header: str | None, not_found: frozenset[int] = frozenset()
) -> PollResult | None:
    """What a non-200 HTTP status means, or None for a 200, whose body decides."""
    if status == 200:
        return None
    if status in (401, 403):
        return PollResult(Outcome.AUTH_FAILED, reason=f"HTTP {status}")
    if status in not_found:
        return PollResult(Outcome.NOT_FOUND, reason=f"HTTP {status}")
    if status == 429:
        return PollResult(
            Outcome.RETRY, reason="HTTP 429", retry_after=retry_after(retry_after_header)
        )
    return PollResult(Outcome.RETRY, reason=f"HTTP {status}")


class HttpPollClient:
    """A status API reached with one aiohttp session, opened at the first request."""

    not_found_statuses: frozenset[int] = frozenset()
    """HTTP statuses that mean the carrier knows no such message."""

    def __init__(self, timeout: float) -> None:
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None

    @property
    def _secret(self) -> str:
        """The credential to scrub from any reason; empty when there is none."""
        return ""

    async def _request(self, method: str, url: str, **kwargs: Any) -> PollResult | Any:
        """The decoded JSON body of a 200 answer, or the :class:`PollResult` that says
        why there is none. Never raises for the carrier or the network."""
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        try:
            async with self._session.request(method, url, **kwargs) as response:
                failure = http_failure(
                    response.status,
                    response.headers.get("Retry-After"),
                    self.not_found_statuses,
                )
                if failure is not None:
                    return failure
                return orjson.loads(await response.read())
        except TimeoutError:
            return PollResult(Outcome.RETRY, reason=f"no answer within {self._timeout.total}s")
        except aiohttp.ClientError as exc:
            return PollResult(Outcome.RETRY, reason=self._scrub(f"{type(exc).__name__}: {exc}"))
        except orjson.JSONDecodeError:
            return PollResult(Outcome.RETRY, reason="answer is not JSON")

    def _scrub(self, text: str) -> str:
        """One line, at most 200 characters, without the secret."""
        if self._secret:
            text = text.replace(self._secret, "***")
        return " ".join(text.split())[:200]

    async def close(self) -> None:
        """Release the HTTP session."""
        if self._session is not None:
            await self._session.close()
            self._session = None
