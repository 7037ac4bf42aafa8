"""What the `smsrx doctor` tests share (tests/test_doctor*.py): its items by name, the
ones not OK, and the command run in its own process."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

from smsrx.cli.doctor_check import Check
from smsrx.settings import Settings
from tests.helpers import settings_env


def by_name(checks: list[Check]) -> dict[str, Check]:
    """The items of a report, by name, in their order."""
    return {check.name: check for check in checks}


def not_ok(checks: list[Check]) -> list[Check]:
    """The items that are not OK: warnings and failures."""
    return [check for check in checks if check.ok is not True]


async def smsrx_doctor(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    """Run ``smsrx doctor`` as an operator would, in its own process."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "smsrx.cli",
        "doctor",
        *args,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def doctor_env(settings: Settings, state_dir: Path, **variables: str) -> dict[str, str]:
    """The environment of ``healthy`` settings, with no development stack to find."""
    assert settings.tls_cert is not None and settings.tls_key is not None
    return settings_env(
        settings,
        STATE_DIR=str(state_dir),
        TLS_CERT=str(settings.tls_cert),
        TLS_KEY=str(settings.tls_key),
        ALLOW_VAVASMS="127.0.0.1",
        SPOOL_DIR=str(settings.spool_dir),
        **variables,
    )
