"""`smsrx optouts` as a process against the real broker and PostgreSQL, with the inbound
worker running in-process to apply what it publishes."""

from __future__ import annotations

import asyncio
import csv
import io
import subprocess
import sys
from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any

import asyncpg
import orjson

from consumers.optouts_csv import CSV_COLUMNS
from smsrx.cli.dev.process import free_port
from smsrx.codec import decode_opt_out
from smsrx.events import OptOut, OptOutAction, OptOutSource
from smsrx.settings import Settings
from tests.consumers.conftest import T0, api, feed, read_api, wait_for
from tests.helpers import read_topic, settings_env

PHONE = "+2250700000001"


async def smsrx(
    settings: Settings, *argv: str, stdin: bytes | None = None, **variables: str
) -> tuple[int, str, str]:
    """Run ``python -m smsrx.cli ARGV`` on the test's broker, topics and database."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "smsrx.cli",
        *argv,
        env=settings_env(settings, **variables),
        stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(stdin), 90)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def rows(db: asyncpg.Connection, table: str) -> list[dict[str, Any]]:
    """Every row of ``table``, in a stable order."""
    order = "phone" if table == "suppressions" else "event_id"
    return [dict(r) for r in await db.fetch(f"SELECT * FROM {table} ORDER BY {order}")]


async def count(db: asyncpg.Connection, query: str) -> int:
    """The single value of ``query``."""
    return int(await db.fetchval(query))


def parse_csv(text: str) -> list[dict[str, str]]:
    """The rows of a CSV text with a header."""
    return list(csv.DictReader(io.StringIO(text)))


async def test_add_check_remove_with_list_export_and_the_read_api(runner, settings, db) -> None:
    """`add` publishes an api opt-out that suppresses the number (check exits 3, the read API
    agrees, list and export show it); `remove` lifts it (check exits 0)."""
    worker = runner.inbound(settings)
    async with read_api(worker) as http:
        code, out, err = await smsrx(
            settings, "optouts", "add", "+225 07 00 00 00 01", "--reason", "asked by phone"
        )
        assert code == 0, err
        [record] = await read_topic(settings.kafka_bootstrap, settings.topics.opt_outs)
        event = decode_opt_out(record.value)
        assert bytes(record.key) == PHONE.encode()
        assert (event.phone, event.action, event.source, event.reason, event.keyword) == (
            PHONE,
            OptOutAction.OPT_OUT,
            OptOutSource.API,
            "asked by phone",
            None,
        )
        assert f"published opt_out {event.event_id} for {PHONE}" in out
        assert f"{settings.topics.opt_outs}[{record.partition}]@{record.offset}" in out
        assert "inbound worker" in out

        await wait_for(lambda: count(db, "SELECT count(*) FROM suppressions"), "the suppression")
        code, out, _ = await smsrx(settings, "optouts", "check", PHONE)
        since = event.occurred_at.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        assert (code, out) == (3, f"{PHONE}: suppressed since {since} (api: asked by phone)\n")
        code, out, _ = await smsrx(settings, "optouts", "check", PHONE, "--json")
        assert code == 3
        assert orjson.loads(out) == await api(http, PHONE)
        assert (await api(http, PHONE))["suppressed"] is True

        code, out, err = await smsrx(settings, "optouts", "list")
        assert code == 0 and PHONE in out and "suppressed" in out and "asked by phone" in out
        assert "1 suppressed number(s)" in err
        code, out, _ = await smsrx(settings, "optouts", "list", "--json", "--since", "1h")
        [listed] = orjson.loads(out)
        assert listed == {
            "phone": PHONE,
            "suppressed": True,
            "since": since,
            "keyword": None,
            "source": "api",
            "reason": "asked by phone",
            "event_id": event.event_id,
        }
        code, out, _ = await smsrx(settings, "optouts", "export")
        assert out.splitlines()[0] == ",".join(CSV_COLUMNS)
        assert parse_csv(out) == [
            {
                "phone": PHONE,
                "action": "opt_out",
                "occurred_at": since,
                "keyword": "",
                "source": "api",
                "reason": "asked by phone",
                "event_id": event.event_id,
            }
        ]

        code, out, err = await smsrx(settings, "optouts", "remove", PHONE, "--reason", "by email")
        assert code == 0 and "published opt_in" in out, err

        async def lifted() -> bool:
            return not await db.fetchval("SELECT suppressed FROM suppressions")

        await wait_for(lifted, "the opt-in applied")
        code, out, _ = await smsrx(settings, "optouts", "check", PHONE)
        assert code == 0 and out.startswith(f"{PHONE}: may be messaged (opted back in ")
        assert (await api(http, PHONE))["suppressed"] is False
        code, out, err = await smsrx(settings, "optouts", "list")
        assert (code, out) == (0, "") and "0 suppressed number(s)" in err
        code, out, _ = await smsrx(settings, "optouts", "list", "--all")
        assert "opted in" in out and "by email" in out
        assert parse_csv((await smsrx(settings, "optouts", "export"))[1]) == []
        [row] = parse_csv((await smsrx(settings, "optouts", "export", "--all"))[1])
        assert (row["action"], row["reason"]) == ("opt_in", "by email")

        code, out, _ = await smsrx(settings, "optouts", "check", "+2250700000002")
        assert (code, out) == (0, "+2250700000002: may be messaged (never opted out)\n")
    await runner.stop(worker)


def numbers_csv(count: int) -> str:
    """``count`` distinct numbers: opt-outs and some opt-ins, some dated, some with a reason."""
    lines = ["phone,action,occurred_at,reason"]
    for i in range(count):
        action = "opt_in" if i % 10 == 0 else ("opt_out" if i % 2 else "")
        when = "2026-03-02T09:00:00Z" if i % 3 == 0 else ""
        reason = "crm" if i % 4 == 0 else ""
        lines.append(f"+22507{10_000_000 + i:08d},{action},{when},{reason}")
    return "\n".join(lines) + "\n"


async def test_import_applies_and_importing_again_changes_nothing(
    runner, settings, db, tmp_path: Path
) -> None:
    """Importing 2,000 numbers suppresses them; the same import again publishes the same
    event ids and changes no row of suppressions or optout_events."""
    file = tmp_path / "numbers.csv"
    file.write_text(numbers_csv(2000))
    worker = runner.inbound(settings)
    code, out, err = await smsrx(settings, "optouts", "import", str(file))
    assert code == 0, err
    assert out.startswith("published 2,000, skipped 0 (2,000 rows)")
    await runner.drain(worker, records=2000)
    assert await count(db, "SELECT count(*) FROM optout_events") == 2000
    assert await count(db, "SELECT count(*) FROM suppressions WHERE suppressed") == 1800
    assert await count(db, "SELECT count(*) FROM suppressions WHERE source <> 'api'") == 0
    dated = await count(db, "SELECT count(*) FROM suppressions WHERE occurred_at = '1970-01-01Z'")
    assert dated == 2000 - 667  # rows without occurred_at are dated the epoch
    suppressions = await rows(db, "suppressions")
    history = await rows(db, "optout_events")
    first = [
        decode_opt_out(r.value).event_id
        for r in await read_topic(settings.kafka_bootstrap, settings.topics.opt_outs)
    ]

    code, out, err = await smsrx(settings, "optouts", "import", str(file))
    assert code == 0, err
    await runner.drain(worker, records=4000)
    published = [
        decode_opt_out(r.value).event_id
        for r in await read_topic(settings.kafka_bootstrap, settings.topics.opt_outs)
    ]
    assert len(set(first)) == 2000
    assert Counter(published) == {event_id: 2 for event_id in first}  # each id once more
    assert await rows(db, "suppressions") == suppressions
    assert await rows(db, "optout_events") == history
    await runner.stop(worker)


async def test_import_reports_invalid_rows_with_their_line_numbers(
    runner, settings, db, tmp_path: Path
) -> None:
    """Rows with a bad phone, action, occurred_at or event_id are reported with their line
    number and skipped, the others published; exit status 1."""
    text = (
        "phone,action,occurred_at,event_id\n"
        "+2250700000001,opt_out,,\n"
        "hello,opt_out,,\n"
        "+2250700000002,maybe,,\n"
        "\n"
        "+2250700000003,,yesterday,\n"
        "+2250700000004,,,not-a-uuid\n"
        "tel:+2250700000005,OPT_IN,2026-03-02T09:00:00+01:00,\n"
    )
    worker = runner.inbound(settings)
    code, out, err = await smsrx(settings, "optouts", "import", "-", stdin=text.encode())
    assert code == 1
    assert out.startswith("published 2, skipped 4 (6 rows)")
    lines = err.splitlines()
    assert len(lines) == 4, err
    assert lines[0].startswith("stdin, line 3: phone 'hello': ")
    assert lines[1] == "stdin, line 4: action 'maybe': expected opt_out or opt_in (skipped)"
    assert lines[2].startswith("stdin, line 6: occurred_at 'yesterday': expected RFC 3339")
    assert lines[3] == "stdin, line 7: event_id 'not-a-uuid': expected a UUID (skipped)"
    await runner.drain(worker, records=2)
    states = {r["phone"]: r for r in await rows(db, "suppressions")}
    assert set(states) == {PHONE, "+2250700000005"}
    assert states["+2250700000005"]["suppressed"] is False
    assert states["+2250700000005"]["occurred_at"] == T0 - timedelta(hours=1)
    await runner.stop(worker)

    file = tmp_path / "no-header.csv"
    file.write_text("+2250700000001\n")
    code, out, err = await smsrx(settings, "optouts", "import", str(file))
    assert (code, out) == (2, "") and len(err.splitlines()) == 1 and "'phone'" in err
    code, out, err = await smsrx(settings, "optouts", "import", str(tmp_path / "absent.csv"))
    assert (code, out) == (2, "") and err.startswith("smsrx: cannot read ") and "\n" == err[-1:]


async def test_expected_failures_end_in_one_line_and_an_exit_code(settings) -> None:
    """An invalid number exits 2, an unreachable database or broker 4, a broker without
    idempotence 5: each with one line on stderr and no traceback."""
    code, out, err = await smsrx(settings, "optouts", "check", "hello")
    assert (code, out) == (2, "")
    assert err.splitlines() == [err.strip()] and err.startswith("smsrx: 'hello' is not a phone")
    nowhere = f"127.0.0.1:{free_port()}"
    cases = [
        (("check", PHONE), {"DATABASE_URL": f"postgresql://smsrx@{nowhere}/smsrx"}, 4),
        (("add", PHONE, "--reason", "x"), {"KAFKA_BOOTSTRAP": nowhere}, 4),
        (("add", PHONE, "--reason", "x"), {"KAFKA_IDEMPOTENCE": "1"}, 5),
    ]
    for argv, variables, expected in cases:
        code, out, err = await smsrx(settings, "optouts", *argv, **variables)
        assert (code, out) == (expected, ""), err
        assert len(err.splitlines()) == 1 and err.startswith("smsrx: "), err
    code, _, err = await smsrx(settings, "optouts", "add", PHONE)
    assert code == 2 and "--reason" in err and len(err.splitlines()) == 1


async def test_export_then_import_into_a_fresh_state_gives_the_same_states(
    runner, settings, db
) -> None:
    """An export --all imported into emptied tables gives every number the same state,
    moment, reason and event id (as api events, without keyword)."""
    at = T0 + timedelta(days=1)
    events = [
        OptOut.from_keyword(
            phone=PHONE,
            action=OptOutAction.OPT_OUT,
            keyword="ARRET",
            provider="vavasms",
            inbound_message_id="SM-1",
            occurred_at=at,
            received_at=at,
        ),
        OptOut.manual(
            phone="+2250700000002",
            action=OptOutAction.OPT_OUT,
            occurred_at=at,
            received_at=at,
            reason='asked, with a comma, and "quotes"',
        ),
        OptOut.manual(
            phone="+2250700000002", action=OptOutAction.OPT_IN, occurred_at=at, received_at=at
        ),
        OptOut.manual(
            phone="+33612345678",
            action=OptOutAction.OPT_OUT,
            occurred_at=at + timedelta(microseconds=7),
            received_at=at,
        ),
    ]
    worker = runner.inbound(settings)
    await feed(settings, settings.topics.opt_outs, events)
    await runner.drain(worker, records=len(events))
    code, exported, err = await smsrx(settings, "optouts", "export", "--all")
    assert code == 0 and "3 number(s) exported" in err
    before = parse_csv(exported)
    assert len(before) == 3

    await db.execute("TRUNCATE optout_events, suppressions")
    code, out, err = await smsrx(settings, "optouts", "import", "-", stdin=exported.encode())
    assert code == 0 and out.startswith("published 3, skipped 0"), err
    await runner.drain(worker, records=len(events) + 3)
    after = parse_csv((await smsrx(settings, "optouts", "export", "--all"))[1])
    assert after == [{**row, "source": "api", "keyword": ""} for row in before]
    await runner.stop(worker)
