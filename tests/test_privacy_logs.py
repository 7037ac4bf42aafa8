"""Personal data in logs: through `smsrx dev` at DEBUG, with receipts, inbound SMS and
refusals, no process's log holds a number unmasked or an SMS text."""

from __future__ import annotations

import asyncio
import json
import signal
import ssl
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlencode

import aiohttp
import asyncpg
import orjson
import pytest

from tests.helpers import dev_command_env
from tests.privacy_harness import orange_receipt, tables_holding
from tests.subscriptions.fake_orange import FakeOrange

# -- no number and no text in any log -----------------------------------------------------

SENDER = "2250700000099"
"""Our Orange sender number: in the path of Orange API calls the reconciler logs."""
AUTH = "Basic c21zcng6cHJpdmFjeS1jaGVjaw=="
RECEIPT_NUMBERS = ("+2250701000001", "+2250701000002", "+33612000003")
CHATTY, STOPPER, CODER = "+2250709000004", "+2250709000005", "+2250709000006"
INVALID = "99912345678901"
TEXTS = (
    "Rendez-vous confirmé jeudi 14h30",
    "Mon code secret est 4821",
    "Stop svp",
    "Texte privé sans signe égal",
)
_FINAL = ("DeliveredToNetwork", "DeliveredToTerminal", "DeliveryImpossible")


def _inbound(message_id: str, sender: str, text: str) -> dict[str, str]:
    return {
        "message_id": message_id,
        "form": sender,
        "content": text,
        "sms_date": "2026-12-02 10:00",
    }


async def _wait(what: str, check, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            last = await check()
        except (OSError, ValueError, aiohttp.ClientError, asyncpg.PostgresError) as exc:
            last = exc
        else:
            if last:
                return
        await asyncio.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}: {last!r}")


async def _flow(addresses: dict, dev_env: dict[str, str]) -> None:
    """Receipts, a submission and inbound SMS, good and bad, through the running stack."""
    context = ssl.create_default_context(cafile=addresses["ca_file"])
    base = addresses["receiver_url"]
    json_type = {"Content-Type": "application/json"}
    form_type = {"Content-Type": "application/x-www-form-urlencoded"}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context)) as http:

        async def post(path: str, body: bytes | str, headers: dict[str, str]) -> int:
            async with http.post(f"{base}{path}", data=body, headers=headers) as answer:
                await answer.read()
                return answer.status

        dr = "/callbacks/orange/dr"
        for i, number in enumerate(RECEIPT_NUMBERS[:2]):
            for status in ("DeliveredToNetwork", _FINAL[1 + i]):
                assert (
                    await post(dr, orange_receipt("pm-1", number, status=status), json_type) == 200
                )
        listed = orange_receipt("pm-2", RECEIPT_NUMBERS[0], RECEIPT_NUMBERS[2])
        assert await post(dr, listed, json_type) == 200
        assert await post(dr, listed, json_type) == 200  # a duplicate
        assert await post(dr, orange_receipt("pm-3", f"+{INVALID}"), json_type) == 400
        assert await post(dr, b'{"deliveryInfoNotification": {"callbackData": "pm-4", "deliveryInfo": {"address": "tel:+2250701000001", "deliveryStatus": 7}}}', json_type) == 400  # fmt: skip

        inbound = "/callbacks/vavasms/inbound"
        # First of this route's refusals: the only one logged this minute (receiver.logthrottle).
        no_equals = f"message_id=mo-6&form={CODER[1:]}&{TEXTS[3]}"
        assert await post(inbound, no_equals, form_type) == 400
        for message_id, sender, text in (
            ("mo-1", CHATTY, TEXTS[0]),
            ("mo-2", STOPPER, TEXTS[2]),
            ("mo-3", CODER, TEXTS[1]),
        ):
            assert (
                await post(inbound, urlencode(_inbound(message_id, sender[1:], text)), form_type)
                == 200
            )
        as_json = orjson.dumps({**_inbound("mo-4", CHATTY, TEXTS[0]), "from": CHATTY})
        assert await post(inbound, as_json, json_type) == 200
        bad = urlencode(_inbound("mo-5", INVALID, TEXTS[1]))
        assert await post(inbound, bad, form_type) == 400

        optouts = addresses["optouts_url"]
        async with http.get(f"{optouts}{STOPPER}") as answer:
            assert answer.status == 200
        async with http.get(f"{optouts}{INVALID}x") as answer:
            assert answer.status == 400

    # As an operator beside `make run`: the command finds the stack through its dev.json.
    services = ("SMSRX_KAFKA_BOOTSTRAP", "SMSRX_DATABASE_URL")
    publish = subprocess.run(
        [sys.executable, "-m", "smsrx.cli", "submissions", "publish", "--provider", "orange"]
        + [
            "--message-id",
            "pm-1",
            "--recipient",
            RECEIPT_NUMBERS[0],
            "--recipient",
            RECEIPT_NUMBERS[1],
        ],
        env={name: value for name, value in dev_env.items() if name not in services},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert publish.returncode == 0, publish.stderr
    Path(dev_env["SMSRX_STATE_DIR"], "publish.log").write_text(publish.stdout + publish.stderr)


async def _settled(database_url: str) -> bool:
    conn = await asyncpg.connect(database_url, timeout=5)
    try:
        counts = await conn.fetchrow(
            "SELECT (SELECT count(*) FROM inbound_messages) AS inbound,"
            " (SELECT count(*) FROM status_events) AS receipts,"
            " (SELECT count(*) FROM suppressions WHERE suppressed) AS suppressed,"
            " (SELECT count(*) FROM submissions) AS submissions,"
            " (SELECT coalesce(sum(messages), 0) FROM analytics_inbound_minute) AS counted,"
            " (SELECT count(*) FROM orange_subscriptions) AS subscribed"
        )
    finally:
        await conn.close()
    return tuple(counts) == (4, 6, 1, 1, 4, 1)


@pytest.mark.timeout(400)
async def test_no_process_logs_a_number_or_a_text(tmp_path: Path) -> None:
    """Through `smsrx dev` at DEBUG, every process's log has numbers masked and no SMS text."""
    fake = FakeOrange(auth_header=AUTH, sender=SENDER)
    await fake.start()
    state = tmp_path / "state"
    env = dev_command_env(
        state,
        LOG_LEVEL="DEBUG",
        SHUTDOWN_TIMEOUT="3s",
        ORANGE_API_URL=fake.url,
        INSECURE_PROVIDER_URLS="1",  # the fake serves plain HTTP
        ORANGE_AUTH_HEADER=AUTH,
        ORANGE_SENDER=SENDER,
        ORANGE_NOTIFY_URL="https://smsrx.example.com/callbacks/orange/dr",
        ORANGE_RECONCILE_INTERVAL="2s",
    )
    log_path = tmp_path / "smsrx-dev.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "smsrx.cli", "dev"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        dev_json = state / "dev.json"

        async def started() -> bool:
            assert proc.poll() is None, log_path.read_text(errors="replace")[-3000:]
            return dev_json.is_file()

        await _wait("dev.json", started, timeout=180)
        addresses = json.loads(dev_json.read_text())
        context = ssl.create_default_context(cafile=addresses["ca_file"])

        async def ready() -> bool:
            async with aiohttp.ClientSession() as http:
                async with http.get(f"{addresses['receiver_url']}/readyz", ssl=context) as answer:
                    return answer.status == 200

        await _wait("the receiver", ready, timeout=120)
        await _flow(addresses, env)
        database_url = env["SMSRX_DATABASE_URL"]
        await _wait("every event applied", lambda: _settled(database_url), timeout=120)

        conn = await asyncpg.connect(database_url)
        try:
            rollups = [
                "analytics_receipts_minute",
                "analytics_inbound_minute",
                "analytics_outcomes_minute",
            ]
            assert all([await conn.fetchval(f"SELECT count(*) FROM {t}") for t in rollups])
            for number in (*RECEIPT_NUMBERS, CHATTY, STOPPER, CODER):
                holding = await tables_holding(conn, number[1:])
                assert not [t for t in holding if t.startswith("analytics")], (number, holding)
        finally:
            await conn.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        await fake.stop()

    logs = {
        path.name: path.read_text(errors="replace") for path in [log_path, *state.rglob("*.log")]
    }
    everything = "\n".join(logs.values())
    assert " DEBUG " in everything and "receiver" in everything, "the processes logged nothing"
    # The reconciler logs its API calls at DEBUG, our sender's number in their path: masked.
    # (Its report lines name the sender in full: our own number, not a person's.)
    assert f"tel%3A%2B{SENDER[:7]}****{SENDER[-2:]}" in everything, "no masked path: no DEBUG?"
    secrets = [n.removeprefix("+") for n in (*RECEIPT_NUMBERS, CHATTY, STOPPER, CODER)]
    secrets += [INVALID, AUTH, *TEXTS, "code secret", "Rendez-vous"]
    for name, text in logs.items():
        leaked = [secret for secret in secrets if secret in text]
        lines = [line for line in text.splitlines() if any(s in line for s in leaked)]
        assert not leaked, f"{name} holds {leaked}: {lines[:5]}"
