"""Opt-outs end to end: a VavaSMS "Arrêt" posted to the real receiver, through the real
broker and the inbound worker, to `smsrx optouts check` and the read API."""

from __future__ import annotations

import asyncio
import ipaddress
import subprocess
import sys
from urllib.parse import urlencode

from smsrx.codec import decode_opt_out
from smsrx.settings import Settings
from tests.consumers.conftest import api, read_api, wait_for
from tests.consumers.test_inbound import suppression
from tests.helpers import read_topic, settings_env
from tests.receiver_harness import client, running_receiver, url_for

PHONE = "+2250709000001"


async def _post_inbound(running, tls_files, message_id: str, text: str) -> int:
    body = urlencode(
        {
            "message_id": message_id,
            "form": PHONE[1:],
            "content": text,
            "sms_date": "2026-12-02 10:00:00",
        }
    )
    url = url_for(running, "/callbacks/vavasms/inbound", "127.0.0.2")
    async with client(tls_files, "127.0.0.2") as session:
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
        async with session.post(url, data=body, headers=headers) as resp:
            return resp.status


async def _check(settings: Settings) -> tuple[int, str]:
    proc = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "smsrx.cli", "optouts", "check", PHONE],
        env=settings_env(settings),
        capture_output=True,
        text=True,
        timeout=60,
    )
    return proc.returncode, proc.stdout


async def test_arret_posted_to_the_receiver_suppresses_and_start_lifts_it(
    runner, settings_factory, tls_files, db
) -> None:
    """ "Arrêt" posted twice is one opt_out: check exits 3 and the API agrees; START lifts it."""
    settings = settings_factory(allow_vavasms=(ipaddress.ip_network("127.0.0.2/32"),))
    worker = runner.inbound(settings)
    async with running_receiver(settings, tls_files) as running, read_api(worker) as http:
        assert await _post_inbound(running, tls_files, "MO-1", "Arrêt") == 200
        assert await _post_inbound(running, tls_files, "MO-1", "Arrêt") == 200  # a retry
        await wait_for(lambda: suppression(db, PHONE), "the suppression row")

        events = [
            decode_opt_out(r.value)
            for r in await read_topic(settings.kafka_bootstrap, settings.topics.opt_outs, idle=1.0)
        ]
        assert [(e.phone, e.action.value, e.keyword) for e in events] == [
            (PHONE, "opt_out", "ARRET")
        ]
        code, out = await _check(settings)
        assert code == 3, out
        assert "suppressed" in out and "ARRET" in out
        answer = await api(http, PHONE)
        assert (answer["suppressed"], answer["keyword"]) == (True, "ARRET")
        assert answer["since"] == "2026-12-02T10:00:00.000000Z"  # the SMS's own date

        assert await _post_inbound(running, tls_files, "MO-2", "START") == 200

        async def lifted() -> bool:
            row = await suppression(db, PHONE)
            return row is not None and row["suppressed"] is False

        await wait_for(lifted, "the opt-in applied")
        code, out = await _check(settings)
        assert code == 0, out
        assert (await api(http, PHONE))["suppressed"] is False
    await runner.stop(worker)
