"""``smsrx dev``: the whole system on one machine, supervised.

Through the launcher (:mod:`smsrx.cli.dev.stack`) it starts PostgreSQL and the
Kafka-protocol broker from their wheels, applies the migrations, creates the topics,
makes a certificate, then runs the receiver, every worker and the periodic prune as
child processes with the same ``SMSRX_*`` settings production uses. Here: the operator's ports, ``dev.json``,
restarts with backoff of a child that dies, the signals, and the addresses printed.
Ctrl-C or SIGTERM stops everything, children first; every child also dies with the
supervisor (Linux parent-death signal), so nothing is left behind even if it is SIGKILLed.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from urllib.parse import urlsplit

from smsrx.cli.dev import state
from smsrx.cli.dev.process import Child
from smsrx.cli.dev.stack import Stack, serving_ports
from smsrx.settings import ConfigError, Settings, state_dir_of

__all__ = ["dev_stack", "run_dev"]

logger = logging.getLogger(__name__)

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


def dev_stack(environ: Mapping[str, str]) -> Stack:
    """The launcher on the operator's variables: their state directory, their broker and
    database ports (else the dev ones), their serving ports (else the defaults), their
    variables over the stack's. ``stack.settings()`` is then what every process reads."""
    state_dir = state_dir_of(environ).resolve()

    def chosen(name: str, default: str) -> str:
        return environ.get(name, "").strip() or default

    bootstrap = chosen("SMSRX_KAFKA_BOOTSTRAP", _DEFAULT_KAFKA)
    database_url = chosen("SMSRX_DATABASE_URL", _DEFAULT_DATABASE)
    return Stack(
        state_dir,
        broker_port=_port_of("SMSRX_KAFKA_BOOTSTRAP", bootstrap),
        postgres_port=_port_of("SMSRX_DATABASE_URL", database_url),
        database=urlsplit(database_url).path.lstrip("/") or "smsrx",
        free_ports=False,
        inherit=environ,
        variables={name: value for name, value in environ.items() if name.startswith("SMSRX_")},
        process_logs=False,
    )


def _check_free(settings: Settings) -> None:
    for name, port in serving_ports(settings).items():
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

    stack: Stack
    name: str
    args: tuple[str, ...]
    child: Child | None = None
    backoff: float = 1.0
    restart_at: float = 0.0
    restarts: int = 0
    started_at: float = field(default_factory=time.monotonic)

    def start(self) -> None:
        self.child = self.stack.spawn(self.name, *self.args)
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


def _services(stack: Stack, settings: Settings, with_subscriptions: bool) -> list[_Service]:
    services = [
        _Service(stack, "receiver", ("receiver",)),
        _Service(stack, "status-projection", ("consumer", "status-projection")),
        _Service(stack, "analytics", ("consumer", "analytics")),
        _Service(stack, "inbound", ("consumer", "inbound")),
        # Its first pass runs at start, so the retention metrics exist at once.
        _Service(stack, "prune", ("db", "prune", "--every", "1h")),
    ]
    from consumers.polling.clients import missing_credentials

    missing = missing_credentials(settings)
    if all(missing.values()):
        needs = "; ".join(f"{name}: {' and '.join(envs)}" for name, envs in missing.items())
        logger.info("poller: not started, no provider's status API credentials are set (%s)", needs)
    else:
        services.append(_Service(stack, "poller", ("consumer", "poller")))
    from subscriptions.orange_settings import skip_reason

    reason = skip_reason(settings)
    if not with_subscriptions:
        reason = "subscriptions: reconciler not started, --no-subscriptions given"
    if reason:
        logger.info("%s", reason)
    else:
        watch = ("reconcile", "--watch", f"{settings.orange_reconcile_interval:g}s")
        services.append(_Service(stack, "subscriptions", ("subscriptions", *watch)))
    return services


def _addresses(settings: Settings, ca_file: Path, polled: Sequence[str]) -> dict[str, object]:
    scheme = "http" if settings.insecure_http else "https"
    metrics = f"http://{settings.metrics_host}:%d/metrics"
    return {
        "receiver_url": f"{scheme}://127.0.0.1:{settings.receiver_port}",
        "metrics_url": metrics % settings.receiver_metrics_port,
        "metrics_urls": {
            "receiver": metrics % settings.receiver_metrics_port,
            "status-projection": metrics % settings.status_projection_metrics_port,
            "analytics": metrics % settings.analytics_metrics_port,
            "inbound": metrics % settings.inbound_metrics_port,
            "subscriptions": metrics % settings.subscriptions_metrics_port,
            "prune": metrics % settings.prune_metrics_port,
            "poller": metrics % settings.poller_metrics_port,
        },
        "optouts_url": f"http://{settings.metrics_host}:{settings.inbound_metrics_port}/v1/optouts/",
        "kafka_bootstrap": settings.kafka_bootstrap,
        "database_url": settings.database_url,
        "ca_file": str(ca_file),
        "polled": list(polled),
    }


def _print_addresses(addresses: Mapping[str, object], dev_json: Path) -> None:
    width = max(len(key) for key in addresses)
    print("\nsmsrx dev is up:", flush=True)
    for key, value in addresses.items():
        if isinstance(value, dict):
            continue
        if isinstance(value, list):
            value = ", ".join(value) or "nothing (no status API credentials)"
        print(f"  {key:<{width}}  {value}")
    print(f"  (also in {dev_json})")
    print(
        "  try:  curl --cacert {ca} -H 'Content-Type: application/json' -d @tests/samples/orange_dr.json "
        "{url}/callbacks/orange/dr".format(ca=addresses["ca_file"], url=addresses["receiver_url"])
    )
    print("Ctrl-C stops everything.\n", flush=True)


def run_dev(stack: Stack, settings: Settings, *, with_subscriptions: bool = True) -> int:
    """Run ``stack`` (:func:`dev_stack`), whose processes read ``settings``, until Ctrl-C
    or SIGTERM; return the exit code."""
    state_dir = stack.root
    state_dir.mkdir(parents=True, exist_ok=True)
    _check_free(settings)

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    services: list[_Service] = []
    dev_json = state_dir / state.FILE_NAME
    try:
        logger.info("state directory %s", state_dir)
        asyncio.run(stack.start_postgres())  # smsrx.db logs each migration it applies
        asyncio.run(stack.start_broker())
        cert = stack.make_certificate()
        services = _services(stack, settings, with_subscriptions)
        for service in services:
            service.start()
        from consumers.polling.clients import pollable

        polled = pollable(settings) if any(s.name == "poller" for s in services) else []
        addresses = _addresses(settings, cert.ca, polled)
        _print_addresses(state.write(dev_json, addresses, settings), dev_json)
        _supervise(services, stack)
    except _Stop as stop:
        logger.info("%s received: stopping", stop)
    except ConfigError as exc:
        print(f"smsrx dev: {exc}", file=sys.stderr)
        return 2
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        for name, code in stack.stop(settings.shutdown_timeout + 5).items():
            logger.info("stopped %s (exit code %s)", name, code)
        logger.info("all stopped")
        dev_json.unlink(missing_ok=True)
    return 0


def _supervise(services: list[_Service], stack: Stack) -> None:
    while True:
        time.sleep(0.5)
        now = time.monotonic()
        broker, postgres = stack.broker.child, stack.postgres.child
        if broker is not None and not broker.alive():
            logger.error("broker exited; restarting it (its memory storage starts empty)")
            asyncio.run(stack.restart_broker())
        if postgres is not None and not postgres.alive():
            logger.error("postgres exited; restarting it")
            stack.postgres.start()
        for service in services:
            service.supervise(now)
