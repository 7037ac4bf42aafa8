"""The real things the operations check runs: `smsrx dev`, a fake Orange API and Prometheus.

Nothing is mocked: `smsrx dev` runs the embedded PostgreSQL, the Tansu broker, the
receiver, the workers, the poller and the subscription reconciler as separate processes,
exactly as `make run` does; the reconciler talks HTTP to the fake Orange API of
tests/subscriptions, the poller to the fake Gateway SMS and VavaSMS status APIs of
tests/fakes; Prometheus is the Debian package's binary, configured from
ops/prometheus/prometheus.yml with only the scrape targets swapped for the dev ports.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import psutil
import yaml

from smsrx.cli.dev.process import free_port
from tests.fakes.gatewaysms import FakeGatewaySms
from tests.fakes.vavasms import FakeVavaSms
from tests.helpers import dev_command_env
from tests.subscriptions.fake_orange import FakeOrange

T = TypeVar("T")

ROOT = Path(__file__).resolve().parents[2]
OPS = ROOT / "ops" / "prometheus"

ORANGE_AUTH = "Basic c21zcng6b3BzLWNoZWNr"
ORANGE_SENDER = "2250000"
ORANGE_NOTIFY_URL = "https://smsrx.example.com/callbacks/orange/dr"

JOBS = {
    "receiver": "smsrx-receiver",
    "status-projection": "smsrx-status-projection",
    "analytics": "smsrx-analytics",
    "subscriptions": "smsrx-subscriptions",
    "inbound": "smsrx-inbound",
    "prune": "smsrx-prune",
    "poller": "smsrx-poller",
}
"""Process name in dev.json -> Prometheus job name in ops/prometheus/prometheus.yml."""


def require_tool(name: str) -> str:
    """The path of ``name``; skip the test when it is missing, except in CI, where fail."""
    import pytest

    path = shutil.which(name)
    if path:
        return path
    message = f"{name} not installed: apt-get install -y prometheus (it includes promtool)"
    if os.environ.get("CI"):
        pytest.fail(f"{message}; CI must install it (.ci/run)")
    pytest.skip(message)
    raise AssertionError("unreachable")


def get(url: str, *, timeout: float = 10, context: ssl.SSLContext | None = None) -> bytes:
    """GET ``url``; raise on any status but 200."""
    with urllib.request.urlopen(url, timeout=timeout, context=context) as response:
        body: bytes = response.read()
        return body


def wait_until(what: str, check: Any, timeout: float, interval: float = 0.5) -> Any:
    """Call ``check`` until it returns a true value; raise after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except (OSError, urllib.error.URLError, ValueError) as exc:
            last = exc
        else:
            if last:
                return last
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}: {last!r}")


class FakeOrangeServer:
    """The fake Orange API on its own event loop, in a thread, for the reconciler to call."""

    def __init__(self) -> None:
        self.fake = FakeOrange(auth_header=ORANGE_AUTH, sender=ORANGE_SENDER)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(
            target=self.loop.run_forever, name="fake-orange", daemon=True
        )

    def start(self) -> str:
        """Serve; return the base URL."""
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.fake.start(), self.loop).result(10)
        return self.fake.url

    def call(self, method: str, *args: Any) -> None:
        """Run one of the fake's fault-injection methods on its loop."""

        async def run() -> None:
            getattr(self.fake, method)(*args)

        asyncio.run_coroutine_threadsafe(run(), self.loop).result(10)

    def stop(self) -> None:
        """Stop serving and close the loop."""
        if self.thread.is_alive():
            asyncio.run_coroutine_threadsafe(self.fake.stop(), self.loop).result(10)
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
        self.loop.close()


class FakeCarriers:
    """The fake Gateway SMS and VavaSMS status APIs on their own event loop, in a thread,
    for the poller to poll; the traffic adds the messages they answer for (:meth:`call`)."""

    VAVASMS_POLL_RATE = "2"
    """VavaSMS requests per second the poller allows itself: low, so that the VavaSMS
    recipients the traffic submits together wait for the rate limit."""

    def __init__(self) -> None:
        self.gateway = FakeGatewaySms()
        self.vava = FakeVavaSms()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(
            target=self.loop.run_forever, name="fake-carriers", daemon=True
        )

    def start(self) -> dict[str, str]:
        """Serve both; return the `smsrx dev` settings (without SMSRX_) that poll them."""
        self.thread.start()

        async def start() -> None:
            await self.gateway.start()
            await self.vava.start()

        asyncio.run_coroutine_threadsafe(start(), self.loop).result(10)
        return {
            "GATEWAYSMS_API_URL": self.gateway.url,
            "GATEWAYSMS_TOKEN": self.gateway.token,
            "VAVASMS_STATUS_URL": self.vava.url,
            "VAVASMS_USERNAME": self.vava.username,
            "VAVASMS_PASSWORD": self.vava.password,
            # One poll a second after the submission, then every second until final.
            "POLL_SCHEDULE": "1s",
            "POLL_TIMEOUT": "2s",
            "VAVASMS_POLL_RATE": self.VAVASMS_POLL_RATE,
        }

    async def call(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` (e.g. an ``add_message``) on the fakes' loop, from another loop."""

        async def run() -> T:
            return fn()

        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(run(), self.loop))

    def stop(self) -> None:
        """Stop serving and close the loop."""
        if self.thread.is_alive():

            async def stop() -> None:
                await self.gateway.stop()
                await self.vava.stop()

            asyncio.run_coroutine_threadsafe(stop(), self.loop).result(10)
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
        self.loop.close()


class DevCommand:
    """`smsrx dev` as a subprocess on free ports, with settings that make things happen fast."""

    def __init__(self, workdir: Path, orange_url: str, carriers: dict[str, str]) -> None:
        self.state = workdir / "state"
        self.log_path = workdir / "smsrx-dev.log"
        self.env = dev_command_env(
            self.state,
            SHUTDOWN_TIMEOUT="3s",
            # A stalled broker turns into spooled events, then 503s, within a second.
            KAFKA_SEND_TIMEOUT="1s",
            SPOOL_MAX_BYTES="6000",
            # Recipients without a final status expire during the run.
            EXPIRY_HORIZON="20s",
            EXPIRY_SWEEP_INTERVAL="3s",
            ORANGE_API_URL=orange_url,
            INSECURE_PROVIDER_URLS="1",  # the fake carrier APIs serve plain HTTP
            ORANGE_AUTH_HEADER=ORANGE_AUTH,
            ORANGE_SENDER=ORANGE_SENDER,
            ORANGE_NOTIFY_URL=ORANGE_NOTIFY_URL,
            ORANGE_RECONCILE_INTERVAL="3s",
            ORANGE_TIMEOUT="2s",
            **carriers,  # the fake status APIs: `smsrx dev` starts the poller
        )
        self.proc: subprocess.Popen[bytes] | None = None
        self.addresses: dict[str, Any] = {}

    def start(self, timeout: float = 120) -> dict[str, Any]:
        """Start it and wait until every process serves; return dev.json."""
        log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "smsrx.cli", "dev"],
            env=self.env,
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        dev_json = self.state / "dev.json"

        def written() -> dict[str, Any] | None:
            assert self.proc is not None and self.proc.poll() is None, self.tail()
            return json.loads(dev_json.read_text()) if dev_json.is_file() else None

        self.addresses = wait_until("dev.json", written, timeout)
        missing = set(JOBS) - set(self.addresses["metrics_urls"])
        assert not missing, (
            f"smsrx dev runs no {', '.join(sorted(missing))} process (dev.json metrics_urls: "
            f"{sorted(self.addresses['metrics_urls'])}); the check scrapes every job of "
            "ops/prometheus/prometheus.yml"
        )
        context = self.tls_context()
        wait_until(
            "the receiver to be ready",
            lambda: get(f"{self.addresses['receiver_url']}/readyz", context=context),
            timeout,
        )
        for name, url in self.addresses["metrics_urls"].items():
            wait_until(f"{name} /metrics", lambda url=url: get(url), timeout)
        return self.addresses

    def tls_context(self) -> ssl.SSLContext:
        """A client context trusting the dev CA."""
        return ssl.create_default_context(cafile=self.addresses["ca_file"])

    def broker_process(self) -> psutil.Process:
        """The Tansu broker child of the supervisor."""
        assert self.proc is not None
        for child in psutil.Process(self.proc.pid).children(recursive=True):
            if "tansu" in child.name() or any("tansu" in part for part in child.cmdline()[:1]):
                return child
        raise AssertionError("no broker process under smsrx dev")

    def tail(self, lines: int = 40) -> str:
        """The end of the stack's log, for failure messages."""
        if not self.log_path.is_file():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        """SIGTERM the supervisor, which stops every child."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


class Prometheus:
    """A real Prometheus scraping the dev stack with the repository's jobs and rules."""

    def __init__(self, workdir: Path, metrics_urls: dict[str, str], scrape_interval: str = "1s"):
        self.binary = require_tool("prometheus")
        self.workdir = workdir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.config_path = workdir / "prometheus.yml"
        self.config_path.write_text(
            yaml.safe_dump(scrape_config(metrics_urls, scrape_interval), sort_keys=False)
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60) -> None:
        """Start and wait until ready."""
        log = (self.workdir / "prometheus.log").open("wb")
        self.proc = subprocess.Popen(
            [
                self.binary,
                f"--config.file={self.config_path}",
                f"--storage.tsdb.path={self.workdir / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--log.level=warn",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        wait_until("prometheus to be ready", lambda: get(f"{self.url}/-/ready"), timeout)

    def api(self, path: str, **params: Any) -> Any:
        """GET /api/v1/<path>; return ``data``, or raise with Prometheus's error."""
        query = urllib.parse.urlencode(params, doseq=True)
        try:
            body = get(f"{self.url}/api/v1/{path}?{query}", timeout=30)
        except urllib.error.HTTPError as exc:
            doc = json.loads(exc.read() or b"{}")
            raise PromQLError(f"{doc.get('errorType')}: {doc.get('error')}") from None
        doc = json.loads(body)
        if doc.get("status") != "success":
            raise PromQLError(f"{doc.get('errorType')}: {doc.get('error')}")
        return doc["data"]

    def query(self, expr: str, at: float | None = None) -> list[dict[str, Any]]:
        """An instant query's result vector (a scalar comes back as one sample)."""
        params: dict[str, Any] = {"query": expr}
        if at is not None:
            params["time"] = f"{at:.3f}"
        data = self.api("query", **params)
        if data["resultType"] == "scalar":
            return [{"metric": {}, "value": data["result"]}]
        result: list[dict[str, Any]] = data["result"]
        return result

    def query_range(self, expr: str, start: float, end: float, step: float) -> list[dict[str, Any]]:
        """A range query's result matrix."""
        data = self.api(
            "query_range", query=expr, start=f"{start:.3f}", end=f"{end:.3f}", step=f"{step:g}"
        )
        result: list[dict[str, Any]] = data["result"]
        return result

    def stop(self) -> None:
        """Stop Prometheus."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


class PromQLError(Exception):
    """Prometheus refused a query (parse or evaluation error)."""


def scrape_config(metrics_urls: dict[str, str], scrape_interval: str) -> dict[str, Any]:
    """ops/prometheus/prometheus.yml, with each job's targets replaced by the dev ports."""
    config: dict[str, Any] = yaml.safe_load((OPS / "prometheus.yml").read_text())
    config["global"] = {"scrape_interval": scrape_interval, "evaluation_interval": scrape_interval}
    config["rule_files"] = [str(OPS / name) for name in config.get("rule_files", [])]
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert set(jobs) == set(JOBS.values()), f"ops/prometheus/prometheus.yml jobs: {sorted(jobs)}"
    for name, job_name in JOBS.items():
        target = urllib.parse.urlsplit(metrics_urls[name])
        jobs[job_name]["static_configs"] = [{"targets": [target.netloc]}]
        jobs[job_name]["metrics_path"] = target.path
    return config


def finite_values(series: list[dict[str, Any]]) -> list[float]:
    """Every finite sample value of a range or instant result."""
    values = []
    for item in series:
        samples = item.get("values") or ([item["value"]] if "value" in item else [])
        for _, text in samples:
            value = float(text)
            if value == value and value not in (float("inf"), float("-inf")):
                values.append(value)
    return values
