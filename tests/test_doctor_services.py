"""`smsrx doctor`: the whole report and the items that ask a service (the broker,
PostgreSQL, Orange's API), checked against the real broker and PostgreSQL, in process and
as an operator runs it. The local items are in tests/test_doctor_local.py."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from smsrx.cli.dev.process import free_port
from smsrx.cli.doctor import collect, render_text
from smsrx.cli.doctor_services import orange
from smsrx.clock import utcnow
from smsrx.db import migrations
from smsrx.settings import Settings, parse_networks
from smsrx.topics import Topics
from subscriptions import operations
from subscriptions.client import RetryPolicy, open_client
from subscriptions.store import State, open_store
from tests.doctor_harness import by_name, doctor_env, not_ok, smsrx_doctor
from tests.helpers import process_env
from tests.subscriptions.fake_orange import FakeOrange

AUTH_HEADER = "Basic c21zcng6dG9wLXNlY3JldC1jbGllbnQ="
SENDER = "2250000"
NOTIFY_URL = "https://example.com/callbacks/orange/dr"


@pytest.fixture
def healthy(settings: Settings, tls_files: dict[str, Path], tmp_path: Path) -> Settings:
    """Settings every item of which is right: migrated database, topics, certificate, allowlists."""
    return settings.with_(
        tls_cert=tls_files["cert"],
        tls_key=tls_files["key"],
        allow_vavasms=parse_networks("test", "127.0.0.1"),
        spool_dir=tmp_path / "spool",
    )


# -- the whole report --------------------------------------------------------------------


async def test_all_ok_on_a_migrated_database_with_topics(healthy: Settings) -> None:
    """Every item is OK against a migrated database, created topics and a valid certificate."""
    checks = await collect(healthy)
    assert not_ok(checks) == [], render_text(checks)
    assert list(by_name(checks)) == [
        "broker",
        "idempotence",
        "topics",
        "postgres",
        "migrations",
        "certificate",
        "allowlist orange",
        "allowlist vavasms",
        "trusted proxies",
        "orange subscription",
        "polling gatewaysms",
        "polling vavasms",
        "spool",
    ]
    found = by_name(checks)
    assert "SMSRX_KAFKA_IDEMPOTENCE=0" in found["idempotence"].detail
    assert "4 partition(s) each" in found["topics"].detail
    assert found["migrations"].detail.startswith(f"all {len(migrations())} applied")
    assert found["orange subscription"].detail.startswith("not configured")
    assert found["polling gatewaysms"].detail.startswith("not configured")
    assert "SMSRX_VAVASMS_USERNAME and SMSRX_VAVASMS_PASSWORD" in found["polling vavasms"].detail


async def test_json_output_parses_and_exits_0(healthy: Settings, tmp_path: Path) -> None:
    """`smsrx doctor --json`, run as a process on a healthy configuration, prints JSON and exits 0."""
    code, out, err = await smsrx_doctor(doctor_env(healthy, tmp_path), "--json")
    assert code == 0, out + err
    assert "Traceback" not in err
    report = json.loads(out)
    assert report["ok"] is True
    assert report["counts"] == {"ok": 13, "warn": 0, "fail": 0}
    assert {item["status"] for item in report["checks"]} == {"ok"}
    assert set(report["checks"][0]) == {"name", "status", "ok", "detail", "fix"}


async def test_unreachable_broker_fails_with_the_fix(healthy: Settings, tmp_path: Path) -> None:
    """A broker nobody listens for is one failed item with its fix, exit 1, and no traceback."""
    env = doctor_env(healthy, tmp_path, KAFKA_BOOTSTRAP=f"127.0.0.1:{free_port()}")
    code, out, err = await smsrx_doctor(env)
    assert code == 1, out + err
    assert "Traceback" not in out + err
    lines = out.splitlines()
    broker = next(i for i, line in enumerate(lines) if line.startswith("FAIL  broker"))
    assert "cannot reach 127.0.0.1:" in lines[broker]
    assert "fix: start the broker, or set SMSRX_KAFKA_BOOTSTRAP" in lines[broker + 1]
    assert not any(line.split()[1:2] in (["idempotence"], ["topics"]) for line in lines if line)
    assert "OK    postgres" in out
    assert out.rstrip().endswith("1 failed")


async def test_silent_broker_and_database_fail_within_the_limit(healthy: Settings) -> None:
    """A port that accepts connections and never answers fails both services within --timeout."""
    held: list[asyncio.StreamWriter] = []

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    silent = healthy.with_(
        kafka_bootstrap=f"127.0.0.1:{port}", database_url=f"postgresql://x@127.0.0.1:{port}/db"
    )
    try:
        # The details below say the 1 s limit cut each check short; how long the whole
        # run took is bench territory, so no clock here.
        found = by_name(await collect(silent, limit=1.0))
    finally:
        for writer in held:
            writer.close()
        server.close()
        await server.wait_closed()
    assert found["broker"].ok is False and "no answer within 1s" in found["broker"].detail
    assert found["postgres"].ok is False and "no answer within 1s" in found["postgres"].detail
    assert "migrations" not in found and "topics" not in found


# -- broker ------------------------------------------------------------------------------


async def test_idempotence_on_against_a_broker_without_it_fails(healthy: Settings) -> None:
    """SMSRX_KAFKA_IDEMPOTENCE=1 against the development broker fails and says to set it to 0."""
    found = by_name(await collect(healthy.with_(kafka_idempotence=True)))
    assert found["idempotence"].ok is False
    assert "has no idempotent producer (InitProducerId: " in found["idempotence"].detail
    assert found["idempotence"].fix == "set SMSRX_KAFKA_IDEMPOTENCE=0 for this broker"


async def test_missing_topics_fail(healthy: Settings) -> None:
    """Topics under a prefix nobody created fail, naming them, with 'smsrx topics create'."""
    bare = healthy.with_(topics=Topics(prefix=f"none{uuid.uuid4().hex[:8]}."))
    found = by_name(await collect(bare))
    assert found["topics"].ok is False
    assert f"missing: {bare.topics.delivery_receipts}" in found["topics"].detail
    assert found["topics"].fix is not None and "smsrx topics create" in found["topics"].fix


# -- PostgreSQL --------------------------------------------------------------------------


@pytest.fixture
async def bare_database(postgres) -> AsyncIterator[str]:
    """A new, empty database on the test server: nothing migrated."""
    name = f"doctor_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(postgres.url("postgres"))
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        yield postgres.url(name)
        await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
    finally:
        await admin.close()


async def test_database_not_migrated_fails(healthy: Settings, bare_database: str) -> None:
    """A database without the migrations fails, lists them pending, and says 'smsrx db migrate'."""
    found = by_name(await collect(healthy.with_(database_url=bare_database)))
    assert found["postgres"].ok is True
    assert found["migrations"].ok is False
    assert found["migrations"].detail.startswith(
        f"0 of {len(migrations())} applied; pending: 0001_receiver_dedup"
    )
    assert found["migrations"].fix == "run 'smsrx db migrate'"


async def test_missing_database_fails_with_its_fix(healthy: Settings, postgres) -> None:
    """A database that does not exist fails with the server's word and how to fix it."""
    found = by_name(await collect(healthy.with_(database_url=postgres.url("no_such_db"))))
    assert found["postgres"].ok is False
    assert "no_such_db" in found["postgres"].detail
    assert found["postgres"].fix is not None and "create the database" in found["postgres"].fix


# -- Orange subscription -----------------------------------------------------------------


@pytest.fixture
async def fake_orange() -> AsyncIterator[FakeOrange]:
    """The fake Orange API on a loopback port."""
    server = FakeOrange(auth_header=AUTH_HEADER, sender=SENDER)
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
def orange_settings(healthy: Settings, fake_orange: FakeOrange) -> Settings:
    """Healthy settings with Orange credentials for the fake API."""
    return healthy.with_(
        orange_api_url=fake_orange.url,
        insecure_provider_urls=True,  # the fake serves plain HTTP
        orange_auth_header=AUTH_HEADER,
        orange_sender=SENDER,
        orange_notify_url=NOTIFY_URL,
        orange_timeout=2.0,
    )


async def test_orange_subscription_from_the_store_only(
    orange_settings: Settings, fake_orange: FakeOrange
) -> None:
    """Without --online the store alone answers: none stored fails, a current one is OK, a
    drifted one fails; Orange is never called."""
    found = by_name(await collect(orange_settings))
    assert found["orange subscription"].ok is False
    assert "no subscription stored for sender tel:+2250000" in found["orange subscription"].detail
    assert found["orange subscription"].fix == "run 'smsrx subscriptions reconcile'"

    async with open_store(orange_settings.database_url) as store:
        await store.add("sub-1", SENDER, NOTIFY_URL)
        current = by_name(await collect(orange_settings))["orange subscription"]
        await store.checked(
            "sub-1", State.DRIFTED, observed="https://elsewhere.example/dr", detail=None
        )
        drifted = by_name(await collect(orange_settings))["orange subscription"]
    assert current.ok is True, current
    assert current.detail.startswith(f"id=sub-1 active, posts to {NOTIFY_URL}, last checked")
    assert drifted.ok is False and "Orange posts to https://elsewhere.example/dr" in drifted.detail
    assert fake_orange.requests == []
    assert "orange (online)" not in found


async def test_orange_online_asks_orange(
    orange_settings: Settings, fake_orange: FakeOrange
) -> None:
    """With --online, Orange is asked about the stored id: in place is OK, drifted fails."""
    async with (
        open_client(orange_settings, retry=RetryPolicy(attempts=1)) as client,
        open_store(orange_settings.database_url) as store,
    ):
        await operations.subscribe(client, store, NOTIFY_URL)
    online = by_name(await collect(orange_settings, online=True))["orange (online)"]
    assert online.ok is True, online
    assert online.detail.startswith("OK, Orange posts receipts to")
    fake_orange.drift("https://elsewhere.example/dr")
    drifted = by_name(await collect(orange_settings, online=True))["orange (online)"]
    assert drifted.ok is False and drifted.detail.startswith("DRIFTED")
    assert drifted.fix == "run 'smsrx subscriptions reconcile'"


async def test_orange_not_configured_or_half_configured() -> None:
    """Without Orange credentials the item is OK and says 'not configured'; with only some of
    them it fails and names what is missing, without asking the store."""
    unset = await orange(Settings(), 1.0, utcnow(), online=False, store_ready=False)
    assert [(c.ok, c.detail) for c in unset] == [
        (True, "not configured (SMSRX_ORANGE_AUTH_HEADER, SMSRX_ORANGE_SENDER unset)")
    ]
    half = await orange(
        Settings(orange_sender=SENDER), 1.0, utcnow(), online=False, store_ready=False
    )
    assert half[0].ok is False
    assert "SMSRX_ORANGE_AUTH_HEADER" in half[0].detail


# -- a second terminal beside `smsrx dev` --------------------------------------------------


async def test_second_terminal_checks_the_running_dev_stack(
    healthy: Settings, tls_files: dict[str, Path], tmp_path: Path
) -> None:
    """With only SMSRX_STATE_DIR set, the doctor checks the stack of a running 'smsrx dev':
    its broker and database from dev.json, its certificate and loopback allowlists."""
    state = tmp_path / "state"
    (state / "tls").mkdir(parents=True)
    for name in ("cert", "key"):
        shutil.copy(tls_files[name], state / "tls" / f"{name}.pem")
    dev_json = {
        "pid": os.getpid(),  # alive for as long as the test runs
        "settings": {
            "SMSRX_KAFKA_BOOTSTRAP": healthy.kafka_bootstrap,
            "SMSRX_KAFKA_IDEMPOTENCE": "0",
            "SMSRX_DATABASE_URL": healthy.database_url,
            "SMSRX_TOPIC_PREFIX": healthy.topics.prefix,
        },
    }
    (state / "dev.json").write_text(json.dumps(dev_json))
    code, out, err = await smsrx_doctor(process_env(STATE_DIR=str(state)))
    assert code == 0, out + err
    assert "using the development stack of 'smsrx dev'" in err
    assert f"{state / 'tls' / 'cert.pem'}: for localhost" in out
    assert "OK    allowlist vavasms    127.0.0.1, ::1" in out
    assert f"OK    spool                {state / 'spool'}: not created yet" in out
    assert out.rstrip().endswith("13 checks: 13 OK, 0 warning(s), 0 failed")
