"""Personal data: numbers masked in logs, no SMS text in any process's log, and
`smsrx privacy erase` (the suppression list keeps the number)."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import signal
import ssl
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlencode

import aiohttp
import asyncpg
import orjson
import pytest

from smsrx.cli.dev.process import free_port
from smsrx.logs import MaskingFormatter
from smsrx.phones import country_alpha3
from smsrx.privacy import erasure_token, is_erased, mask_phone
from smsrx.settings import Settings
from tests.helpers import dev_command_env, process_env, settings_env
from tests.subscriptions.fake_orange import FakeOrange

# -- masking ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("+2250700000001", "+2250700****01"),
        ("to tel:+33612345678 now", "to tel:+33612****78 now"),
        ("Key (phone)=(+14155552671) exists", "Key (phone)=(+14155****71) exists"),
        (
            "/outbound/tel%3A%2B2250700000099/subscriptions",
            "/outbound/tel%3A%2B2250700****99/subscriptions",
        ),
        ("form=2250709000001&x=1", "form=2250709****01&x=1"),
        ('{"from": "2250709000001"}', '{"from": "2250709****01"}'),
        ("+4915123456789 and +2250700000002", "+491512*****89 and +2250700****02"),
    ],
)
def test_mask_phone_keeps_the_country_code_a_few_digits_and_the_last_two(
    text: str, masked: str
) -> None:
    """Every number in a text, in any of its written forms, is masked in the middle."""
    assert mask_phone(text) == masked


@pytest.mark.parametrize(
    "text",
    [
        "event 5f0c9d1e-1c2b-4a5e-9f0e-123456789012",
        "2026-12-02T10:00:00.000000Z took=123.4ms",
        "127.0.0.1:19092 pid=12345",
        "short +2250700 numbers",
        "already +2250700****01",
    ],
)
def test_mask_phone_leaves_what_is_not_a_number(text: str) -> None:
    """Ids, times, addresses, short numbers and masked numbers stay as they are."""
    assert mask_phone(text) == text


def test_bare_digits_are_masked_only_when_asked() -> None:
    """bare=False masks numbers in international form only (what the log formatter does)."""
    assert mask_phone("offset=2250709000001", bare=False) == "offset=2250709000001"
    assert mask_phone("+2250709000001", bare=False) == "+2250709****01"


def test_the_log_formatter_masks_messages_and_tracebacks() -> None:
    """A number in a log line's message or in its traceback leaves the formatter masked."""
    formatter = MaskingFormatter("%(message)s")
    try:
        raise ValueError("refused +2250700000001")
    except ValueError:
        record = logging.LogRecord(
            "t", logging.ERROR, __file__, 1, "for %s", ("tel:+33612345678",), sys.exc_info()
        )
    line = formatter.format(record)
    assert "2250700000001" not in line and "33612345678" not in line
    assert "for tel:+33612****78" in line and "ValueError: refused +2250700****01" in line


def test_an_erasure_token_is_random_and_keeps_the_country() -> None:
    """Tokens are erased:<alpha-3>:<16 hex>, never twice the same, and keep their country."""
    first, second = erasure_token("CIV"), erasure_token("CIV")
    assert re.fullmatch(r"erased:CIV:[0-9a-f]{16}", first) and first != second
    assert is_erased(first) and not is_erased("+2250700000001")
    assert country_alpha3(first) == "CIV"


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


def _receipt(message_id: str, *numbers: str, status: str = "DeliveredToTerminal") -> bytes:
    infos = [{"address": f"tel:{n}", "deliveryStatus": status} for n in numbers]
    note = {"callbackData": message_id, "deliveryInfo": infos[0] if len(infos) == 1 else infos}
    return orjson.dumps({"deliveryInfoNotification": note})


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
                assert await post(dr, _receipt("pm-1", number, status=status), json_type) == 200
        listed = _receipt("pm-2", RECEIPT_NUMBERS[0], RECEIPT_NUMBERS[2])
        assert await post(dr, listed, json_type) == 200
        assert await post(dr, listed, json_type) == 200  # a duplicate
        assert await post(dr, _receipt("pm-3", f"+{INVALID}"), json_type) == 400
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


async def _tables_holding(conn: asyncpg.Connection, text: str) -> dict[str, int]:
    """The tables with a row whose text holds ``text``, and how many rows."""
    names = await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
    found = {}
    for name in (row["tablename"] for row in names):
        count = await conn.fetchval(
            f'SELECT count(*) FROM "{name}" t WHERE strpos(t::text, $1) > 0', text
        )
        if count:
            found[name] = count
    return found


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
                holding = await _tables_holding(conn, number[1:])
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


# -- secrets ----------------------------------------------------------------------------


def test_secrets_stay_out_of_doctor_and_help(tmp_path: Path) -> None:
    """`smsrx doctor` (text and JSON) and `smsrx --help` never print a secret, given or in a file."""
    header = tmp_path / "orange_auth_header"
    header.write_text("Basic c2VjcmV0LWhlYWRlcg==\n")
    env = process_env(
        STATE_DIR=str(tmp_path),
        KAFKA_BOOTSTRAP=f"127.0.0.1:{free_port()}",
        DATABASE_URL=f"postgresql://smsrx:hunter2-pw@127.0.0.1:{free_port()}/smsrx",
        ORANGE_AUTH_HEADER_FILE=str(header),
        ORANGE_SENDER="2250000",
    )
    outputs = []
    for args in (
        ["doctor", "--timeout", "0.5"],
        ["doctor", "--json", "--timeout", "0.5"],
        ["--help"],
    ):
        done = subprocess.run(
            [sys.executable, "-m", "smsrx.cli", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode in (0, 1), done.stderr
        outputs.append(done.stdout + done.stderr)
    assert "127.0.0.1" in outputs[0] and "SMSRX_ORANGE_AUTH_HEADER_FILE" in outputs[2]
    for output in outputs:
        assert "hunter2" not in output and "c2VjcmV0LWhlYWRlcg" not in output, output


# -- smsrx privacy erase -------------------------------------------------------------------

PERSON = "+2250700000001"
OTHER = "+2250700000002"
TEXT = "Mon code est 4821, rappelez-moi"
_AT = datetime(2026, 12, 2, 10, 0, tzinfo=UTC)


async def _fill(db: asyncpg.Connection) -> None:
    """A row in every table, the person's beside another's (one callback names them both)."""
    p, o, digits = PERSON, OTHER, PERSON[1:]
    both = _receipt("m-1", p, o).decode()
    only_other = _receipt("m-2", o).decode()
    await db.execute(
        "INSERT INTO submissions (provider, message_id, event_id, recipients, submitted_at) VALUES"
        " ('orange', 'm-1', 's-1', $1, $3), ('orange', 'm-2', 's-2', $2, $3)",
        [p, o],
        [o],
        _AT,
    )
    await db.execute(
        "INSERT INTO recipient_status (provider, message_id, recipient, status, status_rank,"
        " is_final, status_at) VALUES ('orange', 'm-1', $1, 'delivered', 5, true, $3),"
        " ('orange', 'm-1', $2, 'sent', 1, false, $3), ('orange', 'm-2', $2, 'sent', 1, false, $3)",
        p,
        o,
        _AT,
    )
    await db.execute(
        "INSERT INTO status_events (event_id, provider, message_id, recipient, status,"
        " provider_status, synthetic, received_at, raw) VALUES"
        " (gen_random_uuid(), 'orange', 'm-1', $1, 'sent', 'DeliveredToNetwork', false, $5, $3::json),"
        " (gen_random_uuid(), 'orange', 'm-1', $1, 'delivered', 'DeliveredToTerminal', false, $5, $3::json),"
        " (gen_random_uuid(), 'orange', 'm-1', $2, 'sent', 'DeliveredToNetwork', false, $5, $3::json),"
        " (gen_random_uuid(), 'orange', 'm-2', $2, 'sent', 'DeliveredToNetwork', false, $5, $4::json)",
        p,
        o,
        both,
        only_other,
        _AT,
    )
    raw = orjson.dumps({"message_id": "mo-1", "form": digits, "content": TEXT}).decode()
    await db.execute(
        "INSERT INTO inbound_messages (provider, message_id, event_id, sender, content, sent_at,"
        " sent_at_text, received_at, raw) VALUES"
        " ('vavasms', 'mo-1', 'e-1', $1, $3, $5, '2026-12-02 10:00', $5, $4::json),"
        " ('vavasms', 'mo-2', 'e-2', $2, 'Bonjour', $5, '2026-12-02 10:00', $5, '{\"form\": \"x\"}')",
        p,
        o,
        TEXT,
        raw,
        _AT,
    )
    change = {"message_id": "m-1", "recipient": p, "status": "delivered"}
    await db.execute(
        "INSERT INTO status_outbox (key, value) VALUES ($1, $2::json), ($3, $4::json)",
        f"m-1/{p}",
        orjson.dumps(change).decode(),
        f"m-2/{o}",
        orjson.dumps({**change, "recipient": o}).decode(),
    )
    await db.execute(
        "INSERT INTO optout_events (event_id, phone, action, keyword, provider, inbound_message_id,"
        " occurred_at, received_at, source) VALUES"
        " ('00000000-0000-4000-8000-000000000001', $1, 'opt_out', 'STOP', 'vavasms', 'mo-1', $2, $2, 'keyword')",
        p,
        _AT,
    )
    await db.execute(
        "INSERT INTO suppressions (phone, suppressed, keyword, source, provider, occurred_at, event_id)"
        " VALUES ($1, true, 'STOP', 'keyword', 'vavasms', $2, '00000000-0000-4000-8000-000000000001')",
        p,
        _AT,
    )
    for sql in (
        "INSERT INTO analytics_receipts_minute VALUES ($1, 'orange', 'CIV', 'delivered', 2)",
        "INSERT INTO analytics_inbound_minute VALUES ($1, 'vavasms', 'CIV', 2)",
        "INSERT INTO analytics_outcomes_minute VALUES ($1, 'orange', 'CIV', 'delivered', 1)",
        "INSERT INTO analytics_latency_hour VALUES ($1, 'orange', 'CIV', 'submission', 'delivered', 10, 1)",
        "INSERT INTO analytics_processed_events VALUES (gen_random_uuid(), $1)",
        "INSERT INTO receiver_dedup VALUES ('e-1', 'vavasms', 'mo-1', $1)",
        "INSERT INTO inbound_routed VALUES (gen_random_uuid(), 'opt-out', $1)",
        "INSERT INTO orange_subscriptions (id, sender, notify_url, created_at) VALUES ('s', '2250000', 'https://x/dr', $1)",
    ):
        await db.execute(sql, _AT)


async def _snapshot(db: asyncpg.Connection) -> dict[str, list[str]]:
    """Every row of every table, as text, sorted."""
    names = await db.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
    return {
        row["tablename"]: sorted(
            r["t"] for r in await db.fetch(f'SELECT t::text AS t FROM "{row["tablename"]}" t')
        )
        for row in names
    }


def _erase(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    """``smsrx privacy erase ARGS`` with stdin that is not a terminal."""
    return subprocess.run(
        [sys.executable, "-m", "smsrx.cli", "privacy", "erase", *args],
        env=settings_env(settings),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )


async def test_erase_changes_every_table_but_the_suppression_list(
    settings: Settings, db: asyncpg.Connection
) -> None:
    """After an erasure the number is only in the suppression list; nobody else's data changes."""
    await _fill(db)
    before = await _snapshot(db)
    empty = sorted(
        table for table, rows in before.items() if not rows and table != "schema_migrations"
    )
    assert not empty, (
        f"new tables {empty}: give them a row in _fill, and decide what erase does to them"
    )
    assert set(await _tables_holding(db, PERSON[1:])) >= {
        "inbound_messages", "status_events", "recipient_status", "submissions", "status_outbox",
        "suppressions", "optout_events",
    }  # fmt: skip

    done = _erase(settings, PERSON, "--yes", "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["rows"] == {
        "inbound_messages": 1,
        "status_events": 3,  # the person's two receipts, and the other's, whose callback named them
        "recipient_status": 1,
        "submissions": 1,
        "status_outbox": 1,
    }
    assert report["kept"] == {"suppressions": 1, "optout_events": 1}
    assert report["phone"] == "+2250700****01" and report["erased"] is True
    token = report["token"]
    assert re.fullmatch(r"erased:CIV:[0-9a-f]{16}", token)
    assert PERSON[1:] not in done.stdout + done.stderr

    assert await _tables_holding(db, PERSON[1:]) == {"suppressions": 1, "optout_events": 1}
    assert await _tables_holding(db, TEXT[:12]) == {}
    inbound = await db.fetchrow(
        "SELECT sender, content, raw::text AS raw FROM inbound_messages WHERE message_id = 'mo-1'"
    )
    assert tuple(inbound) == (token, "", "{}")
    assert await db.fetchval(
        "SELECT text_erased_at IS NOT NULL FROM inbound_messages WHERE message_id = 'mo-1'"
    )
    assert await db.fetchval("SELECT count(*) FROM status_events WHERE recipient = $1", token) == 2
    assert await db.fetchval("SELECT recipients FROM submissions WHERE message_id = 'm-1'") == [
        token,
        OTHER,
    ]
    assert (
        await db.fetchval("SELECT key FROM status_outbox WHERE value->>'recipient' = $1", token)
        == f"m-1/{token}"
    )
    assert (
        await db.fetchrow(
            "SELECT status, is_final FROM recipient_status WHERE recipient = $1", token
        )
    )["status"] == "delivered"

    after = await _snapshot(db)
    for table in ("suppressions", "optout_events", "analytics_receipts_minute", "analytics_inbound_minute",
                  "analytics_outcomes_minute", "analytics_latency_hour", "analytics_processed_events",
                  "receiver_dedup", "inbound_routed", "orange_subscriptions"):  # fmt: skip
        assert after[table] == before[table], table
    other = await db.fetch(
        "SELECT raw::text AS raw FROM status_events WHERE recipient = $1 ORDER BY message_id", OTHER
    )
    assert [r["raw"] for r in other] == ["{}", _receipt("m-2", OTHER).decode()]

    again = _erase(settings, PERSON, "--yes", "--json")
    repeat = json.loads(again.stdout)
    assert again.returncode == 0 and sum(repeat["rows"].values()) == 0 and repeat["token"] is None
    assert await _snapshot(db) == after


async def test_erase_asks_before_it_changes_anything(
    settings: Settings, db: asyncpg.Connection
) -> None:
    """Without --yes: exit 1 untouched when stdin is no terminal or the answer is not yes."""
    await _fill(db)
    before = await _snapshot(db)

    piped = _erase(settings, PERSON)
    assert piped.returncode == 1
    assert "would erase the data of +2250700****01" in piped.stdout
    assert "suppressions" in piped.stdout and "never messaged again" in piped.stdout
    assert "--yes" in piped.stderr
    assert await _snapshot(db) == before

    for answer, code in (("no\n", 1), ("yes\n", 0)):
        controller, terminal = os.openpty()
        try:
            proc = subprocess.Popen(
                [sys.executable, "-m", "smsrx.cli", "privacy", "erase", PERSON],
                env=settings_env(settings),
                stdin=terminal,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            os.write(controller, answer.encode())
            out, err = await asyncio.to_thread(proc.communicate, timeout=60)
        finally:
            os.close(controller)
            os.close(terminal)
        assert proc.returncode == code, err
        assert "type 'yes'" in err
        if code:
            assert "nothing erased" in err
            assert await _snapshot(db) == before
        else:
            assert out.startswith("erased the data of +2250700****01 (now erased:CIV:")
    assert await _tables_holding(db, PERSON[1:]) == {"suppressions": 1, "optout_events": 1}


async def test_erase_by_a_role_that_may_not_write_changes_nothing(
    settings: Settings, db: asyncpg.Connection
) -> None:
    """A database role that may only read gets one line naming what to do, exit 1, no change."""
    await _fill(db)
    before = await _snapshot(db)
    role = "smsrx_test_reader"
    await db.execute(f"DROP ROLE IF EXISTS {role}")
    await db.execute(f"CREATE ROLE {role} LOGIN")
    try:
        database = await db.fetchval("SELECT current_database()")
        await db.execute(f'GRANT CONNECT ON DATABASE "{database}" TO {role}')
        await db.execute(f"GRANT USAGE ON SCHEMA public TO {role}")
        await db.execute(f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {role}")
        reader_url = re.sub(r"//[^@/]*@", f"//{role}@", settings.database_url)
        done = _erase(settings.with_(database_url=reader_url), PERSON, "--yes")
    finally:
        await db.execute(f"REVOKE ALL ON ALL TABLES IN SCHEMA public FROM {role}")
        await db.execute(f"REVOKE ALL ON SCHEMA public FROM {role}")
        await db.execute(f'REVOKE ALL ON DATABASE "{database}" FROM {role}')
        await db.execute(f"DROP ROLE {role}")
    assert done.returncode == 1, done.stderr
    assert done.stderr.startswith("smsrx privacy erase: nothing erased: permission denied")
    assert "database owner's SMSRX_DATABASE_URL" in done.stderr and "Traceback" not in done.stderr
    assert await _snapshot(db) == before


def test_erase_refuses_what_is_not_a_number() -> None:
    """A malformed number exits 2 with one line, before reaching the database."""
    done = _erase(Settings(database_url="postgresql://nobody@127.0.0.1:1/none"), "12ab", "--yes")
    assert done.returncode == 2
    assert done.stderr.startswith("smsrx privacy erase: not a phone number in international form")


async def test_an_erased_pending_recipient_is_never_expired(
    settings: Settings, db: asyncpg.Connection
) -> None:
    """The expiry sweep never claims an erased recipient: it would publish the token."""
    from consumers.expiry import _CLAIM

    await db.execute(
        "INSERT INTO recipient_status (provider, message_id, recipient, status, is_final,"
        " provider_status, status_event_id, first_event_at, last_event_at, event_count)"
        " VALUES ('orange', 'm-9', $1, 'sent', false, 'DeliveredToNetwork', 'e-9', $2, $2, 1)",
        PERSON,
        _AT,
    )
    done = _erase(settings, PERSON, "--yes", "--json")
    assert done.returncode == 0, done.stderr
    far = _AT.replace(year=_AT.year + 10)
    claimed = await db.fetch(_CLAIM, far, far, far, 100)
    assert [r["recipient"] for r in claimed] == []
