"""`smsrx receiver` as a real process, for the tests of hostile input and edge limits."""

from __future__ import annotations

import os
import socket
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from smsrx.cli.dev.process import free_port, wait_for_port
from smsrx.kafka import create_topics
from smsrx.settings import Settings
from smsrx.topics import Topics
from tests.helpers import process_env

ROOT = Path(__file__).parent.parent
GOOD = b'{"deliveryInfoNotification":{"callbackData":"m-1","deliveryInfo":{"address":"tel:+2250700000000","deliveryStatus":"DeliveredToTerminal"}}}'


class LiveReceiver:
    """`smsrx receiver` as a subprocess, with what a test needs to reach it."""

    def __init__(
        self,
        proc: subprocess.Popen[bytes],
        port: int,
        metrics_port: int,
        settings: Settings,
        ca: Path,
    ):
        self.proc, self.port, self.metrics_port, self.settings, self.ca = (
            proc,
            port,
            metrics_port,
            settings,
            ca,
        )

    def client_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca))

    def metric(self, name: str, labels: dict[str, str] | None = None) -> float:
        import urllib.request

        text = (
            urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5)
            .read()
            .decode()
        )
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name and all(
                    sample.labels.get(k) == v for k, v in (labels or {}).items()
                ):
                    return sample.value
        return 0.0


def receiver_env(broker, migrated, tls_files, spool: Path, prefix: str, **extra: str) -> dict:
    """The environment of a receiver process allowing 127.0.0.1 and 127.0.0.2, on free ports."""
    variables = {
        "KAFKA_BOOTSTRAP": broker.bootstrap,
        "KAFKA_IDEMPOTENCE": "0",
        "TOPIC_PREFIX": prefix,
        "DATABASE_URL": migrated,
        "RECEIVER_HOST": "127.0.0.1",
        "RECEIVER_PORT": str(free_port()),
        "METRICS_HOST": "127.0.0.1",
        "RECEIVER_METRICS_PORT": str(free_port()),
        "TLS_CERT": str(tls_files["cert"]),
        "TLS_KEY": str(tls_files["key"]),
        "ALLOW_ORANGE": "127.0.0.1,127.0.0.2",
        "ALLOW_VAVASMS": "127.0.0.1,127.0.0.2",
        "CLIENT_TIMEOUT": "3s",
        "SPOOL_DIR": str(spool),
        "LOG_LEVEL": "WARNING",
    }
    variables.update({k.removeprefix("SMSRX_"): v for k, v in extra.items()})
    return process_env(**variables)


def spawn(env: dict, argv: list[str] | None = None, **popen) -> subprocess.Popen[bytes]:
    """Start `smsrx receiver` (or ``argv``) and wait until its port accepts connections."""
    argv = argv or [sys.executable, "-m", "smsrx.cli", "receiver"]
    proc = subprocess.Popen(argv, env=env, cwd=ROOT, **popen)
    port = int(env["SMSRX_RECEIVER_PORT"])
    wait_for_port("127.0.0.1", port, 30, alive=lambda: proc.poll() is None)
    return proc


def raw_exchange(live: LiveReceiver, data: bytes) -> bytes:
    """Send raw bytes over TLS and read everything until the server closes."""
    with socket.create_connection(("127.0.0.1", live.port), timeout=10) as raw:
        with live.client_context().wrap_socket(raw, server_hostname="localhost") as tls:
            tls.sendall(data)
            chunks = []
            try:
                while chunk := tls.recv(65536):
                    chunks.append(chunk)
            except (TimeoutError, ConnectionResetError, ssl.SSLError):
                pass
    return b"".join(chunks)


FRAMING = {
    "Content-Length with Transfer-Encoding": b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "duplicate Content-Length": b"Content-Length: 2\r\nContent-Length: 40\r\n\r\n{}",
    "duplicate Host": b"Host: evil\r\nContent-Length: 2\r\n\r\n{}",
    "obs-fold": b"X-Folded: a\r\n  b\r\nContent-Length: 2\r\n\r\n{}",
}
"""Requests whose framing a smuggler could exploit; each must get 400 and dispatch nothing."""


@asynccontextmanager
async def live_receiver(broker, migrated, tls_files, spool: Path) -> AsyncIterator[LiveReceiver]:
    """A real receiver process allowing 127.0.0.1 and 127.0.0.2, with a 3 s client timeout."""
    prefix = f"hostile{os.getpid()}."
    settings = Settings(kafka_bootstrap=broker.bootstrap, topics=Topics(prefix))
    await create_topics(settings)
    env = receiver_env(broker, migrated, tls_files, spool, prefix)
    proc = spawn(env)
    port, metrics_port = int(env["SMSRX_RECEIVER_PORT"]), int(env["SMSRX_RECEIVER_METRICS_PORT"])
    yield LiveReceiver(proc, port, metrics_port, settings, tls_files["ca"])
    proc.terminate()
    assert proc.wait(30) == 0
