"""The HTTP client of Orange's delivery-receipt subscription API.

One :class:`OrangeClient` per process: it fetches an OAuth2 token with the app's
authorization header, reuses it until shortly before it expires, fetches a new one
once when Orange answers 401, and retries 5xx answers, timeouts and failed
connections with exponential backoff. Other 4xx answers are never retried.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from urllib.parse import quote

import aiohttp
from yarl import URL

from smsrx.privacy import Masked
from smsrx.settings import Settings
from subscriptions import metrics
from subscriptions.errors import OrangeError, Timeout, Unauthorized, Unreachable
from subscriptions.orange_settings import require
from subscriptions.token import AccessToken, Secret, TokenCache
from subscriptions.urls import sender_segment
from subscriptions.wire import Registration, error_for, parse_registration, subscribe_body

__all__ = ["OrangeClient", "RetryPolicy", "open_client"]

logger = logging.getLogger(__name__)

_FORM = "application/x-www-form-urlencoded"
_JSON = "application/json"


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often and how patiently a retriable failure is tried again."""

    attempts: int = 4
    """Tries in all, the first included."""
    first_delay: float = 0.5
    """Seconds before the second try; each later wait doubles."""
    max_delay: float = 8.0
    """Longest wait between two tries."""

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed try number ``attempt`` (1-based), with jitter."""
        ceiling = min(self.max_delay, self.first_delay * 2.0 ** (attempt - 1))
        return ceiling * random.uniform(0.5, 1.0)


class OrangeClient:
    """Subscribe, check and unsubscribe Orange's delivery-receipt callback."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        api_url: str,
        auth_header: str,
        sender: str,
        timeout: float,
        retry: RetryPolicy | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.api_url = api_url.rstrip("/")
        self.sender = sender
        self.retry = retry or RetryPolicy()
        self._session = session
        self._auth_header = Secret(auth_header)
        self._timeout = timeout
        self._tokens = TokenCache(clock)
        self._token_lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"<OrangeClient {self.api_url} sender=tel:+{self.sender}>"

    def _url(self, path: str) -> URL:
        # Built by hand and marked encoded: yarl would otherwise turn tel%3A%2B into tel:%2B.
        return URL(f"{self.api_url}{path}", encoded=True)

    async def subscribe(self, notify_url: str) -> Registration:
        """Register ``notify_url``; Orange replaces any URL registered before."""
        path = f"/smsmessaging/v1/outbound/{sender_segment(self.sender)}/subscriptions"
        body = await self._call(
            "subscribe",
            "POST",
            path,
            expect=201,
            subject=f"sender tel:+{self.sender}",
            data=subscribe_body(notify_url),
            content_type=_JSON,
        )
        registration = parse_registration(body)
        logger.info("orange subscribed id=%s", registration.id)
        return registration

    async def check(self, subscription_id: str) -> Registration:
        """What Orange has registered under ``subscription_id``; raises NotFound if nothing."""
        path = f"/smsmessaging/v1/outbound/subscriptions/{_segment(subscription_id)}"
        body = await self._call(
            "check", "GET", path, expect=200, subject=f"subscription id={subscription_id}"
        )
        return parse_registration(body)

    async def unsubscribe(self, subscription_id: str) -> None:
        """Remove the subscription; raises NotFound if Orange does not know it."""
        path = (
            f"/smsmessaging/v1/outbound/{sender_segment(self.sender)}"
            f"/subscriptions/{_segment(subscription_id)}"
        )
        await self._call(
            "unsubscribe", "DELETE", path, expect=204, subject=f"subscription id={subscription_id}"
        )
        logger.info("orange unsubscribed id=%s", subscription_id)

    async def _token(self) -> AccessToken:
        async with self._token_lock:
            if (token := self._tokens.get()) is not None:
                return token
            body = await self._call(
                "token",
                "POST",
                "/oauth/v2/token",
                expect=200,
                subject="the app's credentials",
                data=b"grant_type=client_credentials",
                content_type=_FORM,
                authorised=False,
            )
            token = self._tokens.store(body)
            logger.info("orange token fetched expires_in=%ds", token.lifetime)
            return token

    async def _call(
        self,
        endpoint: str,
        method: str,
        path: str,
        *,
        expect: int,
        subject: str,
        data: bytes | None = None,
        content_type: str | None = None,
        authorised: bool = True,
    ) -> bytes:
        attempt, refreshed = 0, False
        while True:
            attempt += 1
            headers = {"Accept": _JSON}
            if content_type:
                headers["Content-Type"] = content_type
            token = None
            if authorised:
                token = await self._token()
                headers["Authorization"] = token.authorization
            else:
                headers["Authorization"] = self._auth_header.reveal()
            try:
                status, body = await self._send(endpoint, method, path, headers, data)
                if status == expect:
                    metrics.observe_api(endpoint, "ok")
                    return body
                error = error_for(status, body, endpoint=endpoint, subject=subject)
            except OrangeError as exc:
                error = exc
            metrics.observe_api(endpoint, error.outcome)
            if isinstance(error, Unauthorized) and authorised and not refreshed:
                # The token expired or was revoked early: fetch a new one, once.
                logger.info("orange %s answered 401, fetching a new token", endpoint)
                self._tokens.discard(token)
                refreshed, attempt = True, attempt - 1
                continue
            if error.retriable and attempt < self.retry.attempts:
                delay = self.retry.delay(attempt)
                logger.warning(
                    "orange %s failed outcome=%s attempt=%d/%d retry_in=%.2fs",
                    endpoint,
                    error.outcome,
                    attempt,
                    self.retry.attempts,
                    delay,
                )
                await asyncio.sleep(delay)
                continue
            if error.retriable:
                error.message += f"; gave up after {attempt} attempts — try again later"
            raise error

    async def _send(
        self, endpoint: str, method: str, path: str, headers: dict[str, str], data: bytes | None
    ) -> tuple[int, bytes]:
        started = time.monotonic()
        try:
            async with self._session.request(
                method,
                self._url(path),
                headers=headers,
                data=data,
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=self._timeout),
            ) as response:
                body = await response.read()
        except TimeoutError:
            raise Timeout(
                f"Orange did not answer {endpoint} within {self._timeout:g}s (SMSRX_ORANGE_TIMEOUT)"
            ) from None
        except aiohttp.ClientError as exc:
            raise Unreachable(
                f"cannot reach Orange at {self.api_url} (SMSRX_ORANGE_API_URL) "
                f"for {endpoint}: {exc}"
            ) from None
        logger.debug(
            "orange %s %s -> %d in %.3fs",
            method,
            Masked(path),  # the sender's address is in the path
            response.status,
            time.monotonic() - started,
        )
        return response.status, body


def _segment(subscription_id: str) -> str:
    return quote(subscription_id, safe="")


@asynccontextmanager
async def open_client(
    settings: Settings,
    *,
    retry: RetryPolicy | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> AsyncIterator[OrangeClient]:
    """An :class:`OrangeClient` for ``settings``, with its own HTTP session."""
    auth_header, sender = require(settings, "SMSRX_ORANGE_AUTH_HEADER", "SMSRX_ORANGE_SENDER")
    async with aiohttp.ClientSession() as session:
        yield OrangeClient(
            session,
            api_url=settings.orange_api_url,
            auth_header=auth_header,
            sender=sender,
            timeout=settings.orange_timeout,
            retry=retry,
            clock=clock,
        )
