"""`smsrx doctor`: every item of a configuration checked against the real broker and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import asyncpg
import pytest
import trustme

from receiver.spool import Spool
from smsrx.cli.dev.process import free_port
from smsrx.cli.doctor import collect, render_text
from smsrx.cli.doctor_check import Check
from smsrx.cli.doctor_local import allowlists, certificate, flock_holders, spool
from smsrx.cli.doctor_services import orange
from smsrx.clock import utcnow
from smsrx.db import migrations
from smsrx.settings import Settings, parse_networks
from smsrx.topics import Topics
from subscriptions import operations
from subscriptions.client import RetryPolicy, open_client
from subscriptions.store import State, open_store
from tests.helpers import process_env, settings_env
from tests.subscriptions.fake_orange import FakeOrange

AUTH_HEADER = "Basic c21zcng6dG9wLXNlY3JldC1jbGllbnQ="
SENDER = "2250000"
NOTIFY_URL = "https://example.com/callbacks/orange/dr"


def by_name(checks: list[Check]) -> dict[str, Check]:
    return {check.name: check for check in checks}


def not_ok(checks: list[Check]) -> list[Check]:
    return [check for check in checks if check.ok is not True]


@pytest.fixture
def healthy(settings: Settings, tls_files: dict[str, Path], tmp_path: Path) -> Settings:
    """Settings every item of which is right: migrated database, topics, certificate, allowlists."""
    return settings.with_(
        tls_cert=tls_files["cert"],
        tls_key=tls_files["key"],
        allow_vavasms=parse_networks("test", "127.0.0.1"),
        spool_dir=tmp_path / "spool",
    )


async def smsrx_doctor(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    """Run ``smsrx doctor`` as an operator would, in its own process."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "smsrx.cli",
        "doctor",
        *args,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def doctor_env(settings: Settings, state_dir: Path, **variables: str) -> dict[str, str]:
    """The environment of ``healthy`` settings, with no development stack to find."""
    assert settings.tls_cert is not None and settings.tls_key is not None
    return settings_env(
        settings,
        STATE_DIR=str(state_dir),
        TLS_CERT=str(settings.tls_cert),
        TLS_KEY=str(settings.tls_key),
        ALLOW_VAVASMS="127.0.0.1",
        SPOOL_DIR=str(settings.spool_dir),
        **variables,
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
        "spool",
    ]
    found = by_name(checks)
    assert "SMSRX_KAFKA_IDEMPOTENCE=0" in found["idempotence"].detail
    assert "4 partition(s) each" in found["topics"].detail
    assert found["migrations"].detail.startswith(f"all {len(migrations())} applied")
    assert found["orange subscription"].detail.startswith("not configured")


async def test_json_output_parses_and_exits_0(healthy: Settings, tmp_path: Path) -> None:
    """`smsrx doctor --json`, run as a process on a healthy configuration, prints JSON and exits 0."""
    code, out, err = await smsrx_doctor(doctor_env(healthy, tmp_path), "--json")
    assert code == 0, out + err
    assert "Traceback" not in err
    report = json.loads(out)
    assert report["ok"] is True
    assert report["counts"] == {"ok": 11, "warn": 0, "fail": 0}
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
        started = asyncio.get_running_loop().time()
        found = by_name(await collect(silent, limit=1.0))
        elapsed = asyncio.get_running_loop().time() - started
    finally:
        for writer in held:
            writer.close()
        server.close()
        await server.wait_closed()
    assert elapsed < 4
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


# -- certificate -------------------------------------------------------------------------


def issue(ca: trustme.CA, folder: Path, **options) -> tuple[Path, Path]:
    cert = ca.issue_cert("localhost", "127.0.0.1", **options)
    folder.mkdir(parents=True, exist_ok=True)
    cert.private_key_and_cert_chain_pem.write_to_path(str(folder / "cert.pem"))
    cert.private_key_pem.write_to_path(str(folder / "key.pem"))
    return folder / "cert.pem", folder / "key.pem"


def test_certificate_expiring_in_10_days_warns(ca: trustme.CA, tmp_path: Path) -> None:
    """A certificate 10 days from its end is a warning that gives the days left and says renew."""
    now = utcnow()
    cert, key = issue(ca, tmp_path, not_after=now + timedelta(days=10, hours=1))
    check = certificate(Settings(tls_cert=cert, tls_key=key), now)
    assert check.ok is None
    assert "expires in 10 day(s)" in check.detail
    assert "for localhost, 127.0.0.1, key matches" in check.detail
    assert check.fix is not None and check.fix.startswith("renew it")


def test_certificate_expired_or_not_yet_valid_fails(ca: trustme.CA, tmp_path: Path) -> None:
    """An expired certificate fails, and so does one not valid yet."""
    now = utcnow()
    cert, key = issue(ca, tmp_path / "old", not_after=now - timedelta(days=2, hours=1))
    expired = certificate(Settings(tls_cert=cert, tls_key=key), now)
    assert expired.ok is False and ", 2 day(s) ago" in expired.detail
    cert, key = issue(ca, tmp_path / "new", not_before=now + timedelta(days=1))
    early = certificate(Settings(tls_cert=cert, tls_key=key), now)
    assert early.ok is False and "not valid before" in early.detail


def test_certificate_with_another_key_or_missing_fails(ca: trustme.CA, tmp_path: Path) -> None:
    """A key of another certificate, or a missing file, fails and names the problem."""
    cert, _ = issue(ca, tmp_path / "a")
    _, other_key = issue(ca, tmp_path / "b")
    mismatch = certificate(Settings(tls_cert=cert, tls_key=other_key), utcnow())
    assert mismatch.ok is False and "does not match the certificate" in mismatch.detail
    missing = certificate(Settings(tls_cert=tmp_path / "nope.pem", tls_key=other_key), utcnow())
    assert missing.ok is False and "nope.pem: no such file" in missing.detail


def test_certificate_unset_fails_and_insecure_http_warns() -> None:
    """No certificate fails (the receiver would not start); SMSRX_INSECURE_HTTP=1 is a warning."""
    unset = certificate(Settings(), utcnow())
    assert unset.ok is False and "not set" in unset.detail
    plain = certificate(Settings(insecure_http=True), utcnow())
    assert plain.ok is None and "SMSRX_INSECURE_HTTP=1" in plain.detail


# -- allowlists --------------------------------------------------------------------------


def test_empty_allowlist_warns() -> None:
    """A provider without any allowed address is a warning: all its callbacks get 403."""
    found = by_name(allowlists(Settings(allow_orange=(), allow_vavasms=())))
    for name, variable in (("orange", "SMSRX_ALLOW_ORANGE"), ("vavasms", "SMSRX_ALLOW_VAVASMS")):
        check = found[f"allowlist {name}"]
        assert check.ok is None
        assert check.detail.startswith("none: every ") and "refused (403)" in check.detail
        assert check.fix is not None and check.fix.startswith(f"set {variable}")


def test_allowlist_open_to_everyone_warns() -> None:
    """0.0.0.0/0 or ::/0 in an allowlist or among trusted proxies is a warning naming it."""
    found = by_name(
        allowlists(
            Settings(
                allow_vavasms=parse_networks("test", "10.0.0.0/8,::/0"),
                trusted_proxies=parse_networks("test", "0.0.0.0/0"),
            )
        )
    )
    assert found["allowlist orange"].ok is True
    assert found["allowlist orange"].detail == "80.12.13.2, 80.12.102.66, 80.12.209.66, 80.12.66.97"
    assert found["allowlist vavasms"].ok is None
    assert "any address may post VavaSMS callbacks (::/0)" in found["allowlist vavasms"].detail
    assert found["trusted proxies"].ok is None
    assert "any client can claim an allowed address" in found["trusted proxies"].detail


def test_orange_allowlist_without_its_documented_address_warns() -> None:
    """An Orange allowlist that misses one of Orange's documented addresses is a warning."""
    allowed = parse_networks("test", "80.12.13.2,80.12.102.66,80.12.209.66")
    check = by_name(allowlists(Settings(allow_orange=allowed)))["allowlist orange"]
    assert check.ok is None
    assert "80.12.66.97 are not in it" in check.detail
    assert check.fix == "add 80.12.66.97 to SMSRX_ALLOW_ORANGE"


# -- spool -------------------------------------------------------------------------------


async def test_spool_held_by_a_receiver_is_reported(tmp_path: Path) -> None:
    """A spool a process has open shows that process's pid, its size and the free space."""
    settings = Settings(spool_dir=tmp_path / "spool")
    owned = Spool(settings.spool_dir / "worker-0", max_bytes=settings.spool_max_bytes)
    owned.open()
    try:
        await owned.append("t", b"k", b"v" * 1000)
        held = spool(settings, flock_holders(Path("/proc/locks").read_text()))
    finally:
        owned.close()
    free = spool(settings, flock_holders(Path("/proc/locks").read_text()))
    assert held.ok is True, held
    assert f"locked by a running receiver (worker-0 by pid {os.getpid()})" in held.detail
    assert "1.0 KiB of 256.0 MiB" in held.detail and "free on its filesystem" in held.detail
    assert "not locked: no receiver is running on it" in free.detail


def test_spool_turned_off_or_nearly_full_warns(tmp_path: Path) -> None:
    """SMSRX_SPOOL_MAX_BYTES=0 is a warning, and so is a spool over 80 % of its limit."""
    off = spool(Settings(spool_dir=tmp_path, spool_max_bytes=0), {})
    assert off.ok is None and "turned off" in off.detail
    (tmp_path / "000000000001.seg").write_bytes(b"x" * 900)
    full = spool(Settings(spool_dir=tmp_path, spool_max_bytes=1000), {})
    assert full.ok is None and "nearly full" in full.detail


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
    assert out.rstrip().endswith("11 checks: 11 OK, 0 warning(s), 0 failed")
