"""Synthetic carrier traffic, sent over real HTTPS and real Kafka to a running stack.

Each round: a submission is published to sms.submissions.v1 (as sending services do),
Orange posts receipts for the recipients of earlier submissions (delivered, failed,
sent then delivered, sent only, none at all), VavaSMS posts inbound SMS (opt-outs
such as STOP and "Arrêt merci", opt-ins, ordinary replies), and some callbacks repeat
(duplicates), come from an address outside the allowlists (refused), or are malformed;
a sending service asks the inbound worker whether numbers are suppressed
(``GET /v1/optouts/{e164}``). Recipients are spread over six countries. Once, the broker is
stalled (SIGSTOP) for a few seconds: callbacks are spooled, then answered 503 when the
small spool is full; the spool is replayed when the broker resumes.

Every other round, a Gateway SMS or a VavaSMS send is submitted too: those carriers push
no receipts, the poller asks their (fake) status APIs, whose answers reach a final state
after a poll or two; one VavaSMS recipient first answers a value no mapping knows.
"""

from __future__ import annotations

import asyncio
import random
import ssl
import uuid
from collections import Counter
from collections.abc import Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import Any
from urllib.parse import quote, urlencode

import aiohttp
import psutil

from consumers.submit import build_submission, publish_submission
from smsrx.settings import Settings
from tests.fakes.gatewaysms import GatewayState
from tests.fakes.vavasms import VavaState
from tests.helpers import orange_receipt
from tests.ops.stack import FakeCarriers

ORANGE_DR = "/callbacks/orange/dr"
VAVASMS_MO = "/callbacks/vavasms/inbound"
OPTOUT_CHECK = "/v1/optouts"
JSON = "application/json"
FORM = "application/x-www-form-urlencoded"
REFUSED_SOURCE = "127.0.0.3"  # outside every dev allowlist (they admit 127.0.0.1 and ::1)

COUNTRIES = {
    # country: (prefix, digits after the prefix) of valid mobile numbers
    "CIV": ("+22507", 8),
    "SEN": ("+22177", 7),
    "CMR": ("+2376", 8),
    "FRA": ("+336", 8),
    "MLI": ("+2237", 7),
    "BFA": ("+2267", 7),
}
# Orange deliveryStatus sequences a recipient goes through, with their weights.
FATES: list[tuple[tuple[str, ...], int]] = [
    (("DeliveredToTerminal",), 50),
    (("DeliveredToNetwork", "DeliveredToTerminal"), 15),
    (("DeliveryImpossible",), 12),
    (("MessageWaiting", "DeliveryUncertain"), 5),
    (("DeliveredToNetwork",), 8),  # never final: expires after SMSRX_EXPIRY_HORIZON
    ((), 5),  # no receipt at all: expires too, or is still waiting at the end
    (("DeliveredToTerminal", "DeliveredToNetwork"), 5),  # a late 'sent': regression prevented
]
# What people text back, with their weights (docs/inbound.md has the keyword rule).
REPLIES: list[tuple[str, int]] = [
    ("Oui", 5),  # opt-in keyword OUI: route opt-in
    ("STOP", 2),  # opt-out
    ("Arrêt merci", 1),  # opt-out ARRET: first word of a short text
    ("START", 1),  # opt-in
    ("Bonjour, à quelle heure est le rendez-vous ?", 3),  # route default
]
OPT_OUT_REPLIES = {"STOP", "Arrêt merci"}
# What the fake status APIs answer to each poll of a recipient: (state, polls), the last
# state from then on (tests/fakes). Each reaches a final state at the first or second poll.
GATEWAYSMS_FATES: list[list[tuple[GatewayState | str, int]]] = [
    [("DELIVERED", 1)],
    [("PENDING", 1), ("DELIVERED", 1)],
    [("PENDING", 1), ("UNDELIVERABLE", 1)],
    [("REJECTED", 1)],
]
VAVASMS_FATES: list[list[tuple[VavaState | str, int]]] = [
    [("sent", 1), ("delivered", 1)],
    [("delivered", 1)],
    [("pending", 1), ("failed", 1)],
]
UNMAPPED_VAVASMS = "weird-state"
"""A VavaSMS status no mapping knows: counted in smsrx_unmapped_statuses_total."""


def phone(rng: random.Random, country: str) -> str:
    """A random mobile number of ``country``, E.164."""
    prefix, digits = COUNTRIES[country]
    return prefix + "".join(rng.choice("0123456789") for _ in range(digits))


def vavasms_inbound(message_id: str, sender: str, text: str) -> bytes:
    """A VavaSMS inbound notification, form-encoded as VavaSMS posts it."""
    moment = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S")
    return urlencode(
        {"message_id": message_id, "form": sender.lstrip("+"), "content": text, "sms_date": moment}
    ).encode()


@dataclass
class Pending:
    """Receipts still to send for one recipient."""

    message_id: str
    recipient: str
    statuses: list[str]


@dataclass
class Report:
    """What was sent, and how the receiver (and the opt-out read API) answered."""

    answers: Counter[tuple[str, int]] = field(default_factory=Counter)
    submissions: int = 0
    """Orange submissions (receipts pushed)."""
    polled_submissions: Counter[str] = field(default_factory=Counter)
    """Submissions by provider whose statuses the poller asks the fake status APIs."""
    stalled_for: float = 0.0

    def count(self, path: str, status: int) -> None:
        """Record one answer."""
        self.answers[(path, status)] += 1

    def statuses(self) -> set[int]:
        """Every HTTP status seen."""
        return {status for _, status in self.answers}


class Traffic:
    """Drives one stack for ``duration`` seconds."""

    def __init__(
        self,
        addresses: dict[str, Any],
        broker: psutil.Process,
        carriers: FakeCarriers | None = None,
        *,
        seed: int = 5,
    ) -> None:
        self.url = addresses["receiver_url"]
        self.optouts_url = addresses["optouts_url"]
        """The inbound worker's ``GET /v1/optouts/`` prefix, as dev.json gives it."""
        self.context = ssl.create_default_context(cafile=addresses["ca_file"])
        self.settings = Settings(
            kafka_bootstrap=addresses["kafka_bootstrap"],
            kafka_idempotence=False,
            kafka_send_timeout=5.0,
        )
        self.broker = broker
        self.carriers = carriers
        """The fake status APIs the poller polls; None: no Gateway SMS or VavaSMS sends."""
        self.rng = random.Random(seed)
        self.report = Report()
        self.pending: list[Pending] = []
        self.sent_receipts: list[bytes] = []
        self.sent_inbound: list[bytes] = []
        self.opted_out: list[tuple[int, str]] = []
        """(round, sender) of each opt-out texted."""
        self.fated = 0
        self.replied = 0

    async def run(self, duration: float, stall_at: float = 0.4, stall_for: float = 4.0) -> Report:
        """Send traffic for ``duration`` seconds, stalling the broker once at ``stall_at``."""
        allowed = aiohttp.TCPConnector(ssl=self.context, limit=20)
        refused = aiohttp.TCPConnector(ssl=self.context, local_addr=(REFUSED_SOURCE, 0))
        timeout = aiohttp.ClientTimeout(total=30)
        async with (
            aiohttp.ClientSession(connector=allowed, timeout=timeout) as ok,
            aiohttp.ClientSession(connector=refused, timeout=timeout) as bad,
        ):
            loop = asyncio.get_running_loop()
            started = loop.time()
            stalled = False
            round_no = 0
            while (elapsed := loop.time() - started) < duration:
                if not stalled and elapsed >= duration * stall_at:
                    stalled = True
                    await self.stall(ok, stall_for)
                    continue
                await self.round(ok, bad, round_no)
                round_no += 1
                await asyncio.sleep(max(0.0, 1.0 - (loop.time() - started - elapsed)))
        return self.report

    async def post(
        self, session: aiohttp.ClientSession, path: str, body: bytes, content_type: str
    ) -> int:
        """POST one callback; record and return the status."""
        async with session.post(
            self.url + path, data=body, headers={"Content-Type": content_type}
        ) as response:
            await response.read()
        self.report.count(path, response.status)
        return response.status

    async def submit(self, countries: int) -> None:
        """Publish one Orange submission for ``countries`` recipients; receipts follow later."""
        message_id = str(uuid.uuid4())
        recipients = [phone(self.rng, self.rng.choice(list(COUNTRIES))) for _ in range(countries)]
        submission = build_submission(
            provider="orange",
            message_id=message_id,
            recipients=recipients,
            submitted_at=None,
            tags=["tenant=ops-check"],
        )
        await publish_submission(self.settings, submission)
        self.report.submissions += 1
        fates, weights = zip(*FATES, strict=True)
        for recipient in recipients:
            # Every fate once first, so each one happens in every run; then at random.
            self.fated += 1
            fate = (
                fates[self.fated - 1]
                if self.fated <= len(fates)
                else self.rng.choices(fates, weights)[0]
            )
            self.pending.append(Pending(message_id, recipient, list(fate)))

    async def round(self, ok: aiohttp.ClientSession, bad: aiohttp.ClientSession, n: int) -> None:
        """One second of traffic."""
        for _ in range(2):
            await self.submit(self.rng.randint(1, 3))
        if self.carriers is not None and n % 4 == 0:
            await self.submit_gatewaysms(self.carriers, self.rng.randint(1, 3))
        if self.carriers is not None and n % 4 == 2:
            await self.submit_vavasms(self.carriers, 2, unmapped=n == 2)
        await asyncio.gather(
            *self.receipts(ok), *self.inbound(ok, n), *self.rejects(ok, bad, n), *self.checks(ok, n)
        )

    async def submit_gatewaysms(self, carriers: FakeCarriers, countries: int) -> None:
        """One Gateway SMS message (one id for every recipient), known to its fake status
        API first, then published."""
        message_id = uuid.uuid4().hex[:24]
        scripts = {
            phone(self.rng, self.rng.choice(list(COUNTRIES))): self.rng.choice(GATEWAYSMS_FATES)
            for _ in range(countries)
        }
        await carriers.call(partial(carriers.gateway.add_message, message_id, scripts))
        await self._publish("gatewaysms", message_id, list(scripts))

    async def submit_vavasms(self, carriers: FakeCarriers, count: int, *, unmapped: bool) -> None:
        """One VavaSMS send to ``count`` recipients, each with its own message id (one
        submission each, as `smsrx submissions publish` makes them); with ``unmapped``, the
        first recipient answers a value no mapping knows for two polls, then delivered."""
        lot = f"LOT-{uuid.uuid4().hex[:12]}"
        for i in range(count):
            message_id = f"SM-{uuid.uuid4().hex[:12]}"
            script = (
                [(UNMAPPED_VAVASMS, 2), ("delivered", 1)]
                if unmapped and i == 0
                else self.rng.choice(VAVASMS_FATES)
            )
            await carriers.call(partial(carriers.vava.add_message, message_id, script, lot))
            await self._publish(
                "vavasms", message_id, [phone(self.rng, self.rng.choice(list(COUNTRIES)))]
            )

    async def _publish(self, provider: str, message_id: str, recipients: list[str]) -> None:
        submission = build_submission(
            provider=provider,
            message_id=message_id,
            recipients=recipients,
            submitted_at=None,
            tags=["tenant=ops-check"],
        )
        await publish_submission(self.settings, submission)
        self.report.polled_submissions[provider] += 1

    def receipts(self, ok: aiohttp.ClientSession) -> list[Coroutine[Any, Any, int]]:
        """The next receipt of recipients submitted at least a round ago, and a carrier retry."""
        jobs = []
        ready, self.pending = self.pending[:-6], self.pending[-6:]
        for item in ready:
            if item.statuses:
                body = orange_receipt(item.message_id, item.recipient, item.statuses.pop(0))
                self.sent_receipts.append(body)
                jobs.append(self.post(ok, ORANGE_DR, body, JSON))
            if item.statuses:
                self.pending.insert(0, item)
        if self.sent_receipts and self.rng.random() < 0.5:
            jobs.append(self.post(ok, ORANGE_DR, self.rng.choice(self.sent_receipts), JSON))
        return jobs

    def inbound(self, ok: aiohttp.ClientSession, n: int) -> list[Coroutine[Any, Any, int]]:
        """One or two inbound SMS from random countries, sometimes one notified again."""
        jobs = []
        texts, weights = zip(*REPLIES, strict=True)
        for _ in range(self.rng.randint(1, 2)):
            sender = phone(self.rng, self.rng.choice(list(COUNTRIES)))
            # Every reply once first, so each route and action happens in every run.
            self.replied += 1
            text = (
                texts[self.replied - 1]
                if self.replied <= len(texts)
                else self.rng.choices(texts, weights)[0]
            )
            if text in OPT_OUT_REPLIES:
                self.opted_out.append((n, sender))
            body = vavasms_inbound(f"SM-{uuid.uuid4().hex[:12]}", sender, text)
            self.sent_inbound.append(body)
            jobs.append(self.post(ok, VAVASMS_MO, body, FORM))
        if self.rng.random() < 0.3:
            jobs.append(self.post(ok, VAVASMS_MO, self.rng.choice(self.sent_inbound), FORM))
        return jobs

    def checks(self, ok: aiohttp.ClientSession, n: int) -> list[Coroutine[Any, Any, int]]:
        """A sending service's checks: a number that opted out a few rounds ago
        (suppressed), a number never seen (allowed), and now and then not a number (400)."""
        numbers = [phone(self.rng, self.rng.choice(list(COUNTRIES)))]
        earlier = [sender for sent, sender in self.opted_out if sent <= n - 3]
        if earlier:
            numbers.append(self.rng.choice(earlier))
        if n % 4 == 0:
            numbers.append("not-a-number")
        return [self.check(ok, number) for number in numbers]

    async def check(self, session: aiohttp.ClientSession, number: str) -> int:
        """GET /v1/optouts/{number} on the inbound worker; record and return the status."""
        async with session.get(self.optouts_url + quote(number)) as response:
            await response.read()
        self.report.count(OPTOUT_CHECK, response.status)
        return response.status

    def rejects(
        self, ok: aiohttp.ClientSession, bad: aiohttp.ClientSession, n: int
    ) -> list[Coroutine[Any, Any, int]]:
        """Callbacks from an address outside the allowlists, and malformed ones."""
        jobs = []
        if n % 2 == 0 and self.sent_receipts:
            jobs.append(self.post(bad, ORANGE_DR, self.sent_receipts[-1], JSON))
        if n % 5 == 1 and self.sent_inbound:
            jobs.append(self.post(bad, VAVASMS_MO, self.sent_inbound[-1], FORM))
        if n % 3 == 2:
            jobs.append(self.post(ok, ORANGE_DR, b'{"deliveryInfoNotification": {', JSON))
        if n % 7 == 3:
            jobs.append(self.post(ok, ORANGE_DR, b"delivered", "text/plain"))
        if n % 11 == 5:
            jobs.append(self.post(ok, ORANGE_DR, b"x" * 70_000, JSON))
        return jobs

    async def stall(self, ok: aiohttp.ClientSession, seconds: float) -> None:
        """SIGSTOP the broker and post receipts (spooled, then 503) for at least ``seconds``
        and until a few 503s were answered (at most 3 times as long); then SIGCONT."""
        self.broker.suspend()
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            while (elapsed := loop.time() - started) < seconds or (
                self.report.answers[(ORANGE_DR, 503)] < 3 and elapsed < 3 * seconds
            ):
                bodies = [
                    orange_receipt(str(uuid.uuid4()), phone(self.rng, "CIV"), "DeliveredToTerminal")
                    for _ in range(4)
                ]
                await asyncio.gather(*(self.post(ok, ORANGE_DR, body, JSON) for body in bodies))
        finally:
            self.broker.resume()
        self.report.stalled_for = loop.time() - started
