"""The one launcher of a whole smsrx system on this machine.

``smsrx dev``, the fault-injection suite and the benchmarks all start their services
through :class:`Stack`. In one root folder it runs the embedded PostgreSQL (migrated),
the Tansu broker (with the topics) and a certificate. It starts smsrx processes through
their own command line, with the ``SMSRX_*`` settings production reads. What each user
adds on top (supervision, load, measurements) stays with that user.

The layout of the root folder::

    postgres/data/    the cluster        postgres/postgres.log
    broker.log        the broker         tls/                  cert.pem, key.pem, ca.pem
    NAME.log          each process (unless the stack keeps no process logs)
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import ssl
import sys
import time
import urllib.request
from collections.abc import Mapping
from pathlib import Path

from smsrx.cli.dev.broker import Broker
from smsrx.cli.dev.certs import DevCertificate, ensure_certificate
from smsrx.cli.dev.postgres import Postgres
from smsrx.cli.dev.process import Child, free_port, wait_for_port
from smsrx.db import Migration, migrate
from smsrx.kafka import create_topics
from smsrx.settings import ORANGE_SOURCE_ADDRESSES, Settings

__all__ = ["LOOPBACK", "Stack", "serving_ports"]

logger = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1/32,::1/128"


def serving_ports(settings: Settings) -> dict[str, int]:
    """The ports a stack's processes serve on, by the ``SMSRX_*`` variable that sets each."""
    return {
        "SMSRX_RECEIVER_PORT": settings.receiver_port,
        "SMSRX_RECEIVER_METRICS_PORT": settings.receiver_metrics_port,
        "SMSRX_STATUS_PROJECTION_METRICS_PORT": settings.status_projection_metrics_port,
        "SMSRX_ANALYTICS_METRICS_PORT": settings.analytics_metrics_port,
        "SMSRX_INBOUND_METRICS_PORT": settings.inbound_metrics_port,
        "SMSRX_SUBSCRIPTIONS_METRICS_PORT": settings.subscriptions_metrics_port,
        "SMSRX_PRUNE_METRICS_PORT": settings.prune_metrics_port,
        "SMSRX_POLLER_METRICS_PORT": settings.poller_metrics_port,
    }


class Stack:
    """PostgreSQL, the broker, a certificate and smsrx processes, all under ``root``.

    ``free_ports`` gives every serving port (receiver, metrics) a free one; without it
    they are the settings' own (the operator's, or the defaults). ``inherit`` is the
    environment the processes start from (``os.environ``), less its ``SMSRX_*``
    variables; ``variables`` are ``SMSRX_*`` settings for every process, over the
    stack's own. ``process_logs`` sends each process's output to ``<root>/NAME.log``
    instead of our stderr.
    """

    def __init__(
        self,
        root: Path,
        *,
        broker_port: int | None = None,
        postgres_port: int | None = None,
        database: str = "smsrx",
        durable: bool = True,
        server_options: Mapping[str, str] | None = None,
        free_ports: bool = True,
        inherit: Mapping[str, str] | None = None,
        variables: Mapping[str, str] | None = None,
        process_logs: bool = True,
    ) -> None:
        self.root = root.resolve()
        self.database = database
        """The database created in PostgreSQL and migrated."""
        self.postgres = Postgres(
            self.root / "postgres" / "data",
            port=postgres_port,
            durable=durable,
            options=server_options,
        )
        self.broker = Broker(port=broker_port, log_path=self.root / "broker.log")
        self.cert = DevCertificate.in_folder(self.root / "tls")
        """Where the certificate is; :meth:`start` makes it."""
        self.ports = {name: free_port() for name in serving_ports(Settings())} if free_ports else {}
        """The serving ports the stack chose, by variable (empty without ``free_ports``)."""
        self.inherit = dict(os.environ if inherit is None else inherit)
        self.variables = dict(variables or {})
        self.process_logs = process_logs
        self.children: dict[str, Child] = {}
        self._settings: Settings | None = None
        """The processes started by :meth:`spawn`, by name."""

    # -- settings -------------------------------------------------------------------------

    def env(self, **overrides: str) -> dict[str, str]:
        """The environment of a process on this stack.

        The inherited variables without any ``SMSRX_*``; the stack's settings (its
        broker with idempotence off, its database, certificate and state folder, loopback
        hosts and allowlists, serving ports); then ``variables``, then ``overrides``. A
        blank value replaces nothing already set: a blank setting means its default.
        """
        env = {name: value for name, value in self.inherit.items() if not name.startswith("SMSRX_")}
        env.update(
            SMSRX_STATE_DIR=str(self.root),
            SMSRX_KAFKA_BOOTSTRAP=self.broker.bootstrap,
            SMSRX_KAFKA_IDEMPOTENCE="0",  # the development broker has no idempotent producer
            SMSRX_DATABASE_URL=self.postgres.url(self.database),
            SMSRX_RECEIVER_HOST="127.0.0.1,::1",
            SMSRX_METRICS_HOST="127.0.0.1",
            SMSRX_TLS_CERT=str(self.cert.cert),
            SMSRX_TLS_KEY=str(self.cert.key),
            SMSRX_ALLOW_ORANGE=",".join((*ORANGE_SOURCE_ADDRESSES, LOOPBACK)),
            SMSRX_ALLOW_VAVASMS=LOOPBACK,
        )
        env.update((name, str(port)) for name, port in self.ports.items())
        for layer in (self.variables, overrides):
            env.update(
                (name, value) for name, value in layer.items() if value.strip() or name not in env
            )
        return env

    def settings(self, **overrides: str) -> Settings:
        """The settings a process started with :meth:`env` (``overrides``) reads; without
        overrides, read once and kept."""
        if overrides:
            return Settings.from_env(self.env(**overrides))
        if self._settings is None:
            self._settings = Settings.from_env(self.env())
        return self._settings

    @property
    def bootstrap(self) -> str:
        """The broker the processes use, ``host:port``."""
        return self.env()["SMSRX_KAFKA_BOOTSTRAP"]

    @property
    def database_url(self) -> str:
        """The database the processes use."""
        return self.env()["SMSRX_DATABASE_URL"]

    # -- services -------------------------------------------------------------------------

    async def start(self) -> list[Migration]:
        """Start PostgreSQL and the broker, make the certificate; return the migrations applied."""
        applied = await self.start_postgres()
        await self.start_broker()
        self.make_certificate()
        return applied

    async def start_postgres(self) -> list[Migration]:
        """Start PostgreSQL, create the database and migrate it; return the migrations applied."""
        self.postgres.start()
        self.postgres.create_database(self.database)
        return await migrate(self.database_url)

    async def start_broker(self) -> None:
        """Start the broker and create the topics."""
        self.broker.start()
        await create_topics(self.settings())

    async def restart_broker(self) -> None:
        """Start the broker again on its port, after a crash or a kill. Its memory storage
        starts empty, so the topics are created again."""
        self.broker.stop()
        await self.start_broker()

    def make_certificate(self) -> DevCertificate:
        """Create the certificate unless it exists."""
        return ensure_certificate(self.cert.ca.parent)

    # -- processes ------------------------------------------------------------------------

    def spawn(
        self,
        name: str,
        *args: str,
        module: str = "smsrx.cli",
        env: Mapping[str, str] | None = None,
        port: int | None = None,
        timeout: float = 60.0,
    ) -> Child:
        """Start ``python -m MODULE ARGS`` as process ``name`` with ``env`` (:meth:`env`).

        It replaces a previous process of that name in :attr:`children`. With ``port``,
        return once it listens there.
        """
        log = self.root / f"{name}.log" if self.process_logs else None
        child = Child(
            [sys.executable, "-m", module, *args],
            env=dict(self.env() if env is None else env),
            log_path=log,
            death_signal=signal.SIGTERM,
        )
        child.start()
        self.children[name] = child
        if port is not None:
            try:
                wait_for_port("127.0.0.1", port, timeout, alive=child.alive)
            except (RuntimeError, TimeoutError):
                if log is not None and log.is_file():
                    sys.stderr.write(log.read_text(errors="replace")[-3000:])
                raise
        return child

    def wait_ready(
        self, name: str, port: int, *, http: bool = False, timeout: float = 60.0
    ) -> None:
        """Wait until the receiver ``name`` answers 200 on ``/readyz`` (its producer is up)."""
        child = self.children[name]
        context = None if http else ssl.create_default_context(cafile=str(self.cert.ca))
        url = f"{'http' if http else 'https'}://127.0.0.1:{port}/readyz"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not child.alive():
                raise RuntimeError(f"{name} exited; see {child.log_path or 'its output'}")
            with (
                contextlib.suppress(OSError),  # refused, or an HTTP error such as 503
                urllib.request.urlopen(url, timeout=2, context=context) as answer,
            ):
                if answer.status == 200:
                    return
            time.sleep(0.2)
        raise TimeoutError(f"{name} not ready after {timeout:.0f}s")

    def kill(self, name: str) -> None:
        """SIGKILL process ``name``, as a crash would."""
        self.children[name].kill()

    def stop_child(self, name: str, timeout: float = 15.0) -> int | None:
        """Stop process ``name`` (SIGTERM, SIGKILL after ``timeout``); return its exit code."""
        return self.children.pop(name).stop(timeout)

    def stop(self, timeout: float = 15.0) -> dict[str, int | None]:
        """Stop every process, then the broker and PostgreSQL; return each process's exit code.

        The processes get SIGTERM together and ``timeout`` each to drain, then SIGKILL.
        """
        for child in self.children.values():
            child.terminate()
        codes = {name: child.stop(timeout, signalled=True) for name, child in self.children.items()}
        self.children.clear()
        self.broker.stop()
        self.postgres.stop()
        return codes
