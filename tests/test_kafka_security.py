"""Kafka client security: the SMSRX_KAFKA_* security settings, checked as a set, reach
every aiokafka client smsrx makes, and TLS really verifies the broker.

The TLS case runs the development broker behind a TLS-terminating proxy (the broker
itself speaks plaintext) and sends and reads records through it with the settings the
docker-compose services use. SASL/SCRAM cannot be run here: the development broker keeps
its SCRAM users in storage this build cannot seed, so its options are checked on the
clients themselves; the compose cluster's side is checked in tests/ops.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme
from aiokafka.errors import KafkaConnectionError

from smsrx.cli.dev.broker import broker_binary
from smsrx.cli.dev.process import Child, free_port, wait_for_port
from smsrx.kafka import (
    create_topics,
    make_admin,
    make_consumer,
    make_producer,
    security_options,
    stop_bounded,
)
from smsrx.settings import ConfigError, Settings
from smsrx.topics import Topics

SASL = {
    "SMSRX_KAFKA_SECURITY_PROTOCOL": "sasl_ssl",
    "SMSRX_KAFKA_SASL_USERNAME": "receiver",
    "SMSRX_KAFKA_SASL_PASSWORD": "s3cret",
}


def clients(settings: Settings) -> dict[str, Any]:
    """The aiokafka client inside each kind of client smsrx makes (not started)."""
    producer = make_producer(settings)
    consumer = make_consumer(settings, "sms.inbound.v1", group_id="smsrx-inbound")
    admin = make_admin(settings)
    return {"producer": producer, "consumer": consumer, "admin": admin}


async def close(made: dict[str, Any]) -> None:
    """Close clients that were never started."""
    await made["producer"].stop()
    await made["consumer"].stop()
    await made["admin"].close()


def inner(client: Any) -> Any:
    """The connection manager every aiokafka client keeps its security options in."""
    return client.client if hasattr(client, "client") else client._client


async def test_sasl_ssl_options_reach_every_client(tmp_path: Path) -> None:
    """With SASL_SSL, the producer, the consumer and the admin client get TLS, SCRAM-SHA-512, the user and the password."""
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    settings = Settings.from_env({**SASL, "SMSRX_KAFKA_CA_FILE": str(tmp_path / "ca.pem")})
    made = clients(settings)
    try:
        for name, client in made.items():
            conn = inner(client)
            assert conn._security_protocol == "SASL_SSL", name
            assert conn._sasl_mechanism == "SCRAM-SHA-512", name
            assert (conn._sasl_plain_username, conn._sasl_plain_password) == ("receiver", "s3cret")
            context: ssl.SSLContext = conn._ssl_context
            assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname, name
            assert context.get_ca_certs(), f"{name}: the CA file was not loaded"
    finally:
        await close(made)


async def test_plaintext_is_the_default_and_sends_no_credentials() -> None:
    """With the defaults (the development broker), no client gets TLS or SASL options."""
    made = clients(Settings.from_env({}))
    try:
        for name, client in made.items():
            conn = inner(client)
            assert conn._security_protocol == "PLAINTEXT", name
            assert conn._ssl_context is None and conn._sasl_plain_password is None, name
    finally:
        await close(made)


def test_ssl_without_a_ca_file_trusts_the_system_cas() -> None:
    """SSL alone verifies the brokers against the system's CAs, never unverified."""
    settings = Settings.from_env({"SMSRX_KAFKA_SECURITY_PROTOCOL": "SSL"})
    options = security_options(settings)
    assert options["security_protocol"] == "SSL" and "sasl_plain_password" not in options
    assert options["ssl_context"].verify_mode == ssl.CERT_REQUIRED


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        (
            {"SMSRX_KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "SMSRX_KAFKA_SASL_USERNAME": "u"},
            "SMSRX_KAFKA_SECURITY_PROTOCOL=SASL_SSL needs SMSRX_KAFKA_SASL_USERNAME and "
            "SMSRX_KAFKA_SASL_PASSWORD",
        ),
        (
            {"SMSRX_KAFKA_SASL_USERNAME": "u", "SMSRX_KAFKA_SASL_PASSWORD": "p"},
            "SMSRX_KAFKA_SASL_USERNAME is set, but SMSRX_KAFKA_SECURITY_PROTOCOL=PLAINTEXT "
            "sends no credentials: use SASL_SSL",
        ),
        (
            {"SMSRX_KAFKA_SECURITY_PROTOCOL": "SSL", "SMSRX_KAFKA_SASL_PASSWORD": "p"},
            "SMSRX_KAFKA_SASL_PASSWORD is set, but SMSRX_KAFKA_SECURITY_PROTOCOL=SSL "
            "sends no credentials: use SASL_SSL",
        ),
        (
            {"SMSRX_KAFKA_CA_FILE": "ca.pem"},
            "SMSRX_KAFKA_CA_FILE is set, but SMSRX_KAFKA_SECURITY_PROTOCOL=PLAINTEXT uses no TLS",
        ),
    ],
)
def test_security_settings_are_checked_together(environ: dict[str, str], message: str) -> None:
    """Credentials without SASL_SSL, SASL_SSL without them, or a CA file without TLS is a ConfigError."""
    with pytest.raises(ConfigError) as error:
        Settings.from_env(environ)
    assert str(error.value) == message


def test_password_may_come_from_a_file_and_stays_out_of_the_repr(tmp_path: Path) -> None:
    """SMSRX_KAFKA_SASL_PASSWORD_FILE (a Docker secret) gives the password; repr never shows it."""
    (tmp_path / "password").write_text("from-a-file\n")
    environ = {**SASL, "SMSRX_KAFKA_SASL_PASSWORD_FILE": str(tmp_path / "password")}
    del environ["SMSRX_KAFKA_SASL_PASSWORD"]
    settings = Settings.from_env(environ)
    assert settings.kafka_sasl_password == "from-a-file"
    assert "from-a-file" not in repr(settings) and "s3cret" not in repr(Settings.from_env(SASL))


def test_an_unusable_ca_file_is_a_config_error(tmp_path: Path) -> None:
    """A missing CA file, or one that holds no certificate, stops the client with one line naming it."""
    missing = tmp_path / "absent.pem"
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    for path in (missing, garbage):
        settings = Settings.from_env({**SASL, "SMSRX_KAFKA_CA_FILE": str(path)})
        with pytest.raises(ConfigError, match=rf"^SMSRX_KAFKA_CA_FILE='{path}': cannot be used"):
            make_producer(settings)


# --- TLS, for real -----------------------------------------------------------------------


class TlsProxy:
    """Terminates TLS on a loopback port and relays each connection to the broker."""

    def __init__(self, context: ssl.SSLContext, upstream: tuple[str, int], port: int) -> None:
        self.context = context
        self.upstream = upstream
        self.port = port
        self.server: asyncio.Server | None = None
        self.handshakes = 0

    async def start(self) -> None:
        """Listen on the proxy port."""
        self.server = await asyncio.start_server(
            self._relay, "127.0.0.1", self.port, ssl=self.context
        )

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.handshakes += 1
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            writer.close()
            return

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError, asyncio.IncompleteReadError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            with contextlib.suppress(OSError):
                dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    async def stop(self) -> None:
        """Stop listening."""
        if self.server is not None:
            self.server.close()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.server.wait_closed(), 2)


@pytest.fixture(scope="module")
def tls_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A development broker that advertises the address of a TLS proxy in front of it."""
    folder = tmp_path_factory.mktemp("kafka-tls")
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(folder / "ca.pem"))
    server = ca.issue_cert("127.0.0.1", "localhost")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.configure_cert(context)
    listen, advertised = free_port(), free_port()
    child = Child(
        [
            broker_binary(),
            "broker",
            "--listener-url",
            f"tcp://127.0.0.1:{listen}",
            "--advertised-listener-url",
            f"tcp://127.0.0.1:{advertised}",
        ],
        log_path=folder / "broker.log",
    )
    child.start()
    try:
        wait_for_port("127.0.0.1", listen, 15, alive=child.alive)
        yield {
            "context": context,
            "listen": listen,
            "port": advertised,
            "ca": folder / "ca.pem",
        }
    finally:
        child.stop(5.0)


@pytest.fixture
async def tls_proxy(tls_broker: dict[str, Any]) -> AsyncIterator[TlsProxy]:
    """The TLS proxy, listening on the port the broker advertises."""
    proxy = TlsProxy(tls_broker["context"], ("127.0.0.1", tls_broker["listen"]), tls_broker["port"])
    await proxy.start()
    yield proxy
    await proxy.stop()


async def test_ssl_clients_verify_the_broker_and_carry_records(
    tls_broker: dict[str, Any], tls_proxy: TlsProxy
) -> None:
    """With SSL and the CA file, create_topics, a producer and a consumer all work through TLS."""
    settings = Settings.from_env(
        {
            "SMSRX_KAFKA_BOOTSTRAP": f"127.0.0.1:{tls_broker['port']}",
            "SMSRX_KAFKA_IDEMPOTENCE": "0",
            "SMSRX_KAFKA_SECURITY_PROTOCOL": "SSL",
            "SMSRX_KAFKA_CA_FILE": str(tls_broker["ca"]),
            "SMSRX_TOPIC_PARTITIONS": "1",
        }
    ).with_(topics=Topics(prefix=f"t{uuid.uuid4().hex[:8]}."))
    await create_topics(settings)
    topic = settings.topics.opt_outs
    producer = make_producer(settings)
    await producer.start()
    try:
        await producer.send_and_wait(topic, b"over tls", key=b"+2250700000001")
    finally:
        await stop_bounded(producer, 5)
    consumer = make_consumer(settings, topic, group_id=f"{settings.topics.prefix}tls")
    await consumer.start()
    try:
        batches = await consumer.getmany(timeout_ms=10_000)
        values = [r.value for records in batches.values() for r in records]
    finally:
        await stop_bounded(consumer, 5)
    assert values == [b"over tls"]
    assert tls_proxy.handshakes >= 3  # the admin, the producer, the consumer


async def test_ssl_refuses_a_broker_signed_by_another_ca(
    tls_broker: dict[str, Any], tls_proxy: TlsProxy, tmp_path: Path
) -> None:
    """A CA file that did not sign the broker's certificate: the client never connects."""
    other = trustme.CA()
    other.cert_pem.write_to_path(str(tmp_path / "other.pem"))
    settings = Settings.from_env(
        {
            "SMSRX_KAFKA_BOOTSTRAP": f"127.0.0.1:{tls_broker['port']}",
            "SMSRX_KAFKA_IDEMPOTENCE": "0",
            "SMSRX_KAFKA_SECURITY_PROTOCOL": "SSL",
            "SMSRX_KAFKA_CA_FILE": str(tmp_path / "other.pem"),
            "SMSRX_KAFKA_SEND_TIMEOUT": "2s",
        }
    )
    producer = make_producer(settings)
    with pytest.raises(KafkaConnectionError, match="Unable to bootstrap"):
        await asyncio.wait_for(producer.start(), 20)
    await stop_bounded(producer, 5)
