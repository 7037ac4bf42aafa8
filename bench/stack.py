"""The services a benchmark runs against: the launcher's stack (:mod:`smsrx.cli.dev.stack`)
in a temporary folder that is removed afterwards, and the processes each section starts.

Everything listens on 127.0.0.1, on free ports. smsrx processes are started through
their own command line (``smsrx receiver``, ``smsrx consumer ...``) with ``SMSRX_*``
settings, exactly as an operator starts them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from smsrx.cli.dev.process import Child, free_port
from smsrx.cli.dev.stack import Stack
from smsrx.kafka import create_topics
from smsrx.topics import Topics

__all__ = ["BenchStack", "Service"]

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

    @property
    def pid(self) -> int:
        """The process id."""
        assert self.child.pid is not None
        return self.child.pid


class BenchStack(Stack):
    """The launcher's stack for benchmarks: commit timestamps on, quiet processes bound to
    127.0.0.1, and the receivers, bare handlers and workers a section starts."""

    def __init__(self, *, durable: bool = True) -> None:
        super().__init__(
            Path(tempfile.mkdtemp(prefix="smsrx-bench-")),
            durable=durable,
            # Commit timestamps tell the end-to-end benchmark when each row became visible.
            server_options={"track_commit_timestamp": "on"},
            inherit={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
            variables={
                "SMSRX_RECEIVER_HOST": "127.0.0.1",
                "SMSRX_LOG_LEVEL": "WARNING",
                "SMSRX_SHUTDOWN_TIMEOUT": "5s",
            },
        )

    async def create_topics(self, prefix: str = "") -> None:
        """Create the smsrx topics under ``prefix``."""
        await create_topics(self.settings(SMSRX_TOPIC_PREFIX=prefix))

    def receiver(
        self, name: str, *, workers: int = 1, http: bool = False, prefix: str = ""
    ) -> Service:
        """``smsrx receiver --workers N`` over HTTPS (or plain HTTP), waiting until ready."""
        port, metrics_port = free_port(), free_port()
        env = self.env(
            SMSRX_TOPIC_PREFIX=prefix,
            SMSRX_RECEIVER_PORT=str(port),
            SMSRX_RECEIVER_METRICS_PORT=str(metrics_port),
            SMSRX_SPOOL_DIR=str(self.root / f"spool-{name}"),
            SMSRX_INSECURE_HTTP="1" if http else "0",
        )
        child = self.spawn(name, "receiver", "--workers", str(workers), env=env, port=port)
        self.wait_ready(name, port, http=http)
        return Service(name, child, port, metrics_port)

    def bare(self, name: str, *, http: bool = False) -> Service:
        """The bare aiohttp handler (the framework ceiling), set up like the receiver."""
        port = free_port()
        env = self.env(
            SMSRX_RECEIVER_PORT=str(port),
            SMSRX_INSECURE_HTTP="1" if http else "0",
            PYTHONPATH=str(ROOT),
        )
        return Service(name, self.spawn(name, module="bench.bare", env=env, port=port), port)

    def consumer(self, worker: str, *, prefix: str = "", extra: tuple[str, ...] = ()) -> Service:
        """``smsrx consumer status-projection|analytics``."""
        env = self.env(SMSRX_TOPIC_PREFIX=prefix)
        return Service(worker, self.spawn(worker, "consumer", worker, *extra, env=env))

    def stop_service(self, service: Service) -> None:
        """Stop one process started here."""
        self.stop_child(service.name)

    def stop(self, timeout: float = 15.0) -> dict[str, int | None]:
        """Stop every process and service, then remove the work folder."""
        try:
            return super().stop(timeout)
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

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
    def running(self) -> Iterator[BenchStack]:
        """Start, yield, and always stop."""
        try:
            asyncio.run(self.start())
            yield self
        finally:
            self.stop()
